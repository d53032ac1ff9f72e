package directory

import (
	"fmt"
	"net/url"
	"runtime"
	"strings"

	"github.com/redis/go-redis/v9"
)

// poolPerCPU connections per CPU: as many as the UDP registrar has workers
// (sip.regWorkersPerCPU), each blocked on one round trip at a time. With
// go-redis's default (10 per CPU) two workers in three waited for a
// connection, and under overload that wait outlasted the REGISTER's time in
// the queue, so the switch answered late and the phones retransmitted.
const poolPerCPU = 32

// NewRedisClient opens a client for a Redis URL, as every part of a node
// that keeps state in Redis writes it:
//
//	redis://[user:password@]host:port/db          one server (rediss:// for TLS)
//	unix:///path/to/redis.sock?db=N               one server on a local socket
//	redis://[user:pass@]sentinel-1:26379/db?master_name=NAME&addr=sentinel-2:26379&password=...
//	                                              the master that Redis Sentinel names:
//	                                              the client asks the sentinels and follows failovers
//
// In the Sentinel form the URL's user and password are the sentinels'; the
// master's go in the username and password parameters. With deadlines, a
// command gives up at its context's deadline rather than at the client's
// timeouts. addr names the server or the sentinels, for logs; it never holds
// a password. The client speaks RESP2 unless the URL asks for protocol=3:
// nothing here uses RESP3, and under it go-redis looks for push
// notifications on the socket before every reply, a syscall per command.
// CLIENT SETINFO is not sent on connect: a round trip per new connection,
// answered with an error by servers before 7.2 (Debian 12's is 7.0).
// Unless the URL sets pool_size, the pool holds poolPerCPU connections per CPU.
func NewRedisClient(rawURL string, deadlines bool) (c *redis.Client, addr string, err error) {
	if !IsSentinelURL(rawURL) {
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, "", fmt.Errorf("directory: redis url: %w", err)
		}
		o.ContextTimeoutEnabled = deadlines
		o.DisableIdentity = true
		if o.Protocol == 0 {
			o.Protocol = 2
		}
		if o.PoolSize == 0 {
			o.PoolSize = poolPerCPU * runtime.GOMAXPROCS(0)
		}
		return redis.NewClient(o), o.Addr, nil
	}
	o, err := redis.ParseFailoverURL(rawURL)
	if err != nil {
		return nil, "", fmt.Errorf("directory: redis sentinel url: %w", err)
	}
	o.ContextTimeoutEnabled = deadlines
	o.DisableIdentity = true
	if o.Protocol == 0 {
		o.Protocol = 2
	}
	if o.PoolSize == 0 {
		o.PoolSize = poolPerCPU * runtime.GOMAXPROCS(0)
	}
	return redis.NewFailoverClient(o), "sentinel " + strings.Join(o.SentinelAddrs, ",") + " master " + o.MasterName, nil
}

// IsSentinelURL reports whether a Redis URL names a master through Sentinel
// (it has a master_name parameter).
func IsSentinelURL(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.Query().Has("master_name")
}
