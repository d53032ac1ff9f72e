package survey

import "github.com/prometheus/client_golang/prometheus"

// metrics are per agency only: never per operator.
type metrics struct {
	offered, noVote *prometheus.CounterVec // by agency
	ratings         *prometheus.CounterVec // by agency, rating, channel
	reasons         *prometheus.CounterVec // by agency, reason
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		offered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_survey_offered_total",
			Help: "Phone surveys offered (the caller reached the IVR), by the agency rated.",
		}, []string{"agency"}),
		noVote: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_survey_no_vote_total",
			Help: "Phone surveys offered that ended without a vote, by the agency rated.",
		}, []string{"agency"}),
		ratings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_survey_ratings_total",
			Help: "Votes by agency, rating (positive, sufficient, negative) and channel (phone, web).",
		}, []string{"agency", "rating", "channel"}),
		reasons: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "centralino_survey_reasons_total",
			Help: "Reasons given with negative votes (waiting, service, come-back, other), by agency.",
		}, []string{"agency", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.offered, m.noVote, m.ratings, m.reasons} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
