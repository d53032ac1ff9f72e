package ticketing

import (
	"context"
	"encoding/json"
	"github.com/lineamica/centralino/test/syncbuf"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/test/redisserver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// node is a switch node as far as the module can tell: a bus, the module
// on it, its HTTP routes and its metrics.
type node struct {
	t       *testing.T
	store   modules.Store
	bus     *modules.Bus
	mux     *http.ServeMux
	reg     *prometheus.Registry
	running *modules.Running
	logs    *syncBuffer
	stopped bool
}

type syncBuffer = syncbuf.Buffer

// testOptions are the module's options in most tests.
var testOptions = map[string]any{
	"regions":          map[string]any{"r_campan": "CAM", "asl_na1": "CAM", "r_puglia": "PUG"},
	"network_agencies": []any{"lineamica"},
}

func startNode(t *testing.T, store modules.Store, options map[string]any) *node {
	t.Helper()
	n := &node{t: t, store: store, bus: modules.NewBus(modules.BusOptions{}), mux: http.NewServeMux(),
		reg: prometheus.NewRegistry(), logs: new(syncBuffer)}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var err error
	n.running, err = modules.Start(context.Background(), []modules.Config{{Name: "ticketing", Options: options}},
		modules.Deps{Bus: n.bus, Mux: n.mux, Store: store, Metrics: n.reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	return n
}

// stop closes the bus, so the module sees every event published, and stops
// the module, which writes its outbox.
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
}

func (n *node) publish(evs ...modules.Event) {
	for _, ev := range evs {
		n.bus.Publish(ev)
	}
}

// do sends a request as agency ("" for none) and decodes the JSON answer
// into out unless nil.
func (n *node) do(method, path, agency, body string, out any) int {
	n.t.Helper()
	req := httptest.NewRequest(method, "/api/ticketing"+path, strings.NewReader(body))
	if agency != "" {
		req.Header.Set(AgencyHeader, agency)
	}
	rec := httptest.NewRecorder()
	n.mux.ServeHTTP(rec, req)
	if out != nil && rec.Code < 300 {
		if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
			n.t.Fatalf("%s %s: %v: %s", method, path, err, rec.Body)
		}
	}
	return rec.Code
}

func (n *node) ticket(code string) *Ticket {
	n.t.Helper()
	var tk Ticket
	if code := n.do("GET", "/tickets/"+code, "lineamica", "", &tk); code != http.StatusOK {
		n.t.Fatalf("GET ticket: status %d", code)
	}
	return &tk
}

func (n *node) list(agency, query string) listing {
	n.t.Helper()
	var l listing
	if code := n.do("GET", "/tickets?"+query, agency, "", &l); code != http.StatusOK {
		n.t.Fatalf("GET /tickets?%s as %s: status %d", query, agency, code)
	}
	return l
}

// waitTicket waits for a ticket listed by query (as the network-wide
// agency) to satisfy done, and returns it.
func (n *node) waitTicket(query string, done func(*Ticket) bool) *Ticket {
	n.t.Helper()
	var found *Ticket
	eventually(n.t, "a ticket for "+query, func() bool {
		for _, tk := range n.list("lineamica", query).Tickets {
			if done(tk) {
				found = tk
				return true
			}
		}
		return false
	})
	return found
}

// ended says whether every hop of a ticket has ended.
func ended(tk *Ticket) bool {
	return !slices.ContainsFunc(tk.Hops, func(h Hop) bool { return h.EndedAt.IsZero() })
}

// flushed waits for the outbox to be written: listings read the store.
func (n *node) flushed() {
	n.t.Helper()
	eventually(n.t, "the outbox to empty", func() bool { return n.metric("centralino_ticket_outbox_length") == 0 })
}

// codeOf returns the code of the ticket of a call in progress, and the
// HTTP status of the question.
func (n *node) codeOf(callID string) (string, int) {
	n.t.Helper()
	var out struct{ Ticket string }
	status := n.do("GET", "/calls/"+callID, "lineamica", "", &out)
	return out.Ticket, status
}

// waitCode waits for the call to have a ticket and returns its code.
func (n *node) waitCode(callID string) string {
	n.t.Helper()
	var code string
	eventually(n.t, "a ticket for "+callID, func() bool {
		code, _ = n.codeOf(callID)
		return code != ""
	})
	return code
}

// metric returns the value of the counter or gauge with the given labels
// (besides module), or 0.
func (n *node) metric(name string, labels ...string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
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
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// eventually waits for cond, which the module's worker makes true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// stores runs test on a memory store and on a real Redis.
func stores(t *testing.T, test func(t *testing.T, newStore func() modules.Store)) {
	t.Run("memory", func(t *testing.T) {
		store := kv.NewMemory()
		test(t, func() modules.Store { return store })
	})
	t.Run("redis", func(t *testing.T) {
		srv := redisserver.Start(t)
		test(t, func() modules.Store { return kv.NewRedis(redisClient(t, srv)) })
	})
}

// redisClient returns a client on srv that honours context deadlines, as the
// module's reads on the event path expect.
func redisClient(t *testing.T, srv *redisserver.Server) *redis.Client {
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// A call's events, as the switch would publish them.

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// citizen is a caller outside the directory, on a trunk.
func citizen(number string) modules.Caller {
	return modules.Caller{Number: number, Trunk: "pstn-napoli"}
}

type call struct {
	modules.Call
}

func newCall(id string, caller modules.Caller, agency string, at time.Duration) call {
	return call{modules.Call{CallID: id, Time: t0.Add(at), Caller: caller, Callee: "public", DestAgency: agency, Node: "n1"}}
}

func (c call) at(d time.Duration) modules.Call {
	cc := c.Call
	cc.Time = t0.Add(d)
	return cc
}

func (c call) offered(public bool) modules.CallOffered {
	return modules.CallOffered{Call: c.Call, Public: public}
}

func (c call) answered(at time.Duration, user string) modules.CallAnswered {
	cc := c.at(at)
	cc.User = user
	return modules.CallAnswered{Call: cc, Wait: cc.Time.Sub(c.Time)}
}

func (c call) transferred(at time.Duration, by, to, newID string) modules.CallTransferred {
	return modules.CallTransferred{
		Call: c.at(at), Type: modules.TransferBlind, FromAgency: c.DestAgency, ToAgency: to, By: by,
		Target: to, OriginalCallID: c.CallID, NewCallID: newID,
	}
}

func (c call) ended(at, talk time.Duration) modules.CallEnded {
	d := modules.DispositionAnswered
	if talk == 0 {
		d = modules.DispositionAbandoned
	}
	return modules.CallEnded{Call: c.at(at), Disposition: d, Code: 200, Talk: talk, HangupBy: modules.SideCaller}
}

// transferFlow is a citizen's call to agency A, answered, blind-transferred
// to agency B, answered there, and ended. Times are offsets from start.
func transferFlow(id string, caller modules.Caller, a, b string, start time.Duration) []modules.Event {
	first := newCall(id, caller, a, start)
	second := newCall(id+"-xfer", caller, b, start+61*time.Second)
	return []modules.Event{
		first.offered(true),
		first.answered(start+5*time.Second, a+".operator"),
		first.transferred(start+60*time.Second, a+".operator", b, second.CallID),
		second.offered(true),
		first.ended(start+62*time.Second, 57*time.Second),
		second.answered(start+70*time.Second, b+".operator"),
		second.ended(start+200*time.Second, 130*time.Second),
	}
}
