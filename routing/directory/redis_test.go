package directory

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/lineamica/centralino/test/redisserver"
	"github.com/lineamica/centralino/test/syncbuf"
)

func TestRedis(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		return newRedis(t, redisserver.Start(t).URL(), RedisOptions{})
	})
}

// Refreshes answered before they are written change nothing a caller sees.
func TestRedisWriteBackContract(t *testing.T) {
	testStore(t, func(t *testing.T) Store {
		return newRedis(t, redisserver.Start(t).URL(), RedisOptions{WriteBack: 10 * time.Millisecond})
	})
}

func newRedis(t *testing.T, url string, opts RedisOptions) *Redis {
	t.Helper()
	r, err := NewRedis(t.Context(), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// rawClient talks to the server behind the store's back.
func rawClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond every 20ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
	}
}

func TestRedisBadURL(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"http://localhost:6379", "unix:///nonexistent/redis.sock", "redis://127.0.0.1:1/0"} {
		if r, err := NewRedis(t.Context(), url, RedisOptions{}); err == nil {
			r.Close()
			t.Errorf("NewRedis(%q) succeeded", url)
		}
	}
}

// Bindings must leave Redis by themselves, not only be filtered on read.
func TestRedisBindingsExpireInRedis(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	r, raw := newRedis(t, srv.URL(), RedisOptions{}), rawClient(t, srv.URL())
	ctx := t.Context()
	must(t, r.PutBinding(ctx, binding("mario", "sip:mario@192.0.2.10", time.Second)))
	must(t, r.PutBinding(ctx, binding("mario", "sip:mario@192.0.2.20", 1500*time.Millisecond)))
	ttl, err := raw.PTTL(ctx, bindingsKey("mario")).Result()
	if err != nil || ttl <= time.Second || ttl > 1500*time.Millisecond {
		t.Fatalf("PTTL = %v, %v; want the latest expiry, in (1s, 1.5s]", ttl, err)
	}
	time.Sleep(1700 * time.Millisecond)
	if n, err := raw.Exists(ctx, bindingsKey("mario")).Result(); n != 0 || err != nil {
		t.Fatalf("EXISTS after expiry = %d, %v; want 0", n, err)
	}
	// AllBindings prunes the AOR index.
	all, err := r.AllBindings(ctx)
	wantEqual(t, "AllBindings", all, err, []Binding(nil))
	if n, err := raw.SCard(ctx, aorsKey).Result(); n != 0 || err != nil {
		t.Fatalf("AOR index after AllBindings = %d, %v; want empty", n, err)
	}
}

func TestRedisCacheInvalidation(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	// A long TTL: only an invalidation can make node B see a change in time.
	opts := RedisOptions{CacheTTL: time.Hour}
	a, raw := newRedis(t, srv.URL(), opts), rawClient(t, srv.URL())
	ctx := t.Context()
	mario := user("mario", "r_campan", "100")
	must(t, a.PutUser(ctx, mario))
	must(t, a.PutAgency(ctx, campania))
	// B subscribes after these writes: their invalidations cannot reach it
	// late and spoil the cache check below.
	b := newRedis(t, srv.URL(), opts)
	got, err := b.User(ctx, "mario")
	wantEqual(t, "B reads the user", got, err, mario)
	ag, err := b.AgencyByNumber(ctx, "800123456")
	wantEqual(t, "B reads the agency", ag, err, campania)

	// B really caches: a write behind the store's back goes unseen.
	sneaky := mario
	sneaky.DisplayName = "written behind the store's back"
	data, _ := json.Marshal(sneaky)
	must(t, raw.Set(ctx, userKey("mario"), data, 0).Err())
	got, err = b.User(ctx, "mario")
	wantEqual(t, "B serves its cache", got, err, mario)

	mario.DisplayName, mario.Extension = "Mario Rossi", "200"
	must(t, a.PutUser(ctx, mario))
	eventually(t, time.Second, "B sees A's user change", func() bool {
		got, err := b.User(ctx, "mario")
		return err == nil && got == mario
	})
	moved := cloneAgency(campania)
	moved.Numbers = []string{"0817962222"}
	must(t, a.PutAgency(ctx, moved))
	eventually(t, time.Second, "B sees A's dropped number", func() bool {
		_, err := b.AgencyByNumber(ctx, "800123456")
		return errors.Is(err, ErrNotFound)
	})
	must(t, a.DeleteUser(ctx, "mario"))
	eventually(t, time.Second, "B sees A's delete", func() bool {
		_, err := b.User(ctx, "mario")
		return errors.Is(err, ErrNotFound)
	})
}

// Closing and reopening the store, as a restarting node does, loses nothing.
func TestRedisReopen(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	ctx := t.Context()
	first, err := NewRedis(ctx, srv.URL(), RedisOptions{})
	must(t, err)
	mario, b := user("mario", "r_campan", "100"), binding("mario", "sip:mario@192.0.2.10", time.Hour)
	must(t, Load(ctx, first, []Agency{campania}, []User{mario}))
	must(t, first.PutBinding(ctx, b))
	must(t, first.Close())

	r := newRedis(t, srv.URL(), RedisOptions{})
	bs, err := r.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after reopen", bs, err, []Binding{b})
	got, err := r.UserByExtension(ctx, "r_campan", "100")
	wantEqual(t, "User after reopen", got, err, mario)
	ag, err := r.AgencyByPrefix(ctx, campania.Prefix)
	wantEqual(t, "Agency after reopen", ag, err, campania)
}

func TestRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	reg := prometheus.NewRegistry()
	var logs syncBuffer
	r := newRedis(t, srv.URL(), RedisOptions{
		Registerer:   reg,
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		CacheTTL:     50 * time.Millisecond, // so lookups in the outage are stale
		PingInterval: 50 * time.Millisecond,
	})
	ctx := t.Context()
	mario := user("mario", "r_campan", "100")
	must(t, r.PutUser(ctx, mario))
	_, err := r.User(ctx, "mario")
	must(t, err)
	if up := metricValue(t, reg, "centralino_redis_up"); up != 1 {
		t.Fatalf("centralino_redis_up = %v before the outage, want 1", up)
	}

	srv.Stop()
	eventually(t, 3*time.Second, "centralino_redis_up goes 0", func() bool {
		return metricValue(t, reg, "centralino_redis_up") == 0
	})
	if err := r.Ping(ctx); err == nil {
		t.Error("Ping succeeded with Redis down")
	}
	got, err := r.User(ctx, "mario")
	wantEqual(t, "cached User in the outage", got, err, mario)
	if _, err := r.User(ctx, "anna"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("uncached User in the outage: err = %v, want a connection error", err)
	}
	if _, err := r.Bindings(ctx, "mario"); err == nil {
		t.Error("Bindings succeeded with Redis down")
	}
	if n := metricValue(t, reg, "centralino_redis_errors_total"); n == 0 {
		t.Error("centralino_redis_errors_total did not count the failures")
	}

	srv.Restart() // an empty server on the same socket
	eventually(t, 5*time.Second, "centralino_redis_up goes 1", func() bool {
		return metricValue(t, reg, "centralino_redis_up") == 1
	})
	must(t, r.Ping(ctx))
	_, err = r.User(ctx, "mario")
	wantNotFound(t, "User from the restarted, empty server", err)
	must(t, r.PutUser(ctx, mario))
	got, err = r.User(ctx, "mario")
	wantEqual(t, "User after the outage", got, err, mario)
	b := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	must(t, r.PutBinding(ctx, b))
	bs, err := r.Bindings(ctx, "mario")
	wantEqual(t, "Bindings after the outage", bs, err, []Binding{b})

	out := logs.String()
	if n := strings.Count(out, "redis is down"); n != 1 {
		t.Errorf("logged the down transition %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "redis is up again"); n != 1 {
		t.Errorf("logged the up transition %d times, want once:\n%s", n, out)
	}
}

func TestRedisMetrics(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	reg := prometheus.NewRegistry()
	r := newRedis(t, srv.URL(), RedisOptions{Registerer: reg})
	_, err := r.User(t.Context(), "nobody")
	wantNotFound(t, "User", err)
	if n := metricValue(t, reg, "centralino_redis_operation_duration_seconds"); n == 0 {
		t.Error("no Redis operation timed")
	}
	if n := metricValue(t, reg, "centralino_redis_errors_total"); n != 0 {
		t.Errorf("centralino_redis_errors_total = %v after a miss, want 0", n)
	}
	if _, err := NewRedis(t.Context(), srv.URL(), RedisOptions{Registerer: reg}); err == nil {
		t.Error("a second store registered the same metrics")
	}
	must(t, r.Close())
	again, err := NewRedis(t.Context(), srv.URL(), RedisOptions{Registerer: reg})
	if err != nil {
		t.Fatalf("registering again after Close: %v", err)
	}
	again.Close()
}

// metricValue sums a gauge's or counter's values, or a histogram's counts.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

type syncBuffer = syncbuf.Buffer

// Concurrent registrations travel to Redis in shared pipelines, and each
// caller still gets its own answer: its bindings, or its own error.
func TestRedisBatchesConcurrentCallers(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	reg := prometheus.NewRegistry()
	r := newRedis(t, srv.URL(), RedisOptions{Registerer: reg})
	ctx := t.Context()
	const callers = 200
	start := make(chan struct{})
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			aor := fmt.Sprintf("u%03d", i)
			<-start
			if i%10 == 0 { // a lookup that misses, among the registrations
				if _, err := r.User(ctx, aor); !errors.Is(err, ErrNotFound) {
					errs <- fmt.Errorf("User(%s) = %v, want not found", aor, err)
				}
				return
			}
			b := binding(aor, "sip:"+aor+"@192.0.2.1", time.Hour)
			_, after, err := r.Register(ctx, Registration{AOR: aor, CallID: aor, CSeq: 1, Put: []Binding{b}})
			if err != nil || len(after) != 1 || after[0].Contact != b.Contact {
				errs <- fmt.Errorf("Register(%s) = %v, %v; want its own binding", aor, after, err)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	all, err := r.AllBindings(ctx)
	if err != nil || len(all) != callers*9/10 {
		t.Fatalf("AllBindings = %d, %v; want %d", len(all), err, callers*9/10)
	}
	if n := metricValue(t, reg, "centralino_redis_operation_duration_seconds"); n > callers/2 {
		t.Errorf("%v Redis round trips for %d concurrent callers: not batched", n, callers)
	}
}

// Calls look bindings up in the node's cache, yet a phone that registers a
// new contact, moves to another node or unregisters is reached at once
// through any node; refreshes are not announced, and a node whose copy has
// reached its first expiry reads the refreshed binding again.
func TestRedisBindingsCache(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	reg := prometheus.NewRegistry()
	a, raw := newRedis(t, srv.URL(), RedisOptions{}), rawClient(t, srv.URL())
	b := newRedis(t, srv.URL(), RedisOptions{Registerer: reg})
	ctx := t.Context()
	announced := raw.Subscribe(ctx, invalidateChannel)
	if _, err := announced.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	messages := announced.Channel()
	seq := uint32(0)
	register := func(s *Redis, r Registration) {
		t.Helper()
		seq++
		r.AOR, r.CallID, r.CSeq = "mario", "c", seq
		for i := range r.Put {
			r.Put[i].CallID, r.Put[i].CSeq = "c", seq
		}
		if _, _, err := s.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	contacts := func(s *Redis) []string {
		t.Helper()
		bs, err := s.Bindings(ctx, "mario")
		must(t, err)
		var out []string
		for _, b := range bs {
			out = append(out, b.Contact+" via "+b.Source)
		}
		return out
	}
	expectAnnounced := func(what string, want bool) {
		t.Helper()
		select {
		case m := <-messages:
			if !want {
				t.Errorf("%s announced: %q", what, m.Payload)
			}
		case <-time.After(200 * time.Millisecond):
			if want {
				t.Errorf("%s not announced", what)
			}
		}
	}

	desk := binding("mario", "sip:mario@192.0.2.10", time.Second)
	register(a, Registration{Put: []Binding{desk}})
	expectAnnounced("the first registration", true)
	sees := func(s *Redis, what string, want ...string) {
		t.Helper()
		eventually(t, time.Second, what, func() bool { return slices.Equal(contacts(s), want) })
	}
	sees(b, "B sees the first registration", "sip:mario@192.0.2.10 via 192.0.2.10:5060")
	roundTrips := func() float64 { return metricValue(t, reg, "centralino_redis_operation_duration_seconds") }
	// B loads once more if the announcement reaches it after its first read.
	eventually(t, time.Second, "B caches the bindings", func() bool {
		n := roundTrips()
		contacts(b)
		return roundTrips() == n
	})
	reads := roundTrips()
	for range 100 {
		contacts(b)
	}
	if n := roundTrips() - reads; n > 0 {
		t.Errorf("100 lookups of cached bindings cost %v Redis round trips", n)
	}

	// A refresh from the same place is not announced; B's copy goes stale
	// when the binding it holds would have expired, and B reads it again.
	firstExpiry := desk.Expires
	desk.Expires = time.Now().Add(time.Hour).UTC()
	register(a, Registration{Put: []Binding{desk}})
	expectAnnounced("a refresh", false)
	time.Sleep(time.Until(firstExpiry) + 50*time.Millisecond)
	if got := contacts(b); len(got) != 1 {
		t.Fatalf("B after the first expiry of its copy: %v, want the refreshed binding", got)
	}

	// The phone comes back from another address: B's fresh copy is dropped.
	moved := desk
	moved.Source = "203.0.113.5:40000"
	register(a, Registration{Put: []Binding{moved}})
	expectAnnounced("a new source", true)
	sees(b, "B sees the phone moved", "sip:mario@192.0.2.10 via 203.0.113.5:40000")
	// A second phone registers through B: A sees both.
	soft := binding("mario", "sip:mario@198.51.100.7", time.Hour)
	register(b, Registration{Put: []Binding{soft}})
	expectAnnounced("a second contact", true)
	sees(a, "A sees a contact added through B", "sip:mario@192.0.2.10 via 203.0.113.5:40000",
		"sip:mario@198.51.100.7 via 192.0.2.10:5060")
	// Unregistering through A empties B's answer; so does a binding deleted
	// by the directory CLI.
	register(a, Registration{Remove: []string{desk.Contact}})
	expectAnnounced("a removal", true)
	sees(b, "B sees a removal through A", "sip:mario@198.51.100.7 via 192.0.2.10:5060")
	must(t, a.DeleteBinding(ctx, "mario", soft.Contact))
	expectAnnounced("a deleted binding", true)
	sees(b, "B sees a binding deleted through A")
}

// BenchmarkRedisRegister refreshes the bindings of as many phones as the
// registrar has workers, concurrently, as a loaded registrar does. Besides
// the allocations per registration it reports the server's CPU time per
// registration (redis-µs/op), which bounds how many one Redis can take.
func BenchmarkRedisRegister(b *testing.B) {
	b.Run("write-through", func(b *testing.B) { benchmarkRedisRegister(b, 0) })
	// The flushes' share is in: they run during the timed loop.
	b.Run("write-back", func(b *testing.B) { benchmarkRedisRegister(b, 10*time.Millisecond) })
}

func benchmarkRedisRegister(b *testing.B, writeBack time.Duration) {
	srv := redisserver.Start(b)
	r, err := NewRedis(b.Context(), srv.URL(), RedisOptions{WriteBack: writeBack})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	serverCPU := func() float64 { // seconds, user and system
		info, err := r.rdb.Info(b.Context(), "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var s float64
		for line := range strings.SplitSeq(info, "\r\n") {
			name, v, _ := strings.Cut(line, ":")
			if name == "used_cpu_sys" || name == "used_cpu_user" {
				f, _ := strconv.ParseFloat(v, 64)
				s += f
			}
		}
		return s
	}
	var next atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	cpu := serverCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each worker refreshes phones of its own in turn, as a registrar
		// sees them: a phone's refreshes are seconds apart, not back to back.
		phones := make([]Binding, 256)
		for i := range phones {
			aor := fmt.Sprintf("u%06d", next.Add(1))
			phones[i] = binding(aor, "sip:"+aor+"@192.0.2.1:5060", time.Hour)
		}
		for i := 0; pb.Next(); i++ {
			bd := &phones[i%len(phones)]
			bd.CSeq++
			if _, _, err := r.Register(b.Context(), Registration{AOR: bd.AOR, CallID: bd.CallID, CSeq: bd.CSeq, Put: []Binding{*bd}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric((serverCPU()-cpu)*1e6/float64(b.N), "redis-µs/op")
}

// A refresh of a binding the node holds writes it without reading the AOR's
// hash, unless another node has refreshed it since: then the whole
// registration is checked against what Redis holds, and a REGISTER older
// than that node's is refused (RFC 3261 §10.3 step 7).
func TestRedisRefreshAcrossNodes(t *testing.T) {
	t.Parallel()
	srv := redisserver.Start(t)
	a, b, raw := newRedis(t, srv.URL(), RedisOptions{}), newRedis(t, srv.URL(), RedisOptions{}), rawClient(t, srv.URL())
	ctx := t.Context()
	hashReads := func() int {
		t.Helper()
		stats, err := raw.Info(ctx, "commandstats").Result()
		must(t, err)
		_, rest, _ := strings.Cut(stats, "cmdstat_hgetall:calls=")
		n, _, _ := strings.Cut(rest, ",")
		calls, _ := strconv.Atoi(n)
		return calls
	}
	desk := binding("mario", "sip:mario@192.0.2.10", time.Hour)
	register := func(s *Redis, cseq uint32) error {
		t.Helper()
		d := desk
		d.CSeq = cseq
		_, _, err := s.Register(ctx, Registration{AOR: "mario", CallID: d.CallID, CSeq: cseq, Put: []Binding{d}})
		return err
	}
	stored := func() uint32 {
		t.Helper()
		v, err := raw.HGet(ctx, bindingsKey("mario"), desk.Contact).Result()
		must(t, err)
		bd, err := decodeBinding(v)
		must(t, err)
		return bd.CSeq
	}

	must(t, register(a, 1))
	// B holds the binding too, once A's announcement has come and gone.
	eventually(t, time.Second, "B caches the binding", func() bool {
		_, err := b.Bindings(ctx, "mario")
		must(t, err)
		time.Sleep(50 * time.Millisecond)
		_, _, ok := b.bindings.get("mario")
		return ok
	})
	reads := hashReads()
	must(t, register(b, 5))
	must(t, register(b, 6))
	if n := hashReads() - reads; n != 0 || stored() != 6 {
		t.Fatalf("two refreshes through B: %d hash reads, stored CSeq %d; want 0 and 6", n, stored())
	}
	// A still holds CSeq 1: a late copy of CSeq 4 reaches it.
	if err := register(a, 4); !errors.Is(err, ErrOutOfOrder) {
		t.Fatalf("CSeq 4 through A after 6 through B: %v, want ErrOutOfOrder", err)
	}
	if got := stored(); got != 6 {
		t.Fatalf("stored CSeq %d after the refused REGISTER, want 6", got)
	}
	must(t, register(a, 7))
	if got := stored(); got != 7 {
		t.Fatalf("stored CSeq %d, want 7", got)
	}
	// A's copy was stale, so its write was announced: B drops its own.
	eventually(t, time.Second, "B to see CSeq 7 through A", func() bool {
		bs, err := b.Bindings(ctx, "mario")
		return err == nil && len(bs) == 1 && bs[0].CSeq == 7
	})
}
