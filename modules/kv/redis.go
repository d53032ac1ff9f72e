package kv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/redis/go-redis/v9"
)

// Redis keeps the modules' data in Redis (standalone, Sentinel or Cluster).
// A module's values live under "cen:mod:<module>:kv:" and its indexes, as
// sorted sets, under "cen:mod:<module>:ix:". Every operation touches one key,
// so no hash tags are needed on a Cluster.
type Redis struct {
	client redis.UniversalClient
}

// NewRedis returns a store on client.
func NewRedis(client redis.UniversalClient) *Redis {
	return &Redis{client: client}
}

// KV returns the module's key space.
func (r *Redis) KV(module string) modules.KV {
	prefix := "cen:mod:" + module + ":"
	return &redisKV{c: r.client, vals: prefix + "kv:", indexes: prefix + "ix:"}
}

type redisKV struct {
	c             redis.UniversalClient
	vals, indexes string // key prefixes
}

func (s *redisKV) Get(ctx context.Context, key string) ([]byte, error) {
	val, err := s.c.Get(ctx, s.vals+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, modules.ErrNotFound
	}
	return val, wrap("get", key, err)
}

func (s *redisKV) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	// go-redis reads a negative expiration as KEEPTTL.
	return wrap("put", key, s.c.Set(ctx, s.vals+key, val, max(ttl, 0)).Err())
}

func (s *redisKV) Delete(ctx context.Context, key string) error {
	return wrap("delete", key, s.c.Del(ctx, s.vals+key).Err())
}

func (s *redisKV) Incr(ctx context.Context, key string) (int64, error) {
	n, err := s.c.Incr(ctx, s.vals+key).Result()
	return n, wrap("incr", key, err)
}

// incrBy adds and sets a time to live on a key without one in one step, so
// that no counter is left without expiry by a failure in between.
var incrBy = redis.NewScript(`local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n`)

func (s *redisKV) IncrBy(ctx context.Context, key string, by int64, ttl time.Duration) (int64, error) {
	n, err := incrBy.Run(ctx, s.c, []string{s.vals + key}, by, ttl.Milliseconds()).Int64()
	return n, wrap("incr", key, err)
}

func (s *redisKV) IndexAdd(ctx context.Context, index, member string, score float64) error {
	return wrap("index add", index, s.c.ZAdd(ctx, s.indexes+index, redis.Z{Score: score, Member: member}).Err())
}

func (s *redisKV) IndexRemove(ctx context.Context, index, member string) error {
	return wrap("index remove", index, s.c.ZRem(ctx, s.indexes+index, member).Err())
}

func (s *redisKV) IndexRange(ctx context.Context, index string, offset, limit int, newestFirst bool) ([]string, error) {
	start, stop := int64(max(offset, 0)), int64(-1)
	if limit > 0 {
		stop = start + int64(limit) - 1
	}
	zrange := s.c.ZRange
	if newestFirst {
		zrange = s.c.ZRevRange
	}
	members, err := zrange(ctx, s.indexes+index, start, stop).Result()
	return members, wrap("index range", index, err)
}

func (s *redisKV) IndexCount(ctx context.Context, index string) (int, error) {
	n, err := s.c.ZCard(ctx, s.indexes+index).Result()
	return int(n), wrap("index count", index, err)
}

// wrap names the operation and key in a Redis error; nil stays nil.
func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("kv: %s %q: %w", op, key, err)
}
