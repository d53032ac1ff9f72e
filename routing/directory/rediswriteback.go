package directory

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// refreshesPerCall bounds the AORs one refresh script call writes, and so
// how long the call holds redis-server, which runs one command at a time.
// The script declares every key it writes, but the keys of a call are in
// different hash slots: a store on Redis Cluster would group them by slot.
const refreshesPerCall = 100

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

	mu      sync.Mutex
	pending map[string]*heldRefresh  // by AOR, not yet sent
	busy    map[string]chan struct{} // AORs whose refresh is being written; closed when it is
	closed  bool                     // Close has begun: nothing more is held
	failing bool                     // the last flush left refreshes held
	done    chan struct{}            // closed when run has written the last
}

// heldRefresh is one registration answered and not yet written.
type heldRefresh struct {
	reg   Registration
	known []storedBinding // the AOR's bindings as Redis holds them, as far as the node knows
	puts  []string        // contact, stored value
}

func newWriteBack(r *Redis, interval time.Duration) *writeBack {
	return &writeBack{r: r, interval: interval, pending: make(map[string]*heldRefresh),
		busy: make(map[string]chan struct{}), done: make(chan struct{})}
}

// hold takes a refresh to write later; false if the AOR has one held
// already (the caller then writes through, which settles it first) or the
// store is closing.
func (w *writeBack) hold(reg Registration, known []storedBinding, puts []string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[reg.AOR]; ok || w.closed {
		return false
	}
	w.pending[reg.AOR] = &heldRefresh{reg, known, puts}
	return true
}

// settle returns once nothing held for aor remains unwritten: it waits for
// a write of the AOR's refresh in flight (a flush, another settle) and
// writes the one held, so that a write through that follows lands after
// them. It fails if Redis does not take the held refresh.
func (w *writeBack) settle(ctx context.Context, aor string) error {
	w.mu.Lock()
	for {
		ch, busy := w.busy[aor]
		if !busy {
			break
		}
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
	}
	h := w.pending[aor]
	if h == nil {
		w.mu.Unlock()
		return nil
	}
	delete(w.pending, aor)
	ch := make(chan struct{})
	w.busy[aor] = ch
	w.mu.Unlock()

	failed, err := w.write(ctx, []*heldRefresh{h})
	w.mu.Lock()
	w.requeue(failed)
	delete(w.busy, aor)
	close(ch)
	w.mu.Unlock()
	return err
}

// held is how many registrations wait to be written.
func (w *writeBack) held() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) + len(w.busy)
}

// run flushes every interval until ctx ends, then once more, and closes done.
func (w *writeBack) run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.mu.Lock()
			w.closed = true
			w.mu.Unlock()
			if lost := w.flush(context.Background()); lost > 0 {
				w.r.log.Error("redis: held refreshes lost on close: Redis did not take them", "registrations", lost)
			}
			return
		case <-t.C:
			if !w.r.down.Load() { // else every flush would wait out the timeouts
				w.flush(ctx)
			}
		}
	}
}

// flush writes every held refresh but those of AORs being written already,
// and returns how many Redis did not take: they are held again for the next
// flush.
func (w *writeBack) flush(ctx context.Context) (failed int) {
	w.mu.Lock()
	var batch []*heldRefresh
	flushed := make(chan struct{})
	for aor, h := range w.pending {
		if _, busy := w.busy[aor]; busy {
			continue
		}
		batch = append(batch, h)
		delete(w.pending, aor)
		w.busy[aor] = flushed
	}
	w.mu.Unlock()
	if len(batch) == 0 {
		return 0
	}

	wctx, cancel := context.WithTimeout(ctx, max(10*w.interval, 2*time.Second))
	left, err := w.write(wctx, batch)
	cancel()

	w.mu.Lock()
	// Held again before the AORs are released, so that a write through
	// waiting for one of them finds its refresh and writes it first.
	w.requeue(left)
	for _, h := range batch {
		delete(w.busy, h.reg.AOR)
	}
	close(flushed)
	failing := w.failing
	w.failing = len(left) > 0
	w.mu.Unlock()
	switch {
	case ctx.Err() != nil: // closing: the last flush writes them or logs them lost
	case len(left) > 0 && !failing:
		w.r.log.Warn("redis: held refreshes not written; retrying at each flush", "registrations", len(left), "err", err)
	case len(left) == 0 && failing:
		w.r.log.Info("redis: held refreshes written again")
	}
	return len(left)
}

// requeue holds failed refreshes again, unless a later one for the same AOR
// is held already (that one conflicts with what Redis holds when written,
// and goes through the register script, which writes the latest) or their
// bindings have expired meanwhile. w.mu is held.
func (w *writeBack) requeue(failed []*heldRefresh) {
	now := time.Now()
	for _, h := range failed {
		_, later := w.pending[h.reg.AOR]
		if !later && !allExpired(h.reg.Put, now) {
			w.pending[h.reg.AOR] = h
		}
	}
}

func allExpired(bs []Binding, now time.Time) bool {
	return !slices.ContainsFunc(bs, func(b Binding) bool { return b.Expires.After(now) })
}

// write sends batch in one pipeline (through the batcher, so that a caller's
// deadline holds): the refresh script, refreshesPerCall AORs a call, and the
// AORs to the AOR index in one SADD. A refresh that finds another node's
// write, or whose binding expired while Redis was away, goes through the
// register script, as it would have written through, and is dropped when
// that refuses it as out of order. It returns the refreshes Redis did not
// take and the first error.
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
	// Built once: a NOSCRIPT answer sends them again.
	calls := (len(fresh) + refreshesPerCall - 1) / refreshesPerCall
	keys, args := make([][]string, calls), make([][]any, calls)
	aors := make([]any, len(fresh))
	for i, h := range fresh {
		c := i / refreshesPerCall
		if args[c] == nil {
			args[c] = refreshHead(now, r.hexpire, 4*min(refreshesPerCall, len(fresh)-i))
		}
		keys[c] = append(keys[c], bindingsKey(h.reg.AOR))
		args[c] = appendRefreshArgs(args[c], h.known, h.puts)
		aors[i] = h.reg.AOR
	}
	cmds := make([]*redis.Cmd, calls)
	send := func(eval bool) error {
		return r.batch.pipelined(ctx, func(p redis.Pipeliner) {
			for c := range cmds {
				if eval {
					cmds[c] = refreshBindings.Eval(ctx, p, keys[c], args[c]...)
				} else {
					cmds[c] = refreshBindings.EvalSha(ctx, p, keys[c], args[c]...)
				}
			}
			p.SAdd(ctx, aorsKey, aors...)
		})
	}
	if len(fresh) > 0 {
		if err = send(false); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = send(true)
		}
		if isAbandoned(err) {
			// Written or not, they are written again: the batcher's one
			// loop runs calls in order, so this batch lands before the
			// retry, which then conflicts harmlessly.
			return batch, wrap(err)
		}
		err = wrap(err)
	}
	for c, cmd := range cmds {
		part := fresh[c*refreshesPerCall : min((c+1)*refreshesPerCall, len(fresh))]
		written, cerr := cmd.Int64Slice()
		if cerr == nil && len(written) != len(part) {
			cerr = fmt.Errorf("directory: redis: refresh answered %d AORs of %d", len(written), len(part))
		}
		for j, h := range part {
			switch {
			case cerr != nil || written[j] < 0:
				failed = append(failed, h)
			case written[j] == 0:
				stale = append(stale, h)
			}
		}
	}
	// Concurrently, so that the batcher sends them together: after a
	// failover that lost data every one of them lands here.
	errs := make([]error, len(stale))
	var wg sync.WaitGroup
	for i, h := range stale {
		wg.Go(func() {
			if _, rerr := r.register(ctx, h.reg, h.known, h.puts, time.Now()); rerr != nil && !errors.Is(rerr, ErrOutOfOrder) {
				errs[i] = rerr
				return
			}
			// What this node holds for the AOR is not what Redis holds.
			r.bindings.drop(h.reg.AOR)
		})
	}
	wg.Wait()
	for i, h := range stale {
		if errs[i] != nil {
			failed = append(failed, h)
			err = cmp.Or(err, errs[i])
		}
	}
	return failed, err
}
