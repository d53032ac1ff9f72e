package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key layout of RedisQueues. All keys share the {queues} hash tag, so every
// update is one script on one Cluster slot, atomic across the index and the
// member it changes. The queue state is small (a record per logged-in
// operator), so one slot is no bottleneck.
const queueOpsKey = "cen:{queues}:op" // hash username → agency the operator is logged in to

// queueAgencyKey is the hash username → "paused|active|idle ms|calls" of an
// agency's logged-in operators.
func queueAgencyKey(agency string) string { return "cen:{queues}:ag:" + agency }

// queueLastKey holds the operator the agency's last round-robin pick started with.
func queueLastKey(agency string) string { return "cen:{queues}:rr:" + agency }

// queueLogin logs ARGV[1] in to agency ARGV[2] (KEYS[2]) if the index
// KEYS[1] still says ARGV[3] (its agency, "" when logged out; KEYS[3] is that
// agency's hash), else returns -1 for the caller to read again. ARGV[4] is
// the time in ms.
var queueLogin = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[3] then return -1 end
if cur == ARGV[2] then
  local m = redis.call('HGET', KEYS[2], ARGV[1])
  if m then
    redis.call('HSET', KEYS[2], ARGV[1], '0' .. string.sub(m, 2))
    return 1
  end
end
if cur ~= '' then redis.call('HDEL', KEYS[3], ARGV[1]) end
redis.call('HSET', KEYS[2], ARGV[1], '0|0|' .. ARGV[4] .. '|0')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`)

// queueUpdate applies ARGV[3] (logout, pause, resume, start, end) to
// operator ARGV[1] in agency ARGV[2] (hash KEYS[2]) if the index KEYS[1]
// still says that agency: -1 when it does not, 0 when the operator is not
// logged in, 1 when done. ARGV[4] is the time in ms.
var queueUpdate = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if cur ~= ARGV[2] then return -1 end
if cur == '' then return 0 end
local m = redis.call('HGET', KEYS[2], ARGV[1])
if not m then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
local paused, active, idle, calls = string.match(m, '^(%d+)|(%d+)|(%-?%d+)|(%d+)$')
active, calls = tonumber(active), tonumber(calls)
local op = ARGV[3]
if op == 'logout' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
elseif op == 'pause' then paused = '1'
elseif op == 'resume' then paused = '0'
elseif op == 'start' then active = active + 1; calls = calls + 1
elseif op == 'end' and active > 0 then
  active = active - 1
  if active == 0 then idle = ARGV[4] end
end
redis.call('HSET', KEYS[2], ARGV[1], paused .. '|' .. active .. '|' .. idle .. '|' .. calls)
return 1`)

// queueRotate is a round-robin pick's read of agency KEYS[1]: it returns
// the operator the last pick started with (KEYS[2]) and the members, and
// moves KEYS[2] on to the operator this pick starts with, as order does:
// the first available one (not paused, on no call) after the last by
// username, wrapping round. Names compare bytewise, as Go's strings do
// (Lua's < follows the server's locale).
var queueRotate = redis.NewScript(`
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local last = redis.call('GET', KEYS[2]) or ''
local kv = redis.call('HGETALL', KEYS[1])
local first, after
for i = 1, #kv, 2 do
  local u = kv[i]
  if string.match(kv[i+1], '^0|0|') then
    if not first or less(u, first) then first = u end
    if less(last, u) and (not after or less(u, after)) then after = u end
  end
end
local start = after or first
if start then redis.call('SET', KEYS[2], start) end
return {last, kv}`)

// errQueueContended is returned when an update kept racing logins that
// move the operator between agencies; it retries a few times first.
var errQueueContended = errors.New("routing: queue state changed concurrently, try again")

const queueRetries = 8

// RedisQueues is the QueueState shared by every node of a network through
// Redis: an operator who logs in on one node is rung by calls arriving on
// any node, and round-robin rotates across the whole network. Set Client
// before use.
type RedisQueues struct {
	Client redis.UniversalClient
	Now    func() time.Time // the clock; nil means time.Now

	// seen is the agency each operator was last seen logged in to from this
	// node. Updates run their script on that guess at once, one round trip
	// instead of a read and the script: the script checks the guess against
	// the index, so a wrong one (a login or logout on another node) only
	// costs the read and a retry.
	mu   sync.Mutex
	seen map[string]string // username → agency; absent: not logged in
}

var _ QueueState = (*RedisQueues)(nil)

func (q *RedisQueues) nowMS() string {
	now := time.Now()
	if q.Now != nil {
		now = q.Now()
	}
	return strconv.FormatInt(now.UnixMilli(), 10)
}

// agencyOf reads which agency username is logged in to ("" when none).
func (q *RedisQueues) agencyOf(ctx context.Context, username string) (string, error) {
	a, err := q.Client.HGet(ctx, queueOpsKey, username).Result()
	if errors.Is(err, redis.Nil) {
		a, err = "", nil
	}
	if err == nil {
		q.saw(username, a)
	}
	return a, err
}

// guess is the agency username was last seen logged in to, "" if none.
func (q *RedisQueues) guess(username string) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.seen[username]
}

func (q *RedisQueues) saw(username, agency string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case agency == "":
		delete(q.seen, username)
	case q.seen == nil:
		q.seen = map[string]string{username: agency}
	default:
		q.seen[username] = agency
	}
}

func (q *RedisQueues) Login(ctx context.Context, agency, username string) error {
	for range queueRetries {
		cur, err := q.agencyOf(ctx, username)
		if err != nil {
			return queueErr(err)
		}
		keys := []string{queueOpsKey, queueAgencyKey(agency), queueAgencyKey(cur)}
		n, err := queueLogin.Run(ctx, q.Client, keys, username, agency, cur, q.nowMS()).Int()
		if err != nil {
			return queueErr(err)
		}
		if n >= 0 {
			q.saw(username, agency)
			return nil
		}
	}
	return errQueueContended
}

// update runs op on username's record; it reports false when username is
// not logged in.
func (q *RedisQueues) update(ctx context.Context, username, op string) (bool, error) {
	cur := q.guess(username)
	for range queueRetries {
		keys := []string{queueOpsKey, queueAgencyKey(cur)}
		n, err := queueUpdate.Run(ctx, q.Client, keys, username, cur, op, q.nowMS()).Int()
		if err != nil {
			return false, queueErr(err)
		}
		if n >= 0 {
			if n == 0 || op == "logout" {
				q.saw(username, "")
			}
			return n == 1, nil
		}
		// The index says otherwise: read it and try again on what it says.
		if cur, err = q.agencyOf(ctx, username); err != nil || cur == "" {
			return false, queueErr(err)
		}
	}
	return false, errQueueContended
}

func (q *RedisQueues) Logout(ctx context.Context, username string) error {
	_, err := q.update(ctx, username, "logout")
	return err
}

func (q *RedisQueues) Pause(ctx context.Context, username string, paused bool) error {
	op := "resume"
	if paused {
		op = "pause"
	}
	ok, err := q.update(ctx, username, op)
	if err == nil && !ok {
		return fmt.Errorf("%w: %s", ErrNotLoggedIn, username)
	}
	return err
}

func (q *RedisQueues) CallStarted(ctx context.Context, username string) error {
	_, err := q.update(ctx, username, "start")
	return err
}

func (q *RedisQueues) CallEnded(ctx context.Context, username string) error {
	_, err := q.update(ctx, username, "end")
	return err
}

func (q *RedisQueues) Operators(ctx context.Context, agency string) ([]Operator, error) {
	ops, _, err := q.read(ctx, agency, false)
	return ops, err
}

// read returns agency's operators sorted by username and, for a
// round-robin pick, the operator the last pick started with, moving the
// rotation on in the same atomic step.
func (q *RedisQueues) read(ctx context.Context, agency string, rotate bool) ([]Operator, string, error) {
	var members map[string]string
	var last string
	if rotate {
		res, err := queueRotate.Run(ctx, q.Client, []string{queueAgencyKey(agency), queueLastKey(agency)}).Slice()
		if err != nil {
			return nil, "", queueErr(err)
		}
		last, _ = res[0].(string)
		kv, _ := res[1].([]any)
		members = make(map[string]string, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			u, _ := kv[i].(string)
			members[u], _ = kv[i+1].(string)
		}
	} else {
		var err error
		if members, err = q.Client.HGetAll(ctx, queueAgencyKey(agency)).Result(); err != nil {
			return nil, "", queueErr(err)
		}
	}
	ops := make([]Operator, 0, len(members))
	for u, v := range members {
		o, err := decodeOperator(u, agency, v)
		if err != nil {
			return nil, "", err
		}
		ops = append(ops, o)
	}
	slices.SortFunc(ops, func(a, b Operator) int { return strings.Compare(a.Username, b.Username) })
	return ops, last, nil
}

// decodeOperator reads a member record "paused|active|idle ms|calls".
func decodeOperator(username, agency, v string) (Operator, error) {
	f := strings.Split(v, "|")
	var n [4]int64
	var err error
	for i := 0; i < len(f) && i < 4 && err == nil; i++ {
		n[i], err = strconv.ParseInt(f[i], 10, 64)
	}
	if len(f) != 4 || err != nil {
		return Operator{}, fmt.Errorf("routing: redis: malformed queue member %s/%s: %q", agency, username, v)
	}
	o := Operator{Username: username, Agency: agency, State: Available, IdleSince: time.UnixMilli(n[2]), Calls: int(n[3])}
	switch {
	case n[1] > 0:
		o.State = Busy
	case n[0] != 0:
		o.State = Paused
	}
	return o, nil
}

func (q *RedisQueues) Pick(ctx context.Context, agency string, s Strategy) ([]Target, bool, error) {
	ops, last, err := q.read(ctx, agency, s == RoundRobin)
	if err != nil {
		return nil, false, err
	}
	picked := order(ops, s, last)
	targets := make([]Target, len(picked))
	for i, o := range picked {
		targets[i] = Target{Username: o.Username, Agency: agency}
	}
	busy := slices.ContainsFunc(ops, func(o Operator) bool { return o.State == Busy })
	return targets, busy, nil
}

func queueErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("routing: redis queue state: %w", err)
}
