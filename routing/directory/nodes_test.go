package directory

import (
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/redisserver"
)

func TestNodes(t *testing.T) {
	t.Parallel()
	url := redisserver.Start(t).URL()
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	const beat = 100 * time.Millisecond
	a, err := NewNodes(ctx, rawClient(t, url), Node{ID: "campania", Addr: "127.0.0.2:5060", Transport: "udp"}, beat, log)
	must(t, err)
	b, err := NewNodes(ctx, rawClient(t, url), Node{ID: "inps", Addr: "127.0.0.3:5060", Transport: "tcp"}, beat, log)
	must(t, err)

	got, err := b.Lookup(ctx, "campania")
	if err != nil || got.Addr != "127.0.0.2:5060" || got.Transport != "udp" || got.Instance != a.Self().Instance {
		t.Fatalf("B looks up A: %+v, %v", got, err)
	}
	if _, err := a.Lookup(ctx, "puglia"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a node never seen: %v, want ErrNotFound", err)
	}
	list, err := a.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "campania" || list[1].ID != "inps" {
		t.Fatalf("List = %+v, %v; want campania and inps", list, err)
	}

	// The heartbeat keeps a record alive well past its TTL.
	time.Sleep(2 * nodeTTLFactor * beat)
	if _, err := b.Lookup(ctx, "campania"); err != nil {
		t.Fatalf("A given up while its heartbeat runs: %v", err)
	}

	// A node that dies (heartbeat gone, record left behind) expires.
	a.stop()
	<-a.done
	eventually(t, 2*nodeTTLFactor*beat, "A's record expires", func() bool {
		_, err := b.Lookup(ctx, "campania")
		return errors.Is(err, ErrNotFound)
	})
	// A node that stops cleanly is gone at once.
	must(t, b.Close())
	if _, err := a.Lookup(ctx, "inps"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a stopped node: %v, want ErrNotFound", err)
	}
	list, err = a.List(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("List after both left = %+v, %v; want none", list, err)
	}
}
