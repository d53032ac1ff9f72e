package directory

import (
	"context"
	"errors"
	"sync"

	"github.com/redis/go-redis/v9"
)

// batcher sends the commands of concurrent callers to Redis together, one
// pipeline per round trip (auto-pipelining, as rueidis does). At 15,000
// REGISTER/s a round trip per registration cost about 15 µs of the switch's
// CPU in system calls, pool checkouts and wake-ups: a quarter of the
// registrar's time. Batches form only while earlier ones are in flight, so a
// lone caller waits no longer than with a round trip of its own.
type batcher struct {
	rdb   *redis.Client
	queue chan *batchCall
	ctx   context.Context // cancelled by stop
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

type batchCall struct {
	fill func(redis.Pipeliner)
	cmds []redis.Cmder // what fill queued, answered
	done chan struct{}
}

// batchCalls keeps batchCall values, with their channels, between registrations.
var batchCalls = sync.Pool{New: func() any { return &batchCall{done: make(chan struct{}, 1)} }}

const (
	// batchLoops is how many batches are in flight at once. One: with more,
	// an idle loop takes each caller as it comes and batches stay small. At
	// 8,000 REGISTER/s (29 Nov, PERF=1 in test/bench/sip.sh, two runs each)
	// four loops cost 5.6 system calls and 0.52 context switches per
	// REGISTER pair, one loop 4.95 and 0.46 (the memory directory: 4.4 and
	// 0.40). batchMax callers a round trip keep one loop far above the
	// rate a node carries.
	batchLoops = 1
	batchMax   = 256 // callers in one batch
)

func newBatcher(rdb *redis.Client) *batcher {
	ctx, stop := context.WithCancel(context.Background())
	b := &batcher{rdb: rdb, queue: make(chan *batchCall, batchMax), ctx: ctx, stop: stop}
	for range batchLoops {
		b.wg.Go(b.run)
	}
	return b
}

// abandoned is pipelined's error when the caller's context ended, or the
// batcher closed, before the batch carrying its commands was answered: the
// batch may still run, so what fill captured is not the caller's to read.
type abandoned struct{ error }

func (a abandoned) Unwrap() error { return a.error }

func isAbandoned(err error) bool {
	var a abandoned
	return errors.As(err, &a)
}

// pipelined sends the commands fill queues with other callers' and returns
// the first error among them, as redis.Client.Pipelined does, or an
// abandoned error. fill runs on another goroutine and must only queue
// commands.
func (b *batcher) pipelined(ctx context.Context, fill func(redis.Pipeliner)) error {
	c := batchCalls.Get().(*batchCall)
	c.fill = fill
	var err error
	select {
	case b.queue <- c:
	case <-ctx.Done():
		err = ctx.Err()
	case <-b.ctx.Done():
		err = redis.ErrClosed
	}
	if err != nil { // not queued
		c.fill = nil
		batchCalls.Put(c)
		return abandoned{err}
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return abandoned{ctx.Err()} // c stays with the batch loop: not reused
	case <-b.ctx.Done():
		return abandoned{redis.ErrClosed}
	}
	for _, cmd := range c.cmds {
		if err = cmd.Err(); err != nil {
			break
		}
	}
	*c = batchCall{done: c.done}
	batchCalls.Put(c)
	return err
}

func (b *batcher) run() {
	calls := make([]*batchCall, 0, batchMax)
	ends := make([]int, 0, batchMax)
	for {
		select {
		case c := <-b.queue:
			calls = append(calls[:0], c)
		case <-b.ctx.Done():
			return
		}
	more:
		for len(calls) < batchMax {
			select {
			case c := <-b.queue:
				calls = append(calls, c)
			default:
				break more
			}
		}
		pipe := b.rdb.Pipeline()
		ends = ends[:0]
		for _, c := range calls {
			c.fill(pipe)
			ends = append(ends, pipe.Len())
		}
		cmds, _ := pipe.Exec(b.ctx) // each command holds its own error
		start := 0
		for i, c := range calls {
			c.cmds = cmds[start:ends[i]]
			start = ends[i]
			c.done <- struct{}{}
		}
		clear(calls)
	}
}

// close ends the loops; callers still waiting get redis.ErrClosed.
func (b *batcher) close() {
	b.stop()
	b.wg.Wait()
}
