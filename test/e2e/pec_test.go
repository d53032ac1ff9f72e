package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/mailserver"
)

// A citizen calls URP Campania; the operator types the citizen's PEC
// address into the ticket; the PEC provider gets a certified message for the
// citizen with the ticket's code.
func TestTicketPECReachesTheProvider(t *testing.T) {
	const mailbox, password = "linea.amica@pec.lineamica.gov.it", "s3gret0-e2e"
	ca := mailserver.NewCA(t, "e2e TLS CA")
	dir := t.TempDir()
	cert := ca.Issue(t, "localhost", "127.0.0.1").TLSCert()
	provider := mailserver.StartSMTP(t, mailserver.STARTTLS, cert, mailbox, password)
	n := startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}, edit: func(c *configs.Config) {
		c.Modules = []modules.Config{
			{Name: "ticketing", Options: map[string]any{"regions": map[string]any{"r_campan": "CAM"}}},
			{Name: "pec", Options: map[string]any{
				"smtp_addr": provider.Addr, "smtp_tls": "starttls", "ca_file": ca.WritePEM(t, dir, "ca.pem"),
				"username": mailbox, "password": password, "from": mailbox, "retry_min": "100ms",
			}},
		}
	}})

	citizen := phone(t, n, "3331234567", "udp") // a trunk's caller: no account, trusted source
	operator := phone(t, n, "campania.deluca", "udp")
	mustRegister(t, operator)
	res, inv := citizen.Invite("8100000")
	if res.StatusCode != 200 {
		t.Fatalf("citizen's call to the URP: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	defer citizen.Bye(inv, res)

	api := func(method, path, body string, out any) int {
		req, _ := http.NewRequest(method, "http://"+n.HTTPAddr+path, strings.NewReader(body))
		req.Header.Set("X-Agency", "r_campan")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil {
			json.NewDecoder(resp.Body).Decode(out)
		}
		return resp.StatusCode
	}
	var list struct{ Tickets []struct{ Code string } }
	waitFor(t, 5*time.Second, "the call's ticket", func() bool {
		return api("GET", "/api/ticketing/tickets", "", &list) == 200 && len(list.Tickets) == 1
	})
	code := list.Tickets[0].Code
	if s := api("PATCH", "/api/ticketing/tickets/"+code, `{"citizen_pec":"mario.rossi@pec.it"}`, nil); s != 200 {
		t.Fatalf("PATCH citizen_pec: %d", s)
	}

	waitFor(t, 10*time.Second, "the message at the provider", func() bool { return len(provider.Messages()) == 1 })
	msg := provider.Messages()[0]
	if msg.From != mailbox || len(msg.To) != 1 || msg.To[0] != "mario.rossi@pec.it" {
		t.Errorf("envelope from %s to %v", msg.From, msg.To)
	}
	if !strings.Contains(string(msg.Data), "Subject: Linea Amica - pratica "+code) || !strings.Contains(string(msg.Data), "Regione Campania") {
		t.Errorf("message:\n%s", msg.Data)
	}
	waitFor(t, 5*time.Second, "the sent metric", func() bool {
		return n.metric(t, `centralino_pec_messages_sent_total{module="pec"}`) == 1
	})
	if strings.Contains(n.logs.String(), password) {
		t.Error("the password is in the log")
	}
}
