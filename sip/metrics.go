package sip

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests     *prometheus.CounterVec
	responses    *prometheus.CounterVec
	malformed    *prometheus.CounterVec
	flooded      prometheus.Counter
	overloaded   *prometheus.CounterVec
	fullParses   prometheus.Counter
	authFailures *prometheus.CounterVec
	callAttempts *prometheus.CounterVec
	callOutcomes *prometheus.CounterVec
	transfers    *prometheus.CounterVec
	txSeconds    *prometheus.HistogramVec
	setupSeconds prometheus.Histogram
	queueWaiting *prometheus.GaugeVec
	queueWait    *prometheus.HistogramVec
	overflows    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Switch) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "requests_total",
			Help: "SIP requests received, by method.",
		}, []string{"method"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "responses_total",
			Help: "SIP responses sent or relayed by the switch, by request method and status code.",
		}, []string{"method", "code"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "malformed_messages_total",
			Help: "SIP messages dropped as unparsable or answered 400, by transport.",
		}, []string{"transport"}),
		flooded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "flood_dropped_total",
			Help: "Datagrams dropped and connections closed because their source passed its flood limit.",
		}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "overload_shed_total",
			Help: "Requests shed by an overloaded switch: REGISTERs over UDP answered 503 (queue_full) or dropped unread after waiting longer than T1 (stale), new INVITEs past proxy.max_call_rate answered 503 (call_rate).",
		}, []string{"reason"}),
		fullParses: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "register_full_parses_total",
			Help: "REGISTERs over UDP in a form the registrar's scan leaves to sipgo's whole parse, which costs it about twice as much (docs/architecture.md).",
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "auth_failures_total",
			Help: "Failed digest authentications, by reason.",
		}, []string{"reason"}),
		callAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Name: "call_attempts_total",
			Help: "New calls routed, by source and destination agency (IPA code).",
		}, []string{"source_agency", "destination_agency"}),
		callOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Name: "call_outcomes_total",
			Help: "Final outcome of new calls, by source and destination agency.",
		}, []string{"source_agency", "destination_agency", "outcome"}),
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Name: "transfers_total",
			Help: "Calls transferred (REFER followed by its INVITE), by type and source and destination agency.",
		}, []string{"type", "source_agency", "destination_agency"}),
		txSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "transaction_duration_seconds",
			Help:    "Time from a forwarded request to its final response, by method.",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 15, 30, 60},
		}, []string{"method"}),
		setupSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "centralino", Name: "call_setup_duration_seconds",
			Help:    "Time from an INVITE to its first ringing or answer relayed back.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	m.queueWaiting, m.queueWait, m.overflows = newQueueMetrics()
	for _, why := range []string{"queue_full", "stale", "call_rate"} {
		m.overloaded.WithLabelValues(why) // exported at 0, so that rate() sees the first shed
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.responses, m.malformed, m.flooded, m.overloaded, m.fullParses, m.authFailures, m.callAttempts,
			m.callOutcomes, m.transfers, m.txSeconds, m.setupSeconds, m.queueWaiting, m.queueWait, m.overflows, &stateCollector{s: s})
	}
	return m
}

var (
	activeCallsDesc = prometheus.NewDesc("centralino_active_calls", "Calls answered and not yet ended.", nil, nil)
	bindingsDesc    = prometheus.NewDesc("centralino_registrar_bindings", "Registered contacts held by this node, by transport.", []string{"transport"}, nil)
)

// stateCollector reads gauges at scrape time instead of tracking them on the
// hot path.
type stateCollector struct{ s *Switch }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- activeCallsDesc
	ch <- bindingsDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(activeCallsDesc, prometheus.GaugeValue, float64(c.s.active.Load()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	all, err := c.s.dir.AllBindings(ctx)
	if err != nil {
		return
	}
	counts := map[string]int{"udp": 0, "tcp": 0, "tls": 0, "ws": 0, "wss": 0}
	for _, b := range all {
		if b.Node == c.s.cfg.NodeID {
			counts[b.Transport]++
		}
	}
	for tp, n := range counts {
		ch <- prometheus.MustNewConstMetric(bindingsDesc, prometheus.GaugeValue, float64(n), tp)
	}
}

// countingHandler wraps the log handler given to sipgo: its "failed to parse"
// errors, which carry the whole offending message, become a counter and a
// short debug line, so a flood of garbage cannot flood the logs.
type countingHandler struct {
	next      slog.Handler
	malformed *prometheus.CounterVec
}

func (h *countingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.next.Enabled(ctx, l)
}

func (h *countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "failed to parse") || strings.HasPrefix(r.Message, "Server tx failed to handle request") {
		h.malformed.WithLabelValues("any").Inc()
		if !h.next.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		short := slog.NewRecord(r.Time, slog.LevelDebug, "malformed SIP message dropped", r.PC)
		return h.next.Handle(ctx, short)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *countingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &countingHandler{next: h.next.WithAttrs(attrs), malformed: h.malformed}
}

func (h *countingHandler) WithGroup(name string) slog.Handler {
	return &countingHandler{next: h.next.WithGroup(name), malformed: h.malformed}
}
