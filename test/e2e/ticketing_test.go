package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/redisserver"
)

// A citizen's call from a trunk to URP Campania's public number opens a
// ticket that the agency reads through the API, and that survives a restart
// of the node on Redis.
func TestCitizenCallOpensATicket(t *testing.T) {
	need(t, "redis-server")
	srv := redisserver.Start(t)
	o := nodeOptions{redisURL: srv.URL(), trusted: []string{"127.0.0.1/32"}, edit: func(c *configs.Config) {
		c.Modules = []modules.Config{{Name: "ticketing", Options: map[string]any{"regions": map[string]any{"r_campan": "CAM"}}}}
	}}
	n := startNode(t, o)
	operator := phone(t, n, "campania.deluca", "udp")
	mustRegister(t, operator)
	citizen := phone(t, n, "3331234567", "udp") // a trunk's caller: no account, trusted source
	res, inv := citizen.Invite("8100000")
	if res.StatusCode != 200 {
		t.Fatalf("citizen's call to the URP: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	time.Sleep(100 * time.Millisecond)
	citizen.Bye(inv, res)

	var list struct {
		Tickets []struct {
			Code   string `json:"code"`
			Status string `json:"status"`
			Hops   []struct {
				Agency   string `json:"agency"`
				Operator string `json:"operator"`
			} `json:"hops"`
		} `json:"tickets"`
	}
	fetch := func(n *node) int {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+"/api/ticketing/tickets?agency=r_campan", nil)
		req.Header.Set("X-Agency", "r_campan")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		list.Tickets = nil
		json.NewDecoder(resp.Body).Decode(&list)
		return len(list.Tickets)
	}
	waitFor(t, 5*time.Second, "the ticket in the listing", func() bool { return fetch(n) == 1 })
	tk := list.Tickets[0]
	if len(tk.Hops) != 1 || tk.Hops[0].Agency != "r_campan" || tk.Hops[0].Operator != "campania.deluca" {
		t.Fatalf("ticket %+v: want one hop at r_campan answered by campania.deluca", tk)
	}
	if len(tk.Code) < 12 || tk.Code[:11] != "LA-"+time.Now().UTC().Format("2006")+"-CAM" {
		t.Errorf("ticket code %q", tk.Code)
	}

	n.stop(t)
	again := startNode(t, o)
	waitFor(t, 5*time.Second, "the ticket after a restart", func() bool { return fetch(again) == 1 })
	if list.Tickets[0].Code != tk.Code {
		t.Errorf("after the restart the ticket is %q, was %q", list.Tickets[0].Code, tk.Code)
	}
}

// The operator of URP Campania hands the citizen to INPS: the citizen's
// phone follows the REFER, INPS's operator sees the ticket code on the
// INVITE, and the one ticket has both hops.
func TestBlindTransferCarriesTheTicket(t *testing.T) {
	withRedis(t, func(t *testing.T, o nodeOptions) {
		o.trusted = []string{"127.0.0.1/32"}
		o.edit = func(c *configs.Config) {
			c.Modules = []modules.Config{{Name: "ticketing", Options: map[string]any{"regions": map[string]any{"r_campan": "CAM"}}}}
		}
		n := startNode(t, o)
		campania := phone(t, n, "campania.deluca", "udp")
		mustRegister(t, campania)
		inps := phone(t, n, "inps.ricci", "udp")
		mustRegister(t, inps)
		citizen := phone(t, n, "3331234567", "udp")

		inv, _ := established(t, citizen, "8100000")
		<-campania.Invites
		if refer := campania.ReferAnswered(inv.CallID().Value(), "8300000"); refer.StatusCode != 202 {
			t.Fatalf("REFER: %d %s", refer.StatusCode, refer.Reason)
		}
		followed(t, citizen)
		got := <-inps.Invites
		code := ""
		if h := got.GetHeader("X-Ticket"); h != nil {
			code = h.Value()
		}
		if code == "" {
			t.Fatalf("INPS's operator got no ticket code on the INVITE")
		}
		hops := ticketHops(t, n, code, "inps", 2)
		if hops[0].Agency != "r_campan" || hops[1].Agency != "inps" || hops[1].Via != "transfer" {
			t.Errorf("hops %+v, want r_campan then inps by transfer", hops)
		}
		if v := n.metric(t, `centralino_transfers_total{destination_agency="inps",source_agency="r_campan",type="blind"}`); v != 1 {
			t.Errorf("transfer not counted: %v", v)
		}
	})
}

func TestOnlyOperatorsTransferOutsideTheirAgency(t *testing.T) {
	n := startNode(t, nodeOptions{})
	desk := phone(t, n, "campania.russo", "udp") // a phone, not an operator
	mustRegister(t, desk)
	caller := phone(t, n, "campania.esposito", "udp")
	res, inv := caller.Invite("102")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	caller.Ack(inv, res)
	<-desk.Invites
	if refer := desk.ReferAnswered(inv.CallID().Value(), "8300000"); refer.StatusCode != 403 {
		t.Fatalf("a desk phone transferring to INPS: %d, want 403", refer.StatusCode)
	}
	if refer := desk.ReferAnswered(inv.CallID().Value(), "201"); refer.StatusCode != 202 {
		t.Fatalf("a desk phone transferring inside its agency: %d, want 202", refer.StatusCode)
	}
}
