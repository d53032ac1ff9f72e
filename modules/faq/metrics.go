package faq

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	searches       prometheus.Counter
	searchDuration prometheus.Histogram
	suggestions    prometheus.Counter
	storeErrors    prometheus.Counter
}

// newMetrics registers the module's metrics; entries and streams read the
// index's size and the open streams.
func newMetrics(reg prometheus.Registerer, entries, streams func() int) (*metrics, error) {
	m := &metrics{
		searches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "centralino_faq_searches_total",
			Help: "Searches of the FAQ through the API and the web page.",
		}),
		searchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "centralino_faq_search_duration_seconds",
			Help:    "Time to answer a search of the FAQ, in the node's index.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5},
		}),
		suggestions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "centralino_faq_suggestions_total",
			Help: "Sets of suggestions computed for an answered call (again when its ticket changes).",
		}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "centralino_faq_store_errors_total",
			Help: "Failed reloads of the node's index from the FAQ store.",
		}),
	}
	gauge := func(name, help string, f func() int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	for _, c := range []prometheus.Collector{
		m.searches, m.searchDuration, m.suggestions, m.storeErrors,
		gauge("centralino_faq_entries", "Entries in the node's FAQ index.", entries),
		gauge("centralino_faq_suggestion_streams", "Suggestion streams (server-sent events) open on the node.", streams),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
