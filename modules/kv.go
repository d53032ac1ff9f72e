package modules

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by KV.Get for a missing or expired key.
var ErrNotFound = errors.New("modules: not found")

// Store hands each module its own key space. The implementations are in
// package modules/kv: in memory, and on Redis under "cen:mod:<module>:".
type Store interface {
	KV(module string) KV
}

// KV is a module's key space: values with an optional time to live, counters,
// and indexes (sorted sets) for listings such as "tickets of an agency,
// newest first". Keys and index names share nothing: an index may have the
// name of a key.
type KV interface {
	Get(ctx context.Context, key string) ([]byte, error)
	// Put stores val under key, for ttl (no expiry if ttl <= 0).
	Put(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Incr adds one to the decimal integer at key (0 if missing), keeping its
	// time to live, and returns the new value.
	Incr(ctx context.Context, key string) (int64, error)
	// IncrBy adds n (which may be negative) to the decimal integer at key,
	// atomically, so several nodes may add to one counter. A key without a
	// time to live gets ttl (none if ttl <= 0); one that has it keeps it.
	IncrBy(ctx context.Context, key string, n int64, ttl time.Duration) (int64, error)

	// IndexAdd adds member to index, or moves it to score if already there.
	IndexAdd(ctx context.Context, index, member string, score float64) error
	// IndexRemove removes member from index; removing a missing one is not an error.
	IndexRemove(ctx context.Context, index, member string) error
	// IndexRange returns up to limit members (all if limit <= 0) after
	// skipping offset, ordered by score then member, highest first if
	// newestFirst.
	IndexRange(ctx context.Context, index string, offset, limit int, newestFirst bool) ([]string, error)
	// IndexCount returns the number of members of index.
	IndexCount(ctx context.Context, index string) (int, error)
}
