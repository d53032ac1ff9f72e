package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
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

	res, inv := citizen.Invite("8100000")
	if res.StatusCode != 200 {
		t.Fatalf("citizen's call: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	<-campania.Invites

	// The consultation call, operator to operator.
	cres, cinv := campania.Invite("8300201")
	if cres.StatusCode != 200 {
		t.Fatalf("consultation call: %d %s", cres.StatusCode, cres.Reason)
	}
	campania.Ack(cinv, cres)
	<-inps.Invites

	if refer := campania.ReferAnsweredReplacing(inv.CallID().Value(), "8300201", cinv, cres); refer.StatusCode != 202 {
		t.Fatalf("REFER with Replaces: %d %s", refer.StatusCode, refer.Reason)
	}
	select {
	case r := <-citizen.Transferred:
		if r.StatusCode != 200 {
			t.Fatalf("the transferred call: %d %s", r.StatusCode, r.Reason)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the citizen's phone did not follow the REFER")
	}
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
	req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+"/api/ticketing/tickets/"+ticket.Value(), nil)
	req.Header.Set("X-Agency", "inps")
	var tk struct {
		Hops []struct{ Agency, Via, Reason string } `json:"hops"`
	}
	waitFor(t, 5*time.Second, "the attended hop on the ticket", func() bool {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		json.NewDecoder(resp.Body).Decode(&tk)
		return len(tk.Hops) == 2
	})
	if h := tk.Hops[1]; h.Agency != "inps" || h.Via != "transfer" || h.Reason != "attended" {
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

			res, inv := citizen.Invite("8100000")
			if res.StatusCode != 200 {
				t.Fatalf("citizen's call: %d %s", res.StatusCode, res.Reason)
			}
			citizen.Ack(inv, res)
			select {
			case r := <-citizen.Transferred:
				if r.StatusCode != 200 {
					t.Fatalf("the transferred call: %d %s", r.StatusCode, r.Reason)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the citizen's phone was not transferred")
			}
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
