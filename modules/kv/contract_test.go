package kv

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/redisserver"
	"github.com/redis/go-redis/v9"
)

func TestMemory(t *testing.T) {
	testContract(t, NewMemory())
}

func TestRedis(t *testing.T) {
	srv := redisserver.Start(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })
	testContract(t, NewRedis(client))

	t.Run("Prefix", func(t *testing.T) {
		ctx := context.Background()
		kv := NewRedis(client).KV("ticketing")
		must(t, kv.Put(ctx, "t:1", []byte("x"), 0))
		must(t, kv.IndexAdd(ctx, "by-agency:c_a123", "t:1", 1))
		keys, err := client.Keys(ctx, "cen:mod:ticketing:*").Result()
		must(t, err)
		slices.Sort(keys)
		want := []string{"cen:mod:ticketing:ix:by-agency:c_a123", "cen:mod:ticketing:kv:t:1"}
		if !slices.Equal(keys, want) {
			t.Errorf("keys = %q, want %q", keys, want)
		}
	})
}

// testContract is what every modules.Store must do. Each subtest uses its
// own module, so they share the store without seeing each other.
func testContract(t *testing.T, store modules.Store) {
	ctx := context.Background()

	t.Run("GetPutDelete", func(t *testing.T) {
		kv := store.KV("values")
		if _, err := kv.Get(ctx, "k"); !errors.Is(err, modules.ErrNotFound) {
			t.Fatalf("Get of a missing key: err = %v, want ErrNotFound", err)
		}
		must(t, kv.Put(ctx, "k", []byte("v1"), 0))
		must(t, kv.Put(ctx, "k", []byte("v2"), 0))
		if got := get(t, kv, "k"); got != "v2" {
			t.Errorf("Get = %q, want v2", got)
		}
		must(t, kv.Delete(ctx, "k"))
		must(t, kv.Delete(ctx, "k"))
		if _, err := kv.Get(ctx, "k"); !errors.Is(err, modules.ErrNotFound) {
			t.Errorf("Get after Delete: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ValuesAreCopied", func(t *testing.T) {
		kv := store.KV("copies")
		val := []byte("abc")
		must(t, kv.Put(ctx, "k", val, 0))
		val[0] = 'X'
		got, err := kv.Get(ctx, "k")
		must(t, err)
		got[1] = 'Y'
		if got := get(t, kv, "k"); got != "abc" {
			t.Errorf("Get = %q, want abc: the store shares memory with callers", got)
		}
	})

	t.Run("TTL", func(t *testing.T) {
		kv := store.KV("ttl")
		must(t, kv.Put(ctx, "short", []byte("x"), 50*time.Millisecond))
		must(t, kv.Put(ctx, "forever", []byte("x"), 0))
		if _, err := kv.Incr(ctx, "short"); err == nil {
			t.Error("Incr of a non-integer succeeded")
		}
		must(t, kv.Put(ctx, "counter", []byte("41"), 50*time.Millisecond))
		if n, err := kv.Incr(ctx, "counter"); err != nil || n != 42 {
			t.Errorf("Incr = %d, %v; want 42", n, err)
		}
		time.Sleep(100 * time.Millisecond)
		for _, k := range []string{"short", "counter"} {
			if _, err := kv.Get(ctx, k); !errors.Is(err, modules.ErrNotFound) {
				t.Errorf("Get(%q) after its ttl: err = %v, want ErrNotFound", k, err)
			}
		}
		get(t, kv, "forever")
	})

	t.Run("Incr", func(t *testing.T) {
		kv := store.KV("incr")
		for want := int64(1); want <= 3; want++ {
			if n, err := kv.Incr(ctx, "seq"); err != nil || n != want {
				t.Fatalf("Incr = %d, %v; want %d", n, err, want)
			}
		}
		if got := get(t, kv, "seq"); got != "3" {
			t.Errorf("Get after Incr = %q, want 3", got)
		}
		for _, c := range []struct{ by, want int64 }{{40, 43}, {-5, 38}, {0, 38}} {
			if n, err := kv.IncrBy(ctx, "seq", c.by, 0); err != nil || n != c.want {
				t.Fatalf("IncrBy(%d) = %d, %v; want %d", c.by, n, err, c.want)
			}
		}
		if n, err := kv.IncrBy(ctx, "fresh", 7, 0); err != nil || n != 7 {
			t.Errorf("IncrBy of a missing key = %d, %v; want 7", n, err)
		}
	})

	t.Run("IncrByTTL", func(t *testing.T) {
		kv := store.KV("incrby-ttl")
		if _, err := kv.IncrBy(ctx, "bucket", 2, 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// A later add with a longer ttl neither extends nor drops the first.
		if n, err := kv.IncrBy(ctx, "bucket", 3, time.Hour); err != nil || n != 5 {
			t.Fatalf("IncrBy = %d, %v; want 5", n, err)
		}
		if _, err := kv.IncrBy(ctx, "kept", 1, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.IncrBy(ctx, "kept", 1, 50*time.Millisecond); err != nil { // a counter made without expiry gets it now
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		for _, k := range []string{"bucket", "kept"} {
			if _, err := kv.Get(ctx, k); !errors.Is(err, modules.ErrNotFound) {
				t.Errorf("Get(%q) after its ttl: err = %v, want ErrNotFound", k, err)
			}
		}
	})

	t.Run("Index", func(t *testing.T) {
		kv := store.KV("index")
		for i := range 10 {
			must(t, kv.IndexAdd(ctx, "ix", "m"+strconv.Itoa(i), float64(i)))
		}
		must(t, kv.IndexAdd(ctx, "ix", "m3", 20)) // moves m3 last
		must(t, kv.IndexAdd(ctx, "ix", "a5", 5))  // ties order by member
		must(t, kv.IndexRemove(ctx, "ix", "m0"))
		must(t, kv.IndexRemove(ctx, "ix", "absent"))
		must(t, kv.IndexRemove(ctx, "absent", "m1"))

		// By score: m1 m2 m4 a5 m5 m6 m7 m8 m9 m3
		for _, c := range []struct {
			offset, limit int
			newest        bool
			want          []string
		}{
			{0, 3, false, []string{"m1", "m2", "m4"}},
			{3, 2, false, []string{"a5", "m5"}},
			{0, 3, true, []string{"m3", "m9", "m8"}},
			{6, 3, true, []string{"a5", "m4", "m2"}},
			{9, 5, true, []string{"m1"}},
			{10, 5, true, nil},
			{7, 0, false, []string{"m8", "m9", "m3"}},
			{-1, 1, false, []string{"m1"}},
		} {
			got, err := kv.IndexRange(ctx, "ix", c.offset, c.limit, c.newest)
			must(t, err)
			if !slices.Equal(got, c.want) {
				t.Errorf("IndexRange(%d, %d, newest=%v) = %q, want %q", c.offset, c.limit, c.newest, got, c.want)
			}
		}
		if n, err := kv.IndexCount(ctx, "ix"); err != nil || n != 10 {
			t.Errorf("IndexCount = %d, %v; want 10", n, err)
		}
		if got, err := kv.IndexRange(ctx, "absent", 0, 10, true); err != nil || len(got) != 0 {
			t.Errorf("IndexRange of a missing index = %q, %v", got, err)
		}
		if n, err := kv.IndexCount(ctx, "absent"); err != nil || n != 0 {
			t.Errorf("IndexCount of a missing index = %d, %v", n, err)
		}
	})

	t.Run("KeysAndIndexesApart", func(t *testing.T) {
		kv := store.KV("apart")
		must(t, kv.Put(ctx, "same", []byte("v"), 0))
		must(t, kv.IndexAdd(ctx, "same", "m", 1))
		if got := get(t, kv, "same"); got != "v" {
			t.Errorf("Get = %q, want v", got)
		}
	})

	t.Run("ModulesApart", func(t *testing.T) {
		a, b := store.KV("alpha"), store.KV("beta")
		must(t, a.Put(ctx, "k", []byte("a"), 0))
		must(t, a.IndexAdd(ctx, "ix", "m", 1))
		if _, err := b.Get(ctx, "k"); !errors.Is(err, modules.ErrNotFound) {
			t.Errorf("beta sees alpha's key: err = %v", err)
		}
		if n, _ := b.IndexCount(ctx, "ix"); n != 0 {
			t.Errorf("beta sees alpha's index: count = %d", n)
		}
		if got := get(t, store.KV("alpha"), "k"); got != "a" {
			t.Errorf("alpha again: Get = %q, want a", got)
		}
	})
}

func get(t *testing.T, kv modules.KV, key string) string {
	t.Helper()
	val, err := kv.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(val)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
