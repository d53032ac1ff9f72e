package ticketing

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

// apiNode has tickets opened at r_campan then transferred to inps (one),
// at r_puglia (one, abandoned), at inps (one) and at age (five), in this
// order, and a call in progress at asl_na1.
func apiNode(t *testing.T) (n *node, codes map[string]string) {
	n = startNode(t, kv.NewMemory(), testOptions)
	n.publish(transferFlow("campania", citizen("+393330000001"), "r_campan", "inps", 0)...)
	puglia := newCall("puglia", citizen("+393330000002"), "r_puglia", time.Hour)
	inps := newCall("inps", citizen("+393330000003"), "inps", 2*time.Hour)
	n.publish(puglia.offered(true), puglia.ended(time.Hour+time.Minute, 0),
		inps.offered(true), inps.answered(2*time.Hour+time.Second, "inps.ricci"), inps.ended(2*time.Hour+time.Minute, time.Minute))
	for i := range 5 {
		c := newCall(fmt.Sprint("age", i), citizen(fmt.Sprint("+39333000010", i)), "age", 3*time.Hour+time.Duration(i)*time.Minute)
		n.publish(c.offered(true), c.ended(c.Time.Sub(t0)+time.Second, 0))
	}
	n.publish(newCall("live", citizen("+393330000009"), "asl_na1", 4*time.Hour).offered(true))
	n.waitCode("live")
	n.flushed()
	codes = map[string]string{}
	for _, tk := range n.list("lineamica", "per_page=100").Tickets {
		codes[tk.Hops[0].CallID] = tk.Code
	}
	if len(codes) != 9 {
		t.Fatalf("%d tickets, want 9", len(codes))
	}
	return n, codes
}

func TestAPIRequiresAgency(t *testing.T) {
	n, codes := apiNode(t)
	for _, r := range []struct{ method, path string }{
		{"GET", "/tickets/" + codes["campania"]}, {"PATCH", "/tickets/" + codes["campania"]},
		{"GET", "/tickets"}, {"GET", "/calls/live"},
	} {
		if status := n.do(r.method, r.path, "", `{"status":"risolto"}`, nil); status != http.StatusUnauthorized {
			t.Errorf("%s %s without %s: status %d, want 401", r.method, r.path, AgencyHeader, status)
		}
	}
}

func TestAPIGetTicket(t *testing.T) {
	n, codes := apiNode(t)
	code := codes["campania"]
	for _, tc := range []struct {
		agency, path string
		want         int
	}{
		{"r_campan", code, 200},
		{"inps", code, 200},
		{"lineamica", code, 200}, // network-wide
		{"r_puglia", code, 404},  // never reached: as if it did not exist
		{"r_campan", strings.ToLower(strings.ReplaceAll(code, "-", "")), 200},
		{"r_campan", code[:len(code)-1] + map[bool]string{true: "A", false: "B"}[code[len(code)-1] != 'A'], 400},
		{"r_campan", ticketcode.New(2026, "CAM", 999999), 404},
		{"r_campan", "nonsense", 400},
	} {
		var tk Ticket
		if status := n.do("GET", "/tickets/"+tc.path, tc.agency, "", &tk); status != tc.want {
			t.Errorf("GET %s as %s: status %d, want %d", tc.path, tc.agency, status, tc.want)
		} else if status == 200 && tk.Code != code {
			t.Errorf("GET %s: code %s", tc.path, tk.Code)
		}
	}
}

func TestAPIListFiltersScopesAndPages(t *testing.T) {
	n, _ := apiNode(t)
	for _, tc := range []struct {
		agency, query string
		want          []string // first hops' call ids, newest first
		more          bool
	}{
		{"r_campan", "", []string{"campania"}, false},
		{"inps", "", []string{"inps", "campania"}, false},
		{"inps", "agency=r_campan", []string{"campania"}, false},
		{"r_puglia", "agency=r_campan", nil, false},
		{"inps", "status=in_lavorazione", []string{"inps", "campania"}, false},
		{"lineamica", "status=aperto&per_page=3", []string{"live", "age4", "age3"}, true},
		{"lineamica", "caller=%2B393330000002", []string{"puglia"}, false},
		{"r_campan", "caller=%2B393330000002", nil, false},
		{"inps", "caller=%2B393330000001&status=in_lavorazione", []string{"campania"}, false},
		{"lineamica", "agency=age&per_page=2", []string{"age4", "age3"}, true},
		{"lineamica", "agency=age&per_page=2&page=2", []string{"age2", "age1"}, true},
		{"lineamica", "agency=age&per_page=2&page=3", []string{"age0"}, false},
		{"lineamica", "agency=age&per_page=2&page=4", nil, false},
		{"age", "caller=%2B393330000103&per_page=1", []string{"age3"}, false},
		{"inps", "agency=r_campan&status=aperto", nil, false},
		{"lineamica", "per_page=4&page=2", []string{"age1", "age0", "inps", "puglia"}, true},
		{"lineamica", "per_page=4&page=3", []string{"campania"}, false},
	} {
		l := n.list(tc.agency, tc.query)
		var got []string
		for _, tk := range l.Tickets {
			got = append(got, tk.Hops[0].CallID)
		}
		if !slices.Equal(got, tc.want) || l.HasMore != tc.more {
			t.Errorf("GET /tickets?%s as %s = %v (more: %v), want %v (more: %v)", tc.query, tc.agency, got, l.HasMore, tc.want, tc.more)
		}
	}
	for _, q := range []string{"page=0", "per_page=0", "per_page=101", "page=x", "status=bogus"} {
		if status := n.do("GET", "/tickets?"+q, "lineamica", "", nil); status != 400 {
			t.Errorf("GET /tickets?%s: status %d, want 400", q, status)
		}
	}
}

func TestAPIPatch(t *testing.T) {
	n, codes := apiNode(t)
	code := codes["campania"]
	for body, want := range map[string]int{
		`{}`:                                           400,
		`{"status":"aperto"}`:                          400, // only events open
		`{"status":"trasferito"}`:                      400,
		`{"colour":"red"}`:                             400,
		`{"citizen_pec":"not an email"}`:               400,
		`{"citizen_pec":"Mario <mario@pec.it>"}`:       400,
		`{"note":"` + strings.Repeat("x", 4001) + `"}`: 400,
		`nonsense`:                                     400,
	} {
		if status := n.do("PATCH", "/tickets/"+code, "inps", body, nil); status != want {
			t.Errorf("PATCH %.40s: status %d, want %d", body, status, want)
		}
	}
	if status := n.do("PATCH", "/tickets/"+code, "r_puglia", `{"status":"risolto"}`, nil); status != 404 {
		t.Errorf("PATCH by an agency the ticket never reached: status %d, want 404", status)
	}

	req := httptest.NewRequest("PATCH", "/api/ticketing/tickets/"+code, strings.NewReader(
		`{"status":"risolto","note":" pratica avviata ","citizen_pec":"mario.rossi@pec.it"}`))
	req.Header.Set(AgencyHeader, "inps")
	req.Header.Set(UserHeader, "inps.ricci")
	rec := httptest.NewRecorder()
	n.mux.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("PATCH: status %d: %s", rec.Code, rec.Body)
	}
	n.flushed()
	tk := n.ticket(code)
	if tk.Status != StatusRisolto || tk.CitizenPEC != "mario.rossi@pec.it" || len(tk.Notes) != 1 {
		t.Fatalf("after PATCH: %+v", tk)
	}
	if note := tk.Notes[0]; note.Agency != "inps" || note.User != "inps.ricci" || note.Text != "pratica avviata" || note.Time.IsZero() {
		t.Errorf("note = %+v", note)
	}
	if l := n.list("inps", "status=risolto"); len(l.Tickets) != 1 || l.Tickets[0].Code != code {
		t.Errorf("the status index was not updated: %+v", l.Tickets)
	}
	if l := n.list("inps", "status=in_lavorazione"); len(l.Tickets) != 1 {
		t.Errorf("the ticket is still listed in_lavorazione: %d tickets", len(l.Tickets))
	}

	var closed Ticket
	if status := n.do("PATCH", "/tickets/"+code, "lineamica", `{"status":"chiuso","citizen_pec":""}`, &closed); status != 200 {
		t.Fatalf("closing: status %d", status)
	}
	if closed.ClosedAt.IsZero() || closed.CitizenPEC != "" {
		t.Errorf("closed ticket: closed_at %v, pec %q", closed.ClosedAt, closed.CitizenPEC)
	}
	if status := n.do("PATCH", "/tickets/"+code, "lineamica", `{"note":"ancora"}`, nil); status != http.StatusConflict {
		t.Errorf("PATCH of a closed ticket: status %d, want 409", status)
	}
	if got := n.metric("centralino_tickets_closed_total", "agency", "lineamica"); got != 1 {
		t.Errorf("closed{lineamica} = %v, want 1", got)
	}
	if got := n.metric("centralino_ticket_hops"); got != 1 {
		t.Errorf("hops histogram count = %v, want 1", got)
	}
	if got := n.metric("centralino_tickets_transferred_total", "agency", "r_campan"); got != 1 {
		t.Errorf("transferred{r_campan} = %v, want 1", got)
	}
}

func TestAPICall(t *testing.T) {
	n, codes := apiNode(t)
	var out map[string]string
	if status := n.do("GET", "/calls/live", "asl_na1", "", &out); status != 200 || out["ticket"] != codes["live"] || out["call_id"] != "live" {
		t.Errorf("GET /calls/live as asl_na1: %d %v, want ticket %s", status, out, codes["live"])
	}
	for agency, path := range map[string]string{"inps": "/calls/live", "asl_na1": "/calls/campania"} {
		if status := n.do("GET", path, agency, "", nil); status != 404 {
			t.Errorf("GET %s as %s: status %d, want 404", path, agency, status)
		}
	}
}
