package directory

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// writeBack holds refreshes that were answered before they reached Redis,
// and writes them every interval in one pipeline, as Kamailio's usrloc does
// in db_mode 2 (write-back). Only a refresh of bindings the node holds is
// held (refreshOnly): it changes no more than expiries and CSeqs, so its
// answer is the same whatever Redis says. Waiting for Redis on each one cost
// a round trip, a parked goroutine and a wake-up per REGISTER.
//
// Per AOR the node keeps its own order: a write that does not go through the
// write-back (a new contact, a removal, an edit) first writes the AOR's held
// refresh, or waits for the flush carrying it (settle). A node that stops
// gracefully writes what it holds (Close); a crash loses at most one
// interval's refreshes, whose bindings keep their previous expiry in Redis.
type writeBack struct {
	r        *Redis
	interval time.Duration

	mu       sync.Mutex
	pending  map[string]*heldRefresh // by AOR, not yet sent
	inflight map[string]*heldRefresh // the flush being written
	flushed  chan struct{}           // closed when the flush in flight ends
	failing  bool                    // the last flush left refreshes held
	done     chan struct{}           // closed when run has written the last
}

// heldRefresh is one registration answered and not yet written.
type heldRefresh struct {
	reg   Registration
	known []storedBinding // the AOR's bindings as Redis holds them, as far as the node knows
	puts  []string        // contact, stored value
}

func newWriteBack(r *Redis, interval time.Duration) *writeBack {
	return &writeBack{r: r, interval: interval, pending: make(map[string]*heldRefresh), done: make(chan struct{})}
}

// hold takes a refresh to write later; false if the AOR has one held
// already (the caller then writes through, which settles it first).
func (w *writeBack) hold(reg Registration, known []storedBinding, puts []string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[reg.AOR]; ok {
		return false
	}
	w.pending[reg.AOR] = &heldRefresh{reg, known, puts}
	return true
}

// settle writes the refresh held for aor, or waits for the flush writing
// it, so that a write through that follows lands after it.
func (w *writeBack) settle(ctx context.Context, aor string) error {
	w.mu.Lock()
	h := w.pending[aor]
	delete(w.pending, aor)
	var flushed chan struct{}
	if _, ok := w.inflight[aor]; ok {
		flushed = w.flushed
	}
	w.mu.Unlock()
	if flushed != nil {
		select {
		case <-flushed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if h == nil {
		return nil
	}
	failed, err := w.write(ctx, []*heldRefresh{h})
	w.mu.Lock()
	w.requeue(failed)
	w.mu.Unlock()
	return err
}

// held is how many registrations wait to be written.
func (w *writeBack) held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) + len(w.inflight)
}

// run flushes every interval until ctx ends, then once more, and closes done.
func (w *writeBack) run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.flush(context.Background())
			return
		case <-t.C:
			if !w.r.down.Load() { // else every flush would wait out the timeouts
				w.flush(ctx)
			}
		}
	}
}

// flush writes every held refresh; those Redis did not take are held again
// for the next flush.
func (w *writeBack) flush(ctx context.Context) {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	w.inflight, w.pending = w.pending, make(map[string]*heldRefresh, len(w.pending))
	w.flushed = make(chan struct{})
	batch := slices.Collect(maps.Values(w.inflight))
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, max(10*w.interval, 2*time.Second))
	failed, err := w.write(ctx, batch)
	cancel()

	w.mu.Lock()
	// Held again before the flush ends, so that a write through waiting for
	// it finds them and writes them first.
	w.requeue(failed)
	close(w.flushed)
	w.inflight, w.flushed = nil, nil
	failing := w.failing
	w.failing = len(failed) > 0
	w.mu.Unlock()
	switch {
	case len(failed) > 0 && !failing:
		w.r.log.Warn("redis: held refreshes not written; retrying at each flush", "registrations", len(failed), "err", err)
	case len(failed) == 0 && failing:
		w.r.log.Info("redis: held refreshes written again")
	}
}

// requeue holds failed refreshes again, unless a later one for the same AOR
// is held already: that one conflicts with what Redis holds when written,
// and goes through the register script, which writes the latest. w.mu is
// held.
func (w *writeBack) requeue(failed []*heldRefresh) {
	for _, h := range failed {
		if _, later := w.pending[h.reg.AOR]; !later {
			w.pending[h.reg.AOR] = h
		}
	}
}

// write sends batch in one pipeline (through the batcher, so that a caller's
// deadline holds) with the refresh script, and the AORs to the AOR index in
// one SADD. A refresh that finds another node's write, or
// whose binding expired while Redis was away, goes through the register
// script, as it would have written through, and is dropped when that
// refuses it as out of order. It returns the refreshes Redis did not take
// and the first error.
func (w *writeBack) write(ctx context.Context, batch []*heldRefresh) (failed []*heldRefresh, err error) {
	r := w.r
	now := time.Now()
	var fresh, stale []*heldRefresh
	for _, h := range batch {
		if slices.ContainsFunc(h.reg.Put, func(b Binding) bool { return !b.Expires.After(now) }) {
			stale = append(stale, h)
		} else {
			fresh = append(fresh, h)
		}
	}
	cmds := make([]*redis.Cmd, len(fresh))
	send := func(eval bool) error {
		return r.batch.pipelined(ctx, func(p redis.Pipeliner) {
			aors := make([]any, len(fresh))
			for i, h := range fresh {
				keys, args := []string{bindingsKey(h.reg.AOR)}, refreshArgs(h.known, h.puts, now, r.hexpire)
				if eval {
					cmds[i] = refreshBindings.Eval(ctx, p, keys, args...)
				} else {
					cmds[i] = refreshBindings.EvalSha(ctx, p, keys, args...)
				}
				aors[i] = h.reg.AOR
			}
			p.SAdd(ctx, aorsKey, aors...)
		})
	}
	if len(fresh) > 0 {
		if err = send(false); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = send(true)
		}
		if ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
			// Given up before the batch ran, or while it did: its commands
			// are not ours to read. Written or not, they are written again.
			return batch, wrap(cmp.Or(err, ctx.Err()))
		}
		err = wrap(err)
	}
	for i, h := range fresh {
		if n, cerr := cmds[i].Int(); cerr != nil {
			failed = append(failed, h)
		} else if n == 0 {
			stale = append(stale, h)
		}
	}
	for _, h := range stale {
		if _, rerr := r.register(ctx, h.reg, h.known, h.puts, time.Now()); rerr != nil && !errors.Is(rerr, ErrOutOfOrder) {
			failed = append(failed, h)
			err = cmp.Or(err, rerr)
			continue
		}
		// What this node holds for the AOR is not what Redis holds.
		r.bindings.drop(h.reg.AOR)
	}
	return failed, err
}
