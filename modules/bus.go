package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultQueueLen is the queue length of a subscriber that asks for none.
const DefaultQueueLen = 1024

// ErrBusClosed is returned by Subscribe after Close.
var ErrBusClosed = errors.New("modules: bus closed")

// BusOptions configure a Bus. The zero value is usable.
type BusOptions struct {
	Logger     *slog.Logger          // for recovered panics; nil means slog.Default()
	Registerer prometheus.Registerer // if set, the Bus registers its metrics there
}

// Bus carries events from the switch to the modules. Publish never blocks:
// each subscriber has its own bounded queue and worker, and an event that
// does not fit in a queue is dropped for that subscriber and counted.
//
// Bus is a prometheus.Collector.
type Bus struct {
	logger *slog.Logger

	// live is what Publish reads: a copy-on-write slice, so publishing takes
	// no lock. Close empties it.
	live atomic.Pointer[[]*subscriber]

	mu      sync.Mutex    // serializes Subscribe and Close
	all     []*subscriber // every subscriber ever, for the queue gauges
	closing chan struct{} // closed by Close: workers drain and exit
	workers sync.WaitGroup

	// ctx is given to handlers; cancelled when Close gives up draining.
	ctx    context.Context
	cancel context.CancelFunc

	delivered *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	panics    *prometheus.CounterVec
	queueLen  *prometheus.Desc
	queueCap  *prometheus.Desc
}

type subscriber struct {
	name    string
	kinds   map[string]bool // nil: every kind
	queue   chan Event
	handler func(context.Context, Event)
	dropped prometheus.Counter
	panics  prometheus.Counter
}

// NewBus returns a Bus with no subscribers.
func NewBus(opts BusOptions) *Bus {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		logger:  opts.Logger,
		closing: make(chan struct{}),
		ctx:     ctx,
		cancel:  cancel,
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_module_events_total",
			Help: "Events handed to a module's handler.",
		}, []string{"module", "kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_module_events_dropped_total",
			Help: "Events dropped because a module's queue was full.",
		}, []string{"module"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_module_panics_total",
			Help: "Panics recovered in a module's event handler.",
		}, []string{"module"}),
		queueLen: prometheus.NewDesc("centralino_module_queue_length",
			"Events waiting in a module's queue.", []string{"module"}, nil),
		queueCap: prometheus.NewDesc("centralino_module_queue_capacity",
			"Length of a module's queue.", []string{"module"}, nil),
	}
	if b.logger == nil {
		b.logger = slog.Default()
	}
	b.live.Store(&[]*subscriber{})
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(b)
	}
	return b
}

// Publish hands ev to every subscriber that wants its kind. It never blocks
// and allocates nothing.
func (b *Bus) Publish(ev Event) {
	for _, s := range *b.live.Load() {
		if s.kinds != nil && !s.kinds[ev.Kind()] {
			continue
		}
		select {
		case s.queue <- ev:
		default:
			s.dropped.Inc()
		}
	}
}

// Subscribe starts a worker that calls handler for each event of the given
// kinds (nil: all kinds), in publishing order, one at a time. Up to queueLen
// events wait for the handler (DefaultQueueLen if queueLen <= 0); more are
// dropped. A panic in handler is recovered, logged and counted. The name
// labels the subscriber's metrics and must be unique on the bus.
func (b *Bus) Subscribe(name string, queueLen int, kinds []string, handler func(context.Context, Event)) error {
	if handler == nil {
		return fmt.Errorf("modules: subscribe %q: nil handler", name)
	}
	if queueLen <= 0 {
		queueLen = DefaultQueueLen
	}
	s := &subscriber{
		name:    name,
		queue:   make(chan Event, queueLen),
		handler: handler,
		dropped: b.dropped.WithLabelValues(name),
		panics:  b.panics.WithLabelValues(name),
	}
	if kinds != nil {
		s.kinds = make(map[string]bool, len(kinds))
		for _, k := range kinds {
			s.kinds[k] = true
		}
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.closing:
		return ErrBusClosed
	default:
	}
	for _, o := range b.all {
		if o.name == name {
			return fmt.Errorf("modules: subscribe %q: name already subscribed", name)
		}
	}
	b.all = append(b.all, s)
	live := append([]*subscriber(nil), *b.live.Load()...)
	live = append(live, s)
	b.live.Store(&live)
	b.workers.Add(1)
	go b.run(s)
	return nil
}

func (b *Bus) run(s *subscriber) {
	defer b.workers.Done()
	for {
		select {
		case ev := <-s.queue:
			b.deliver(s, ev)
		case <-b.closing:
			for b.ctx.Err() == nil {
				select {
				case ev := <-s.queue:
					b.deliver(s, ev)
				default:
					return
				}
			}
			return
		}
	}
}

func (b *Bus) deliver(s *subscriber, ev Event) {
	defer func() {
		if r := recover(); r != nil {
			s.panics.Inc()
			b.logger.Error("module handler panicked", "module", s.name, "kind", ev.Kind(),
				"panic", r, "stack", string(debug.Stack()))
		}
	}()
	b.delivered.WithLabelValues(s.name, ev.Kind()).Inc()
	s.handler(b.ctx, ev)
}

// Close stops accepting events and waits for the workers to drain their
// queues. If ctx ends first, Close cancels the handlers' context, abandons
// what is still queued and returns ctx's error. Events published while Close
// runs may be lost. Calling Close again waits again.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	select {
	case <-b.closing:
	default:
		b.live.Store(&[]*subscriber{})
		close(b.closing)
	}
	b.mu.Unlock()

	done := make(chan struct{})
	go func() {
		b.workers.Wait()
		close(done)
	}()
	select {
	case <-done:
		b.cancel()
		return nil
	case <-ctx.Done():
		b.cancel()
		return fmt.Errorf("modules: bus close: %w", ctx.Err())
	}
}

// Describe implements prometheus.Collector.
func (b *Bus) Describe(ch chan<- *prometheus.Desc) {
	b.delivered.Describe(ch)
	b.dropped.Describe(ch)
	b.panics.Describe(ch)
	ch <- b.queueLen
	ch <- b.queueCap
}

// Collect implements prometheus.Collector.
func (b *Bus) Collect(ch chan<- prometheus.Metric) {
	b.delivered.Collect(ch)
	b.dropped.Collect(ch)
	b.panics.Collect(ch)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.all {
		ch <- prometheus.MustNewConstMetric(b.queueLen, prometheus.GaugeValue, float64(len(s.queue)), s.name)
		ch <- prometheus.MustNewConstMetric(b.queueCap, prometheus.GaugeValue, float64(cap(s.queue)), s.name)
	}
}
