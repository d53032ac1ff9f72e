package pec

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	sent          prometheus.Counter
	failures      *prometheus.CounterVec // by reason
	receipts      *prometheus.CounterVec // by type
	unmatched     prometheus.Counter
	received      prometheus.Counter
	quarantined   *prometheus.CounterVec // by reason
	mailboxErrors prometheus.Counter
}

// newMetrics registers the module's metrics; outbox reads the outbox length.
func newMetrics(reg prometheus.Registerer, outbox func() int) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		sent: counter("centralino_pec_messages_sent_total", "Certified messages the provider accepted for sending."),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_pec_send_failures_total",
			Help: "Messages not sent: unavailable (provider unreachable or a temporary error; retried), rejected (refused by the provider; kept, not retried), refused (not composed: size limit, bad address), store (lost: the store was unreachable).",
		}, []string{"reason"}),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_pec_receipts_total",
			Help: "Receipts with a verified signature, by type (accettazione, avvenuta-consegna...).",
		}, []string{"type"}),
		unmatched: counter("centralino_pec_receipts_unmatched_total", "Verified receipts for messages this module did not send."),
		received:  counter("centralino_pec_messages_received_total", "Certified messages (posta-certificata) from citizens, verified and passed to ticketing."),
		quarantined: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_pec_quarantined_total",
			Help: "Mail of the mailbox not trusted or not readable, by reason (malformed, not_pec, anomaly, unsigned, bad_signature, inconsistent, too_large).",
		}, []string{"reason"}),
		mailboxErrors: counter("centralino_pec_mailbox_errors_total", "Visits to the mailbox that failed (connection, login, store)."),
	}
	length := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "centralino_pec_outbox_length",
		Help: "Messages waiting to be sent.",
	}, func() float64 { return float64(outbox()) })
	for _, c := range []prometheus.Collector{m.sent, m.failures, m.receipts, m.unmatched, m.received, m.quarantined, m.mailboxErrors, length} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
