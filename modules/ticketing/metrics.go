package ticketing

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	opened, linked, transferred, closed *prometheus.CounterVec // by agency
	lost                                *prometheus.CounterVec // by reason
	hops                                prometheus.Histogram
	storeErrors                         prometheus.Counter
}

// newMetrics registers the module's metrics; outbox reads the outbox length.
func newMetrics(reg prometheus.Registerer, outbox func() int) (*metrics, error) {
	byAgency := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"agency"})
	}
	m := &metrics{
		opened:      byAgency("centralino_tickets_opened_total", "Tickets opened, by the agency the call reached."),
		linked:      byAgency("centralino_tickets_linked_total", "Repeat calls linked to an open ticket, by the agency they reached."),
		transferred: byAgency("centralino_tickets_transferred_total", "Transfers of a ticket's call, by the agency transferring."),
		closed:      byAgency("centralino_tickets_closed_total", "Tickets closed, by the agency closing."),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_tickets_lost_total",
			Help: "Tickets not opened (no_serial: the store was unreachable too long) or changes not saved (outbox_full).",
		}, []string{"reason"}),
		hops: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "centralino_ticket_hops",
			Help:    "Hops (agencies reached by a call) of the tickets closed.",
			Buckets: []float64{1, 2, 3, 4, 5, 6, 8, 10},
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "centralino_ticket_store_errors_total",
			Help: "Failed operations on the ticket store (reads, writes and probes while it is down).",
		}),
	}
	outboxLen := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "centralino_ticket_outbox_length",
		Help: "Tickets waiting to be written to the store.",
	}, func() float64 { return float64(outbox()) })
	for _, c := range []prometheus.Collector{m.opened, m.linked, m.transferred, m.closed, m.lost, m.hops, m.storeErrors, outboxLen} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
