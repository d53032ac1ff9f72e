package ticketing

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
)

// flakyKV is a KV that fails while down.
type flakyKV struct {
	modules.KV
	down atomic.Bool
}

var errFlaky = errors.New("flaky: down")

func (f *flakyKV) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if f.down.Load() {
		return errFlaky
	}
	return f.KV.Put(ctx, key, val, ttl)
}

func (f *flakyKV) Incr(ctx context.Context, key string) (int64, error) {
	if f.down.Load() {
		return 0, errFlaky
	}
	return f.KV.Incr(ctx, key)
}

func (f *flakyKV) IndexCount(ctx context.Context, index string) (int, error) {
	if f.down.Load() {
		return 0, errFlaky
	}
	return f.KV.IndexCount(ctx, index)
}

func testStore(kv modules.KV, maxOutbox int) *store {
	return newStore(kv, slog.New(slog.DiscardHandler), maxOutbox, func() {})
}

func testTicket(code string, status Status, closed time.Time) *Ticket {
	return &Ticket{
		SchemaVersion: SchemaVersion, Code: code, Status: status, Region: "CAM",
		CreatedAt: t0, UpdatedAt: t0, ClosedAt: closed, Caller: Caller{Number: "+393331234567"},
		Agencies: []string{"r_campan"}, Hops: []Hop{{Agency: "r_campan", CallID: code, Via: ViaCall, ReachedAt: t0}},
	}
}

func TestOutboxIsBounded(t *testing.T) {
	kv := &flakyKV{KV: kv.NewMemory().KV("ticketing")}
	kv.down.Store(true)
	s := testStore(kv, 2)
	s.start()
	a, b := testTicket("a", StatusAperto, time.Time{}), testTicket("b", StatusAperto, time.Time{})
	for _, tk := range []*Ticket{a, b, a} {
		if err := s.save(tk); err != nil {
			t.Fatalf("save %s: %v", tk.Code, err)
		}
	}
	if err := s.save(testTicket("c", StatusAperto, time.Time{})); !errors.Is(err, errOutboxFull) {
		t.Errorf("a third ticket in an outbox of two: err = %v, want errOutboxFull", err)
	}
	b.Status = StatusRisolto
	if err := s.save(b); err != nil {
		t.Errorf("a pending ticket's change: %v", err)
	}
	if got, err := s.get(context.Background(), "b"); err != nil || got.Status != StatusRisolto {
		t.Errorf("get of a pending ticket = %v, %v; want its last version", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.close(ctx); err == nil || !strings.Contains(err.Error(), "2 tickets not written") {
		t.Errorf("close while down: %v", err)
	}
}

func TestSerialsLeasedInBlocks(t *testing.T) {
	mem := kv.NewMemory().KV("ticketing")
	flaky := &flakyKV{KV: mem}
	a, b := testStore(flaky, 1), testStore(mem, 1) // two nodes on one store
	ctx := context.Background()
	seen := map[int64]bool{}
	next := func(s *store) (int64, error) {
		n, err := s.serial(ctx, 2026, "CAM")
		if err == nil && seen[n] {
			t.Fatalf("serial %d handed out twice", n)
		}
		seen[n] = true
		return n, err
	}
	for i := range 15 {
		if n, _ := next(a); n != int64(i+1) {
			t.Fatalf("serial %d of a node alone = %d", i+1, n)
		}
	}
	if n, _ := next(b); n != 2*serialBlock+1 {
		t.Errorf("the other node's first serial = %d, want %d: blocks 1 and 2 are the first node's", n, 2*serialBlock+1)
	}
	// Down, the first node uses up its block and the next one it leased.
	flaky.down.Store(true)
	for i := 16; i <= 2*serialBlock; i++ {
		if n, err := next(a); n != int64(i) || err != nil {
			t.Fatalf("serial while down = %d, %v; want %d", n, err, i)
		}
	}
	if _, err := next(a); err == nil {
		t.Errorf("a serial past both blocks while down")
	}
	if n, _ := next(b); n != 2*serialBlock+2 {
		t.Errorf("the other node goes on: %d", n)
	}
}

func TestSweepDeletesClosedTicketsAfterRetention(t *testing.T) {
	mem := kv.NewMemory().KV("ticketing")
	s := testStore(mem, 10)
	s.start()
	retention := 30 * 24 * time.Hour
	old, recent, open := testTicket("old", StatusChiuso, t0), testTicket("recent", StatusChiuso, t0.Add(20*24*time.Hour)), testTicket("open", StatusAperto, time.Time{})
	for _, tk := range []*Ticket{old, recent, open} {
		if err := s.save(tk); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := s.close(ctx); err != nil { // writes everything
		t.Fatal(err)
	}
	if err := s.sweep(ctx, t0.Add(retention+24*time.Hour), retention); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Get(ctx, "t:old"); !errors.Is(err, modules.ErrNotFound) {
		t.Errorf("the ticket closed past retention is still there: %v", err)
	}
	for _, ix := range []string{"all", "closed", "agency:r_campan", statusIndex(StatusChiuso), callerIndex("+393331234567")} {
		codes, _ := mem.IndexRange(ctx, ix, 0, 0, false)
		if strings.Contains(strings.Join(codes, ","), "old") {
			t.Errorf("index %s still lists it: %v", ix, codes)
		}
	}
	for _, code := range []string{"recent", "open"} {
		if _, err := mem.Get(ctx, "t:"+code); err != nil {
			t.Errorf("ticket %s: %v", code, err)
		}
	}
}
