package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/lineamica/centralino/test/redisserver"
)

// clock is a fixed clock that tests move on by hand.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// newQueueState makes an empty QueueState on the clock now.
type newQueueState func(t *testing.T, now func() time.Time) QueueState

// eachQueueState runs a test on every QueueState implementation: the
// memory one and the Redis one, on a real redis-server.
func eachQueueState(t *testing.T, test func(t *testing.T, mk newQueueState)) {
	t.Run("memory", func(t *testing.T) {
		test(t, func(_ *testing.T, now func() time.Time) QueueState { return &Queues{Now: now} })
	})
	t.Run("redis", func(t *testing.T) {
		client := redisClient(t, redisserver.Start(t).URL())
		test(t, func(t *testing.T, now func() time.Time) QueueState {
			must(t, client.FlushDB(t.Context()).Err())
			return &RedisQueues{Client: client, Now: now}
		})
	})
}

func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	must(t, err)
	c := redis.NewClient(o)
	t.Cleanup(func() { c.Close() })
	return c
}

// newQueues logs in the operators of agency "urp", a minute apart.
func newQueues(t *testing.T, mk newQueueState, ops ...string) (QueueState, *clock) {
	t.Helper()
	c := &clock{time.Date(2026, 3, 2, 9, 0, 0, 0, rome)}
	q := mk(t, c.now)
	for _, u := range ops {
		must(t, q.Login(context.Background(), "urp", u))
		c.advance(time.Minute)
	}
	return q, c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pick(t *testing.T, q QueueState, s Strategy) []string {
	t.Helper()
	targets, _, err := q.Pick(context.Background(), "urp", s)
	must(t, err)
	var names []string
	for _, tg := range targets {
		if tg.Agency != "urp" {
			t.Errorf("target %v: agency %q, want urp", tg, tg.Agency)
		}
		names = append(names, tg.Username)
	}
	return names
}

func TestPick(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name  string
		s     Strategy
		setup func(t *testing.T, q QueueState, c *clock)
		picks [][]string // successive picks
	}{
		{"round-robin rotates across three operators", RoundRobin, nil,
			[][]string{{"a", "b", "c"}, {"b", "c", "a"}, {"c", "a", "b"}, {"a", "b", "c"}}},
		{"round-robin skips a busy operator and resumes after it", RoundRobin,
			func(t *testing.T, q QueueState, c *clock) {
				pick(t, q, RoundRobin) // a started last
				must(t, q.CallStarted(ctx, "b"))
			},
			[][]string{{"c", "a"}, {"a", "c"}}},
		{"round-robin goes on when the last one left", RoundRobin,
			func(t *testing.T, q QueueState, c *clock) {
				pick(t, q, RoundRobin)
				pick(t, q, RoundRobin) // b started last
				must(t, q.Logout(ctx, "b"))
			},
			[][]string{{"c", "a"}, {"a", "c"}}},
		{"ring-all rings every available operator", RingAll,
			func(t *testing.T, q QueueState, c *clock) { must(t, q.CallStarted(ctx, "a")) },
			[][]string{{"b", "c"}, {"b", "c"}}},
		{"longest-idle: by login, then by end of the last call", LongestIdle,
			func(t *testing.T, q QueueState, c *clock) {
				must(t, q.CallStarted(ctx, "a"))
				c.advance(time.Minute)
				must(t, q.CallEnded(ctx, "a"))
			},
			[][]string{{"b", "c", "a"}}},
		{"longest-idle: a busy operator is skipped", LongestIdle,
			func(t *testing.T, q QueueState, c *clock) { must(t, q.CallStarted(ctx, "a")) },
			[][]string{{"b", "c"}}},
		{"fewest-calls, ties by idle time", FewestCalls,
			func(t *testing.T, q QueueState, c *clock) {
				for _, u := range []string{"a", "a", "c"} {
					must(t, q.CallStarted(ctx, u))
					must(t, q.CallEnded(ctx, u))
				}
			},
			[][]string{{"b", "c", "a"}}},
		{"paused and logged-out operators are never rung", RingAll,
			func(t *testing.T, q QueueState, c *clock) {
				must(t, q.Pause(ctx, "a", true))
				must(t, q.Logout(ctx, "c"))
			},
			[][]string{{"b"}}},
		{"an operator back from pause is rung again", RoundRobin,
			func(t *testing.T, q QueueState, c *clock) {
				must(t, q.Pause(ctx, "a", true))
				must(t, q.Pause(ctx, "a", false))
			},
			[][]string{{"a", "b", "c"}}},
		{"an operator busy on two calls stays busy until both end", RingAll,
			func(t *testing.T, q QueueState, c *clock) {
				must(t, q.CallStarted(ctx, "a"))
				must(t, q.CallStarted(ctx, "a"))
				must(t, q.CallEnded(ctx, "a"))
			},
			[][]string{{"b", "c"}}},
	}
	eachQueueState(t, func(t *testing.T, mk newQueueState) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				q, c := newQueues(t, mk, "a", "b", "c")
				if tt.setup != nil {
					tt.setup(t, q, c)
				}
				for i, want := range tt.picks {
					if got := pick(t, q, tt.s); !slices.Equal(got, want) {
						t.Errorf("pick %d = %v, want %v", i+1, got, want)
					}
				}
			})
		}
	})
}

func TestPickNobody(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		setup    func(t *testing.T, q QueueState)
		wantBusy bool
	}{
		{"all busy", func(t *testing.T, q QueueState) {
			must(t, q.CallStarted(ctx, "a"))
			must(t, q.CallStarted(ctx, "b"))
		}, true},
		{"one busy, one paused", func(t *testing.T, q QueueState) {
			must(t, q.CallStarted(ctx, "a"))
			must(t, q.Pause(ctx, "b", true))
		}, true},
		{"all paused", func(t *testing.T, q QueueState) {
			must(t, q.Pause(ctx, "a", true))
			must(t, q.Pause(ctx, "b", true))
		}, false},
		{"all logged out", func(t *testing.T, q QueueState) {
			must(t, q.Logout(ctx, "a"))
			must(t, q.Logout(ctx, "b"))
		}, false},
	}
	eachQueueState(t, func(t *testing.T, mk newQueueState) {
		for _, tt := range tests {
			q, _ := newQueues(t, mk, "a", "b")
			tt.setup(t, q)
			targets, busy, err := q.Pick(ctx, "urp", RoundRobin)
			if err != nil || len(targets) != 0 || busy != tt.wantBusy {
				t.Errorf("%s: Pick = %v, busy %v, %v; want none, busy %v", tt.name, targets, busy, err, tt.wantBusy)
			}
		}
	})
}

func TestQueuesMembership(t *testing.T) {
	eachQueueState(t, testMembership)
}

func testMembership(t *testing.T, mk newQueueState) {
	ctx := context.Background()
	q, c := newQueues(t, mk, "a", "b")
	must(t, q.CallStarted(ctx, "a"))
	must(t, q.CallEnded(ctx, "a"))
	must(t, q.Pause(ctx, "a", true))

	// Logging in again is harmless: it keeps the counters and ends a pause.
	must(t, q.Login(ctx, "urp", "a"))
	ops, err := q.Operators(ctx, "urp")
	must(t, err)
	start := time.Date(2026, 3, 2, 9, 0, 0, 0, rome)
	want := []Operator{
		{Username: "a", Agency: "urp", State: Available, IdleSince: c.t, Calls: 1},
		{Username: "b", Agency: "urp", State: Available, IdleSince: start.Add(time.Minute)},
	}
	if !sameOperators(ops, want) {
		t.Errorf("Operators = %+v, want %+v", ops, want)
	}

	// Logging in to another agency moves the operator, counters reset.
	c.advance(time.Minute)
	must(t, q.Login(ctx, "inps", "a"))
	must(t, q.CallStarted(ctx, "a"))
	ops, err = q.Operators(ctx, "inps")
	must(t, err)
	if want := []Operator{{Username: "a", Agency: "inps", State: Busy, IdleSince: c.t, Calls: 1}}; !sameOperators(ops, want) {
		t.Errorf("Operators(inps) = %+v, want %+v", ops, want)
	}
	if got := pick(t, q, RingAll); !slices.Equal(got, []string{"b"}) {
		t.Errorf("urp after a moved: %v, want [b]", got)
	}

	// Calls of users outside any queue are ignored; pausing them is an error.
	must(t, q.CallStarted(ctx, "campania.rossi"))
	must(t, q.CallEnded(ctx, "campania.rossi"))
	must(t, q.Logout(ctx, "campania.rossi"))
	if err := q.Pause(ctx, "campania.rossi", true); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("Pause of a user not logged in: %v, want ErrNotLoggedIn", err)
	}
	ops, err = q.Operators(ctx, "nobody")
	if err != nil || len(ops) != 0 {
		t.Errorf("Operators of an agency without a queue = %v, %v; want none", ops, err)
	}
}

// sameOperators compares operators with their times by instant: an
// implementation may give them back in another location.
func sameOperators(a, b []Operator) bool {
	return slices.EqualFunc(a, b, func(x, y Operator) bool {
		x.IdleSince, y.IdleSince = x.IdleSince.UTC(), y.IdleSince.UTC()
		return x == y
	})
}

// TestQueuesConcurrent is for the race detector and for atomic updates: the
// proxy reports calls while others are being routed, on several nodes.
func TestQueuesConcurrent(t *testing.T) {
	eachQueueState(t, func(t *testing.T, mk newQueueState) {
		ctx := context.Background()
		q := mk(t, time.Now)
		var wg sync.WaitGroup
		for i := range 8 {
			u := fmt.Sprint("op", i)
			check := func(err error) {
				if err != nil {
					t.Error(err)
				}
			}
			wg.Go(func() {
				for range 50 {
					check(q.Login(ctx, "urp", u))
					check(q.CallStarted(ctx, u))
					_, _, err := q.Pick(ctx, "urp", RoundRobin)
					check(err)
					check(q.CallEnded(ctx, u))
					check(q.Pause(ctx, u, true))
					_, err = q.Operators(ctx, "urp")
					check(err)
					check(q.Logout(ctx, u))
				}
			})
		}
		wg.Wait()
		if ops, err := q.Operators(ctx, "urp"); err != nil || len(ops) != 0 {
			t.Errorf("after every logout: %v, %v; want nobody", ops, err)
		}
	})
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []string{"ring-all", "round-robin", "longest-idle", "fewest-calls"} {
		if got, err := ParseStrategy(s); err != nil || string(got) != s {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	want := `"random": want ring-all, round-robin, longest-idle or fewest-calls`
	if _, err := ParseStrategy("random"); err == nil || err.Error() != want {
		t.Errorf("ParseStrategy(random) error = %v, want %s", err, want)
	}
}
