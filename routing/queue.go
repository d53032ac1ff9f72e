package routing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Strategy is the order in which a queue rings its available operators.
type Strategy string

const (
	RingAll     Strategy = "ring-all"     // all at once
	RoundRobin  Strategy = "round-robin"  // one at a time, starting after the one who started last time
	LongestIdle Strategy = "longest-idle" // one at a time, longest without a call first
	FewestCalls Strategy = "fewest-calls" // one at a time, fewest calls since login first
)

var strategies = []Strategy{RingAll, RoundRobin, LongestIdle, FewestCalls}

// ParseStrategy checks a directory.QueueConfig.Strategy.
func ParseStrategy(s string) (Strategy, error) {
	if !slices.Contains(strategies, Strategy(s)) {
		return "", fmt.Errorf("%q: want ring-all, round-robin, longest-idle or fewest-calls", s)
	}
	return Strategy(s), nil
}

// OperatorState is what a logged-in operator is doing. Only available
// operators are rung; logged-out ones are not members at all.
type OperatorState string

const (
	Available OperatorState = "available"
	Busy      OperatorState = "busy" // on a call
	Paused    OperatorState = "paused"
)

// Operator is a logged-in member of an agency's queue.
type Operator struct {
	Username  string
	Agency    string
	State     OperatorState
	IdleSince time.Time // login, or the end of the last call
	Calls     int       // calls since login
}

// ErrNotLoggedIn is returned by Pause for an operator who is not logged in.
var ErrNotLoggedIn = errors.New("routing: operator not logged in")

// QueueState holds the operators' states. Queues keeps them in memory for a
// single node; several nodes need one shared implementation (Redis), which
// can reuse order for the strategies.
type QueueState interface {
	// Login makes username a member of agency's queue, available; logging in
	// again keeps the counters, logging in to another agency moves it there.
	Login(ctx context.Context, agency, username string) error
	Logout(ctx context.Context, username string) error
	Pause(ctx context.Context, username string, paused bool) error
	// CallStarted and CallEnded mark a member busy and idle again. They
	// ignore users who are not logged in, so the proxy may call them for
	// every answered call.
	CallStarted(ctx context.Context, username string) error
	CallEnded(ctx context.Context, username string) error
	// Operators lists agency's logged-in operators by username.
	Operators(ctx context.Context, agency string) ([]Operator, error)
	// Pick returns agency's available operators in the order s rings them,
	// and whether any member is busy (none available because all are on a
	// call, rather than paused or logged out). A round-robin pick moves the
	// rotation on.
	Pick(ctx context.Context, agency string, s Strategy) (targets []Target, busy bool, err error)
}

// order returns the available operators of ops in the order s rings them.
// ops are sorted by username; last is the operator a round-robin pick
// started with the time before.
func order(ops []Operator, s Strategy, last string) []Operator {
	avail := slices.DeleteFunc(slices.Clone(ops), func(o Operator) bool { return o.State != Available })
	switch s {
	case RoundRobin:
		// Start with the first operator after last, wrapping round.
		i := max(slices.IndexFunc(avail, func(o Operator) bool { return o.Username > last }), 0)
		avail = slices.Concat(avail[i:], avail[:i])
	case LongestIdle:
		slices.SortStableFunc(avail, func(a, b Operator) int { return a.IdleSince.Compare(b.IdleSince) })
	case FewestCalls:
		slices.SortStableFunc(avail, func(a, b Operator) int {
			return cmp.Or(cmp.Compare(a.Calls, b.Calls), a.IdleSince.Compare(b.IdleSince))
		})
	}
	return avail
}

// Queues is the in-memory QueueState of one node. The zero value is ready.
type Queues struct {
	Now func() time.Time // the clock; nil means time.Now

	mu   sync.Mutex
	ops  map[string]*member // by username
	last map[string]string  // agency → operator its last round-robin pick started with
}

type member struct {
	agency    string
	paused    bool
	active    int // calls in progress
	idleSince time.Time
	calls     int
}

var _ QueueState = (*Queues)(nil)

func (q *Queues) now() time.Time {
	if q.Now == nil {
		return time.Now()
	}
	return q.Now()
}

func (q *Queues) Login(_ context.Context, agency, username string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m, ok := q.ops[username]; ok && m.agency == agency {
		m.paused = false
		return nil
	}
	if q.ops == nil {
		q.ops = make(map[string]*member)
	}
	q.ops[username] = &member{agency: agency, idleSince: q.now()}
	return nil
}

func (q *Queues) Logout(_ context.Context, username string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.ops, username)
	return nil
}

func (q *Queues) Pause(_ context.Context, username string, paused bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	m, ok := q.ops[username]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotLoggedIn, username)
	}
	m.paused = paused
	return nil
}

func (q *Queues) CallStarted(_ context.Context, username string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m, ok := q.ops[username]; ok {
		m.active++
		m.calls++
	}
	return nil
}

func (q *Queues) CallEnded(_ context.Context, username string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if m, ok := q.ops[username]; ok && m.active > 0 {
		m.active--
		if m.active == 0 {
			m.idleSince = q.now()
		}
	}
	return nil
}

func (q *Queues) Operators(_ context.Context, agency string) ([]Operator, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.operators(agency), nil
}

func (q *Queues) operators(agency string) []Operator {
	var out []Operator
	for u, m := range q.ops {
		if m.agency != agency {
			continue
		}
		o := Operator{Username: u, Agency: agency, State: Available, IdleSince: m.idleSince, Calls: m.calls}
		switch {
		case m.active > 0:
			o.State = Busy
		case m.paused:
			o.State = Paused
		}
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Operator) int { return strings.Compare(a.Username, b.Username) })
	return out
}

func (q *Queues) Pick(_ context.Context, agency string, s Strategy) ([]Target, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	ops := q.operators(agency)
	picked := order(ops, s, q.last[agency])
	if s == RoundRobin && len(picked) > 0 {
		if q.last == nil {
			q.last = make(map[string]string)
		}
		q.last[agency] = picked[0].Username
	}
	targets := make([]Target, len(picked))
	for i, o := range picked {
		targets[i] = Target{Username: o.Username, Agency: agency}
	}
	busy := slices.ContainsFunc(ops, func(o Operator) bool { return o.State == Busy })
	return targets, busy, nil
}
