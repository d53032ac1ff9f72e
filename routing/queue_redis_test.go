package routing

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lineamica/centralino/test/redisserver"
	"github.com/redis/go-redis/v9"
)

// Two nodes share one queue: what an operator does on one is what the other
// sees, and concurrent round-robin picks on both never start with the same
// operator twice in a row of a full round.
func TestRedisQueuesAcrossNodes(t *testing.T) {
	url := redisserver.Start(t).URL()
	a, b := &RedisQueues{Client: redisClient(t, url)}, &RedisQueues{Client: redisClient(t, url)}
	ctx := context.Background()
	for _, u := range []string{"x", "y", "z"} {
		must(t, a.Login(ctx, "urp", u))
	}
	must(t, a.Pause(ctx, "z", true))
	ops, err := b.Operators(ctx, "urp")
	must(t, err)
	if len(ops) != 3 || ops[2].Username != "z" || ops[2].State != Paused {
		t.Fatalf("node B sees %+v, want x, y and z paused", ops)
	}
	must(t, b.Pause(ctx, "z", false))

	const rounds = 20
	starts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 3 * rounds {
		q := a
		if i%2 == 1 {
			q = b
		}
		wg.Go(func() {
			targets, _, err := q.Pick(ctx, "urp", RoundRobin)
			if err != nil || len(targets) != 3 {
				t.Errorf("Pick = %v, %v", targets, err)
				return
			}
			mu.Lock()
			starts[targets[0].Username]++
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, u := range []string{"x", "y", "z"} {
		if starts[u] != rounds {
			t.Errorf("round-robin started with %s %d times in %d picks, want %d: %v", u, starts[u], 3*rounds, rounds, starts)
		}
	}

	// Every key is in the {queues} slot: one script never spans two Cluster slots.
	keys, err := a.Client.Keys(ctx, "*").Result()
	must(t, err)
	for _, k := range keys {
		if !strings.HasPrefix(k, "cen:{queues}:") {
			t.Errorf("key %q outside the {queues} hash tag", k)
		}
	}
}

// A node updates an operator on the agency it last saw them in, one round
// trip an update; a login or logout on another node since then is found
// and followed.
func TestRedisQueuesFollowLoginsElsewhere(t *testing.T) {
	url := redisserver.Start(t).URL()
	a, b := &RedisQueues{Client: redisClient(t, url)}, &RedisQueues{Client: redisClient(t, url)}
	ctx := context.Background()
	state := func(q *RedisQueues, agency string) (Operator, bool) {
		ops, err := q.Operators(ctx, agency)
		must(t, err)
		for _, o := range ops {
			if o.Username == "x" {
				return o, true
			}
		}
		return Operator{}, false
	}

	must(t, a.CallStarted(ctx, "x")) // not logged in: nothing to do
	must(t, a.Login(ctx, "urp", "x"))
	must(t, b.CallStarted(ctx, "x")) // b has not seen x log in
	if o, _ := state(a, "urp"); o.State != Busy || o.Calls != 1 {
		t.Fatalf("after a call started on node B, x is %+v, want busy with 1 call", o)
	}
	must(t, b.Login(ctx, "asl", "x")) // moves x; node A still thinks urp
	must(t, a.CallEnded(ctx, "x"))
	must(t, a.CallStarted(ctx, "x"))
	if o, ok := state(a, "asl"); !ok || o.State != Busy || o.Calls != 1 {
		t.Fatalf("x in asl after a call on node A is %+v (%v), want busy with 1 call", o, ok)
	}
	if _, ok := state(a, "urp"); ok {
		t.Error("x still in urp after logging in to asl")
	}
	must(t, b.Logout(ctx, "x"))
	must(t, a.CallEnded(ctx, "x")) // logged out elsewhere: nothing to do
	if _, ok := state(a, "asl"); ok {
		t.Error("x still in asl after logging out")
	}

	must(t, a.Login(ctx, "urp", "y"))
	var cmds atomic.Int64
	a.Client.(*redis.Client).AddHook(countHook{&cmds})
	must(t, a.CallStarted(ctx, "y"))
	must(t, a.CallEnded(ctx, "y"))
	must(t, a.CallStarted(ctx, "nobody"))
	if n := cmds.Load(); n != 3 {
		t.Errorf("a call of an operator and an update of a user logged in nowhere took %d Redis round trips, want 3", n)
	}
}

// countHook counts the commands a client sends.
type countHook struct{ n *atomic.Int64 }

func (countHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}
