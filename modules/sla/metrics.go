package sla

import (
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	counters          map[field]*prometheus.CounterVec // by agency
	ratings           *prometheus.CounterVec           // by agency and rating
	wait, talk        *prometheus.HistogramVec         // by agency
	abandonWait       *prometheus.HistogramVec         // by agency
	storeErrors       prometheus.Counter
	thresholdSeconds  prometheus.Gauge
	shortAbandonLimit prometheus.Gauge
}

// ratingNames are the rating label's values.
var ratingNames = map[field]string{fRating1: "positive", fRating2: "sufficient", fRating3: "negative"}

// newMetrics registers the module's metrics. Answer waits are bucketed so
// that the service-level threshold is a bucket bound: the histogram then
// gives the service level exactly.
func newMetrics(reg prometheus.Registerer, threshold, shortAbandon time.Duration) (*metrics, error) {
	byAgency := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"agency"})
	}
	histogram := func(name, help string, buckets ...float64) *prometheus.HistogramVec {
		slices.Sort(buckets)
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: slices.Compact(buckets)}, []string{"agency"})
	}
	m := &metrics{
		counters: map[field]*prometheus.CounterVec{
			fOffered:        byAgency("centralino_sla_calls_offered_total", "Calls that reached the agency (its public number, an overflow or a transfer of a counted call)."),
			fAnswered:       byAgency("centralino_sla_calls_answered_total", "Offered calls answered by the agency."),
			fAnsweredInSL:   byAgency("centralino_sla_calls_answered_within_threshold_total", "Offered calls answered within the service-level threshold."),
			fAbandoned:      byAgency("centralino_sla_calls_abandoned_total", "Offered calls the caller hung up on before an answer, after the short-abandon threshold."),
			fShortAbandoned: byAgency("centralino_sla_calls_short_abandoned_total", "Offered calls the caller hung up on within the short-abandon threshold."),
			fUnanswered:     byAgency("centralino_sla_calls_unanswered_total", "Offered calls that ended unanswered otherwise: busy, no answer, closed, refused, failed."),
			fTransferredOut: byAgency("centralino_sla_calls_transferred_out_total", "Counted calls the agency transferred elsewhere."),
			fOverflowed:     byAgency("centralino_sla_calls_overflowed_total", "Offered calls that left the agency for its overflow target."),
			fRatingOffered:  byAgency("centralino_sla_ratings_offered_total", "Satisfaction surveys offered for the agency."),
			fRatingByPhone:  byAgency("centralino_sla_ratings_given_in_call_total", "Surveys offered that got a vote in the same call."),
		},
		ratings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_sla_ratings_total",
			Help: "Citizens' votes for the agency, by rating (positive, sufficient, negative), by phone or on the web.",
		}, []string{"agency", "rating"}),
		wait: histogram("centralino_sla_answer_wait_seconds", "Time from a call reaching the agency to its answer.",
			1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, threshold.Seconds()),
		talk: histogram("centralino_sla_talk_seconds", "Talk time of answered calls, from answer to hang-up (handle time without after-call work).",
			30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600),
		abandonWait: histogram("centralino_sla_abandon_wait_seconds", "Time callers waited before abandoning, short abandons excluded.",
			5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, shortAbandon.Seconds()),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "centralino_sla_store_errors_total",
			Help: "Failed writes of the service-level counters to the store (they are retried).",
		}),
		thresholdSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "centralino_sla_service_level_threshold_seconds",
			Help: "The service-level threshold: calls answered within it count for the service level.",
		}),
		shortAbandonLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "centralino_sla_short_abandon_seconds",
			Help: "Callers hanging up within this time are short abandons, counted apart.",
		}),
	}
	m.thresholdSeconds.Set(threshold.Seconds())
	m.shortAbandonLimit.Set(shortAbandon.Seconds())
	cs := []prometheus.Collector{m.ratings, m.wait, m.talk, m.abandonWait, m.storeErrors, m.thresholdSeconds, m.shortAbandonLimit}
	for _, c := range m.counters {
		cs = append(cs, c)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// add counts n of f for agency; the sums of durations are histograms.
func (m *metrics) add(agency string, f field, n int64) {
	if c, ok := m.counters[f]; ok {
		c.WithLabelValues(agency).Add(float64(n))
	} else if name, ok := ratingNames[f]; ok {
		m.ratings.WithLabelValues(agency, name).Add(float64(n))
	}
}

// known makes every series of agency exist at zero, so that dashboards and
// alerts see an agency before its first call.
func (m *metrics) known(agency string) {
	for _, c := range m.counters {
		c.WithLabelValues(agency)
	}
	for _, name := range ratingNames {
		m.ratings.WithLabelValues(agency, name)
	}
	for _, h := range []*prometheus.HistogramVec{m.wait, m.talk, m.abandonWait} {
		h.WithLabelValues(agency)
	}
}
