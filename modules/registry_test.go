package modules_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/prometheus/client_golang/prometheus"
)

func init() {
	modules.Register(modules.Info{Name: "test-echo", New: func() modules.Module { return new(echo) }})
	modules.Register(modules.Info{Name: "test-fail", New: func() modules.Module { return failing{} }})
	modules.Register(modules.Info{Name: "test-bad-route", New: func() modules.Module { return badRoute{} }})
	for _, name := range []string{"test-stop-a", "test-stop-b"} {
		modules.Register(modules.Info{Name: name, New: func() modules.Module { return new(stopper) }})
	}
}

// lastEcho is the echo module provisioned last, for the tests to inspect.
var lastEcho atomic.Pointer[echo]

// echo records its events, serves its options and key space over HTTP, and
// counts requests.
type echo struct {
	opts struct {
		Greeting  string        `yaml:"greeting"`
		Retention time.Duration `yaml:"retention"`
		Kinds     []string      `yaml:"kinds"`
	}
	events recorder
}

func (e *echo) Provision(h *modules.Host) error {
	e.opts.Greeting = "hello"
	if err := h.DecodeOptions(&e.opts); err != nil {
		return err
	}
	requests := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_echo_requests_total"})
	if err := h.Metrics().Register(requests); err != nil {
		return err
	}
	store := h.KV()
	h.Handle("GET /items/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Inc()
		fmt.Fprintf(w, "%s %s", e.opts.Greeting, r.PathValue("id"))
	}))
	h.Handle("PUT /items/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := store.Put(r.Context(), r.PathValue("id"), body, e.opts.Retention); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	}))
	h.Logger().Info("provisioned")
	lastEcho.Store(e)
	return h.Subscribe(0, e.opts.Kinds, e.events.handle)
}

type failing struct{}

func (failing) Provision(*modules.Host) error { return errors.New("boom") }

// stops logs the names of the stoppers in the order they were stopped.
var stops struct {
	sync.Mutex
	names []string
}

type stopper struct{ name string }

func (s *stopper) Provision(h *modules.Host) error {
	s.name = h.Name()
	return nil
}

func (s *stopper) Stop(context.Context) error {
	stops.Lock()
	defer stops.Unlock()
	stops.names = append(stops.names, s.name)
	if s.name == "test-stop-a" {
		return errors.New("cannot")
	}
	return nil
}

// runs counts the stoppers' Run calls.
var runs atomic.Int32

func (s *stopper) Run() { runs.Add(1) }

func stopped() []string {
	stops.Lock()
	defer stops.Unlock()
	names := stops.names
	stops.names = nil
	return names
}

type env struct {
	deps       modules.Deps
	metrics    *prometheus.Registry // the modules'
	busMetrics *prometheus.Registry
	log        *syncBuffer
	store      *kv.Memory
	server     *httptest.Server
}

func newEnv(t *testing.T) *env {
	bus, busMetrics, log := newBus(t)
	e := &env{metrics: prometheus.NewRegistry(), busMetrics: busMetrics, log: log, store: kv.NewMemory()}
	mux := http.NewServeMux()
	e.server = httptest.NewServer(mux)
	t.Cleanup(e.server.Close)
	e.deps = modules.Deps{Bus: bus, Mux: mux, Store: e.store, Logger: slogTo(log), Metrics: e.metrics}
	return e
}

func (e *env) get(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.server.URL+path, strings.NewReader(body))
	must(t, err)
	resp, err := e.server.Client().Do(req)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, string(b)
}

func TestHost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	running, err := modules.Start(ctx, []modules.Config{{Name: "test-echo", Options: map[string]any{
		"greeting":  "ciao",
		"retention": "1h",
		"kinds":     []string{modules.KindCallEnded},
	}}}, e.deps)
	must(t, err)
	defer running.Stop(ctx)
	m := lastEcho.Load()
	if m.opts.Greeting != "ciao" || m.opts.Retention != time.Hour {
		t.Errorf("options decoded as %+v", m.opts)
	}

	t.Run("Routes", func(t *testing.T) {
		for _, c := range []struct {
			method, path, body string
			code               int
			want               string
		}{
			{"GET", "/api/test-echo/items/42", "", 200, "ciao 42"},
			{"PUT", "/api/test-echo/items/42", "v", 200, ""},
			{"DELETE", "/api/test-echo/items/42", "", 405, ""},
			{"GET", "/api/test-echo/other", "", 404, ""},
			{"GET", "/items/42", "", 404, ""},
		} {
			code, body := e.get(t, c.method, c.path, c.body)
			if code != c.code || c.want != "" && body != c.want {
				t.Errorf("%s %s = %d %q, want %d %q", c.method, c.path, code, body, c.code, c.want)
			}
		}
		val, err := e.store.KV("test-echo").Get(ctx, "42")
		if err != nil || string(val) != "v" {
			t.Errorf("PUT did not reach the module's key space: %q, %v", val, err)
		}
	})

	t.Run("Metrics", func(t *testing.T) {
		if got := metric(t, e.metrics, "test_echo_requests_total", "module", "test-echo"); got != 1 {
			t.Errorf("test_echo_requests_total{module=test-echo} = %v, want 1", got)
		}
	})

	t.Run("Logger", func(t *testing.T) {
		if !strings.Contains(e.log.String(), "msg=provisioned module=test-echo") {
			t.Errorf("log lacks the module attribute:\n%s", e.log)
		}
	})

	t.Run("Events", func(t *testing.T) {
		e.deps.Bus.Publish(modules.CallOffered{})
		e.deps.Bus.Publish(modules.CallEnded{})
		closeBus(t, e.deps.Bus)
		if got, want := m.events.kinds(), []string{modules.KindCallEnded}; !slices.Equal(got, want) {
			t.Errorf("module received %q, want %q", got, want)
		}
	})
}

func TestOptionsKeepDefaults(t *testing.T) {
	e := newEnv(t)
	running, err := modules.Start(context.Background(), []modules.Config{{Name: "test-echo", Options: map[string]any{"retention": "2h"}}}, e.deps)
	must(t, err)
	defer running.Stop(context.Background())
	if m := lastEcho.Load(); m.opts.Greeting != "hello" || m.opts.Retention != 2*time.Hour {
		t.Errorf("options decoded as %+v, want the default greeting kept", m.opts)
	}
}

func TestHostBadPattern(t *testing.T) {
	e := newEnv(t)
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "test-bad-route") {
			t.Errorf("Handle with a pattern without a path: recovered %v, want a panic naming the module", r)
		}
	}()
	modules.Start(context.Background(), []modules.Config{{Name: "test-bad-route"}}, e.deps)
}

type badRoute struct{}

func (badRoute) Provision(h *modules.Host) error {
	h.Handle("GET items", http.NotFoundHandler())
	return nil
}

func TestStartErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		enabled []modules.Config
		want    string
	}{
		{"unknown", []modules.Config{{Name: "test-echo"}, {Name: "tiketing"}}, `modules: unknown module "tiketing" (registered: `},
		{"twice", []modules.Config{{Name: "test-echo"}, {Name: "test-echo"}}, `modules: test-echo: enabled twice`},
		{"option type", []modules.Config{{Name: "test-echo", Options: map[string]any{"retention": "forever"}}},
			"modules: test-echo: option \"retention\": cannot unmarshal !!str `forever` into time.Duration"},
		{"unknown option", []modules.Config{{Name: "test-echo", Options: map[string]any{"greting": "ciao"}}},
			`modules: test-echo: option "greting": unknown option`},
		{"provision", []modules.Config{{Name: "test-echo"}, {Name: "test-fail"}}, `modules: test-fail: boom`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			_, err := modules.Start(context.Background(), c.enabled, e.deps)
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Fatalf("Start: err = %v, want %s...", err, c.want)
			}
			// Nothing of a failed Start is reachable.
			if code, _ := e.get(t, "GET", "/api/test-echo/items/1", ""); code != 404 {
				t.Errorf("GET /api/test-echo/items/1 = %d after a failed Start, want 404", code)
			}
			if m := metric(t, e.busMetrics, "centralino_module_queue_capacity", "module", "test-echo"); m != 0 {
				t.Error("test-echo subscribed after a failed Start")
			}
		})
	}

	t.Run("deps", func(t *testing.T) {
		if _, err := modules.Start(context.Background(), nil, modules.Deps{}); err == nil {
			t.Error("Start without Deps succeeded")
		}
	})
}

func TestStartFailureStopsProvisioned(t *testing.T) {
	e := newEnv(t)
	_, err := modules.Start(context.Background(), []modules.Config{
		{Name: "test-stop-b"}, {Name: "test-fail"},
	}, e.deps)
	if err == nil {
		t.Fatal("Start succeeded")
	}
	if got, want := stopped(), []string{"test-stop-b"}; !slices.Equal(got, want) {
		t.Errorf("stopped %q, want %q", got, want)
	}
}

func TestStop(t *testing.T) {
	e := newEnv(t)
	running, err := modules.Start(context.Background(), []modules.Config{
		{Name: "test-stop-a"}, {Name: "test-echo"}, {Name: "test-stop-b"},
	}, e.deps)
	must(t, err)
	err = running.Stop(context.Background())
	if err == nil || err.Error() != "modules: test-stop-a: stop: cannot" {
		t.Errorf("Stop: err = %v, want the error of test-stop-a", err)
	}
	if got, want := stopped(), []string{"test-stop-b", "test-stop-a"}; !slices.Equal(got, want) {
		t.Errorf("stopped %q, want %q (reverse order)", got, want)
	}
}

func TestRegister(t *testing.T) {
	if got := modules.Available(); !slices.Contains(got, "test-echo") || !slices.IsSorted(got) {
		t.Errorf("Available() = %q", got)
	}
	newEcho := func() modules.Module { return new(echo) }
	for _, info := range []modules.Info{
		{Name: "", New: newEcho},
		{Name: "Ticketing", New: newEcho},
		{Name: "a:b", New: newEcho},
		{Name: "9lives", New: newEcho},
		{Name: "test-echo", New: newEcho},
		{Name: "test-nil"},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%q) did not panic", info.Name)
				}
			}()
			modules.Register(info)
		}()
	}
}

// Check provisions and stops, never runs, subscribes or routes; it names
// a bad option as Start would.
func TestCheck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	runs.Store(0)
	stopped()
	if err := modules.Check(ctx, []modules.Config{{Name: "test-echo"}, {Name: "test-stop-b"}}, e.deps); err != nil {
		t.Fatal(err)
	}
	if got := stopped(); !slices.Equal(got, []string{"test-stop-b"}) {
		t.Errorf("Check stopped %v, want test-stop-b", got)
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("Check ran %d modules", n)
	}
	if code, _ := e.get(t, "GET", "/api/test-echo/items/1", ""); code != http.StatusNotFound {
		t.Errorf("Check routed the module: %d", code)
	}
	err := modules.Check(ctx, []modules.Config{{Name: "test-echo", Options: map[string]any{"greting": "ciao"}}}, e.deps)
	if err == nil || err.Error() != `modules: test-echo: option "greting": unknown option` {
		t.Errorf("Check with a misspelt option: %v", err)
	}
	r, err := modules.Start(ctx, []modules.Config{{Name: "test-stop-b"}}, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("Start ran %d modules, want 1", n)
	}
	must(t, r.Stop(ctx))
}
