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
