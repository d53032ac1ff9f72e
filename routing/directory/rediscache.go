package directory

import (
	"errors"
	"sync"
	"time"
)

// cacheMax bounds a cache; past it an arbitrary entry makes room. It holds
// the users of a large node (every phone re-registers within the hour, and
// a full cache evicts at random, turning hits into misses), at about 300
// bytes a user.
const cacheMax = 1 << 16

// cache is a node-local read cache of one kind of directory lookup.
// Entries are fresh for ttl; older ones are kept to be served while Redis is
// unreachable. flush drops everything, drop one entry.
type cache[T any] struct {
	ttl   time.Duration
	clone func(T) T // so that callers never share the cached value
	// until, if set, ends an entry's freshness before ttl does (the zero
	// time: it does not): cached bindings go stale when the first expires.
	until func(T) time.Time

	mu  sync.Mutex
	gen uint64 // bumped by flush; a load started before a flush is not stored
	m   map[string]cacheEntry[T]
}

type cacheEntry[T any] struct {
	v     T
	fresh time.Time // until then
}

func newCache[T any](ttl time.Duration, clone func(T) T) *cache[T] {
	return &cache[T]{ttl: ttl, clone: clone, m: make(map[string]cacheEntry[T])}
}

func (c *cache[T]) get(key string) (v T, fresh, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok {
		return v, false, false
	}
	return c.clone(e.v), time.Now().Before(e.fresh), true
}

func (c *cache[T]) generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// put stores v unless the cache was flushed since gen was read: the value may
// predate the write that caused the flush.
func (c *cache[T]) put(key string, v T, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= cacheMax {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	fresh := time.Now().Add(c.ttl)
	if c.until != nil {
		if u := c.until(v); !u.IsZero() && u.Before(fresh) {
			fresh = u
		}
	}
	c.m[key] = cacheEntry[T]{c.clone(v), fresh}
}

func (c *cache[T]) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// drop forgets key. Loads in flight for other keys are not stored either:
// one generation serves the whole cache.
func (c *cache[T]) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, key)
}

// lookup answers from c while the entry is fresh, else calls load. If load
// fails for any reason but ErrNotFound, or Redis is known to be down, a stale
// entry is better than no answer: auth and routing keep working in an outage.
func (c *cache[T]) lookup(key string, down bool, load func() (T, error)) (T, error) {
	v, fresh, ok := c.get(key)
	if ok && (fresh || down) {
		return v, nil
	}
	gen := c.generation()
	nv, err := load()
	switch {
	case err == nil:
		c.put(key, nv, gen)
		return nv, nil
	case ok && !errors.Is(err, ErrNotFound):
		return v, nil
	}
	return nv, err
}
