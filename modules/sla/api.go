package sla

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/lineamica/centralino/modules"
)

// maxBuckets bounds the periods of one request (a month of hours is 744).
const maxBuckets = 1000

func (m *SLA) routes(h *modules.Host) {
	h.Handle("GET /{$}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.cache.serve(w, r, m.getFigures) }))
	h.Handle("GET /trasparenza", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.cache.serve(w, r, m.getPage) }))
}

// query is what a request asks for: a scope (an agency, a region or the
// whole network) and a period cut into buckets.
type query struct {
	agency, region string
	bucket         Bucket
	from, to       time.Time // from is the start of its bucket; to is exclusive
}

func (q query) scope() string {
	switch {
	case q.agency != "":
		return agencyScope(q.agency)
	case q.region != "":
		return regionScope(q.region)
	}
	return networkScope
}

// httpError is an error with the status it is answered with.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// parseScope reads agency= and region=, which name something the directory
// knows. When the directory cannot be read the names are taken as given.
func (m *SLA) parseScope(agency, region string) (query, error) {
	q := query{agency: agency, region: region}
	if agency != "" && region != "" {
		return q, badRequest("give agency or region, not both")
	}
	all := m.agencies.List()
	if all == nil {
		return q, nil
	}
	if agency != "" && !slices.ContainsFunc(all, func(a modules.Agency) bool { return a.Code == agency }) {
		return q, &httpError{http.StatusNotFound, fmt.Sprintf("no agency %q", agency)}
	}
	if region != "" && !slices.ContainsFunc(all, func(a modules.Agency) bool { return a.Region == region }) {
		return q, &httpError{http.StatusNotFound, fmt.Sprintf("no region %q", region)}
	}
	return q, nil
}

// parseTime reads a date (2006-01-02, the start of that day in Rome) or an
// RFC 3339 time. end makes a date mean the end of that day.
func parseTime(name, s string, end bool) (time.Time, error) {
	if t, err := time.ParseInLocation(time.DateOnly, s, Rome); err == nil {
		if end {
			t = Day.Next(t)
		}
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, badRequest("%s: %q is neither a date (2006-01-02) nor an RFC 3339 time", name, s)
	}
	return t, nil
}

// defaultFrom is the start of the default period ending now: today by
// hour, this month by day, twelve weeks by week, this year by month.
func defaultFrom(b Bucket, now time.Time) time.Time {
	switch b {
	case Hour:
		return Day.Start(now)
	case Week:
		return Week.Start(now).AddDate(0, 0, -7*11)
	case Month:
		y := now.In(Rome).Year()
		return time.Date(y, time.January, 1, 0, 0, 0, 0, Rome)
	}
	return Month.Start(now)
}

func (m *SLA) parseQuery(r *http.Request, now time.Time) (query, error) {
	v := r.URL.Query()
	q, err := m.parseScope(v.Get("agency"), v.Get("region"))
	if err != nil {
		return q, err
	}
	q.bucket = Day
	if s := v.Get("bucket"); s != "" {
		if q.bucket, err = ParseBucket(s); err != nil {
			return q, badRequest("%v", err)
		}
	}
	q.to = q.bucket.Next(q.bucket.Start(now))
	if s := v.Get("to"); s != "" {
		if q.to, err = parseTime("to", s, true); err != nil {
			return q, err
		}
	}
	q.from = defaultFrom(q.bucket, now)
	if s := v.Get("from"); s != "" {
		if q.from, err = parseTime("from", s, false); err != nil {
			return q, err
		}
	}
	q.from = q.bucket.Start(q.from)
	if !q.from.Before(q.to) {
		return q, badRequest("from must be before to")
	}
	n := 0
	for t := q.from; t.Before(q.to); t = q.bucket.Next(t) {
		if n++; n > maxBuckets {
			return q, badRequest("more than %d buckets of a %s: ask for a shorter period or a longer bucket", maxBuckets, q.bucket)
		}
	}
	return q, nil
}

// Report is the answer of GET /api/sla/.
type Report struct {
	Agency              string   `json:"agency,omitempty"`
	AgencyName          string   `json:"agency_name,omitempty"`
	Region              string   `json:"region,omitempty"`
	Bucket              Bucket   `json:"bucket"`
	TimeZone            string   `json:"time_zone"`
	From                string   `json:"from"`
	To                  string   `json:"to"`
	ThresholdSeconds    int      `json:"service_level_threshold_seconds"`
	ShortAbandonSeconds int      `json:"short_abandon_seconds"`
	Total               Figures  `json:"total"`
	Periods             []Period `json:"buckets"`
}

// Period is one bucket of a Report.
type Period struct {
	Start string `json:"start"` // RFC 3339, Rome time
	End   string `json:"end"`
	Figures
}

// report reads the figures a query asks for, after storing this node's
// latest counters.
func (m *SLA) report(ctx context.Context, q query) (Report, Counts, error) {
	if err := m.flush(ctx); err != nil {
		m.log.Warn("report without this node's latest counters", "err", err)
	}
	rep := Report{
		Agency: q.agency, Region: q.region, Bucket: q.bucket, TimeZone: Rome.String(),
		From: q.from.Format(time.RFC3339), To: q.to.Format(time.RFC3339),
		ThresholdSeconds: m.opts.ServiceLevelSeconds, ShortAbandonSeconds: m.opts.ShortAbandonSeconds,
		Periods: []Period{},
	}
	if a, ok := m.agencies.Agency(q.agency); ok && q.agency != "" {
		rep.AgencyName, rep.Region = a.Name, a.Region
	}
	total := Counts{}
	for start := q.from; start.Before(q.to); start = q.bucket.Next(start) {
		c, err := m.read(ctx, q.scope(), q.bucket, start)
		if err != nil {
			return rep, nil, err
		}
		total.add(c)
		end := q.bucket.Next(start)
		rep.Periods = append(rep.Periods, Period{Start: start.Format(time.RFC3339), End: end.Format(time.RFC3339), Figures: c.Figures()})
		rep.To = end.Format(time.RFC3339)
	}
	rep.Total = total.Figures()
	return rep, total, nil
}

func (m *SLA) getFigures(w http.ResponseWriter, r *http.Request) {
	q, err := m.parseQuery(r, time.Now())
	if err != nil {
		writeError(w, err)
		return
	}
	rep, _, err := m.report(r.Context(), q)
	if err != nil {
		m.log.Error("service-level report", "err", err)
		writeError(w, &httpError{http.StatusServiceUnavailable, "service-level store unavailable"})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(rep)
}

func writeError(w http.ResponseWriter, err error) {
	he, ok := err.(*httpError)
	if !ok {
		he = &httpError{http.StatusInternalServerError, err.Error()}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(he.status)
	json.NewEncoder(w).Encode(map[string]string{"error": he.msg})
}
