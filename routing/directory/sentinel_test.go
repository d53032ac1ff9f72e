package directory

import (
	"testing"
	"time"

	"github.com/lineamica/centralino/test/redisserver"
)

// Through Sentinel the store follows a failover: what was written before the
// master died is read from the promoted replica, and writes go on.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	s := redisserver.StartSentinel(t)
	ctx := t.Context()
	r := newRedis(t, s.URL(), RedisOptions{PingInterval: 100 * time.Millisecond})
	mario, b := user("mario", "r_campan", "100"), binding("mario", "sip:mario@192.0.2.10", time.Hour)
	must(t, r.PutUser(ctx, mario))
	must(t, r.PutBinding(ctx, b))

	s.KillMaster()
	eventually(t, 30*time.Second, "a write after the failover", func() bool {
		return r.PutUser(ctx, user("anna", "r_campan", "101")) == nil
	})
	if m, err := s.Master(ctx); err != nil || m != s.ReplicaAddr {
		t.Errorf("master after the failover: %s, %v; want the replica %s", m, err, s.ReplicaAddr)
	}
	bs, err := r.Bindings(ctx, "mario")
	wantEqual(t, "Bindings written before the failover", bs, err, []Binding{b})
	got, err := r.UserByExtension(ctx, "r_campan", "101")
	wantEqual(t, "User written after the failover", got, err, user("anna", "r_campan", "101"))
}

func TestNewRedisClientURLs(t *testing.T) {
	for _, tt := range []struct {
		url, addr string
		sentinel  bool
	}{
		{"redis://127.0.0.1:6379/0", "127.0.0.1:6379", false},
		{"unix:///run/redis.sock?db=2", "/run/redis.sock", false},
		{"redis://s1:26379/0?master_name=centralino&addr=s2:26379", "sentinel s1:26379,s2:26379 master centralino", true},
	} {
		c, addr, err := NewRedisClient(tt.url, false)
		if err != nil || addr != tt.addr || IsSentinelURL(tt.url) != tt.sentinel {
			t.Errorf("NewRedisClient(%q) = %q, %v; sentinel %v", tt.url, addr, err, IsSentinelURL(tt.url))
			continue
		}
		c.Close()
	}
	for _, bad := range []string{"http://x:1", "redis://s1:26379/x?master_name=c", "redis://h:1/0?bogus=1"} {
		if c, _, err := NewRedisClient(bad, false); err == nil {
			c.Close()
			t.Errorf("NewRedisClient(%q) accepted", bad)
		}
	}
}
