package faq

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/test/redisserver"
	"github.com/lineamica/centralino/test/syncbuf"
)

// node is a switch node as far as the module can tell: a bus, the module
// on it, and its routes served over real HTTP.
type node struct {
	t       *testing.T
	bus     *modules.Bus
	srv     *httptest.Server
	reg     *prometheus.Registry
	running *modules.Running
	logs    *syncbuf.Buffer
	stopped bool
}

// demoAgencies are the demo network's agencies, as the directory shows
// them to modules.
type demoAgencies struct{}

func (demoAgencies) Agency(code string) (modules.Agency, bool) {
	for _, a := range (demoAgencies{}).List() {
		if a.Code == code {
			return a, true
		}
	}
	return modules.Agency{}, false
}

func (demoAgencies) List() []modules.Agency {
	var out []modules.Agency
	for _, a := range configs.Demo().Network.Agencies {
		out = append(out, modules.Agency{Code: a.Code, Name: a.Name, Region: a.Region, Sector: a.Sector})
	}
	return out
}

// fast are options that make a test's nodes see each other's changes soon.
var fast = map[string]any{"refresh_interval": "100ms"}

func startNode(t *testing.T, store modules.Store, options map[string]any) *node {
	t.Helper()
	n := &node{t: t, bus: modules.NewBus(modules.BusOptions{}), reg: prometheus.NewRegistry(), logs: new(syncbuf.Buffer)}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mux := http.NewServeMux()
	var err error
	n.running, err = modules.Start(context.Background(), []modules.Config{{Name: "faq", Options: options}},
		modules.Deps{Bus: n.bus, Mux: mux, Store: store, Metrics: n.reg, Logger: log, Agencies: demoAgencies{}})
	if err != nil {
		t.Fatal(err)
	}
	n.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("node log:\n%s", n.logs.String())
		}
	})
	return n
}

func (n *node) stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.bus.Close(ctx); err != nil {
		n.t.Error(err)
	}
	if err := n.running.Stop(ctx); err != nil {
		n.t.Error(err)
	}
	n.srv.Close()
}

// do sends a request as agency ("" for none) and decodes the JSON answer
// into out unless nil; it returns the status and the body.
func (n *node) do(method, path, agency, contentType, body string, out any) (int, string) {
	n.t.Helper()
	req, err := http.NewRequest(method, n.srv.URL+"/api/faq"+path, strings.NewReader(body))
	if err != nil {
		n.t.Fatal(err)
	}
	if agency != "" {
		req.Header.Set(AgencyHeader, agency)
		req.Header.Set(UserHeader, agency+".redazione")
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			n.t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// mustDo is do that fails the test unless the status is want.
func (n *node) mustDo(want int, method, path, agency, body string, out any) {
	n.t.Helper()
	if code, b := n.do(method, path, agency, "application/json", body, out); code != want {
		n.t.Fatalf("%s %s as %q: %d %s, want %d", method, path, agency, code, b, want)
	}
}

func (n *node) search(query string) results {
	n.t.Helper()
	var r results
	n.mustDo(http.StatusOK, "GET", "/search?"+query, "", "", &r)
	return r
}

func hitIDs(r results) []string { return ids(r.Results) }

// metric returns the value of a counter, a gauge, or a histogram's count.
func (n *node) metric(name string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
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

// eventually waits for cond, which the module's goroutines make true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
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
		test(t, func() modules.Store {
			opts, err := redis.ParseURL(srv.URL())
			if err != nil {
				t.Fatal(err)
			}
			opts.ContextTimeoutEnabled = true
			c := redis.NewClient(opts)
			t.Cleanup(func() { c.Close() })
			return kv.NewRedis(c)
		})
	})
}

// sse reads server-sent events.
type sse struct {
	t    *testing.T
	resp *http.Response
	r    *bufio.Reader
}

func (n *node) stream(query string) *sse {
	n.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n.t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", n.srv.URL+"/api/faq/suggestions/stream?"+query, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		n.t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	n.t.Cleanup(func() { resp.Body.Close() })
	return &sse{t: n.t, resp: resp, r: bufio.NewReader(resp.Body)}
}

// next returns the next event's name and data, failing after 10 seconds.
func (s *sse) next() (string, string) {
	s.t.Helper()
	type ev struct{ name, data string }
	got := make(chan ev, 1)
	go func() {
		var e ev
		for {
			line, err := s.r.ReadString('\n')
			if err != nil {
				got <- ev{"error", err.Error()}
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case line == "" && e.name != "":
				got <- e
				return
			case strings.HasPrefix(line, "event: "):
				e.name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				e.data += line[len("data: "):]
			}
		}
	}()
	select {
	case e := <-got:
		return e.name, e.data
	case <-time.After(10 * time.Second):
		s.t.Fatal("no event within 10s")
		return "", ""
	}
}
