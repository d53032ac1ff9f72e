package modules_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/lineamica/centralino/test/syncbuf"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/prometheus/client_golang/prometheus"
)

// newBus returns a bus whose metrics are in the returned registry and whose
// log goes to the returned buffer. The bus is closed when the test ends.
func newBus(t testing.TB) (*modules.Bus, *prometheus.Registry, *syncBuffer) {
	reg := prometheus.NewRegistry()
	log := new(syncBuffer)
	b := modules.NewBus(modules.BusOptions{Logger: slogTo(log), Registerer: reg})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return b, reg, log
}

// recorder collects the events a subscriber receives.
type recorder struct {
	mu     sync.Mutex
	events []modules.Event
}

func (r *recorder) handle(_ context.Context, ev modules.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) kinds() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var kinds []string
	for _, ev := range r.events {
		kinds = append(kinds, ev.Kind())
	}
	return kinds
}

func (r *recorder) codes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var codes []int
	for _, ev := range r.events {
		codes = append(codes, ev.(modules.CallRinging).Code)
	}
	return codes
}

func ringing(code int) modules.CallRinging {
	return modules.CallRinging{Call: modules.Call{CallID: "c1"}, Code: code}
}

func closeBus(t testing.TB, b *modules.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBusDeliversInOrder(t *testing.T) {
	b, reg, _ := newBus(t)
	var r1, r2 recorder
	must(t, b.Subscribe("one", 0, nil, r1.handle))
	must(t, b.Subscribe("two", 500, nil, r2.handle))
	var want []int
	for i := range 500 {
		b.Publish(ringing(i))
		want = append(want, i)
	}
	closeBus(t, b)
	for name, r := range map[string]*recorder{"one": &r1, "two": &r2} {
		if got := r.codes(); !slices.Equal(got, want) {
			t.Errorf("%s received %d events out of order or incomplete: %v", name, len(got), got)
		}
	}
	if got := metric(t, reg, "centralino_module_events_total", "module", "two", "kind", modules.KindCallRinging); got != 500 {
		t.Errorf("events_total{two,call.ringing} = %v, want 500", got)
	}
}

func TestBusRecoversPanics(t *testing.T) {
	b, reg, log := newBus(t)
	var good recorder
	must(t, b.Subscribe("bad", 0, nil, func(context.Context, modules.Event) { panic("deliberate") }))
	must(t, b.Subscribe("good", 0, nil, good.handle))
	for i := range 10 {
		b.Publish(ringing(i))
	}
	closeBus(t, b)
	if got := len(good.codes()); got != 10 {
		t.Errorf("good received %d events, want 10", got)
	}
	if got := metric(t, reg, "centralino_module_panics_total", "module", "bad"); got != 10 {
		t.Errorf("panics_total{bad} = %v, want 10", got)
	}
	if got := metric(t, reg, "centralino_module_panics_total", "module", "good"); got != 0 {
		t.Errorf("panics_total{good} = %v, want 0", got)
	}
	if !strings.Contains(log.String(), "module=bad") || !strings.Contains(log.String(), "deliberate") {
		t.Errorf("panic not logged with its module:\n%s", log)
	}
}

func TestBusDropsForStuckSubscriber(t *testing.T) {
	b, reg, _ := newBus(t)
	started, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	var once sync.Once
	must(t, b.Subscribe("stuck", 2, nil, func(context.Context, modules.Event) {
		once.Do(func() { close(started) })
		<-release
	}))
	var other recorder
	must(t, b.Subscribe("other", 0, nil, other.handle))

	b.Publish(ringing(0))
	<-started // the handler holds event 0 and will not return

	published := make(chan struct{})
	go func() {
		for i := 1; i <= 10; i++ {
			b.Publish(ringing(i))
		}
		close(published)
	}()
	select {
	case <-published:
	case <-time.After(5 * time.Second):
		t.Fatal("Publish blocked on a stuck subscriber")
	}
	if got := metric(t, reg, "centralino_module_events_dropped_total", "module", "stuck"); got != 8 {
		t.Errorf("dropped_total{stuck} = %v, want 8 (10 published, 2 queued)", got)
	}
	if got := metric(t, reg, "centralino_module_queue_length", "module", "stuck"); got != 2 {
		t.Errorf("queue_length{stuck} = %v, want 2", got)
	}
	if got := metric(t, reg, "centralino_module_events_dropped_total", "module", "other"); got != 0 {
		t.Errorf("dropped_total{other} = %v, want 0", got)
	}
}

func TestBusKindsFilter(t *testing.T) {
	b, _, _ := newBus(t)
	var ended, all recorder
	must(t, b.Subscribe("ended", 0, []string{modules.KindCallEnded}, ended.handle))
	must(t, b.Subscribe("all", 0, nil, all.handle))
	b.Publish(modules.CallOffered{})
	b.Publish(modules.CallEnded{})
	b.Publish(modules.Registered{})
	closeBus(t, b)
	if got, want := ended.kinds(), []string{modules.KindCallEnded}; !slices.Equal(got, want) {
		t.Errorf("filtered subscriber got %q, want %q", got, want)
	}
	if got := len(all.kinds()); got != 3 {
		t.Errorf("unfiltered subscriber got %d events, want 3", got)
	}
}

func TestBusCloseDrains(t *testing.T) {
	b, _, _ := newBus(t)
	var r recorder
	must(t, b.Subscribe("slow", 100, nil, func(ctx context.Context, ev modules.Event) {
		time.Sleep(time.Millisecond)
		r.handle(ctx, ev)
	}))
	for i := range 50 {
		b.Publish(ringing(i))
	}
	closeBus(t, b)
	if got := len(r.codes()); got != 50 {
		t.Errorf("handled %d events before Close returned, want 50", got)
	}

	b.Publish(ringing(50)) // after Close: ignored, not queued nor dropped
	if err := b.Subscribe("late", 0, nil, r.handle); !errors.Is(err, modules.ErrBusClosed) {
		t.Errorf("Subscribe after Close: err = %v, want ErrBusClosed", err)
	}
}

func TestBusCloseGivesUp(t *testing.T) {
	b, _, _ := newBus(t)
	started, cancelled := make(chan struct{}), make(chan struct{})
	must(t, b.Subscribe("stuck", 0, nil, func(ctx context.Context, _ modules.Event) {
		close(started)
		<-ctx.Done()
		close(cancelled)
	}))
	b.Publish(ringing(0))
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: err = %v, want DeadlineExceeded", err)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the handler's context was not cancelled when Close gave up")
	}
}

func TestBusSubscribeErrors(t *testing.T) {
	b, _, _ := newBus(t)
	var r recorder
	must(t, b.Subscribe("x", 0, nil, r.handle))
	if err := b.Subscribe("x", 0, nil, r.handle); err == nil {
		t.Error("a second subscriber named x was accepted")
	}
	if err := b.Subscribe("y", 0, nil, nil); err == nil {
		t.Error("a nil handler was accepted")
	}
}

func BenchmarkPublish(b *testing.B) {
	for _, n := range []int{0, 5} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			bus, reg, _ := newBus(b)
			for i := range n {
				must(b, bus.Subscribe(fmt.Sprint("sub", i), 0, nil, func(context.Context, modules.Event) {}))
			}
			// Converting a struct to Event allocates: that is the publisher's
			// cost, once per event whatever the number of subscribers.
			var ev modules.Event = modules.CallEnded{Call: modules.Call{CallID: "c1"}}
			b.ReportAllocs()
			for b.Loop() {
				bus.Publish(ev)
			}
			var dropped float64
			for i := range n {
				dropped += metric(b, reg, "centralino_module_events_dropped_total", "module", fmt.Sprint("sub", i))
			}
			b.ReportMetric(dropped/float64(b.N), "drops/op")
		})
	}
}

// metric returns the value of the counter or gauge name with the given label
// pairs, or 0 if there is none.
func metric(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

type syncBuffer = syncbuf.Buffer
