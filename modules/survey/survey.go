// Package survey is the post-call satisfaction survey of "Mettiamoci la
// faccia": an IVR (a SIP user agent of its own, registered with the switch
// as a directory user) that asks the caller for one DTMF digit, and a web
// page with the same three faces linked from the PEC receipt. Votes are
// anonymous to the operator: they carry the agency and the ticket code only.
// See docs/survey.md.
package survey

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/lineamica/centralino/modules"
)

func init() {
	modules.Register(modules.Info{Name: "survey", New: func() modules.Module { return new(Survey) }})
}

// ticketHeader is the call header that carries a ticket code (ticketing's).
const ticketHeader = "X-Ticket"

// Options are the module's options in the configuration.
type Options struct {
	// Switch is the switch's UDP address the IVR registers with.
	Switch string `yaml:"switch"`
	// User and Password are the directory user the IVR registers as; its
	// number (agency prefix + extension) is the survey's number.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	// Listen is the IVR's own SIP address (UDP); port 0 picks a free one.
	Listen string `yaml:"listen"`
	// AfterHangup lists the agencies (IPA codes, or "*" for all) whose
	// callers the switch takes to the survey when the operator hangs up
	// first on an answered call.
	AfterHangup []string `yaml:"after_hangup"`
	// Number is what the switch dials for AfterHangup: the IVR user's number.
	Number string `yaml:"number"`
	// DigitTimeout is how long the IVR waits for a key after a prompt.
	DigitTimeout duration `yaml:"digit_timeout"`
	// TicketDays is how long a ticket can be rated on the web after its
	// last change.
	TicketDays int `yaml:"ticket_days"`
}

// duration is a time.Duration written as "5s" in the options.
type duration time.Duration

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 5s", b)
	}
	*d = duration(v)
	return nil
}

var defaults = Options{
	Listen:       "127.0.0.1:0",
	DigitTimeout: duration(5 * time.Second),
	TicketDays:   90,
}

func (o *Options) validate() error {
	switch {
	case o.Switch == "":
		return errors.New(`option "switch": required (the switch's UDP address, e.g. 127.0.0.1:5060)`)
	case o.User == "" || o.Password == "":
		return errors.New(`options "user" and "password": required (the directory user the IVR registers as)`)
	case len(o.AfterHangup) > 0 && o.Number == "":
		return errors.New(`option "number": required with "after_hangup" (the number the switch dials)`)
	case time.Duration(o.DigitTimeout) < 500*time.Millisecond || time.Duration(o.DigitTimeout) > time.Minute:
		return fmt.Errorf(`option "digit_timeout": %s is not between 500ms and 1m`, time.Duration(o.DigitTimeout))
	case o.TicketDays < 1:
		return fmt.Errorf(`option "ticket_days": must be at least 1, not %d`, o.TicketDays)
	}
	if _, _, err := net.SplitHostPort(o.Switch); err != nil {
		return fmt.Errorf(`option "switch": %v`, err)
	}
	// The IVR writes its address in Contact and SDP: it must be one.
	host, _, err := net.SplitHostPort(o.Listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || ip.IsUnspecified() {
		return fmt.Errorf(`option "listen": %q is not an IP address and port such as 127.0.0.1:0`, o.Listen)
	}
	return nil
}

// Survey is the module.
type Survey struct {
	opts    Options
	log     *slog.Logger
	publish func(modules.Event)
	kv      modules.KV
	metrics *metrics
	prompts *prompts

	mu       sync.Mutex
	cond     *sync.Cond
	rated    map[string]rated // by the Call-ID of the call into the IVR
	stopping bool
	ivr      *ivr // nil until Run
}

// rated is the call a caller rates from the IVR: what the transfer to the
// survey said of it.
type rated struct {
	call    modules.Call // the call with the operator, User cleared
	agency  string
	ticket  string
	expires time.Time
}

// Provision implements modules.Module.
func (m *Survey) Provision(h *modules.Host) error {
	m.opts = defaults
	if err := h.DecodeOptions(&m.opts); err != nil {
		return err
	}
	if err := m.opts.validate(); err != nil {
		return err
	}
	m.log, m.publish, m.kv = h.Logger(), h.Publish, h.KV()
	m.rated = map[string]rated{}
	m.cond = sync.NewCond(&m.mu)
	var err error
	if m.metrics, err = newMetrics(h.Metrics()); err != nil {
		return err
	}
	m.routes(h)
	if err := h.Subscribe(0, []string{modules.KindCallTransferred, modules.KindTicketChanged}, m.handle); err != nil {
		return err
	}
	m.prompts, err = loadPrompts()
	return err
}

// Run implements modules.Runner: the IVR starts listening and registers.
func (m *Survey) Run() {
	v, err := startIVR(m, m.prompts)
	if err != nil {
		// Its address is taken, say: the web rating still works.
		m.log.Error("survey IVR not started: no phone survey", "err", err)
		return
	}
	m.mu.Lock()
	m.ivr = v
	m.mu.Unlock()
}

// Stop implements modules.Stopper.
func (m *Survey) Stop(ctx context.Context) error {
	m.mu.Lock()
	m.stopping = true
	m.cond.Broadcast()
	v := m.ivr
	m.mu.Unlock()
	if v == nil { // never run (check-config), or not started
		return nil
	}
	return v.stop(ctx)
}

// AfterHangup implements modules.Handoffer: the number the switch takes a
// caller of agency to when the operator hangs up first, if any.
func (m *Survey) AfterHangup(agency string) (string, bool) {
	for _, a := range m.opts.AfterHangup {
		if a == "*" || a == agency {
			return m.opts.Number, true
		}
	}
	return "", false
}

func (m *Survey) handle(ctx context.Context, ev modules.Event) {
	switch ev := ev.(type) {
	case modules.CallTransferred:
		m.transferred(ev)
	case modules.TicketChanged:
		// The web rating needs the ticket's agency; ticketing's store is
		// its own, so the survey keeps what its events tell.
		if ev.Code == "" || ev.Agency == "" {
			return
		}
		if err := m.kv.Put(ctx, ticketKey(ev.Code), []byte(ev.Agency), time.Duration(m.opts.TicketDays)*24*time.Hour); err != nil {
			m.log.Warn("remembering a ticket for the web rating", "ticket", ev.Code, "err", err)
		}
	}
}

// ratedTTL is how long a transfer waits for its call into the IVR.
const ratedTTL = time.Minute

// transferred remembers what the call into the IVR rates: the agency that
// transferred it and its ticket. Any transfer is remembered (cheaply): only
// those whose new call reaches the IVR are used.
func (m *Survey) transferred(ev modules.CallTransferred) {
	info := ev.Call
	info.User = "" // anonymous to the operator
	r := rated{call: info, agency: ev.FromAgency, ticket: ev.Headers[ticketHeader], expires: time.Now().Add(ratedTTL)}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for id, old := range m.rated {
		if now.After(old.expires) {
			delete(m.rated, id)
		}
	}
	m.rated[ev.NewCallID] = r
	m.cond.Broadcast()
}

// waitRated returns what the call into the IVR rates, waiting up to wait
// for the transfer's event (the bus is asynchronous: the INVITE may come
// first).
func (m *Survey) waitRated(callID string, wait time.Duration) (rated, bool) {
	deadline := time.Now().Add(wait)
	t := time.AfterFunc(wait, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer t.Stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		if r, ok := m.rated[callID]; ok {
			delete(m.rated, callID)
			return r, true
		}
		if m.stopping || !time.Now().Before(deadline) {
			return rated{}, false
		}
		m.cond.Wait()
	}
}

// Reasons of a negative vote, by the key that gives them.
var reasons = map[rune]string{'1': "waiting", '2': "service", '3': "come-back", '4': "other"}

// record counts a vote and publishes it.
func (m *Survey) record(ctx context.Context, ev modules.RatingGiven) {
	m.metrics.ratings.WithLabelValues(ev.Agency, ratingName(ev.Rating), ev.Channel).Inc()
	if ev.Reason != "" {
		m.metrics.reasons.WithLabelValues(ev.Agency, ev.Reason).Inc()
	}
	m.count(ctx, ev.Agency, "r"+ratingName(ev.Rating), "c"+ev.Channel)
	if ev.Channel == "phone" && ev.TicketCode != "" {
		// The ticket is rated: its web page says so from now on.
		if _, err := m.kv.Incr(ctx, votedKey(ev.TicketCode)); err != nil {
			m.log.Warn("marking a ticket rated", "ticket", ev.TicketCode, "err", err)
		}
	}
	if ev.Reason != "" {
		m.count(ctx, ev.Agency, "why"+ev.Reason)
	}
	m.publish(ev)
	m.log.Info("rating given", "agency", ev.Agency, "ticket", ev.TicketCode, "rating", int(ev.Rating), "reason", ev.Reason, "channel", ev.Channel)
}

// offered counts a survey offered on the phone.
func (m *Survey) offered(ctx context.Context, r rated) {
	m.metrics.offered.WithLabelValues(r.agency).Inc()
	m.count(ctx, r.agency, "offered")
	m.publish(modules.RatingOffered{Call: r.call, Agency: r.agency})
}

// noVote counts a survey offered and left without a vote.
func (m *Survey) noVote(ctx context.Context, r rated) {
	m.metrics.noVote.WithLabelValues(r.agency).Inc()
	m.count(ctx, r.agency, "novote")
}

func ratingName(r modules.Rating) string {
	switch r {
	case modules.RatingPositive:
		return "positive"
	case modules.RatingSufficient:
		return "sufficient"
	case modules.RatingNegative:
		return "negative"
	}
	return "unknown"
}

// count adds one to the agency's counters in the store, for the API.
func (m *Survey) count(ctx context.Context, agency string, names ...string) {
	var errs []error
	for _, n := range names {
		_, err := m.kv.Incr(ctx, countKey(agency, n))
		errs = append(errs, err)
	}
	errs = append(errs, m.kv.IndexAdd(ctx, "agencies", agency, 0))
	if err := errors.Join(errs...); err != nil {
		m.log.Warn("counting a survey result", "agency", agency, "err", err)
	}
}

func countKey(agency, name string) string { return "n:" + agency + ":" + name }

func ticketKey(code string) string { return "t:" + code }

func votedKey(code string) string { return "voted:" + code }
