package faq

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func answered(callID, agency, user, ticket string) modules.CallAnswered {
	c := modules.Call{CallID: callID, Time: t0, Caller: modules.Caller{Number: "3331234567"}, Callee: "8300000",
		DestAgency: agency, User: user, Node: "n1"}
	if ticket != "" {
		c.Headers = map[string]string{ticketHeader: ticket}
	}
	return modules.CallAnswered{Call: c, Wait: 5 * time.Second}
}

func decode(t *testing.T, data string) Suggestions {
	t.Helper()
	var sg Suggestions
	if err := json.Unmarshal([]byte(data), &sg); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return sg
}

func sectorsOf(sg Suggestions) []string {
	var out []string
	for _, h := range sg.Entries {
		out = append(out, h.Sector)
	}
	return out
}

// The operator who answers a call gets, on a stream read by a real HTTP
// client, the entries of the agency's sector; the ticket's notes and the
// agencies it crossed before steer them.
func TestSuggestionStream(t *testing.T) {
	stores(t, func(t *testing.T, newStore func() modules.Store) {
		n := startNode(t, newStore(), map[string]any{"starter": true, "suggestions": 3})
		other := startNode(t, newStore(), nil) // serves what n stored
		eventually(t, "the starter FAQ", func() bool { return n.metric("centralino_faq_entries") >= 40 })

		ricci := n.stream("user=inps.ricci")
		agency := n.stream("agency=inps")
		for _, s := range []*sse{ricci, agency} {
			if ev, _ := s.next(); ev != "ready" {
				t.Fatalf("first event %q, want ready", ev)
			}
		}
		eventually(t, "two streams counted", func() bool { return n.metric("centralino_faq_suggestion_streams") == 2 })

		// A call answered by someone else at another agency is not for ricci.
		n.bus.Publish(answered("c0", "age", "age.greco", ""))
		n.bus.Publish(answered("c1", "inps", "inps.ricci", ""))
		ev, data := ricci.next()
		sg := decode(t, data)
		if ev != "suggestions" || sg.CallID != "c1" || sg.Sector != "pensioni" || len(sg.Entries) != 3 {
			t.Fatalf("%s %+v", ev, sg)
		}
		for _, h := range sg.Entries {
			if h.Sector != "pensioni" || h.Agency != "inps" && h.Agency != "" {
				t.Errorf("suggested %s (%s, %s) to INPS", h.ID, h.Sector, h.Agency)
			}
		}
		if _, data := agency.next(); decode(t, data).CallID != "c1" {
			t.Fatalf("agency stream: %s", data)
		}

		// The ticket, opened when the call was offered, has crossed URP
		// Campania and the ASL; a note says what the citizen asks.
		n.bus.Publish(modules.TicketChanged{Time: t0, Code: "LA-2026-CAM-000001", Status: "in_lavorazione",
			Agency: "inps", Agencies: []string{"r_campan", "asl_na1", "inps"}, CallID: "c1",
			Notes: []string{"Il cittadino chiede dell'esenzione dal ticket sanitario per reddito"}})
		ev, data = ricci.next()
		sg = decode(t, data)
		if ev != "suggestions" || sg.Ticket != "LA-2026-CAM-000001" || !slices.Equal(sg.Agencies, []string{"r_campan", "asl_na1"}) {
			t.Fatalf("after the ticket changed: %s %+v", ev, sg)
		}
		if len(sg.Entries) == 0 || sg.Entries[0].Sector != "sanità" || !strings.Contains(strings.ToLower(sg.Entries[0].Question), "esenzion") {
			t.Fatalf("the note should bring the exemption first: %v", sectorsOf(sg))
		}

		// Any node answers for the call; unknown calls are not found.
		for _, nd := range []*node{n, other} {
			var got Suggestions
			nd.mustDo(http.StatusOK, "GET", "/suggestions?call=c1", "", "", &got)
			if got.Ticket != "LA-2026-CAM-000001" || len(got.Entries) == 0 {
				t.Fatalf("GET suggestions: %+v", got)
			}
		}
		n.mustDo(http.StatusNotFound, "GET", "/suggestions?call=nope", "", "", nil)
		n.mustDo(http.StatusBadRequest, "GET", "/suggestions", "", "", nil)
		// Asked for by another agency's front end, INPS's call is not found.
		n.mustDo(http.StatusOK, "GET", "/suggestions?call=c1", "inps", "", nil)
		n.mustDo(http.StatusNotFound, "GET", "/suggestions?call=c1", "age", "", nil)

		// A transferred call carries its ticket in a header: its notes
		// steer the suggestions from the first event.
		n.bus.Publish(answered("c2", "inps", "inps.ricci", "LA-2026-CAM-000001"))
		_, data = ricci.next()
		if sg := decode(t, data); sg.CallID != "c2" || sg.Entries[0].Sector != "sanità" {
			t.Fatalf("transferred call: %+v", sectorsOf(sg))
		}

		// A screen that opens during a call gets its suggestions at once.
		late := n.stream("user=inps.ricci")
		ev1, data1 := late.next()
		ev2, data2 := late.next()
		ev3, _ := late.next()
		if ev1 != "suggestions" || ev2 != "suggestions" || ev3 != "ready" || decode(t, data1).CallID != "c1" || decode(t, data2).CallID != "c2" {
			t.Fatalf("late stream: %s %s %s", ev1, ev2, ev3)
		}
		if n.metric("centralino_faq_suggestions_total") < 4 {
			t.Errorf("suggestions counted: %v", n.metric("centralino_faq_suggestions_total"))
		}
		// Streams end when the module stops, so the server can shut down.
		n.stop()
		if ev, _ := ricci.next(); ev != "error" {
			t.Fatalf("after stop: %s", ev)
		}
	})
}

func TestStreamRequests(t *testing.T) {
	n := startNode(t, kv.NewMemory(), map[string]any{"max_streams": 1})
	for _, q := range []string{"", "user=a&agency=b"} {
		if code, _ := n.do("GET", "/suggestions/stream?"+q, "", "", "", nil); code != http.StatusBadRequest {
			t.Errorf("stream?%s: %d", q, code)
		}
	}
	s := n.stream("user=a")
	s.next()
	if code, _ := n.do("GET", "/suggestions/stream?user=b", "", "", "", nil); code != http.StatusServiceUnavailable {
		t.Errorf("second stream over max_streams: %d", code)
	}
}

func TestForgetOldest(t *testing.T) {
	m := map[string]time.Time{}
	for i := range 10 {
		m[string(rune('a'+i))] = t0.Add(time.Duration(i) * time.Minute)
	}
	forgetOldest(m, 20, func(v time.Time) time.Time { return v })
	if len(m) != 10 {
		t.Fatalf("below the limit: %d left", len(m))
	}
	forgetOldest(m, 10, func(v time.Time) time.Time { return v })
	if _, ok := m["a"]; ok || len(m) != 8 || m["c"].IsZero() {
		t.Fatalf("at the limit: %v", m)
	}
}

// Without a ticket, the agencies a call overflowed or was transferred from
// are its history: their entries are suggested too.
func TestSuggestionsFollowTheCall(t *testing.T) {
	n := startNode(t, kv.NewMemory(), map[string]any{"starter": true, "suggestions": 50})
	eventually(t, "the starter FAQ", func() bool { return n.metric("centralino_faq_entries") >= 40 })
	s := n.stream("agency=inps")
	s.next()

	first := answered("x1", "asl_na1", "aslna1.sorrentino", "").Call
	n.bus.Publish(modules.CallOverflowed{Call: first, FromAgency: "r_campan", ToAgency: "asl_na1", Reason: modules.OverflowBusy})
	n.bus.Publish(modules.CallTransferred{Call: first, Type: modules.TransferBlind, FromAgency: "asl_na1", ToAgency: "inps",
		By: "aslna1.sorrentino", OriginalCallID: "x1", NewCallID: "x2"})
	n.bus.Publish(answered("x2", "inps", "inps.ricci", ""))
	_, data := s.next()
	sg := decode(t, data)
	if sg.CallID != "x2" || !slices.Equal(sg.Agencies, []string{"r_campan", "asl_na1"}) {
		t.Fatalf("%+v", sg)
	}
	owners := map[string]bool{}
	for _, h := range sg.Entries {
		owners[h.Agency] = true
	}
	if !owners["asl_na1"] || !owners["inps"] || owners["age"] {
		t.Fatalf("owners of the suggestions: %v", owners)
	}
	// The call's sector leads.
	if sg.Entries[0].Sector != "pensioni" {
		t.Errorf("first suggestion %s of %s", sg.Entries[0].ID, sg.Entries[0].Sector)
	}
}

// A stream opened through a front end (X-Agency) gets only that agency's
// calls, whatever user or agency it asks for.
func TestStreamScope(t *testing.T) {
	inps := &Suggestions{User: "inps.ricci", Agency: "inps"}
	for _, tt := range []struct {
		st   stream
		want bool
	}{
		{stream{user: "inps.ricci"}, true},
		{stream{user: "inps.ricci", scope: "inps"}, true},
		{stream{user: "inps.ricci", scope: "age"}, false},
		{stream{agency: "inps", scope: "age"}, false},
		{stream{agency: "inps", scope: "inps"}, true},
	} {
		if got := tt.st.wants(inps); got != tt.want {
			t.Errorf("%+v wants INPS's call: %v, want %v", tt.st, got, tt.want)
		}
	}
}
