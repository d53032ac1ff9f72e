package routing

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/lineamica/centralino/test/redisserver"
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
