// Package routing is the dial plan: a plain request (who calls, what was
// dialled, from which agency) goes in, a decision (whom to ring, how, for how
// long) comes out. It never sees a SIP message, so it is tested with tables.
package routing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/lineamica/centralino/routing/directory"
)

// Request is what the proxy knows about a new call.
type Request struct {
	Caller       string // username of an authenticated caller, or the caller's number
	CallerAgency string // IPA code of the caller's agency; "" when unknown
	Dialled      string // user part of the Request-URI
	Trunk        string // the trunk the call came in on; such calls never leave through a trunk
	// Time is when the call arrived; office hours are judged at it. The zero
	// value means now.
	Time time.Time
	// Tried are the agencies that already had the call and could not take
	// it, for Overflow: the chain never comes back to them.
	Tried []string
}

// Target is one user to ring, which the proxy turns into that user's
// contacts, or one peer of a trunk.
type Target struct {
	Username string
	Agency   string
	Trunk    string // the trunk of Peer; "" for a user
	Peer     Peer
}

// Decision says how to handle a call. Status is non-zero when the call is to
// be answered with a final response instead of ringing anyone.
type Decision struct {
	Targets     []Target
	Parallel    bool // ring all targets at once; otherwise one after another
	RingTimeout time.Duration
	DestAgency  string // IPA code of the agency reached, for metrics and events
	Status      int
	Reason      string
	Public      bool // the number dialled is an agency's public number
	// Overflowed lists the agencies the call left, in order, before reaching
	// DestAgency (or giving up: then DestAgency is the agency dialled).
	Overflowed []Hop
}

// Hop is a call moving along an agency's overflow chain.
type Hop struct {
	From, To string // IPA codes
	Reason   OverflowReason
}

// OverflowReason says why a call left an agency. The values are those of
// modules.OverflowReason, so events can carry them as they are.
type OverflowReason string

const (
	OverflowClosed      OverflowReason = "closed"      // outside office hours, a holiday or a closure
	OverflowBusy        OverflowReason = "busy"        // every logged-in operator on a call
	OverflowUnavailable OverflowReason = "unavailable" // no operator, or all paused or logged out
	OverflowNoAnswer    OverflowReason = "no-answer"   // operators rung, none answered in time
	OverflowFailed      OverflowReason = "failed"      // the agency's targets failed (5xx, unreachable)
)

// Router turns requests into decisions.
type Router struct {
	Dir         directory.Store
	RingTimeout time.Duration
	// Queues holds operator states for agencies with a queue. When nil,
	// their public numbers ring every operator at once, as without a queue.
	Queues QueueState
	// Trunks take the numbers the directory does not know; may be nil.
	Trunks *Trunks
	Log    *slog.Logger // nil: slog.Default()
}

func (r *Router) log() *slog.Logger {
	if r.Log == nil {
		return slog.Default()
	}
	return r.Log
}

// Route decides where a call goes. The numbering plan, in order:
//  1. a username (sip:campania.rossi@...) rings that user;
//  2. an agency's public number rings its operators: during office hours, all
//     at once or by its queue; closed or without an available operator, the
//     call follows the agency's overflow chain;
//  3. a short extension rings that extension in the caller's own agency;
//  4. a full number (agency prefix + extension) rings that user;
//  5. any other number matching a trunk's numbers or prefixes leaves
//     through the trunk's peers that are up.
//
// An error is returned only when the directory fails; a number that leads
// nowhere is a Decision with Status 404.
func (r *Router) Route(ctx context.Context, req Request) (Decision, error) {
	d := req.Dialled
	if d == "" {
		return reject(404, "No number dialled"), nil
	}
	if u, err := r.Dir.User(ctx, d); err == nil {
		return r.ringUser(u), nil
	} else if !errors.Is(err, directory.ErrNotFound) {
		return Decision{}, err
	}
	if a, err := r.Dir.AgencyByNumber(ctx, d); err == nil {
		dec, err := r.reachAgency(ctx, a, cmp.Or(req.Time, time.Now()), map[string]bool{})
		dec.Public = true
		return dec, err
	} else if !errors.Is(err, directory.ErrNotFound) {
		return Decision{}, err
	}
	if req.CallerAgency != "" {
		if u, err := r.Dir.UserByExtension(ctx, req.CallerAgency, d); err == nil {
			return r.ringUser(u), nil
		} else if !errors.Is(err, directory.ErrNotFound) {
			return Decision{}, err
		}
	}
	// Longest prefix first, so that a sub-office (8110) wins over its parent (81).
	for i := len(d) - 1; i > 0; i-- {
		a, err := r.Dir.AgencyByPrefix(ctx, d[:i])
		if errors.Is(err, directory.ErrNotFound) {
			continue
		}
		if err != nil {
			return Decision{}, err
		}
		u, err := r.Dir.UserByExtension(ctx, a.Code, d[i:])
		if err == nil {
			return r.ringUser(u), nil
		}
		if !errors.Is(err, directory.ErrNotFound) {
			return Decision{}, err
		}
		break
	}
	if r.Trunks != nil && req.Trunk == "" {
		if tr, ok := r.Trunks.Match(d); ok {
			return r.viaTrunk(tr), nil
		}
	}
	return reject(404, "Not Found"), nil
}

// Overflow is the next decision for a call that agency from took but could
// not complete (its operators did not answer, were busy, or failed): the
// call moves along from's overflow chain. Its Overflowed starts with the hop
// out of from. A decision with Status 0 and no Targets never comes back; when
// no agency further on can take the call, Status is the refusal to give.
func (r *Router) Overflow(ctx context.Context, req Request, from string, why OverflowReason) (Decision, error) {
	a, err := r.Dir.Agency(ctx, from)
	if errors.Is(err, directory.ErrNotFound) || err == nil && a.Overflow == "" {
		return reject(480, "Nessun operatore disponibile"), nil
	}
	if err != nil {
		return Decision{}, fmt.Errorf("routing: overflow of %s: %w", from, err)
	}
	seen := map[string]bool{from: true}
	for _, code := range req.Tried {
		seen[code] = true
	}
	if seen[a.Overflow] {
		return reject(480, "Nessun operatore disponibile"), nil
	}
	next, err := r.Dir.Agency(ctx, a.Overflow)
	if errors.Is(err, directory.ErrNotFound) {
		return reject(480, "Nessun operatore disponibile"), nil
	}
	if err != nil {
		return Decision{}, fmt.Errorf("routing: overflow of %s: %w", from, err)
	}
	dec, err := r.reachAgency(ctx, next, cmp.Or(req.Time, time.Now()), seen)
	if err != nil {
		return Decision{}, err
	}
	dec.Public = true
	dec.Overflowed = append([]Hop{{From: from, To: next.Code, Reason: why}}, dec.Overflowed...)
	return dec, nil
}

func (r *Router) ringUser(u directory.User) Decision {
	return Decision{
		Targets:     []Target{{Username: u.Username, Agency: u.Agency}},
		Parallel:    true,
		RingTimeout: r.RingTimeout,
		DestAgency:  u.Agency,
	}
}

// reachAgency offers the call to agency a, then along its overflow chain,
// until one can take it, skipping the agencies already seen. When none can,
// the answer is the refusal of a, the first agency offered: for the agency
// the caller dialled, its opening hours are what the caller needs.
func (r *Router) reachAgency(ctx context.Context, a directory.Agency, now time.Time, seen map[string]bool) (Decision, error) {
	var hops []Hop
	var refusal Decision
	for {
		seen[a.Code] = true
		dec, why, err := r.offer(ctx, a, now)
		if err != nil {
			return Decision{}, err
		}
		if why == "" {
			dec.Overflowed = hops
			return dec, nil
		}
		if hops == nil { // the agency dialled
			refusal = dec
			refusal.DestAgency = a.Code
		}
		if a.Overflow == "" || seen[a.Overflow] {
			break
		}
		next, err := r.Dir.Agency(ctx, a.Overflow)
		if errors.Is(err, directory.ErrNotFound) {
			break
		}
		if err != nil {
			return Decision{}, fmt.Errorf("routing: overflow of %s: %w", a.Code, err)
		}
		hops = append(hops, Hop{From: a.Code, To: next.Code, Reason: why})
		a = next
	}
	refusal.Overflowed = hops
	return refusal, nil
}

// offer decides how agency a alone takes a call. When it cannot, the decision
// is its refusal and why says the reason to overflow.
func (r *Router) offer(ctx context.Context, a directory.Agency, now time.Time) (Decision, OverflowReason, error) {
	// Parsed per call rather than cached: about a microsecond, little beside a
	// SIP transaction, and the agency may have changed since the last call.
	h, err := ParseHours(a.Hours, a.Closures)
	if err != nil {
		return Decision{}, "", fmt.Errorf("routing: agency %s: %w", a.Code, err)
	}
	if !h.Open(now) {
		return reject(480, closedReason(h, now)), OverflowClosed, nil
	}
	if a.Queue.Strategy == "" || r.Queues == nil {
		return r.ringOperators(ctx, a)
	}
	s, err := ParseStrategy(a.Queue.Strategy)
	if err != nil {
		return Decision{}, "", fmt.Errorf("routing: agency %s: queue.strategy: %w", a.Code, err)
	}
	targets, busy, err := r.Queues.Pick(ctx, a.Code, s)
	switch {
	case err != nil:
		// Operator states unreadable (Redis down): the agency degrades to
		// ringing every operator at once rather than refusing its calls.
		r.log().Warn("queue state unavailable: ringing every operator", "agency", a.Code, "error", err)
		return r.ringOperators(ctx, a)
	case len(targets) > 0:
		return r.ringQueue(a, s, targets), "", nil
	case busy:
		return reject(486, "Operatori tutti occupati"), OverflowBusy, nil
	}
	return reject(480, "Nessun operatore disponibile"), OverflowUnavailable, nil
}

// ringOperators rings every operator of an agency without a queue at once.
func (r *Router) ringOperators(ctx context.Context, a directory.Agency) (Decision, OverflowReason, error) {
	users, err := r.Dir.Users(ctx, a.Code)
	if err != nil {
		return Decision{}, "", fmt.Errorf("routing: operators of %s: %w", a.Code, err)
	}
	dec := Decision{Parallel: true, RingTimeout: r.RingTimeout, DestAgency: a.Code}
	for _, u := range users {
		if u.Role == directory.RoleOperator {
			dec.Targets = append(dec.Targets, Target{Username: u.Username, Agency: a.Code})
		}
	}
	if len(dec.Targets) == 0 {
		return reject(480, "Nessun operatore disponibile"), OverflowUnavailable, nil
	}
	return dec, "", nil
}

// ringQueue rings the picked operators by strategy s. The proxy rings a
// serial decision one target at a time for RingTimeout each, so MaxWait is
// kept by ringing no more operators than fit in it.
func (r *Router) ringQueue(a directory.Agency, s Strategy, targets []Target) Decision {
	q := a.Queue
	timeout := cmp.Or(q.RingTimeout, r.RingTimeout)
	if q.MaxWait > 0 && (timeout == 0 || timeout > q.MaxWait) {
		timeout = q.MaxWait
	}
	parallel := s == RingAll
	if q.MaxWait > 0 && !parallel {
		targets = targets[:min(len(targets), int(q.MaxWait/timeout))]
	}
	return Decision{Targets: targets, Parallel: parallel, RingTimeout: timeout, DestAgency: a.Code}
}

// closedReason is the reason phrase outside office hours, with the next
// opening when there is one: "Ufficio chiuso, riapre il 07/04 alle 08:30".
func closedReason(h Hours, now time.Time) string {
	next, ok := h.NextOpen(now)
	if !ok {
		return "Ufficio chiuso"
	}
	return "Ufficio chiuso, riapre il " + next.Format("02/01") + " alle " + next.Format("15:04")
}

func reject(status int, reason string) Decision {
	return Decision{Status: status, Reason: reason}
}

// ValidateAgency checks what routing reads from an agency's configuration:
// hours, closures and queue. An error names the field and fits on one line,
// so a config loader can prefix it with the agency's path.
func ValidateAgency(a directory.Agency) error {
	if _, err := ParseHours(a.Hours, a.Closures); err != nil {
		return err
	}
	q := a.Queue
	if q == (directory.QueueConfig{}) {
		return nil
	}
	if _, err := ParseStrategy(q.Strategy); err != nil {
		return fmt.Errorf("queue.strategy: %w", err)
	}
	if q.RingTimeout < 0 {
		return fmt.Errorf("queue.ring_timeout: %s is negative", q.RingTimeout)
	}
	if q.MaxWait < 0 {
		return fmt.Errorf("queue.max_wait: %s is negative", q.MaxWait)
	}
	return nil
}
