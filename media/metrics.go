package media

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus metrics. Per-packet counts live in
// per-socket atomics summed by collector at scrape time, so the hot path
// never touches a metric.
type metrics struct {
	reg               prometheus.Registerer
	registered        []prometheus.Collector
	jitter, loss, mos prometheus.Histogram
	timeouts          prometheus.Counter
}

func newMetrics(r *Relay, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		jitter: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "centralino_media_jitter_seconds",
			Help:    "Interarrival jitter per call leg at release (RFC 3550).",
			Buckets: []float64{.001, .002, .005, .01, .02, .03, .05, .1, .2},
		}),
		loss: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "centralino_media_loss_ratio",
			Help:    "RTP packet loss ratio per call leg at release.",
			Buckets: []float64{.0001, .001, .005, .01, .02, .05, .1, .2, .5},
		}),
		mos: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "centralino_media_mos",
			Help:    "E-model (ITU-T G.107) MOS estimate per call at release.",
			Buckets: []float64{1, 1.5, 2, 2.5, 3, 3.5, 3.8, 4, 4.2, 4.4},
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "centralino_media_timeouts_total",
			Help: "Calls released because no media flowed.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.jitter, m.loss, m.mos, m.timeouts, collector{r}} {
		if err := reg.Register(c); err != nil {
			m.unregister()
			return nil, err
		}
		m.registered = append(m.registered, c)
	}
	return m, nil
}

// observe records a released call.
func (m *metrics) observe(q Quality) {
	for _, l := range []LegQuality{q.A, q.B} {
		if l.Packets > 0 {
			m.jitter.Observe(l.Jitter.Seconds())
			m.loss.Observe(l.LossRatio)
		}
	}
	if q.MOS > 0 {
		m.mos.Observe(q.MOS)
	}
}

func (m *metrics) unregister() {
	for _, c := range m.registered {
		m.reg.Unregister(c)
	}
	m.registered = nil
}

var (
	packetsDesc = prometheus.NewDesc("centralino_media_packets_total",
		"RTP/RTCP packets relayed.", nil, nil)
	bytesDesc = prometheus.NewDesc("centralino_media_bytes_total",
		"RTP/RTCP bytes relayed (UDP payload as received).", nil, nil)
	droppedDesc = prometheus.NewDesc("centralino_media_dropped_packets_total",
		"Packets not relayed: foreign source, failed SRTP authentication or replay, malformed, not negotiated.", nil, nil)
	sessionsDesc = prometheus.NewDesc("centralino_media_sessions",
		"Calls with relay state.", nil, nil)
	portsDesc = prometheus.NewDesc("centralino_media_ports_allocated",
		"Relay UDP ports bound.", nil, nil)
	kernelStreamsDesc = prometheus.NewDesc("centralino_media_kernel_streams",
		"RTP directions forwarded in the kernel (eBPF).", nil, nil)
	kernelPacketsDesc = prometheus.NewDesc("centralino_media_kernel_packets_total",
		"RTP packets forwarded in the kernel (eBPF), included in centralino_media_packets_total.", nil, nil)
)

// collector reads the relay's live counters at scrape time.
type collector struct{ r *Relay }

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, droppedDesc, sessionsDesc, portsDesc, kernelStreamsDesc, kernelPacketsDesc} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	r.mu.Lock()
	// A released call moves into retired under r.mu with its final counts,
	// so the sum never goes back.
	t := r.retired
	for _, call := range r.calls {
		n := call.counts()
		t.packets += n.packets
		t.bytes += n.bytes
		t.dropped += n.dropped
	}
	sessions := len(r.calls)
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(t.packets))
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(t.bytes))
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(t.dropped))
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(sessions))
	ch <- prometheus.MustNewConstMetric(portsDesc, prometheus.GaugeValue, float64(r.sockets.Load()))
	if k := r.kern; k != nil {
		ch <- prometheus.MustNewConstMetric(kernelStreamsDesc, prometheus.GaugeValue, float64(k.offloaded.Load()))
		ch <- prometheus.MustNewConstMetric(kernelPacketsDesc, prometheus.CounterValue, float64(k.packets()))
	}
}
