package ticketing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lineamica/centralino/modules"
)

// Keys in the module's KV:
//
//	t:<code>                     the ticket's JSON
//	seq:<year>:<region>          the last block of serial numbers leased
//
// and indexes of codes, scored by creation time (closed: by closing time):
//
//	all, status:<s>, caller:<sha-256 of the number>, closed,
//	agency:<ipa>, agency:<ipa>:status:<s>
const (
	readTimeout  = time.Second     // a read on the event path gives up after this
	writeTimeout = 5 * time.Second // one ticket's writes
	minBackoff   = 50 * time.Millisecond
	maxBackoff   = 5 * time.Second
	serialBlock  = 20 // serial numbers leased at a time
)

var (
	errOutboxFull = errors.New("outbox full")
	errStoreDown  = errors.New("store unreachable")
)

// store keeps tickets in the module's KV. Writes go through an outbox that
// holds the latest version of each changed ticket, oldest first, and that a
// single writer drains, retrying with backoff while the KV is unreachable:
// the event handler never waits on a write, and a Redis blip loses nothing
// unless the outbox fills up. Reads see the outbox first.
type store struct {
	kv        modules.KV
	log       *slog.Logger
	maxOutbox int
	onError   func() // counts a failed KV operation

	// down is set when a KV operation fails and cleared when one succeeds:
	// while set, reads fail at once instead of each waiting for a timeout,
	// and the writer probes the KV.
	down atomic.Bool

	mu      sync.Mutex
	pending map[string]*pendingTicket
	order   []string // codes of pending, oldest first

	wake    chan struct{} // pokes the writer; capacity 1
	closing chan struct{} // closed by close: drain and return
	done    chan struct{} // closed when the writer returns
	cancel  context.CancelFunc

	serials map[string]*lease // by counter key; used by the event handler only
}

type pendingTicket struct {
	t       *Ticket // never modified once here
	version uint64
}

// lease is a range [next, end) of serial numbers, and the start of the
// next block if already leased (0 if not).
type lease struct{ next, end, spare int64 }

// newStore returns a store whose writer waits for start.
func newStore(kv modules.KV, log *slog.Logger, maxOutbox int, onError func()) *store {
	return &store{
		kv:        kv,
		log:       log,
		maxOutbox: maxOutbox,
		onError:   onError,
		pending:   map[string]*pendingTicket{},
		wake:      make(chan struct{}, 1),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
		serials:   map[string]*lease{},
	}
}

func (s *store) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
}

// save queues a copy of t for writing.
func (s *store) save(t *Ticket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[t.Code]
	switch {
	case ok:
		p.t, p.version = t.clone(), p.version+1
	case len(s.pending) >= s.maxOutbox:
		return errOutboxFull
	default:
		s.pending[t.Code] = &pendingTicket{t: t.clone()}
		s.order = append(s.order, t.Code)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// outboxLen is the number of tickets waiting to be written.
func (s *store) outboxLen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// get returns a copy of the ticket, from the outbox or the KV.
func (s *store) get(ctx context.Context, code string) (*Ticket, error) {
	s.mu.Lock()
	var pending *Ticket
	if p, ok := s.pending[code]; ok {
		pending = p.t
	}
	s.mu.Unlock()
	if pending != nil {
		return pending.clone(), nil
	}
	var b []byte
	err := s.read(ctx, func(ctx context.Context) (err error) {
		b, err = s.kv.Get(ctx, "t:"+code)
		return err
	})
	if err != nil {
		return nil, err
	}
	var t Ticket
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("ticket %s: %w", code, err)
	}
	t.stored = t.Status
	return &t, nil
}

// read runs a KV read with readTimeout, failing at once while the KV is down.
func (s *store) read(ctx context.Context, f func(context.Context) error) error {
	if s.down.Load() {
		return errStoreDown
	}
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	err := f(ctx)
	s.note(err)
	return err
}

// note records the outcome of a KV operation; a missing key is a success.
func (s *store) note(err error) {
	if err == nil || errors.Is(err, modules.ErrNotFound) {
		if s.down.Swap(false) {
			s.log.Info("ticket store reachable again", "outbox", s.outboxLen())
		}
		return
	}
	s.onError()
	if !s.down.Swap(true) {
		s.log.Warn("ticket store unreachable; keeping writes in the outbox", "err", err)
	}
}

// run is the writer.
func (s *store) run(ctx context.Context) {
	defer close(s.done)
	backoff := minBackoff
	for {
		s.mu.Lock()
		var p pendingTicket
		if len(s.order) > 0 {
			p = *s.pending[s.order[0]]
		}
		s.mu.Unlock()

		var err error
		switch {
		case p.t != nil:
			err = s.write(ctx, p.t)
		case s.isClosing():
			return
		case s.down.Load():
			err = s.probe(ctx)
		default:
			select {
			case <-s.wake:
			case <-s.closing:
			}
			continue
		}
		s.note(err)
		if err != nil {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		backoff = minBackoff
		if p.t != nil {
			s.written(p.t.Code, p.version)
		}
	}
}

// probe asks the KV for a sign of life, which reads wait for while it is down.
func (s *store) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	_, err := s.kv.IndexCount(ctx, "all")
	return err
}

func (s *store) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// written drops the ticket from the outbox unless it changed meanwhile.
func (s *store) written(code string, version uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[code].version == version {
		delete(s.pending, code)
		s.order = s.order[1:]
	}
}

// close waits for the outbox to drain, or for ctx to end.
func (s *store) close(ctx context.Context) error {
	close(s.closing)
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.cancel()
		<-s.done
		return fmt.Errorf("%d tickets not written: %w", s.outboxLen(), ctx.Err())
	}
}

// write stores t and sets its indexes. Every step is idempotent, so a
// write that fails halfway is simply done again.
func (s *store) write(ctx context.Context, t *Ticket) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if err := s.kv.Put(ctx, "t:"+t.Code, b, 0); err != nil {
		return err
	}
	in, out := indexes(t)
	score := float64(t.CreatedAt.UnixMilli())
	for _, ix := range in {
		if err := s.kv.IndexAdd(ctx, ix, t.Code, score); err != nil {
			return err
		}
	}
	for _, ix := range out {
		if err := s.kv.IndexRemove(ctx, ix, t.Code); err != nil {
			return err
		}
	}
	if t.Status == StatusChiuso {
		return s.kv.IndexAdd(ctx, "closed", t.Code, float64(t.ClosedAt.UnixMilli()))
	}
	return nil
}

// indexes returns the indexes t belongs in, and those of its other
// statuses, that it must be out of.
func indexes(t *Ticket) (in, out []string) {
	in = []string{"all", statusIndex(t.Status), callerIndex(t.Caller.Number)}
	for _, a := range t.Agencies {
		in = append(in, agencyIndex(a, ""), agencyIndex(a, t.Status))
	}
	for _, st := range statuses {
		if st == t.Status {
			continue
		}
		out = append(out, statusIndex(st))
		for _, a := range t.Agencies {
			out = append(out, agencyIndex(a, st))
		}
	}
	return in, out
}

func statusIndex(s Status) string { return "status:" + string(s) }

// callerIndex hashes the number, which then appears in no key name.
func callerIndex(number string) string {
	sum := sha256.Sum256([]byte(number))
	return "caller:" + hex.EncodeToString(sum[:16])
}

// agencyIndex is the index of the agency's tickets, or of those with status s.
func agencyIndex(agency string, s Status) string {
	if s == "" {
		return "agency:" + agency
	}
	return "agency:" + agency + ":status:" + string(s)
}

// page returns up to n tickets of index, newest first, after skipping the
// first skip that keep accepts (keep nil: all), and whether there are more.
func (s *store) page(ctx context.Context, index string, keep func(*Ticket) bool, skip, n int) ([]*Ticket, bool, error) {
	var out []*Ticket
	offset, chunk := 0, n+1
	if keep == nil {
		offset, skip = skip, 0
	}
	for len(out) <= n {
		var codes []string
		err := s.read(ctx, func(ctx context.Context) (err error) {
			codes, err = s.kv.IndexRange(ctx, index, offset, chunk, true)
			return err
		})
		if err != nil {
			return nil, false, err
		}
		for _, code := range codes {
			t, err := s.get(ctx, code)
			if errors.Is(err, modules.ErrNotFound) {
				continue // deleted after the retention period while listed
			}
			if err != nil {
				return nil, false, err
			}
			if keep != nil && !keep(t) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, t)
		}
		if len(codes) < chunk {
			break
		}
		offset += chunk
	}
	if len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// latestFor returns the caller's newest ticket, or nil: the newer of the
// outbox's and the KV's, so that a call right after the last one ended, or
// while the KV is unreachable, finds the ticket not yet written.
func (s *store) latestFor(ctx context.Context, number string) (*Ticket, error) {
	pending := s.pendingFor(number)
	var codes []string
	err := s.read(ctx, func(ctx context.Context) (err error) {
		codes, err = s.kv.IndexRange(ctx, callerIndex(number), 0, 1, true)
		return err
	})
	var t *Ticket
	if err == nil && len(codes) > 0 {
		t, err = s.get(ctx, codes[0])
	}
	switch {
	case pending != nil && (t == nil || pending.CreatedAt.After(t.CreatedAt)):
		return pending, nil
	case errors.Is(err, modules.ErrNotFound):
		return nil, nil
	}
	return t, err
}

// pendingFor returns a copy of the caller's newest ticket in the outbox, or
// nil.
func (s *store) pendingFor(number string) *Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	var newest *Ticket
	for _, p := range s.pending {
		if p.t.Caller.Number == number && (newest == nil || p.t.CreatedAt.After(newest.CreatedAt)) {
			newest = p.t
		}
	}
	if newest == nil {
		return nil
	}
	return newest.clone()
}

// serial hands out the next serial number for the year and region. Serials
// come in blocks leased from a counter in the KV, so that nodes sharing a
// Redis never hand out the same one; the next block is leased when half of
// the current one is used, so a node keeps opening tickets through a blip.
func (s *store) serial(ctx context.Context, year int, region string) (int64, error) {
	key := fmt.Sprintf("seq:%d:%s", year, region)
	l := s.serials[key]
	if l == nil {
		l = &lease{}
		s.serials[key] = l
	}
	var err error
	if l.spare == 0 && l.end-l.next <= serialBlock/2 {
		var n int64
		err = s.read(ctx, func(ctx context.Context) (err error) {
			n, err = s.kv.Incr(ctx, key)
			return err
		})
		if err == nil {
			l.spare = (n-1)*serialBlock + 1
		}
	}
	if l.next == l.end {
		if l.spare == 0 {
			return 0, fmt.Errorf("no serial number left: %w", err)
		}
		l.next, l.end, l.spare = l.spare, l.spare+serialBlock, 0
	}
	l.next++
	return l.next - 1, nil
}

// sweep deletes the tickets closed for longer than retention.
func (s *store) sweep(ctx context.Context, now time.Time, retention time.Duration) error {
	for {
		codes, err := s.kv.IndexRange(ctx, "closed", 0, 100, false)
		if err != nil || len(codes) == 0 {
			return err
		}
		for _, code := range codes {
			t, err := s.get(ctx, code)
			switch {
			case errors.Is(err, modules.ErrNotFound):
				err = s.kv.IndexRemove(ctx, "closed", code)
			case err != nil:
			case now.Sub(t.ClosedAt) < retention:
				return nil // the index is in closing order
			default:
				err = s.delete(ctx, t)
			}
			if err != nil {
				return err
			}
		}
	}
}

func (s *store) delete(ctx context.Context, t *Ticket) error {
	in, _ := indexes(t)
	for _, ix := range in {
		if err := s.kv.IndexRemove(ctx, ix, t.Code); err != nil {
			return err
		}
	}
	if err := s.kv.Delete(ctx, "t:"+t.Code); err != nil {
		return err
	}
	return s.kv.IndexRemove(ctx, "closed", t.Code)
}
