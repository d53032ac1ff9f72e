package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/sipua"
)

// The operator of URP Campania consults INPS's operator, then hands the
// citizen over (REFER with Replaces): the citizen's phone calls INPS in
// place of the consultation call, INPS's operator sees the Replaces and the
// ticket code, and the transfer is counted as attended, Campania to INPS.
func TestAttendedTransferAcrossAgencies(t *testing.T) {
	n := startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}, edit: func(c *configs.Config) {
		c.Modules = []modules.Config{{Name: "ticketing", Options: map[string]any{"regions": map[string]any{"r_campan": "CAM"}}}}
	}})
	campania := phone(t, n, "campania.deluca", "udp")
	mustRegister(t, campania)
	inps := phone(t, n, "inps.ricci", "udp")
	mustRegister(t, inps)
	citizen := phone(t, n, "3331234567", "udp")

	inv, res := established(t, citizen, "8100000")
	<-campania.Invites

	// The consultation call, operator to operator.
	cinv, cres := established(t, campania, "8300201")
	<-inps.Invites

	if refer := campania.ReferAnsweredReplacing(inv.CallID().Value(), "8300201", cinv, cres); refer.StatusCode != 202 {
		t.Fatalf("REFER with Replaces: %d %s", refer.StatusCode, refer.Reason)
	}
	followed(t, citizen)
	got := <-inps.Invites
	replaces := got.GetHeader("Replaces")
	if replaces == nil || !strings.HasPrefix(replaces.Value(), cinv.CallID().Value()+";") {
		t.Fatalf("INPS's operator got Replaces %v, want the consultation call %s", replaces, cinv.CallID().Value())
	}
	ticket := got.GetHeader("X-Ticket")
	if ticket == nil {
		t.Fatal("INPS's operator got no ticket code")
	}
	campania.Bye(cinv, cres) // what INPS's phone does once replaced, here on the operator's side
	citizen.Bye(inv, res)

	if v := n.metric(t, `centralino_transfers_total{destination_agency="inps",source_agency="r_campan",type="attended"}`); v != 1 {
		t.Errorf("attended transfer counted %v times, want 1", v)
	}
	hops := ticketHops(t, n, ticket.Value(), "inps", 2)
	if h := hops[1]; h.Agency != "inps" || h.Via != "transfer" || h.Reason != "attended" {
		t.Errorf("second hop %+v, want inps by attended transfer", h)
	}
}

// A sipp operator of URP Campania transfers the citizen to INPS, blind (to
// the public number) and attended (to INPS's operator, with Replaces):
// the citizen's phone follows, INPS answers, and each transfer is counted
// by type, Campania to INPS.
func TestSippOperatorTransfers(t *testing.T) {
	for _, tt := range []struct {
		kind, target, replaces string
	}{
		{"blind", "8300000", ""},
		{"attended", "8300201", "?Replaces=consult-1%3Bto-tag%3Da%3Bfrom-tag%3Db"},
	} {
		t.Run(tt.kind, func(t *testing.T) {
			n := startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}})
			addr, operator := sippCallee(t, n, "uas_refer.xml", "-key", "target", tt.target, "-key", "replaces", tt.replaces)
			registerWith(t, n, "campania.deluca", addr)
			inps := phone(t, n, "inps.ricci", "udp")
			mustRegister(t, inps)
			citizen := phone(t, n, "3331234567", "udp")

			inv, res := established(t, citizen, "8100000")
			followed(t, citizen)
			got := <-inps.Invites
			if h := got.GetHeader("Replaces"); (h != nil) != (tt.replaces != "") {
				t.Errorf("INPS's INVITE Replaces header: %v", h)
			}
			citizen.Bye(inv, res)
			if r := operator(); r.err != nil {
				t.Fatalf("sipp operator: %v\n%s", r.err, r.output)
			}
			if v := n.metric(t, `centralino_transfers_total{destination_agency="inps",source_agency="r_campan",type="`+tt.kind+`"}`); v != 1 {
				t.Errorf("%s transfer counted %v times, want 1", tt.kind, v)
			}
		})
	}
}

// established calls number from p, expects it answered and ACKs it.
func established(t *testing.T, p *sipua.Phone, number string) (*sip.Request, *sip.Response) {
	t.Helper()
	res, inv := p.Invite(number)
	if res.StatusCode != 200 {
		t.Fatalf("%s calling %s: %d %s", p.User, number, res.StatusCode, res.Reason)
	}
	p.Ack(inv, res)
	return inv, res
}

// followed waits for p to follow a REFER and get its new call answered.
func followed(t *testing.T, p *sipua.Phone) {
	t.Helper()
	select {
	case r := <-p.Transferred:
		if r.StatusCode != 200 {
			t.Fatalf("the transferred call: %d %s", r.StatusCode, r.Reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the phone did not follow the REFER")
	}
}

type ticketHop struct {
	Agency, Via, Reason, Operator string
}

// ticketHops reads a ticket as agency sees it, waiting until it has want hops.
func ticketHops(t *testing.T, n *node, code, agency string, want int) []ticketHop {
	t.Helper()
	var tk struct {
		Hops []ticketHop `json:"hops"`
	}
	waitFor(t, 5*time.Second, fmt.Sprintf("%d hops on ticket %s", want, code), func() bool {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+"/api/ticketing/tickets/"+code, nil)
		req.Header.Set("X-Agency", agency)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&tk)
		return len(tk.Hops) == want
	})
	return tk.Hops
}
