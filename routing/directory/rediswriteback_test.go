package directory

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/redisserver"
)

// storedCSeq reads the CSeq Redis holds for each contact of aor, behind the
// store's back (0: none).
func storedCSeq(t *testing.T, url, aor, contact string) uint32 {
	t.Helper()
	v, err := rawClient(t, url).HGet(t.Context(), bindingsKey(aor), contact).Result()
	if err != nil {
		return 0
	}
	b, err := decodeBinding(v)
	must(t, err)
	return b.CSeq
}

// backAndThrough starts a redis-server and two nodes' stores on it: a holds
// refreshes (for an hour: the test flushes them), b writes them through.
func backAndThrough(t *testing.T) (srv *redisserver.Server, a, b *Redis) {
	srv = redisserver.Start(t)
	return srv, newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour}), newRedis(t, srv.URL(), RedisOptions{})
}

// waitCached waits until r holds aor's bindings in its cache, where the
// announcement of another node's registration no longer drops them: a
// refresh through r is then not announced.
func waitCached(t *testing.T, r *Redis, aor string) {
	t.Helper()
	eventually(t, time.Second, "the store to cache "+aor, func() bool {
		_, err := r.Bindings(t.Context(), aor)
		must(t, err)
		time.Sleep(50 * time.Millisecond) // an announcement may still drop it
		_, _, ok := r.bindings.get(aor)
		return ok
	})
}

func refreshOf(b Binding, cseq uint32) Registration {
	b.CSeq = cseq
	return Registration{AOR: b.AOR, CallID: b.CallID, CSeq: cseq, Put: []Binding{b}}
}

// A refresh of a binding the node holds is answered before Redis has it and
// written at the next flush; a write that does not go through the
// write-back (a second contact) first writes the refresh held for its AOR;
// a node that stops writes what it holds.
func TestRedisWriteBackHoldsRefreshes(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r, err := NewRedis(t.Context(), srv.URL(), RedisOptions{WriteBack: time.Hour})
	must(t, err)
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	_, _, err = r.Register(ctx, refreshOf(desk, 1)) // new: written through
	must(t, err)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 1 {
		t.Fatalf("new binding: Redis holds CSeq %d, want 1", got)
	}

	_, after, err := r.Register(ctx, refreshOf(desk, 2))
	must(t, err)
	if len(after) != 1 || after[0].CSeq != 2 {
		t.Fatalf("refresh answered with %+v, want the binding at CSeq 2", after)
	}
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 1 || r.held() != 1 {
		t.Fatalf("refresh held: Redis holds CSeq %d and %d held, want 1 and 1", got, r.held())
	}
	if bs, _ := r.Bindings(ctx, "mario"); len(bs) != 1 || bs[0].CSeq != 2 {
		t.Fatalf("the node's own lookup: %+v, want CSeq 2", bs)
	}

	mobile := binding("mario", "sip:mario@192.0.2.20", time.Hour)
	_, after, err = r.Register(ctx, refreshOf(mobile, 1))
	must(t, err)
	if len(after) != 2 || storedCSeq(t, srv.URL(), "mario", desk.Contact) != 2 || storedCSeq(t, srv.URL(), "mario", mobile.Contact) != 1 {
		t.Fatalf("a second contact after a held refresh: answered %d bindings, Redis holds CSeq %d and %d; want 2 bindings, 2 and 1",
			len(after), storedCSeq(t, srv.URL(), "mario", desk.Contact), storedCSeq(t, srv.URL(), "mario", mobile.Contact))
	}

	_, _, err = r.Register(ctx, refreshOf(desk, 3))
	must(t, err)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 2 {
		t.Fatalf("second refresh: Redis holds CSeq %d before the flush, want 2", got)
	}
	must(t, r.Close())
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 3 {
		t.Fatalf("after Close: Redis holds CSeq %d, want 3", got)
	}
}

// A held refresh that finds another node's later, unannounced refresh when
// it is flushed goes through the register script and is refused as out of
// order: Redis keeps the later one, and the node, which was not told,
// forgets what it held and reloads it.
func TestRedisWriteBackYieldsToLaterWrites(t *testing.T) {
	t.Parallel()
	srv, a, b := backAndThrough(t)
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	_, _, err := a.Register(ctx, refreshOf(desk, 1))
	must(t, err)
	waitCached(t, b, "mario")
	_, _, err = a.Register(ctx, refreshOf(desk, 5)) // held
	must(t, err)
	_, _, err = b.Register(ctx, refreshOf(desk, 6)) // a refresh B holds: not announced
	must(t, err)
	if bs, _ := a.Bindings(ctx, "mario"); len(bs) != 1 || bs[0].CSeq != 5 {
		t.Fatalf("node A before its flush: %+v, want its own CSeq 5", bs)
	}

	a.back.flush(ctx)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 6 || a.held() != 0 {
		t.Fatalf("after the flush: Redis holds CSeq %d, %d still held; want 6 and 0", got, a.held())
	}
	if bs, _ := a.Bindings(ctx, "mario"); len(bs) != 1 || bs[0].CSeq != 6 {
		t.Fatalf("node A's lookup after its refresh was refused: %+v, want CSeq 6", bs)
	}
}

// A flush writes its refreshes many AORs to a script call: each AOR with all
// its contacts, across calls, and one that another node refreshed meanwhile
// is refused alone.
func TestRedisWriteBackFlushesManyAORs(t *testing.T) {
	t.Parallel()
	srv, a, b := backAndThrough(t)
	ctx := t.Context()
	var phones [][]Binding // each AOR's contacts; every third AOR has two
	for i := range 2*refreshesPerCall + 7 {
		aor := fmt.Sprintf("u%03d", i)
		bs := []Binding{binding(aor, "sip:"+aor+"@192.0.2.10", time.Hour)}
		if i%3 == 0 {
			bs = append(bs, binding(aor, "sip:"+aor+"@192.0.2.20", time.Hour))
		}
		phones = append(phones, bs)
		_, _, err := a.Register(ctx, Registration{AOR: aor, CallID: bs[0].CallID, CSeq: 1, Put: bs})
		must(t, err)
	}
	refreshed := func(bs []Binding, cseq uint32) Registration {
		reg := Registration{AOR: bs[0].AOR, CallID: bs[0].CallID, CSeq: cseq}
		for _, b := range bs {
			b.CSeq = cseq
			reg.Put = append(reg.Put, b)
		}
		return reg
	}
	byB := map[int]bool{1: true, refreshesPerCall + 3: true} // one in each of the first two calls
	for i := range byB {
		waitCached(t, b, phones[i][0].AOR)
	}
	for _, bs := range phones {
		_, _, err := a.Register(ctx, refreshed(bs, 2))
		must(t, err)
	}
	for i := range byB {
		_, _, err := b.Register(ctx, refreshed(phones[i], 9)) // held by B's store as its own: not announced
		must(t, err)
	}
	if a.held() != len(phones) {
		t.Fatalf("%d refreshes held, want %d", a.held(), len(phones))
	}

	if failed := a.back.flush(ctx); failed != 0 || a.held() != 0 {
		t.Fatalf("flush: %d failed, %d still held; want 0 and 0", failed, a.held())
	}
	for i, bs := range phones {
		want := uint32(2)
		if byB[i] {
			want = 9
		}
		for _, b := range bs {
			if got := storedCSeq(t, srv.URL(), b.AOR, b.Contact); got != want {
				t.Fatalf("after the flush: %s %s holds CSeq %d, want %d", b.AOR, b.Contact, got, want)
			}
		}
		// A keeps what it wrote, and forgets what B wrote over.
		if _, _, cached := a.bindings.get(bs[0].AOR); cached == byB[i] {
			t.Fatalf("after the flush: %s cached by A: %v, want %v", bs[0].AOR, cached, !byB[i])
		}
	}
}

// A refresh that Redis refuses fails alone: the others of its script call
// are written.
func TestRedisWriteBackFailsOnlyTheAORThatFails(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r := newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour})
	ctx := t.Context()
	var desks []Binding
	for _, aor := range []string{"mario", "luigi", "peach"} {
		desk := binding(aor, "sip:"+aor+"@192.0.2.10", time.Hour)
		desks = append(desks, desk)
		_, _, err := r.Register(ctx, refreshOf(desk, 1))
		must(t, err)
		_, _, err = r.Register(ctx, refreshOf(desk, 2)) // held
		must(t, err)
	}
	// Behind the store's back, luigi's bindings become a key of another type.
	must(t, rawClient(t, srv.URL()).Set(ctx, bindingsKey("luigi"), "not a hash", 0).Err())

	if failed := r.back.flush(ctx); failed != 1 || r.held() != 1 {
		t.Fatalf("flush: %d failed, %d held; want 1 and 1 (luigi's)", failed, r.held())
	}
	for _, d := range []Binding{desks[0], desks[2]} {
		if got := storedCSeq(t, srv.URL(), d.AOR, d.Contact); got != 2 {
			t.Fatalf("%s beside a failing AOR: Redis holds CSeq %d, want 2", d.AOR, got)
		}
	}
}

// Every other write to an AOR's bindings lands after the refresh held for
// it: an edit, a removal, the user's deletion are not undone by the flush.
func TestRedisWriteBackLandsBeforeOtherWrites(t *testing.T) {
	t.Parallel()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	for _, tt := range []struct {
		name  string
		write func(r *Redis) error
		want  uint32 // CSeq Redis holds for the contact at the end; 0: none
	}{
		{"edit", func(r *Redis) error {
			edited := desk
			edited.CallID, edited.CSeq = "set-by-an-operator", 1
			return r.PutBinding(t.Context(), edited)
		}, 1},
		{"removal", func(r *Redis) error { return r.DeleteBinding(t.Context(), "mario", desk.Contact) }, 0},
		{"user deleted", func(r *Redis) error { return r.DeleteUser(t.Context(), "mario") }, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := redisserver.Start(t)
			r := newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour})
			must(t, r.PutUser(t.Context(), user("mario", "", "")))
			_, _, err := r.Register(t.Context(), refreshOf(desk, 1))
			must(t, err)
			_, _, err = r.Register(t.Context(), refreshOf(desk, 2)) // held
			must(t, err)
			must(t, tt.write(r))
			r.back.flush(t.Context())
			if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != tt.want {
				t.Fatalf("after the %s and a flush: Redis holds CSeq %d, want %d", tt.name, got, tt.want)
			}
		})
	}
}

// A write that comes while the flush carrying the AOR's refresh is in flight
// waits for it; if the flush fails, the write writes the refresh first.
func TestRedisWriteBackSettlesAFailedFlush(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r := newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour})
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	_, _, err := r.Register(ctx, refreshOf(desk, 1))
	must(t, err)
	_, _, err = r.Register(ctx, refreshOf(desk, 2)) // held
	must(t, err)

	srv.Freeze()
	t.Cleanup(srv.Thaw)
	flushed := make(chan int)
	go func() {
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		flushed <- r.back.flush(short)
	}()
	eventually(t, time.Second, "the flush to take the refresh", func() bool {
		r.back.mu.Lock()
		defer r.back.mu.Unlock()
		_, busy := r.back.busy["mario"]
		return busy
	})
	deleted := make(chan error)
	go func() { deleted <- r.DeleteBinding(ctx, "mario", desk.Contact) }()
	if failed := <-flushed; failed != 1 {
		t.Fatalf("the flush to a frozen Redis left %d refreshes, want 1", failed)
	}
	srv.Thaw()
	must(t, <-deleted)
	r.back.flush(ctx)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 0 || r.held() != 0 {
		t.Fatalf("after the removal: Redis holds CSeq %d, %d held; want none and 0", got, r.held())
	}
}

// Refreshes held while Redis does not take them stay held, are counted, and
// are written once it is back; meanwhile no new refresh is held (its
// REGISTER fails, as it did before the write-back).
func TestRedisWriteBackOutlivesAnOutage(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r := newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour, PingInterval: 50 * time.Millisecond})
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	other := binding("luigi", "sip:luigi@192.0.2.11", time.Hour)
	for _, b := range []Binding{desk, other} {
		_, _, err := r.Register(ctx, refreshOf(b, 1))
		must(t, err)
	}
	_, _, err := r.Register(ctx, refreshOf(desk, 2))
	must(t, err)

	srv.Freeze()
	t.Cleanup(srv.Thaw) // before Close writes what is held
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	r.back.flush(short)
	cancel()
	if r.held() != 1 {
		t.Fatalf("%d held after a failed flush, want 1", r.held())
	}
	// go-redis gives up a command at its read timeout (3 s), not at the ping's deadline.
	eventually(t, 6*time.Second, "the store to see Redis down", r.down.Load)
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, _, err = r.Register(short, refreshOf(other, 2))
	cancel()
	if err == nil || r.held() != 1 {
		t.Fatalf("a refresh with Redis down: err %v, %d held; want an error and 1 held", err, r.held())
	}
	srv.Thaw()
	eventually(t, 2*time.Second, "the store to see Redis up", func() bool { return !r.down.Load() })
	r.back.flush(ctx)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 2 || r.held() != 0 {
		t.Fatalf("after Redis came back: CSeq %d stored, %d held; want 2 and 0", got, r.held())
	}
}

// A store that is closing holds nothing more: a REGISTER then is written or
// fails, never answered and dropped.
func TestRedisWriteBackHoldsNothingOnceClosed(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r, err := NewRedis(t.Context(), srv.URL(), RedisOptions{WriteBack: time.Hour})
	must(t, err)
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	_, _, err = r.Register(t.Context(), refreshOf(desk, 1))
	must(t, err)
	must(t, r.Close())
	if _, _, err := r.Register(t.Context(), refreshOf(desk, 2)); err == nil && storedCSeq(t, srv.URL(), "mario", desk.Contact) != 2 {
		t.Fatalf("a refresh after Close was answered and not written (%d held)", r.held())
	}
}
