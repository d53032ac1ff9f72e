package pec

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/modules/ticketing"
	"github.com/lineamica/centralino/test/mailserver"
	"github.com/lineamica/centralino/test/redisserver"
	"github.com/lineamica/centralino/test/syncbuf"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// agencies is the directory as the modules see it.
type agencies map[string]modules.Agency

func (a agencies) Agency(code string) (modules.Agency, bool) { ag, ok := a[code]; return ag, ok }
func (a agencies) List() []modules.Agency                    { return nil }

var directory = agencies{
	"r_campan":  {Code: "r_campan", Name: "Regione Campania", Region: "Campania", Sector: "general"},
	"inps":      {Code: "inps", Name: "INPS", Sector: "pensions"},
	"lineamica": {Code: "lineamica", Name: "Linea Amica", Sector: "general"},
}

// node is a switch node as far as the modules can tell: ticketing and pec
// on a bus, their HTTP routes and metrics.
type node struct {
	t       *testing.T
	bus     *modules.Bus
	mux     *http.ServeMux
	reg     *prometheus.Registry
	running *modules.Running
	logs    *syncbuf.Buffer
	stopped bool
}

// env is the provider's servers and the certificates of a test.
type env struct {
	pki  *pki
	smtp *mailserver.SMTP
	imap *mailserver.IMAP
}

func newEnv(t *testing.T) *env {
	p := newPKI(t)
	return &env{pki: p, smtp: mailserver.StartSMTP(t, mailserver.STARTTLS, p.server.TLSCert(), testUser, testPassword),
		imap: mailserver.StartIMAP(t, mailserver.ImplicitTLS, p.server.TLSCert(), testUser, testPassword)}
}

// options are the pec module's options for the test's servers.
func (e *env) options() map[string]any {
	return map[string]any{
		"smtp_addr": e.smtp.Addr, "smtp_tls": "starttls",
		"imap_addr": e.imap.Addr, "imap_tls": "tls",
		"username": testUser, "password": testPassword, "from": testUser,
		"ca_file": e.pki.caFile, "trust_file": e.pki.trustFile,
		"quarantine_folder": "Quarantena", "poll_interval": "50ms",
		"retry_min": "50ms", "retry_max": "200ms",
		"rating_url": "https://lineamica.gov.it/valuta",
	}
}

func startNode(t *testing.T, store modules.Store, pecOptions map[string]any) *node {
	t.Helper()
	n := &node{t: t, bus: modules.NewBus(modules.BusOptions{}), mux: http.NewServeMux(), reg: prometheus.NewRegistry(), logs: new(syncbuf.Buffer)}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	n.running, err = modules.Start(context.Background(), []modules.Config{
		{Name: "ticketing", Options: map[string]any{"regions": map[string]any{"r_campan": "CAM"}, "network_agencies": []any{"lineamica"}}},
		{Name: "pec", Options: pecOptions},
	}, modules.Deps{Bus: n.bus, Mux: n.mux, Store: store, Metrics: n.reg, Logger: log, Agencies: directory})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.bus.Close(ctx); err != nil {
		n.t.Error(err)
	}
	if err := n.running.Stop(ctx); err != nil {
		n.t.Error(err)
	}
	if strings.Contains(n.logs.String(), testPassword) {
		n.t.Error("the password is in the logs")
	}
}

// do sends an API request as the network centre and decodes the answer.
func (n *node) do(method, path, body string, out any) int {
	n.t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("X-Agency", "lineamica")
	rec := httptest.NewRecorder()
	n.mux.ServeHTTP(rec, req)
	if out != nil && rec.Code < 300 {
		if b, ok := out.(*[]byte); ok {
			*b = rec.Body.Bytes()
		} else if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			n.t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec.Code
}

func (n *node) ticket(code string) *ticketing.Ticket {
	n.t.Helper()
	var tk ticketing.Ticket
	if s := n.do("GET", "/api/ticketing/tickets/"+code, "", &tk); s != http.StatusOK {
		n.t.Fatalf("GET ticket %s: %d", code, s)
	}
	return &tk
}

func (n *node) patch(code, body string) {
	n.t.Helper()
	if s := n.do("PATCH", "/api/ticketing/tickets/"+code, body, nil); s != http.StatusOK {
		n.t.Fatalf("PATCH %s %s: %d", code, body, s)
	}
}

// openTicket opens a ticket by a citizen's call to r_campan and returns
// its code.
func (n *node) openTicket(callID string) string {
	n.t.Helper()
	n.bus.Publish(modules.CallOffered{Call: modules.Call{
		CallID: callID, Time: time.Now(), Caller: modules.Caller{Number: "+393331234567", Trunk: "pstn"},
		Callee: "800", DestAgency: "r_campan", Node: "n1",
	}, Public: true})
	var code string
	eventually(n.t, "the call's ticket", func() bool {
		var out struct{ Ticket string }
		n.do("GET", "/api/ticketing/calls/"+callID, "", &out)
		code = out.Ticket
		return code != ""
	})
	return code
}

// metric returns the value of a counter or gauge with the given labels
// (besides module), or 0.
func (n *node) metric(name string, labels ...string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || lp.GetName() == labels[i] && lp.GetValue() == labels[i+1]
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// redisStore returns a store on a real Redis and a way to get another
// client on it (a restarted node).
func redisStore(t *testing.T) func() modules.Store {
	srv := redisserver.Start(t)
	return func() modules.Store {
		opts, err := redis.ParseURL(srv.URL())
		if err != nil {
			t.Fatal(err)
		}
		opts.ContextTimeoutEnabled = true
		c := redis.NewClient(opts)
		t.Cleanup(func() { c.Close() })
		return kv.NewRedis(c)
	}
}
