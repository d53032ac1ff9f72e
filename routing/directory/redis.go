package directory

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Key layout. Every key of an entity carries its hash tag, so keys of one
// agency share a Cluster slot; the network-wide indexes share the {idx} slot.
// No command touches keys of two slots: writes are pipelines of single-key
// commands and single-key scripts, hence not atomic across keys. Lookups
// through an index therefore check the record they land on, so a stale index
// entry (a crash mid-write, two writers racing) reads as not found rather than
// as a wrong answer.
const (
	agenciesKey = "cen:{idx}:agencies" // set of agency codes
	usersKey    = "cen:{idx}:users"    // set of usernames
	numbersKey  = "cen:{idx}:numbers"  // hash public number → agency code
	prefixesKey = "cen:{idx}:prefixes" // hash prefix → agency code
	aorsKey     = "cen:{idx}:aors"     // set of AORs that may have bindings

	// invalidateChannel carries "something in the directory changed" between
	// nodes as "<sender id> <what>"; receivers flush their user and agency
	// caches, the rest is for people reading MONITOR. "<sender id> binding
	// <aor>" drops only the AOR's cached bindings.
	invalidateChannel = "cen:invalidate"
	bindingChange     = "binding "
)

func agencyKey(code string) string      { return "cen:{ag:" + code + "}" }       // JSON Agency
func agencyUsersKey(code string) string { return "cen:{ag:" + code + "}:users" } // set of usernames
func agencyExtKey(code string) string   { return "cen:{ag:" + code + "}:ext" }   // hash extension → username
func userKey(name string) string        { return "cen:{u:" + name + "}" }        // JSON User
func bindingsKey(aor string) string     { return "cen:{aor:" + aor + "}:b" }     // hash contact → "<expires ms>|JSON Binding"

// hdelIf deletes the fields ARGV[2..] of hash KEYS[1] that still map to
// ARGV[1], so dropping an index entry never removes one that another entity
// has taken over.
var hdelIf = redis.NewScript(`
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n`)

// putBinding sets field ARGV[1] of the AOR's hash KEYS[1] to ARGV[2]
// ("<expires ms>|JSON"), drops expired fields and keeps the key's TTL at the
// latest expiry, so an AOR's bindings vanish on their own. ARGV[3] is the
// caller's clock in ms: TTLs are relative, so node and server clocks need not
// agree. With ARGV[4] == "1" (Redis 7.4+) each field also gets its own TTL.
var putBinding = redis.NewScript(`
local now = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local last = 0
local kv = redis.call('HGETALL', KEYS[1])
for i = 1, #kv, 2 do
  local exp = tonumber(string.match(kv[i+1], '^(%d+)|'))
  if exp <= now then
    redis.call('HDEL', KEYS[1], kv[i])
  elseif exp > last then
    last = exp
  end
end
if last > 0 then
  redis.call('PEXPIRE', KEYS[1], last - now)
  if ARGV[4] == '1' then
    local exp = tonumber(string.match(ARGV[2], '^(%d+)|'))
    if exp > now then
      redis.call('HPEXPIRE', KEYS[1], exp - now, 'FIELDS', 1, ARGV[1])
    end
  end
end
return 1`)

// register applies one Registration to the AOR's hash KEYS[1] and returns
// the hash as it was. ARGV: the caller's clock in ms, the Call-ID, the CSeq,
// "1" to remove every binding (Contact: *), "1" when the server has per-field
// TTLs (Redis 7.4+), a message to publish on invalidateChannel once the
// registration is applied ("" for none), then pairs of contact and
// "<expires ms>|JSON" to set, or "" to remove it. It keeps the key's TTL at
// the latest expiry and drops expired fields, as putBinding does, and refuses
// the whole registration with OUTOFORDER when a live binding it names has the
// same Call-ID and an equal or higher CSeq (RFC 3261 §10.3 step 7;
// Registration.outOfOrder). Publishing from the script means no registration
// can be applied and go unannounced.
var register = redis.NewScript(`
local now, cid, cseq = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local kv = redis.call('HGETALL', KEYS[1])
local cur = {}
for i = 1, #kv, 2 do
  local exp = tonumber(string.match(kv[i+1], '^(%d+)|'))
  if exp > now then cur[kv[i]] = kv[i+1] else redis.call('HDEL', KEYS[1], kv[i]) end
end
local function outOfOrder(v)
  local b = cjson.decode(string.sub(v, string.find(v, '|', 1, true) + 1))
  return b.call_id == cid and cseq <= (b.cseq or 0)
end
for i = 7, #ARGV, 2 do
  if cur[ARGV[i]] and outOfOrder(cur[ARGV[i]]) then
    return redis.error_reply('OUTOFORDER')
  end
end
if ARGV[4] == '1' then
  for c, v in pairs(cur) do
    if not outOfOrder(v) then
      redis.call('HDEL', KEYS[1], c)
      cur[c] = nil
    end
  end
end
for i = 7, #ARGV, 2 do
  if ARGV[i+1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
    cur[ARGV[i]] = nil
  elseif tonumber(string.match(ARGV[i+1], '^(%d+)|')) > now then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
    cur[ARGV[i]] = ARGV[i+1]
  else
    redis.call('HDEL', KEYS[1], ARGV[i])
    cur[ARGV[i]] = nil
  end
end
if ARGV[6] ~= '' then
  redis.call('PUBLISH', '` + invalidateChannel + `', ARGV[6])
end
local last = 0
for c, v in pairs(cur) do
  local exp = tonumber(string.match(v, '^(%d+)|'))
  if exp > last then last = exp end
end
if last > 0 then
  redis.call('PEXPIRE', KEYS[1], last - now)
  if ARGV[5] == '1' then
    for i = 7, #ARGV, 2 do
      local v = cur[ARGV[i]]
      if v then
        local exp = tonumber(string.match(v, '^(%d+)|'))
        redis.call('HPEXPIRE', KEYS[1], exp - now, 'FIELDS', 1, ARGV[i])
      end
    end
  end
end
return kv`)

// refreshBindings is register's fast path, for registrations that only
// refresh bindings the caller holds (refreshOnly), of one AOR or of many (a
// write-back flush): one script call costs redis-server more than the few
// commands an AOR needs. KEYS: the AORs' hashes. ARGV: the caller's clock in
// ms, "1" when the server has per-field TTLs, then for each key the number
// of its contacts and, for each, the contact, the value the caller holds for
// it and the new value. An AOR is written only if each of its contacts holds
// the value the caller holds (no other node has written it since): the new
// values, and the key's TTL raised to the latest of their expiries. It
// answers 1 for each AOR written, 0 for the others, and -1 for one whose
// commands failed (a key of another type): that one alone fails. It reads
// no more than the contacts it writes: in BenchmarkRedisRegister the server
// spent 8.5 µs of CPU per refresh with one AOR a call (the AOR index and the
// I/O included) against 11.8 with the register script, which decodes and
// rewrites the whole hash.
var refreshBindings = redis.NewScript(`
local now, hexpire = tonumber(ARGV[1]), ARGV[2] == '1'
local function refresh(key, first, last)
  for i = first, last, 3 do
    if redis.call('HGET', key, ARGV[i]) ~= ARGV[i+1] then return 0 end
  end
  local longest = 0
  for i = first, last, 3 do
    redis.call('HSET', key, ARGV[i], ARGV[i+2])
    -- Expired by this clock, though not by the caller's monotonic one.
    local ttl = math.max(tonumber(string.match(ARGV[i+2], '^(%d+)|')) - now, 1)
    if hexpire then
      redis.call('HPEXPIRE', key, ttl, 'FIELDS', 1, ARGV[i])
    end
    if ttl > longest then longest = ttl end
  end
  if redis.call('PTTL', key) < longest then
    redis.call('PEXPIRE', key, longest)
  end
  return 1
end
local written, a = {}, 3
for k, key in ipairs(KEYS) do
  local first, last = a + 1, a + 3 * tonumber(ARGV[a])
  local ok, done = pcall(refresh, key, first, last)
  written[k] = ok and done or -1
  a = last + 1
end
return written`)

// defaultCacheTTL bounds how long a cached User or Agency is trusted. Every
// write through a Store flushes the caches of all nodes (invalidate), and a
// node flushes on every resubscription and on Redis coming back, so the TTL
// only bounds how long an edit made behind the directory's back (redis-cli)
// goes unseen. It is long so that phones re-registering every minute or two
// (behind NAT, the usual case) authenticate from the cache: with 5 s nearly
// every authentication was a miss, a second round trip per REGISTER.
const defaultCacheTTL = 5 * time.Minute

// RedisOptions tunes NewRedis. The zero value is usable.
type RedisOptions struct {
	Registerer   prometheus.Registerer // where to export metrics; nil: nowhere
	Logger       *slog.Logger          // nil: slog.Default()
	CacheTTL     time.Duration         // freshness of cached User/Agency lookups; 0: defaultCacheTTL
	PingInterval time.Duration         // health check period; 0: 3s
	// WriteBack, if positive, answers refreshes of bindings the node holds
	// at once and writes them to Redis together every WriteBack (writeBack);
	// 0 writes each before answering.
	WriteBack time.Duration
}

// Redis is a Store in Redis, shared by every node of the network. User,
// agency and binding lookups go through a local cache that other nodes
// invalidate on write; cached bindings go stale when the first of them
// expires, and registrations that only refresh bindings (the same contact,
// reached the same way) are not announced: the other nodes' copies are still
// right, bar the expiry. Stale entries answer while Redis is unreachable, so
// calls to phones that were called or registered recently go on through an
// outage.
type Redis struct {
	id       string // tells this store's own invalidations apart
	rdb      *redis.Client
	batch    *batcher   // registrations and user reads, sent together
	back     *writeBack // nil: refreshes are written before they are answered
	pubsub   *redis.PubSub
	hexpire  bool // server has per-field hash TTLs (HPEXPIRE)
	log      *slog.Logger
	metrics  *redisMetrics
	down     atomic.Bool // last health check failed
	agencies *cache[Agency]
	users    *cache[User]
	bindings *cache[[]storedBinding]
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

var _ Store = (*Redis)(nil)

// NewRedis connects to url (see NewRedisClient: one server, or a master
// named by Redis Sentinel) and fails if the server does not answer.
func NewRedis(ctx context.Context, url string, opts RedisOptions) (*Redis, error) {
	client, addr, err := NewRedisClient(url, false)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = defaultCacheTTL
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 3 * time.Second
	}
	r := &Redis{
		id:       rand.Text(),
		rdb:      client,
		log:      opts.Logger.With("redis", addr),
		agencies: newCache(opts.CacheTTL, cloneAgency),
		users:    newCache(opts.CacheTTL, func(u User) User { return u }),
		// Cached bindings are replaced, never modified: no copy.
		bindings: newCache(opts.CacheTTL, func(sbs []storedBinding) []storedBinding { return sbs }),
	}
	r.bindings.until = firstExpiry
	if opts.WriteBack > 0 {
		r.back = newWriteBack(r, opts.WriteBack)
	}
	if err := r.connect(ctx, opts.Registerer); err != nil {
		r.rdb.Close()
		return nil, fmt.Errorf("directory: redis %s: %w", addr, err)
	}
	bg, stop := context.WithCancel(context.Background())
	r.stop = stop
	r.batch = newBatcher(r.rdb)
	if r.back != nil {
		go r.back.run(bg)
	}
	r.wg.Go(r.listen)
	r.wg.Go(func() { r.watch(bg, opts.PingInterval) })
	return r, nil
}

// connect checks the server, learns its features, subscribes to
// invalidations and registers the metrics. On error the caller closes rdb.
func (r *Redis) connect(ctx context.Context, reg prometheus.Registerer) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return err
	}
	// COMMAND INFO answers nil for a command the server lacks.
	info, err := r.rdb.Do(ctx, "COMMAND", "INFO", "HPEXPIRE").Slice()
	if err != nil {
		return err
	}
	r.hexpire = len(info) == 1 && info[0] != nil
	r.pubsub = r.rdb.Subscribe(ctx, invalidateChannel)
	// Wait for the confirmation: invalidations are missed until then.
	if _, err := r.pubsub.Receive(ctx); err != nil {
		r.pubsub.Close()
		return err
	}
	if r.metrics, err = newRedisMetrics(reg, r.held); err != nil {
		r.pubsub.Close()
		return err
	}
	r.metrics.up.Set(1)
	r.rdb.AddHook(r.metrics)
	return nil
}

// listen flushes the caches on every invalidation from another store, and
// on every resubscription after a lost connection, as invalidations may have
// been missed meanwhile. Own invalidations are skipped: the writer flushed
// already, and a late second flush would only cost a reload.
func (r *Redis) listen() {
	for msg := range r.pubsub.ChannelWithSubscriptions() {
		m, ok := msg.(*redis.Message)
		if !ok {
			r.flush()
			r.bindings.flush()
			continue
		}
		sender, what, _ := strings.Cut(m.Payload, " ")
		if sender == r.id {
			continue
		}
		if aor, ok := strings.CutPrefix(what, bindingChange); ok {
			r.bindings.drop(aor)
		} else {
			r.flush()
		}
	}
}

// watch pings Redis every interval, keeps centralino_redis_up current and
// logs each change of state once.
func (r *Redis) watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		err := r.rdb.Ping(pctx).Err()
		cancel()
		if ctx.Err() != nil {
			return // closing, not down
		}
		down := err != nil
		if r.down.Swap(down) == down {
			continue
		}
		if down {
			r.metrics.up.Set(0)
			r.log.Error("redis is down; serving cached directory lookups", "err", err)
		} else {
			r.metrics.up.Set(1)
			r.log.Info("redis is up again")
			// invalidations sent while down were lost
			r.flush()
			r.bindings.flush()
		}
	}
}

func (r *Redis) flush() {
	r.agencies.flush()
	r.users.flush()
}

// invalidate drops this node's cached lookups and tells the other nodes to
// do the same. The write has happened by then, so a failed publish is only
// logged: the other nodes catch up within CacheTTL.
func (r *Redis) invalidate(ctx context.Context, what string) {
	r.flush()
	if err := r.rdb.Publish(ctx, invalidateChannel, r.id+" "+what).Err(); err != nil {
		r.log.Warn("redis: cannot publish cache invalidation", "what", what, "err", err)
	}
}

// Ping reports whether Redis answers, for /readyz.
func (r *Redis) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("directory: redis: %w", err)
	}
	return nil
}

// Close stops the background work, unregisters the metrics and closes the
// connections.
func (r *Redis) Close() error {
	r.stop()
	if r.back != nil {
		<-r.back.done // it has written what it held
	}
	r.batch.close()
	err := r.pubsub.Close() // ends listen
	r.wg.Wait()
	r.metrics.unregister()
	return errors.Join(err, r.rdb.Close())
}

func (r *Redis) Agency(ctx context.Context, code string) (Agency, error) {
	return r.agencies.lookup("code:"+code, r.down.Load(), func() (Agency, error) {
		return r.loadAgency(ctx, code)
	})
}

func (r *Redis) AgencyByNumber(ctx context.Context, number string) (Agency, error) {
	return r.agencies.lookup("number:"+number, r.down.Load(), func() (Agency, error) {
		return r.agencyVia(ctx, numbersKey, "number", number, func(a Agency) bool {
			return slices.Contains(a.Numbers, number)
		})
	})
}

func (r *Redis) AgencyByPrefix(ctx context.Context, prefix string) (Agency, error) {
	return r.agencies.lookup("prefix:"+prefix, r.down.Load(), func() (Agency, error) {
		return r.agencyVia(ctx, prefixesKey, "prefix", prefix, func(a Agency) bool {
			return a.Prefix == prefix
		})
	})
}

// agencyVia resolves key through the index hash and checks that the agency
// found still matches.
func (r *Redis) agencyVia(ctx context.Context, index, kind, key string, matches func(Agency) bool) (Agency, error) {
	code, err := r.hget(ctx, index, key, kind)
	if err != nil {
		return Agency{}, err
	}
	a, err := r.loadAgency(ctx, code)
	if errors.Is(err, ErrNotFound) || err == nil && !matches(a) {
		return Agency{}, notFound(kind, key)
	}
	return a, err
}

func (r *Redis) loadAgency(ctx context.Context, code string) (Agency, error) {
	return getJSON[Agency](ctx, r.batch, agencyKey(code), "agency", code)
}

func (r *Redis) Agencies(ctx context.Context) ([]Agency, error) {
	as, err := r.loadSet(ctx, agenciesKey, agencyKey)
	if err != nil {
		return nil, err
	}
	out, err := decodeAll[Agency](as)
	return sortAgencies(out), err
}

func (r *Redis) PutAgency(ctx context.Context, a Agency) error {
	if err := checkAgency(a); err != nil {
		return err
	}
	old, err := r.loadAgency(ctx, a.Code)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, agencyKey(a.Code), data, 0)
		p.SAdd(ctx, agenciesKey, a.Code)
		for _, n := range a.Numbers {
			if n != "" {
				p.HSet(ctx, numbersKey, n, a.Code)
			}
		}
		if a.Prefix != "" {
			p.HSet(ctx, prefixesKey, a.Prefix, a.Code)
		}
		return nil
	})
	if err == nil {
		err = r.unindexAgency(ctx, old, a)
	}
	r.invalidate(ctx, "agency "+a.Code)
	return wrap(err)
}

// DeleteAgency removes the agency and its number and prefix indexes. Its users
// stay: they are deleted on their own.
func (r *Redis) DeleteAgency(ctx context.Context, code string) error {
	old, err := r.loadAgency(ctx, code)
	if err != nil {
		return err
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, agencyKey(code))
		p.SRem(ctx, agenciesKey, code)
		return nil
	})
	if err == nil {
		err = r.unindexAgency(ctx, old, Agency{})
	}
	r.invalidate(ctx, "agency "+code)
	return wrap(err)
}

// unindexAgency drops the index entries of old that cur no longer has.
func (r *Redis) unindexAgency(ctx context.Context, old, cur Agency) error {
	return errors.Join(
		r.hdelIf(ctx, numbersKey, old.Code, dropped(old.Numbers, cur.Numbers)),
		r.hdelIf(ctx, prefixesKey, old.Code, dropped([]string{old.Prefix}, []string{cur.Prefix})),
	)
}

func (r *Redis) hdelIf(ctx context.Context, key, owner string, fields []string) error {
	if len(fields) == 0 {
		return nil
	}
	args := append([]any{owner}, anys(fields)...)
	return hdelIf.Run(ctx, r.rdb, []string{key}, args...).Err()
}

func (r *Redis) User(ctx context.Context, username string) (User, error) {
	return r.users.lookup("name:"+username, r.down.Load(), func() (User, error) {
		return r.loadUser(ctx, username)
	})
}

func (r *Redis) UserByExtension(ctx context.Context, agency, extension string) (User, error) {
	key := agency + "/" + extension
	return r.users.lookup("ext:"+key, r.down.Load(), func() (User, error) {
		name, err := r.hget(ctx, agencyExtKey(agency), extension, "extension")
		if err != nil {
			return User{}, err
		}
		u, err := r.loadUser(ctx, name)
		if errors.Is(err, ErrNotFound) || err == nil && (u.Agency != agency || u.Extension != extension) {
			return User{}, notFound("extension", key)
		}
		return u, err
	})
}

func (r *Redis) loadUser(ctx context.Context, username string) (User, error) {
	return getJSON[User](ctx, r.batch, userKey(username), "user", username)
}

func (r *Redis) Users(ctx context.Context, agency string) ([]User, error) {
	set := usersKey
	if agency != "" {
		set = agencyUsersKey(agency)
	}
	vals, err := r.loadSet(ctx, set, userKey)
	if err != nil {
		return nil, err
	}
	us, err := decodeAll[User](vals)
	if agency != "" {
		// The set may still list a user who has just moved elsewhere.
		us = slices.DeleteFunc(us, func(u User) bool { return u.Agency != agency })
	}
	return sortUsers(us), err
}

func (r *Redis) PutUser(ctx context.Context, u User) error {
	if err := checkUser(u); err != nil {
		return err
	}
	old, err := r.loadUser(ctx, u.Username)
	found := err == nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	data, err := json.Marshal(u)
	if err != nil {
		return err
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, userKey(u.Username), data, 0)
		p.SAdd(ctx, usersKey, u.Username)
		p.SAdd(ctx, agencyUsersKey(u.Agency), u.Username)
		if u.Extension != "" {
			p.HSet(ctx, agencyExtKey(u.Agency), u.Extension, u.Username)
		}
		if found && old.Agency != u.Agency {
			p.SRem(ctx, agencyUsersKey(old.Agency), u.Username)
		}
		return nil
	})
	if err == nil && found && (old.Agency != u.Agency || old.Extension != u.Extension) {
		err = r.hdelIf(ctx, agencyExtKey(old.Agency), u.Username, []string{old.Extension})
	}
	r.invalidate(ctx, "user "+u.Username)
	return wrap(err)
}

// DeleteUser removes the user, its indexes and its bindings, so a deleted
// account stops ringing at once.
func (r *Redis) DeleteUser(ctx context.Context, username string) error {
	old, err := r.loadUser(ctx, username)
	if err != nil {
		return err
	}
	if err := r.settle(ctx, username); err != nil {
		return err
	}
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, userKey(username))
		p.Del(ctx, bindingsKey(username))
		p.SRem(ctx, aorsKey, username)
		p.SRem(ctx, usersKey, username)
		p.SRem(ctx, agencyUsersKey(old.Agency), username)
		return nil
	})
	if err == nil {
		err = r.hdelIf(ctx, agencyExtKey(old.Agency), username, []string{old.Extension})
	}
	r.invalidate(ctx, "user "+username)
	return wrap(err)
}

// storedBinding is a binding with its value in the AOR's hash.
type storedBinding struct {
	Binding
	raw string
}

func (r *Redis) Bindings(ctx context.Context, aor string) ([]Binding, error) {
	sbs, err := r.bindings.lookup(aor, r.down.Load(), func() ([]storedBinding, error) {
		kv, err := r.rdb.HGetAll(ctx, bindingsKey(aor)).Result()
		if err != nil {
			return nil, wrap(err)
		}
		sbs := make([]storedBinding, 0, len(kv))
		for _, v := range kv {
			b, err := decodeBinding(v)
			if err != nil {
				return nil, err
			}
			sbs = append(sbs, storedBinding{b, v})
		}
		return sbs, nil
	})
	bs := make([]Binding, len(sbs))
	for i := range sbs {
		bs[i] = sbs[i].Binding
	}
	return live(bs, time.Now()), err
}

// PutBinding stores b; a binding that has already expired removes the
// contact instead, like a REGISTER with Expires: 0.
func (r *Redis) PutBinding(ctx context.Context, b Binding) error {
	b, err := checkBinding(b)
	if err != nil {
		return err
	}
	if err := r.settle(ctx, b.AOR); err != nil {
		return err
	}
	now := time.Now()
	if !b.Expires.After(now) {
		return r.DeleteBinding(ctx, b.AOR, b.Contact)
	}
	val, err := storedValue(b)
	if err != nil {
		return err
	}
	err = putBinding.Run(ctx, r.rdb, []string{bindingsKey(b.AOR)}, b.Contact, val, now.UnixMilli(), flag(r.hexpire)).Err()
	if err == nil {
		err = r.bindingsChanged(ctx, b.AOR, func(p redis.Pipeliner) { p.SAdd(ctx, aorsKey, b.AOR) })
	}
	return wrap(err)
}

// held is how many registrations the write-back holds.
func (r *Redis) held() int {
	if r.back == nil {
		return 0
	}
	return r.back.held()
}

// settle writes the refresh of aor that the write-back holds, if any, before
// a write to the AOR's bindings that does not go through it: every such
// write calls it first.
func (r *Redis) settle(ctx context.Context, aor string) error {
	if r.back == nil {
		return nil
	}
	return r.back.settle(ctx, aor)
}

// bindingsChanged runs write, then drops the AOR's cached bindings on every
// node.
func (r *Redis) bindingsChanged(ctx context.Context, aor string, write func(redis.Pipeliner)) error {
	_, err := r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		write(p)
		p.Publish(ctx, invalidateChannel, r.id+" "+bindingChange+aor)
		return nil
	})
	r.bindings.drop(aor)
	return err
}

// Register applies reg with the register script and, in the same round
// trip, keeps the AOR in the AOR index. A registration that only refreshes
// bindings the node holds (refreshOnly, nearly all of them) is held by the
// write-back, if there is one, and answered at once; without it, it tries
// the cheaper refresh script first. Any other registration first settles
// the refresh held for the AOR. The outcome is kept in the bindings cache,
// which also answers lookups while Redis is unreachable.
func (r *Redis) Register(ctx context.Context, reg Registration) (before, after []Binding, err error) {
	if reg, err = checkRegistration(reg); err != nil {
		return nil, nil, err
	}
	now := time.Now()
	puts := make([]string, 0, 2*len(reg.Put)) // contact, stored value
	for _, b := range reg.Put {
		v, err := storedValue(b)
		if err != nil {
			return nil, nil, err
		}
		puts = append(puts, b.Contact, v)
	}
	gen := r.bindings.generation()
	known, _, _ := r.bindings.get(reg.AOR)
	refreshed := false
	if refreshOnly(known, reg, now) {
		refreshed = r.back != nil && !r.down.Load() && r.back.hold(reg, known, puts)
		if !refreshed {
			if err = r.settle(ctx, reg.AOR); err != nil {
				return nil, nil, err
			}
			if refreshed, err = r.refresh(ctx, reg.AOR, known, puts, now); err != nil {
				return nil, nil, err
			}
		}
	} else if err = r.settle(ctx, reg.AOR); err != nil {
		return nil, nil, err
	}
	held := known // the AOR's bindings as Redis held them
	if !refreshed {
		if held, err = r.register(ctx, reg, known, puts, now); err != nil {
			return nil, nil, err
		}
	}
	before = make([]Binding, len(held))
	for i := range held {
		before[i] = held[i].Binding
	}
	before = live(before, now)
	if after, err = applyRegistration(before, reg, now); err != nil {
		return nil, nil, err // Redis has checked already: not reached
	}
	stored := make([]storedBinding, len(after))
	for i, b := range after {
		stored[i] = storedBinding{b, rawOf(b.Contact, puts, held)}
	}
	r.bindings.put(reg.AOR, stored, gen)
	return before, after, nil
}

// rawOf is the value Redis holds for contact once puts (pairs of contact and
// value; the last of a contact wins) are written over held.
func rawOf(contact string, puts []string, held []storedBinding) string {
	for i := len(puts) - 2; i >= 0; i -= 2 {
		if puts[i] == contact {
			return puts[i+1]
		}
	}
	if j := slices.IndexFunc(held, func(sb storedBinding) bool { return sb.Contact == contact }); j >= 0 {
		return held[j].raw
	}
	return ""
}

// refresh runs the refresh script for one AOR: it writes puts unless
// another node has written one of their contacts since this node last saw
// it (its stored value is no longer the one known holds), and then reports
// false.
func (r *Redis) refresh(ctx context.Context, aor string, known []storedBinding, puts []string, now time.Time) (bool, error) {
	args := appendRefreshArgs(refreshHead(now, r.hexpire, 1+3*len(puts)/2), known, puts)
	cmd, err := r.eval(ctx, refreshBindings, aor, args, len(puts) > 0)
	if err != nil {
		return false, wrap(err)
	}
	written, err := cmd.Int64Slice()
	return err == nil && len(written) == 1 && written[0] == 1, err
}

// refreshHead starts the refresh script's arguments, with room for n more.
func refreshHead(now time.Time, hexpire bool, n int) []any {
	return append(make([]any, 0, 2+n), now.UnixMilli(), flag(hexpire))
}

// appendRefreshArgs appends one AOR's part of the refresh script's
// arguments: how many contacts puts has and, for each, what the node holds
// for it (known) and its new value.
func appendRefreshArgs(args []any, known []storedBinding, puts []string) []any {
	args = append(args, len(puts)/2)
	for i := 0; i < len(puts); i += 2 {
		args = append(args, puts[i], rawOf(puts[i], nil, known), puts[i+1])
	}
	return args
}

// register runs the register script and returns the AOR's bindings as Redis
// held them. Every node is told unless reg is a query, which changes nothing.
func (r *Redis) register(ctx context.Context, reg Registration, known []storedBinding, puts []string, now time.Time) ([]storedBinding, error) {
	announce := r.id + " " + bindingChange + reg.AOR
	if len(reg.Put) == 0 && len(reg.Remove) == 0 && !reg.RemoveAll {
		announce = ""
	}
	args := make([]any, 0, 6+len(puts)+2*len(reg.Remove))
	args = append(args, now.UnixMilli(), reg.CallID, reg.CSeq, flag(reg.RemoveAll), flag(r.hexpire), announce)
	for _, p := range puts {
		args = append(args, p)
	}
	for _, c := range reg.Remove {
		args = append(args, c, "")
	}
	cmd, err := r.eval(ctx, register, reg.AOR, args, len(reg.Put) > 0)
	if err != nil {
		if redis.HasErrorPrefix(err, "OUTOFORDER") {
			return nil, ErrOutOfOrder
		}
		return nil, wrap(err)
	}
	kv, err := cmd.StringSlice()
	if err != nil || len(kv)%2 != 0 {
		return nil, fmt.Errorf("directory: redis: register answered %v: %v", cmd.Val(), err)
	}
	held := make([]storedBinding, 0, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		// The hash mostly holds what this node wrote last: reuse those
		// bindings rather than decode their JSON again.
		j := slices.IndexFunc(known, func(sb storedBinding) bool { return sb.Contact == kv[i] && sb.raw == kv[i+1] })
		if j >= 0 {
			held = append(held, known[j])
			continue
		}
		b, err := decodeBinding(kv[i+1])
		if err != nil {
			return nil, err
		}
		held = append(held, storedBinding{b, kv[i+1]})
	}
	return held, nil
}

// eval runs script on the AOR's hash with args, in a batch, and with index
// also adds the AOR to the AOR index in the same round trip.
func (r *Redis) eval(ctx context.Context, script *redis.Script, aor string, args []any, index bool) (*redis.Cmd, error) {
	keys := []string{bindingsKey(aor)}
	run := func(eval bool) (*redis.Cmd, error) {
		var cmd *redis.Cmd
		err := r.batch.pipelined(ctx, func(p redis.Pipeliner) {
			if eval {
				cmd = script.Eval(ctx, p, keys, args...)
			} else {
				cmd = script.EvalSha(ctx, p, keys, args...)
			}
			if index {
				p.SAdd(ctx, aorsKey, aor)
			}
		})
		if isAbandoned(err) {
			return nil, err
		}
		return cmd, err // the script's error first: it is queued first
	}
	cmd, err := run(false)
	// HasErrorPrefix allocates even for no error: asked only on one.
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		cmd, err = run(true)
	}
	return cmd, err
}

// refreshOnly reports whether reg only extends bindings that this node
// holds live in its cache, each to be reached as before, in order (RFC 3261
// §10.3 step 7) by what the node holds. Other nodes' copies then stay right
// until their first expiry, when they reload: such a registration (nearly
// all of them) is not announced. A node holds an AOR's bindings only until
// an announced change drops them, so what it holds is what Redis holds, bar
// other nodes' refreshes, which the refresh script catches.
func refreshOnly(known []storedBinding, reg Registration, now time.Time) bool {
	if known == nil || len(reg.Put) == 0 || reg.RemoveAll || len(reg.Remove) > 0 {
		return false
	}
	for _, b := range reg.Put {
		i := slices.IndexFunc(known, func(k storedBinding) bool { return k.Contact == b.Contact })
		if i < 0 || !known[i].Expires.After(now) || !b.Expires.After(now) || !sameRoute(known[i].Binding, b) || reg.outOfOrder(known[i].Binding) {
			return false
		}
	}
	return true
}

// sameRoute reports whether a and b reach the phone the same way.
func sameRoute(a, b Binding) bool {
	a.CallID, a.CSeq, a.Expires = b.CallID, b.CSeq, b.Expires
	return a == b
}

// firstExpiry is when the first of bindings expires, after which another
// node may have refreshed it unannounced; the zero time if there is none.
func firstExpiry(sbs []storedBinding) time.Time {
	var first time.Time
	for _, b := range sbs {
		if first.IsZero() || b.Expires.Before(first) {
			first = b.Expires
		}
	}
	return first
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// DeleteBinding is idempotent: removing a missing binding is not an error.
func (r *Redis) DeleteBinding(ctx context.Context, aor, contact string) error {
	if err := r.settle(ctx, aor); err != nil {
		return err
	}
	return wrap(r.bindingsChanged(ctx, aor, func(p redis.Pipeliner) { p.HDel(ctx, bindingsKey(aor), contact) }))
}

// AllBindings reads the bindings of every AOR in the AOR index, and drops
// from the index the AORs whose bindings have all expired. A phone that
// registers at that very moment may lose its index entry; its next REGISTER
// restores it, and its own lookups never depend on the index.
func (r *Redis) AllBindings(ctx context.Context) ([]Binding, error) {
	aors, err := r.rdb.SMembers(ctx, aorsKey).Result()
	if err != nil {
		return nil, wrap(err)
	}
	cmds := make([]*redis.MapStringStringCmd, len(aors))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, aor := range aors {
			cmds[i] = p.HGetAll(ctx, bindingsKey(aor))
		}
		return nil
	})
	if err != nil {
		return nil, wrap(err)
	}
	var out []Binding
	var gone []any
	for i, c := range cmds {
		if len(c.Val()) == 0 {
			gone = append(gone, aors[i])
		}
		if out, err = decodeBindings(out, c.Val()); err != nil {
			return nil, err
		}
	}
	if len(gone) > 0 {
		if err := r.rdb.SRem(ctx, aorsKey, gone...).Err(); err != nil {
			r.log.Warn("redis: cannot prune the AOR index", "err", err)
		}
	}
	return live(out, time.Now()), nil
}

// decodeBindings appends the bindings of one AOR's hash to bs.
func decodeBindings(bs []Binding, kv map[string]string) ([]Binding, error) {
	for _, v := range kv {
		b, err := decodeBinding(v)
		if err != nil {
			return bs, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// decodeBinding reads a field of an AOR's hash: "<expires ms>|JSON".
func decodeBinding(v string) (Binding, error) {
	var b Binding
	_, data, ok := strings.Cut(v, "|")
	if !ok {
		return b, fmt.Errorf("directory: redis: malformed binding %q", v)
	}
	if err := json.Unmarshal([]byte(data), &b); err != nil {
		return b, fmt.Errorf("directory: redis: binding: %w", err)
	}
	return b, nil
}

// hget returns field of hash key, or a not-found error naming kind.
func (r *Redis) hget(ctx context.Context, key, field, kind string) (string, error) {
	v, err := r.rdb.HGet(ctx, key, field).Result()
	if errors.Is(err, redis.Nil) {
		return "", notFound(kind, field)
	}
	return v, wrap(err)
}

// loadSet reads the members of set and returns the values of the string keys
// keyOf(member) that exist.
func (r *Redis) loadSet(ctx context.Context, set string, keyOf func(string) string) ([]string, error) {
	_, cmds, err := getMembers(ctx, r.rdb, set, keyOf)
	if err != nil {
		return nil, err
	}
	vals := make([]string, 0, len(cmds))
	for _, c := range cmds {
		if c.Err() == nil {
			vals = append(vals, c.Val())
		}
	}
	return vals, nil
}

// getMembers reads the members of set and, in one pipeline, the string key
// keyOf(member) of each: cmds[i] holds members[i]'s value, or redis.Nil.
func getMembers(ctx context.Context, rdb redis.Cmdable, set string, keyOf func(string) string) (members []string, cmds []*redis.StringCmd, err error) {
	members, err = rdb.SMembers(ctx, set).Result()
	if err != nil {
		return nil, nil, wrap(err)
	}
	cmds = make([]*redis.StringCmd, len(members))
	_, err = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range members {
			cmds[i] = p.Get(ctx, keyOf(m))
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, wrap(err)
	}
	return members, cmds, nil
}

func getJSON[T any](ctx context.Context, b *batcher, key, kind, name string) (T, error) {
	var v T
	var get *redis.StringCmd
	err := b.pipelined(ctx, func(p redis.Pipeliner) { get = p.Get(ctx, key) })
	if errors.Is(err, redis.Nil) {
		return v, notFound(kind, name)
	}
	if err != nil {
		return v, wrap(err)
	}
	if err := json.Unmarshal([]byte(get.Val()), &v); err != nil {
		return v, fmt.Errorf("directory: redis: %s %q: %w", kind, name, err)
	}
	return v, nil
}

func decodeAll[T any](vals []string) ([]T, error) {
	out := make([]T, 0, len(vals))
	for _, s := range vals {
		var v T
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return out, fmt.Errorf("directory: redis: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("directory: redis: %w", err)
}
