package directory

import (
	"context"
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

// A held refresh that finds another node's later write when it is flushed
// goes through the register script and is refused as out of order: Redis
// keeps the later one, and the node reloads it.
func TestRedisWriteBackYieldsToLaterWrites(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	a := newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour})
	b := newRedis(t, srv.URL(), RedisOptions{})
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	_, _, err := a.Register(ctx, refreshOf(desk, 1))
	must(t, err)
	_, _, err = a.Register(ctx, refreshOf(desk, 5)) // held
	must(t, err)
	_, _, err = b.Register(ctx, refreshOf(desk, 6))
	must(t, err)

	a.back.flush(ctx)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 6 || a.held() != 0 {
		t.Fatalf("after the flush: Redis holds CSeq %d, %d still held; want 6 and 0", got, a.held())
	}
	if bs, _ := a.Bindings(ctx, "mario"); len(bs) != 1 || bs[0].CSeq != 6 {
		t.Fatalf("node A's lookup after its refresh was refused: %+v, want CSeq 6", bs)
	}
}

// Refreshes held while Redis does not take them stay held, are counted, and
// are written once it is back; meanwhile new refreshes are not taken (a
// REGISTER then fails as it did before the write-back).
func TestRedisWriteBackOutlivesAnOutage(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r := newRedis(t, srv.URL(), RedisOptions{WriteBack: time.Hour, PingInterval: 50 * time.Millisecond})
	ctx := t.Context()
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	_, _, err := r.Register(ctx, refreshOf(desk, 1))
	must(t, err)
	_, _, err = r.Register(ctx, refreshOf(desk, 2))
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
	_, _, err = r.Register(short, refreshOf(desk, 3))
	cancel()
	if err == nil {
		t.Fatal("a refresh with Redis down was answered: it would be held with no end")
	}
	srv.Thaw()
	eventually(t, 2*time.Second, "the store to see Redis up", func() bool { return !r.down.Load() })
	r.back.flush(ctx)
	if got := storedCSeq(t, srv.URL(), "mario", desk.Contact); got != 2 || r.held() != 0 {
		t.Fatalf("after Redis came back: CSeq %d stored, %d held; want 2 and 0", got, r.held())
	}
}
