// Package sla is the module that measures the service the agencies give on
// the phone: calls offered, answered, abandoned, speed of answer, service
// level, handle time, transfers, overflows and the citizens' ratings, per
// agency, region and network, by hour, day, week and month (Rome time). It
// keeps the figures in its key space so that a restart keeps them and nodes
// sharing Redis add to the same ones, exports them to Prometheus, and serves
// them as JSON and as a public transparency page under /api/sla/. See
// docs/sla.md.
package sla

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/lineamica/centralino/modules"
)

func init() {
	modules.Register(modules.Info{Name: "sla", New: func() modules.Module { return new(SLA) }})
}

// Options are the module's options in the configuration.
type Options struct {
	// A call answered within ServiceLevelSeconds counts for the service level.
	ServiceLevelSeconds int `yaml:"service_level_seconds"`
	// A caller hanging up within ShortAbandonSeconds is a short abandon
	// (a wrong number, a change of mind), counted apart and left out of
	// every ratio.
	ShortAbandonSeconds int `yaml:"short_abandon_seconds"`
	// Which calls count: each option set must hold (as in ticketing).
	OnlyPublicNumbers    bool `yaml:"only_public_numbers"`    // dialled an agency's public number
	OnlyOutsideDirectory bool `yaml:"only_outside_directory"` // the caller is not a user of the network
	// ExcludeNumbers never count, nor do transfers to them: the survey's
	// number and extension, which rate a call rather than serve it.
	ExcludeNumbers []string `yaml:"exclude_numbers"`
	// How long hourly, and daily and weekly, buckets are kept; monthly ones
	// are kept for ever.
	HourlyRetentionDays int `yaml:"hourly_retention_days"`
	DailyRetentionDays  int `yaml:"daily_retention_days"`
}

var defaults = Options{
	ServiceLevelSeconds:  20,
	ShortAbandonSeconds:  5,
	OnlyPublicNumbers:    true,
	OnlyOutsideDirectory: true,
	HourlyRetentionDays:  62,
	DailyRetentionDays:   1096,
}

func (o *Options) validate() error {
	switch {
	case o.ServiceLevelSeconds < 1:
		return fmt.Errorf("option \"service_level_seconds\": must be at least 1, not %d", o.ServiceLevelSeconds)
	case o.ShortAbandonSeconds < 0:
		return fmt.Errorf("option \"short_abandon_seconds\": %d is negative", o.ShortAbandonSeconds)
	case o.HourlyRetentionDays < 1:
		return fmt.Errorf("option \"hourly_retention_days\": must be at least 1, not %d", o.HourlyRetentionDays)
	case o.DailyRetentionDays < 1:
		return fmt.Errorf("option \"daily_retention_days\": must be at least 1, not %d", o.DailyRetentionDays)
	}
	return nil
}

func (o *Options) counts(ev modules.CallOffered) bool {
	return (!o.OnlyPublicNumbers || ev.Public) && (!o.OnlyOutsideDirectory || !ev.Caller.InDirectory)
}

func (o *Options) threshold() time.Duration {
	return time.Duration(o.ServiceLevelSeconds) * time.Second
}

func (o *Options) shortAbandon() time.Duration {
	return time.Duration(o.ShortAbandonSeconds) * time.Second
}

// ttl is how long buckets of length b are kept; 0 for ever.
func (o *Options) ttl(b Bucket) time.Duration {
	const day = 24 * time.Hour
	switch b {
	case Hour:
		return time.Duration(o.HourlyRetentionDays) * day
	case Day, Week:
		return time.Duration(o.DailyRetentionDays) * day
	}
	return 0
}

// Timings of the module's background work.
const (
	flushEvery  = 5 * time.Second // counters go to the store at most this late
	sweepEvery  = time.Hour
	staleCall   = 12 * time.Hour // a call this old lost its end event
	staleOffer  = time.Hour      // a survey offered this long ago gets no vote by phone
	regionCache = 10 * time.Minute
)

// SLA is the module.
type SLA struct {
	opts     Options
	log      *slog.Logger
	kv       modules.KV
	agencies modules.Agencies
	metrics  *metrics
	cancel   context.CancelFunc
	done     chan struct{}

	mu sync.Mutex
	// The counted calls in progress on this node, by call id: events carry
	// no history, so the module remembers where each call stands.
	legs map[string]*leg
	// transfers maps the call id of a leg a transfer created to the first
	// call of its chain, when that chain is counted.
	transfers map[string]pending
	offers    map[string]pending // surveys offered, by call id
	regions   map[string]region  // agency -> region, cached
	counters  map[counter]int64  // increments not yet in the store

	flushMu sync.Mutex // one flush at a time, so a read after a flush sees it
	cache   answerCache
}

// leg is a counted call at the agency it is at now.
type leg struct {
	agency   string
	entered  time.Time     // when it reached the agency: every figure of the leg goes in this time's buckets
	before   time.Duration // time it spent at earlier agencies (overflows)
	first    time.Time     // when it was offered to the first agency
	origin   string        // call id of the first call of its chain of transfers
	answered bool
	seen     time.Time // this node's clock, for the sweeper
}

type pending struct {
	origin string    // transfers: the chain; offers: the agency rated
	at     time.Time // the event's time
	seen   time.Time
}

type region struct {
	name    string
	fetched time.Time
}

// Provision implements modules.Module.
func (m *SLA) Provision(h *modules.Host) error {
	m.opts = defaults
	if err := h.DecodeOptions(&m.opts); err != nil {
		return err
	}
	if err := m.opts.validate(); err != nil {
		return err
	}
	m.log, m.kv, m.agencies = h.Logger(), h.KV(), h.Agencies()
	m.legs, m.transfers, m.offers = map[string]*leg{}, map[string]pending{}, map[string]pending{}
	m.regions, m.counters = map[string]region{}, map[counter]int64{}
	var err error
	if m.metrics, err = newMetrics(h.Metrics(), m.opts.threshold(), m.opts.shortAbandon()); err != nil {
		return err
	}
	m.routes(h)
	if err := h.Subscribe(0, []string{
		modules.KindCallOffered, modules.KindCallAnswered, modules.KindCallTransferred,
		modules.KindCallOverflowed, modules.KindCallEnded, modules.KindRatingOffered, modules.KindRatingGiven,
	}, m.handle); err != nil {
		return err
	}
	return nil
}

// Run implements modules.Runner: every agency's series start at zero, and
// the counters go to the store every few seconds.
func (m *SLA) Run() {
	for _, a := range m.agencies.List() {
		m.metrics.known(a.Code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go m.background(ctx)
}

// Stop implements modules.Stopper: it writes the counters not yet stored.
// Close the bus first, so that the last events are counted.
func (m *SLA) Stop(ctx context.Context) error {
	if m.cancel != nil { // not run when only checked
		m.cancel()
		<-m.done
	}
	return m.flush(ctx)
}

func (m *SLA) background(ctx context.Context) {
	defer close(m.done)
	flush, sweep := time.NewTicker(flushEvery), time.NewTicker(sweepEvery)
	defer flush.Stop()
	defer sweep.Stop()
	for {
		select {
		case <-flush.C:
			fctx, cancel := context.WithTimeout(ctx, flushEvery)
			if err := m.flush(fctx); err != nil {
				m.log.Warn("service-level counters not stored yet", "err", err)
			}
			cancel()
		case <-sweep.C:
			m.sweep(time.Now())
		case <-ctx.Done():
			return
		}
	}
}

// sweep forgets calls, transfers and surveys whose next event never came.
func (m *SLA) sweep(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, l := range m.legs {
		if now.Sub(l.seen) > staleCall {
			delete(m.legs, id)
		}
	}
	for _, set := range []map[string]pending{m.transfers, m.offers} {
		for id, p := range set {
			if now.Sub(p.seen) > staleOffer {
				delete(set, id)
			}
		}
	}
}

func (m *SLA) handle(_ context.Context, ev modules.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch ev := ev.(type) {
	case modules.CallOffered:
		m.offered(ev)
	case modules.CallOverflowed:
		m.overflowed(ev)
	case modules.CallAnswered:
		m.answered(ev)
	case modules.CallEnded:
		m.ended(ev)
	case modules.CallTransferred:
		m.transferred(ev)
	case modules.RatingOffered:
		m.ratingOffered(ev)
	case modules.RatingGiven:
		m.ratingGiven(ev)
	}
}

// offered counts a call that reached an agency: one that passes the options,
// or a leg of a counted call's chain of transfers.
func (m *SLA) offered(ev modules.CallOffered) {
	t, viaTransfer := m.transfers[ev.CallID]
	delete(m.transfers, ev.CallID)
	if ev.DestAgency == "" || slices.Contains(m.opts.ExcludeNumbers, ev.Callee) || !viaTransfer && !m.opts.counts(ev) {
		return
	}
	l := &leg{agency: ev.DestAgency, entered: ev.Time, first: ev.Time, origin: ev.CallID, seen: time.Now()}
	if viaTransfer {
		l.origin = t.origin
	}
	m.legs[ev.CallID] = l
	m.add(l.agency, l.entered, fOffered, 1)
}

// overflowed moves a call to the next agency of the overflow chain: the one
// it leaves counts an overflow, the next an offered call.
func (m *SLA) overflowed(ev modules.CallOverflowed) {
	l := m.legs[ev.CallID]
	if l == nil || ev.ToAgency == "" {
		return
	}
	m.add(l.agency, l.entered, fOverflowed, 1)
	l.agency, l.entered, l.before = ev.ToAgency, ev.Time, max(ev.Time.Sub(l.first), 0)
	m.add(l.agency, l.entered, fOffered, 1)
}

func (m *SLA) answered(ev modules.CallAnswered) {
	l := m.legs[ev.CallID]
	if l == nil || l.answered {
		return
	}
	l.answered = true
	wait := max(ev.Wait-l.before, 0) // the agency answering is judged on its own wait
	m.add(l.agency, l.entered, fAnswered, 1)
	m.add(l.agency, l.entered, fWaitMS, wait.Milliseconds())
	if wait <= m.opts.threshold() {
		m.add(l.agency, l.entered, fAnsweredInSL, 1)
	}
	m.metrics.wait.WithLabelValues(l.agency).Observe(wait.Seconds())
}

func (m *SLA) ended(ev modules.CallEnded) {
	l := m.legs[ev.CallID]
	if l == nil {
		return
	}
	delete(m.legs, ev.CallID)
	switch {
	case l.answered:
		m.add(l.agency, l.entered, fTalked, 1)
		m.add(l.agency, l.entered, fTalkMS, ev.Talk.Milliseconds())
		m.metrics.talk.WithLabelValues(l.agency).Observe(ev.Talk.Seconds())
	case ev.Disposition == modules.DispositionAbandoned:
		waited := max(ev.Ring-l.before, 0)
		if waited < m.opts.shortAbandon() {
			m.add(l.agency, l.entered, fShortAbandoned, 1)
		} else {
			m.add(l.agency, l.entered, fAbandoned, 1)
			m.metrics.abandonWait.WithLabelValues(l.agency).Observe(waited.Seconds())
		}
	default:
		m.add(l.agency, l.entered, fUnanswered, 1)
	}
}

// transferred counts a transfer out of the agency of a counted call, and
// remembers the new leg so that it counts at the agency it reaches. A
// transfer with no one transferring is the switch's hand-off to the survey.
func (m *SLA) transferred(ev modules.CallTransferred) {
	if ev.By == "" || slices.Contains(m.opts.ExcludeNumbers, ev.Target) {
		return // the switch handing the caller to the survey, or a transfer to it
	}
	// The leg of the chain still here, preferably at the transferring agency.
	var from *leg
	for id, l := range m.legs {
		if l.origin == ev.OriginalCallID && id != ev.NewCallID && (from == nil || l.agency == ev.FromAgency) {
			from = l
		}
	}
	if from == nil {
		return
	}
	m.add(from.agency, from.entered, fTransferredOut, 1)
	if ev.NewCallID != "" {
		m.transfers[ev.NewCallID] = pending{origin: from.origin, at: ev.Time, seen: time.Now()}
	}
}

func (m *SLA) ratingOffered(ev modules.RatingOffered) {
	if ev.Agency == "" {
		return
	}
	m.add(ev.Agency, ev.Time, fRatingOffered, 1)
	if ev.CallID != "" {
		m.offers[ev.CallID] = pending{origin: ev.Agency, at: ev.Time, seen: time.Now()}
	}
}

var ratingFields = map[modules.Rating]field{
	modules.RatingPositive: fRating1, modules.RatingSufficient: fRating2, modules.RatingNegative: fRating3,
}

// ratingGiven counts a vote at the time it was given; a vote in the call the
// survey was offered in also settles that offer, in the offer's bucket.
func (m *SLA) ratingGiven(ev modules.RatingGiven) {
	f, ok := ratingFields[ev.Rating]
	if !ok || ev.Agency == "" {
		m.log.Warn("rating ignored", "agency", ev.Agency, "rating", int(ev.Rating))
		return
	}
	m.add(ev.Agency, ev.Time, f, 1)
	if o, ok := m.offers[ev.CallID]; ok && ev.CallID != "" {
		delete(m.offers, ev.CallID)
		m.add(o.origin, o.at, fRatingByPhone, 1)
	}
}

// add counts n of f for agency at time at: in Prometheus now, and in every
// bucket of the agency, its region and the network at the next flush.
// Call with mu held.
func (m *SLA) add(agency string, at time.Time, f field, n int64) {
	m.metrics.add(agency, f, n)
	for _, scope := range []string{agencyScope(agency), regionScope(m.regionOf(agency)), networkScope} {
		if scope == "" {
			continue
		}
		for _, b := range Buckets {
			m.counters[counter{scope, b, b.Start(at).Unix(), f}] += n
		}
	}
}

// Scopes of the counters in the store.
const networkScope = "net"

func agencyScope(code string) string { return "a:" + code }

func regionScope(name string) string {
	if name == "" {
		return "" // central bodies belong to no region
	}
	return "r:" + name
}

// counter is one counter of one bucket of one scope.
type counter struct {
	scope string
	b     Bucket
	start int64 // Unix time of the bucket's start
	f     field
}

func (c counter) key() string {
	return counterKey(c.scope, c.b, time.Unix(c.start, 0).In(Rome), c.f)
}

func counterKey(scope string, b Bucket, start time.Time, f field) string {
	return "c:" + scope + ":" + b.key(start) + ":" + string(f)
}

// regionOf returns the agency's region from a cache refreshed every few
// minutes, so that events seldom wait on the directory. Call with mu held.
func (m *SLA) regionOf(agency string) string {
	r, ok := m.regions[agency]
	if !ok || time.Since(r.fetched) > regionCache {
		// A failed lookup keeps the region known before, until the next try.
		if a, found := m.agencies.Agency(agency); found || !ok {
			r.name = a.Region
		}
		r.fetched = time.Now()
		m.regions[agency] = r
	}
	return r.name
}

// flush adds the counters gathered since the last flush to the store. What
// fails to be stored is kept for the next flush.
func (m *SLA) flush(ctx context.Context) error {
	m.flushMu.Lock()
	defer m.flushMu.Unlock()
	m.mu.Lock()
	batch := m.counters
	m.counters = make(map[counter]int64, len(batch))
	m.mu.Unlock()
	var err error
	for c, n := range batch {
		if _, err = m.kv.IncrBy(ctx, c.key(), n, m.opts.ttl(c.b)); err != nil {
			m.metrics.storeErrors.Inc()
			break
		}
		delete(batch, c)
	}
	if len(batch) > 0 {
		m.mu.Lock()
		for c, n := range batch {
			m.counters[c] += n
		}
		m.mu.Unlock()
	}
	return err
}

// read returns the stored counters of one bucket; missing ones are zero.
func (m *SLA) read(ctx context.Context, scope string, b Bucket, start time.Time) (Counts, error) {
	c := Counts{}
	for _, f := range fields {
		v, err := m.kv.Get(ctx, counterKey(scope, b, start, f))
		if errors.Is(err, modules.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if c[f], err = strconv.ParseInt(string(v), 10, 64); err != nil {
			return nil, fmt.Errorf("sla: counter %s of %s: %q is not an integer", f, scope, v)
		}
	}
	return c, nil
}
