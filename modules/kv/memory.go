// Package kv implements modules.Store: in memory for a single node, and on
// Redis for durability and for several nodes. Both pass the same contract
// tests.
package kv

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/lineamica/centralino/modules"
)

// Memory keeps every module's data in process memory.
type Memory struct {
	mu     sync.Mutex
	spaces map[string]*memKV
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{spaces: map[string]*memKV{}}
}

// KV returns the module's key space; the same one on every call.
func (m *Memory) KV(module string) modules.KV {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.spaces[module]
	if !ok {
		s = &memKV{vals: map[string]entry{}, indexes: map[string]*sortedSet{}, sweepAt: minSweep}
		m.spaces[module] = s
	}
	return s
}

// minSweep is the number of keys below which expired keys are only dropped
// when read.
const minSweep = 1024

type memKV struct {
	mu      sync.Mutex
	vals    map[string]entry
	indexes map[string]*sortedSet
	sweepAt int // sweep expired keys when len(vals) reaches this
}

type entry struct {
	val     []byte
	expires time.Time // zero: never
}

func (e entry) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}

// get returns the live entry at key, dropping it if expired. Call with mu held.
func (s *memKV) get(key string) (entry, bool) {
	e, ok := s.vals[key]
	if ok && e.expired(time.Now()) {
		delete(s.vals, key)
		return entry{}, false
	}
	return e, ok
}

// set stores e, sweeping expired keys whenever the map has doubled since the
// last sweep, so that the cost stays constant per write. Call with mu held.
func (s *memKV) set(key string, e entry) {
	s.vals[key] = e
	if len(s.vals) < s.sweepAt {
		return
	}
	now := time.Now()
	for k, e := range s.vals {
		if e.expired(now) {
			delete(s.vals, k)
		}
	}
	s.sweepAt = max(2*len(s.vals), minSweep)
}

func (s *memKV) Get(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.get(key)
	if !ok {
		return nil, modules.ErrNotFound
	}
	return slices.Clone(e.val), nil
}

func (s *memKV) Put(_ context.Context, key string, val []byte, ttl time.Duration) error {
	e := entry{val: slices.Clone(val)}
	if ttl > 0 {
		e.expires = time.Now().Add(ttl)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.set(key, e)
	return nil
}

func (s *memKV) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.vals, key)
	return nil
}

func (s *memKV) Incr(ctx context.Context, key string) (int64, error) {
	return s.IncrBy(ctx, key, 1, 0)
}

func (s *memKV) IncrBy(_ context.Context, key string, by int64, ttl time.Duration) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, _ := s.get(key)
	var n int64
	if e.val != nil {
		var err error
		if n, err = strconv.ParseInt(string(e.val), 10, 64); err != nil {
			return 0, fmt.Errorf("kv: incr %q: value is not an integer", key)
		}
	}
	n += by
	e.val = strconv.AppendInt(nil, n, 10)
	if ttl > 0 && e.expires.IsZero() {
		e.expires = time.Now().Add(ttl)
	}
	s.set(key, e)
	return n, nil
}

func (s *memKV) IndexAdd(_ context.Context, index, member string, score float64) error {
	if math.IsNaN(score) {
		return fmt.Errorf("kv: index %q: score is NaN", index)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	z, ok := s.indexes[index]
	if !ok {
		z = &sortedSet{scores: map[string]float64{}}
		s.indexes[index] = z
	}
	z.add(member, score)
	return nil
}

func (s *memKV) IndexRemove(_ context.Context, index, member string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if z, ok := s.indexes[index]; ok {
		z.remove(member)
		if len(z.sorted) == 0 {
			delete(s.indexes, index)
		}
	}
	return nil
}

func (s *memKV) IndexRange(_ context.Context, index string, offset, limit int, newestFirst bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	z, ok := s.indexes[index]
	if !ok {
		return nil, nil
	}
	offset = max(offset, 0)
	n := len(z.sorted) - offset
	if limit > 0 {
		n = min(n, limit)
	}
	if n <= 0 {
		return nil, nil
	}
	out := make([]string, n)
	for i := range out {
		j := offset + i
		if newestFirst {
			j = len(z.sorted) - 1 - j
		}
		out[i] = z.sorted[j].member
	}
	return out, nil
}

func (s *memKV) IndexCount(_ context.Context, index string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if z, ok := s.indexes[index]; ok {
		return len(z.sorted), nil
	}
	return 0, nil
}

// sortedSet orders members as a Redis sorted set does: by score, then member.
type sortedSet struct {
	scores map[string]float64
	sorted []scored
}

type scored struct {
	score  float64
	member string
}

func compareScored(a, b scored) int {
	return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.member, b.member))
}

func (z *sortedSet) add(member string, score float64) {
	if old, ok := z.scores[member]; ok {
		if old == score {
			return
		}
		z.remove(member)
	}
	z.scores[member] = score
	x := scored{score, member}
	i, _ := slices.BinarySearchFunc(z.sorted, x, compareScored)
	z.sorted = slices.Insert(z.sorted, i, x)
}

func (z *sortedSet) remove(member string) {
	score, ok := z.scores[member]
	if !ok {
		return
	}
	delete(z.scores, member)
	i, _ := slices.BinarySearchFunc(z.sorted, scored{score, member}, compareScored)
	z.sorted = slices.Delete(z.sorted, i, i+1)
}
