// Package ticketing is the module that follows a citizen's request across
// every administration it crosses: it opens a ticket when a citizen's call
// reaches an agency, appends a hop for every transfer and overflow, links
// later calls from the same number, and serves the tickets over HTTP under
// /api/ticketing/. See docs/ticketing.md.
package ticketing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

// Header is the call header that carries a ticket code across transfers and
// nodes: a call event whose Headers has it joins that ticket, and the switch
// puts it on the INVITE to the operator who answers a transferred call.
const Header = "X-Ticket"

func init() {
	modules.Register(modules.Info{Name: "ticketing", New: func() modules.Module { return new(Ticketing) }})
}

// Options are the module's options in the configuration.
type Options struct {
	// Which calls open a ticket: each option set must hold.
	OnlyTrunks           bool `yaml:"only_trunks"`            // came in on a trunk
	OnlyPublicNumbers    bool `yaml:"only_public_numbers"`    // dialled an agency's public number
	OnlyOutsideDirectory bool `yaml:"only_outside_directory"` // the caller is not a user of the network

	// A call from the number of a ticket not closed and changed within
	// LinkDays joins it rather than opening another; 0 never links.
	LinkDays int `yaml:"link_days"`
	// Closed tickets are deleted RetentionDays after closing.
	RetentionDays int `yaml:"retention_days"`
	// Regions maps IPA codes to the three letters of the region in ticket
	// codes; agencies not listed are "NAZ" (central bodies).
	Regions map[string]string `yaml:"regions"`
	// NetworkAgencies read and update every ticket (the national Linea
	// Amica centre); others only those that reached them.
	NetworkAgencies []string `yaml:"network_agencies"`
	// OutboxSize bounds the tickets waiting to be written while the store
	// is unreachable.
	OutboxSize int `yaml:"outbox_size"`
	// PECAgency gets the tickets opened by certified messages that name no
	// agency (the network centre).
	PECAgency string `yaml:"pec_agency"`
}

// defaults are the options not set in the configuration.
var defaults = Options{
	OnlyPublicNumbers:    true,
	OnlyOutsideDirectory: true,
	LinkDays:             7,
	RetentionDays:        365,
	OutboxSize:           10000,
	PECAgency:            "lineamica",
}

var regionCode = regexp.MustCompile(`^[A-Z]{3}$`)

func (o *Options) validate() error {
	switch {
	case o.LinkDays < 0:
		return fmt.Errorf("option \"link_days\": %d is negative", o.LinkDays)
	case o.RetentionDays < 1:
		return fmt.Errorf("option \"retention_days\": must be at least 1, not %d", o.RetentionDays)
	case o.OutboxSize < 1:
		return fmt.Errorf("option \"outbox_size\": must be at least 1, not %d", o.OutboxSize)
	case o.PECAgency == "":
		return errors.New("option \"pec_agency\": must be an IPA code")
	}
	for ipa, r := range o.Regions {
		if !regionCode.MatchString(r) {
			return fmt.Errorf("option \"regions\": %s: %q is not three upper-case letters", ipa, r)
		}
	}
	return nil
}

// opens says whether a call opens a ticket.
func (o *Options) opens(ev modules.CallOffered) bool {
	return ev.DestAgency != "" &&
		(!o.OnlyTrunks || ev.Caller.Trunk != "") &&
		(!o.OnlyPublicNumbers || ev.Public) &&
		(!o.OnlyOutsideDirectory || !ev.Caller.InDirectory)
}

func (o *Options) region(agency string) string {
	return cmp.Or(o.Regions[agency], "NAZ")
}

// Ticketing is the module.
type Ticketing struct {
	opts    Options
	log     *slog.Logger
	publish func(modules.Event)
	store   *store
	metrics *metrics
	cancel  context.CancelFunc // stops the sweeper
	swept   chan struct{}      // closed when the sweeper returns

	// mu serializes the changes to tickets: events, and the API's PATCH.
	mu sync.Mutex
	// The calls in progress on this node and their tickets, so that call
	// events never wait on the store.
	calls map[string]liveCall // by call id
	live  map[string]*Ticket  // by code
}

type liveCall struct {
	code  string
	since time.Time // by this node's clock, as the sweeper's
}

// Provision implements modules.Module.
func (m *Ticketing) Provision(h *modules.Host) error {
	m.opts = defaults
	if err := h.DecodeOptions(&m.opts); err != nil {
		return err
	}
	if err := m.opts.validate(); err != nil {
		return err
	}
	m.log = h.Logger()
	m.publish = h.Publish
	m.calls = map[string]liveCall{}
	m.live = map[string]*Ticket{}
	m.store = newStore(h.KV(), m.log, m.opts.OutboxSize, func() { m.metrics.storeErrors.Inc() })
	var err error
	if m.metrics, err = newMetrics(h.Metrics(), m.store.outboxLen); err != nil {
		return err
	}
	m.routes(h)
	if err := h.Subscribe(0, []string{
		modules.KindCallOffered, modules.KindCallAnswered, modules.KindCallTransferred,
		modules.KindCallOverflowed, modules.KindCallEnded,
		modules.KindPECDelivery, modules.KindPECReceived, modules.KindRatingGiven,
	}, m.handle); err != nil {
		return err
	}
	// Nothing fails from here: Start stops only the modules it provisioned.
	m.store.start()
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.swept = cancel, make(chan struct{})
	go m.sweeper(ctx)
	return nil
}

// Stop implements modules.Stopper: it writes what the outbox holds. Close
// the bus first, so that the last events are in it.
func (m *Ticketing) Stop(ctx context.Context) error {
	m.cancel()
	<-m.swept
	return m.store.close(ctx)
}

// sweepEvery is how often closed tickets past retention are deleted and
// calls whose end was never seen are forgotten.
const sweepEvery = time.Hour

// staleCall is how long a call may last before the sweeper takes its end
// event for lost.
const staleCall = 12 * time.Hour

func (m *Ticketing) sweeper(ctx context.Context) {
	defer close(m.swept)
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		m.sweep(ctx, time.Now())
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (m *Ticketing) sweep(ctx context.Context, now time.Time) {
	m.mu.Lock()
	for id, c := range m.calls {
		if now.Sub(c.since) > staleCall {
			m.untrack(id)
		}
	}
	m.mu.Unlock()
	if err := m.store.sweep(ctx, now, days(m.opts.RetentionDays)); err != nil {
		m.log.Warn("deleting expired tickets", "err", err)
	}
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// CodeForCall returns the code of the ticket of a call in progress on this
// node, for the switch to put in the Header of a transferred call's INVITE.
// It never waits on the store.
func (m *Ticketing) CodeForCall(callID string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.calls[callID]
	return c.code, ok
}

func (m *Ticketing) handle(ctx context.Context, ev modules.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var (
		t      *Ticket
		at     time.Time
		callID string
	)
	switch ev := ev.(type) {
	case modules.CallOffered:
		t = m.offered(ctx, ev)
	case modules.CallAnswered:
		t = m.answered(ctx, ev)
	case modules.CallTransferred:
		t = m.transferred(ctx, ev)
	case modules.CallOverflowed:
		t = m.overflowed(ctx, ev)
	case modules.CallEnded:
		t = m.ended(ctx, ev)
	case modules.PECDelivery:
		t, at = m.pecDelivery(ctx, ev), ev.Time
	case modules.PECReceived:
		t, at = m.pecReceived(ctx, ev), ev.Time
	case modules.RatingGiven:
		t, at = m.rated(ctx, ev), ev.Time
	}
	if ce, ok := ev.(modules.CallEvent); ok {
		at, callID = ce.CallInfo().Time, ce.CallInfo().CallID
	}
	if t != nil {
		t.touch(at)
		if err := m.save(t, false, callID); err != nil {
			m.metrics.lost.WithLabelValues("outbox_full").Inc()
			m.log.Error("ticket not saved", "ticket", t.Code, "err", err)
		}
	}
}

// save queues t for writing, then tells the other modules if its status
// changed (or it is new), or if pecSet (the citizen's PEC address was set).
// callID names the call that caused the change, if any.
func (m *Ticketing) save(t *Ticket, pecSet bool, callID string) error {
	previous := t.stored
	changed := previous != t.Status || pecSet
	t.stored = t.Status // before the copy the outbox keeps, which reads see
	if err := m.store.save(t); err != nil {
		t.stored = previous
		return err
	}
	if !changed {
		return nil
	}
	ev := modules.TicketChanged{
		Time: t.UpdatedAt, Code: t.Code, Status: string(t.Status), Previous: string(previous), Opened: previous == "",
		Agencies: slices.Clone(t.Agencies), CitizenPEC: t.CitizenPEC, CallID: callID, PECSet: pecSet,
	}
	if len(t.Hops) > 0 {
		ev.Agency = t.Hops[len(t.Hops)-1].Agency
	}
	for _, n := range t.Notes {
		ev.Notes = append(ev.Notes, n.Text)
	}
	m.publish(ev)
	return nil
}

// ticketOf returns the ticket of the call: a call in progress here, or one
// whose Header names a ticket not closed. Nil if none.
func (m *Ticketing) ticketOf(ctx context.Context, c modules.Call) *Ticket {
	if lc, ok := m.calls[c.CallID]; ok {
		return m.live[lc.code]
	}
	code, err := ticketcode.Parse(c.Headers[Header])
	if err != nil {
		return nil
	}
	t := m.live[code]
	if t == nil {
		if t, err = m.store.get(ctx, code); err != nil {
			m.log.Warn("ticket of call header not found", "ticket", code, "call", c.CallID, "err", err)
			return nil
		}
		if t.Status == StatusChiuso {
			return nil
		}
	}
	m.track(c.CallID, t)
	return t
}

func (m *Ticketing) track(callID string, t *Ticket) {
	m.calls[callID] = liveCall{code: t.Code, since: time.Now()}
	m.live[t.Code] = t
}

// untrack forgets a call, and its ticket unless another call has it.
func (m *Ticketing) untrack(callID string) {
	c, ok := m.calls[callID]
	if !ok {
		return
	}
	delete(m.calls, callID)
	for _, o := range m.calls {
		if o.code == c.code {
			return
		}
	}
	delete(m.live, c.code)
}

// hopOf returns the call's current hop, adding one for a call that joined
// the ticket by its Header alone.
func hopOf(t *Ticket, c modules.Call) *Hop {
	if h := t.hop(c.CallID); h != nil {
		return h
	}
	return t.addHop(Hop{Agency: c.DestAgency, CallID: c.CallID, Via: ViaTransfer, ReachedAt: c.Time})
}

func (m *Ticketing) offered(ctx context.Context, ev modules.CallOffered) *Ticket {
	if t := m.ticketOf(ctx, ev.Call); t != nil {
		hopOf(t, ev.Call) // the transfer made the hop, unless the call came by its header
		return t
	}
	if !m.opts.opens(ev) {
		return nil
	}
	if t := m.linkable(ctx, ev); t != nil {
		t.addHop(Hop{Agency: ev.DestAgency, CallID: ev.CallID, Via: ViaRepeatCall, ReachedAt: ev.Time})
		t.progress(StatusAperto)
		m.track(ev.CallID, t)
		m.metrics.linked.WithLabelValues(ev.DestAgency).Inc()
		m.log.Info("repeat call linked to ticket", "ticket", t.Code, "agency", ev.DestAgency, "caller", maskNumber(ev.Caller.Number))
		return t
	}
	region, year := m.opts.region(ev.DestAgency), ev.Time.UTC().Year()
	serial, err := m.store.serial(ctx, year, region)
	if err != nil {
		m.metrics.lost.WithLabelValues("no_serial").Inc()
		m.log.Error("ticket not opened", "call", ev.CallID, "caller", maskNumber(ev.Caller.Number), "err", err)
		return nil
	}
	t := &Ticket{
		SchemaVersion: SchemaVersion,
		Code:          ticketcode.New(year, region, serial),
		Channel:       ChannelPhone,
		Status:        StatusAperto,
		Region:        region,
		CreatedAt:     ev.Time,
		Caller:        Caller{Number: ev.Caller.Number, DisplayName: ev.Caller.DisplayName, Trunk: ev.Caller.Trunk},
	}
	t.addHop(Hop{Agency: ev.DestAgency, CallID: ev.CallID, Via: ViaCall, ReachedAt: ev.Time})
	m.track(ev.CallID, t)
	m.metrics.opened.WithLabelValues(ev.DestAgency).Inc()
	m.log.Info("ticket opened", "ticket", t.Code, "agency", ev.DestAgency, "caller", maskNumber(ev.Caller.Number))
	return t
}

// linkable returns the caller's ticket that a new call joins, or nil: one
// in progress here, or the newest in the store if not closed and changed
// within the link window.
func (m *Ticketing) linkable(ctx context.Context, ev modules.CallOffered) *Ticket {
	number := ev.Caller.Number
	if m.opts.LinkDays == 0 || number == "" || number == "anonymous" {
		return nil
	}
	var t *Ticket
	for _, lt := range m.live {
		if lt.Caller.Number == number && (t == nil || lt.CreatedAt.After(t.CreatedAt)) {
			t = lt
		}
	}
	if t == nil {
		var err error
		if t, err = m.store.latestFor(ctx, number); err != nil {
			m.log.Warn("repeat caller not looked up", "caller", maskNumber(number), "err", err)
		}
	}
	if t == nil || t.Status == StatusChiuso || ev.Time.Sub(t.UpdatedAt) > days(m.opts.LinkDays) {
		return nil
	}
	return t
}

func (m *Ticketing) answered(ctx context.Context, ev modules.CallAnswered) *Ticket {
	t := m.ticketOf(ctx, ev.Call)
	if t == nil {
		return nil
	}
	h := hopOf(t, ev.Call)
	h.Operator, h.AnsweredAt, h.WaitSeconds = ev.User, ev.Time, ev.Wait.Seconds()
	t.progress(StatusInLavorazione)
	return t
}

// transferred appends the hop of the new leg, or completes it if the new
// leg's CallOffered came first and joined the ticket as a repeat call.
func (m *Ticketing) transferred(ctx context.Context, ev modules.CallTransferred) *Ticket {
	t := m.ticketOf(ctx, ev.Call)
	if lc, ok := m.calls[ev.OriginalCallID]; t == nil && ok {
		t = m.live[lc.code]
	}
	if t == nil {
		return nil
	}
	leg := cmp.Or(ev.NewCallID, ev.CallID)
	h := t.hop(leg)
	if h == nil || leg == ev.CallID {
		h = t.addHop(Hop{Agency: cmp.Or(ev.ToAgency, ev.DestAgency), CallID: leg, ReachedAt: ev.Time})
	}
	h.Via, h.Reason, h.TransferredBy = ViaTransfer, string(ev.Type), ev.By
	t.progress(StatusTrasferito)
	m.track(leg, t)
	m.metrics.transferred.WithLabelValues(ev.FromAgency).Inc()
	m.log.Info("ticket transferred", "ticket", t.Code, "from", ev.FromAgency, "to", h.Agency, "by", ev.By)
	return t
}

func (m *Ticketing) overflowed(ctx context.Context, ev modules.CallOverflowed) *Ticket {
	t := m.ticketOf(ctx, ev.Call)
	if t == nil {
		return nil
	}
	if h := t.hop(ev.CallID); h != nil {
		if h.Agency != ev.FromAgency && (h.Via == ViaCall || h.Via == ViaRepeatCall) && h.AnsweredAt.IsZero() {
			// The offer named the agency where routing ended, and the
			// overflows that follow tell the way there: the call reached
			// FromAgency first.
			h.Agency = ev.FromAgency
			t.listAgencies()
		}
		h.EndedAt = ev.Time
	}
	t.addHop(Hop{Agency: ev.ToAgency, CallID: ev.CallID, Via: ViaOverflow, Reason: string(ev.Reason), ReachedAt: ev.Time})
	t.progress(StatusTrasferito)
	return t
}

func (m *Ticketing) ended(ctx context.Context, ev modules.CallEnded) *Ticket {
	t := m.ticketOf(ctx, ev.Call)
	if t == nil {
		return nil
	}
	h := hopOf(t, ev.Call)
	h.EndedAt, h.TalkSeconds, h.Disposition = ev.Time, ev.Talk.Seconds(), string(ev.Disposition)
	m.untrack(ev.CallID)
	return t
}

// CallHeaders gives the ticket code of a call as the header that carries it
// on a transferred call (modules.CallHeaderer).
func (m *Ticketing) CallHeaders(callID string) map[string]string {
	if code, ok := m.CodeForCall(callID); ok {
		return map[string]string{Header: code}
	}
	return nil
}
