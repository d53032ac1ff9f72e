package redisserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/freeport"
	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinel of StartSentinel monitors.
const MasterName = "centralino"

// Sentinel is a master, a replica of it and one Redis Sentinel watching
// them, on loopback TCP ports: Sentinel hands out addresses, so no unix
// sockets here.
type Sentinel struct {
	tb                testing.TB
	dir               string
	master, replica   *exec.Cmd
	MasterAddr        string
	ReplicaAddr       string
	SentinelAddr      string
	masterGone        chan struct{}
	replicaGone       chan struct{}
	sentinel          *exec.Cmd
	sentinelGone      chan struct{}
	downAfter, failTO time.Duration
}

// StartSentinel starts the three processes and waits until the replica is
// in sync and the sentinel knows both. They are killed when the test ends.
// Without redis-sentinel (Debian's package of that name) the test is
// skipped, or fails when CI=true.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	for _, bin := range []string{"redis-server", "redis-sentinel"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				tb.Fatalf("redisserver: %s not found on PATH (required in CI): %v", bin, err)
			}
			tb.Skipf("redisserver: %s not found on PATH: %v", bin, err)
		}
	}
	dir, err := os.MkdirTemp("", "sentinel")
	if err != nil {
		tb.Fatalf("redisserver: %v", err)
	}
	s := &Sentinel{tb: tb, dir: dir, MasterAddr: freeAddr(tb), ReplicaAddr: freeAddr(tb), SentinelAddr: freeAddr(tb),
		downAfter: 500 * time.Millisecond, failTO: 3 * time.Second}
	tb.Cleanup(func() {
		for _, p := range []struct {
			cmd  *exec.Cmd
			gone chan struct{}
		}{{s.sentinel, s.sentinelGone}, {s.replica, s.replicaGone}, {s.master, s.masterGone}} {
			if p.cmd != nil {
				p.cmd.Process.Kill()
				<-p.gone
			}
		}
		os.RemoveAll(dir)
	})
	s.master, s.masterGone = s.run("redis-server", "master", serverArgs(s.MasterAddr, dir, "master")...)
	s.replica, s.replicaGone = s.run("redis-server", "replica",
		append(serverArgs(s.ReplicaAddr, dir, "replica"), "--replicaof", host(s.MasterAddr), port(s.MasterAddr))...)
	conf := filepath.Join(dir, "sentinel.conf")
	// Sentinel rewrites its config file as it learns: it must be writable.
	text := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\nlogfile %s\n"+
		"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s %d\nsentinel failover-timeout %s %d\n",
		port(s.SentinelAddr), dir, filepath.Join(dir, "sentinel.log"),
		MasterName, host(s.MasterAddr), port(s.MasterAddr), MasterName, s.downAfter.Milliseconds(), MasterName, s.failTO.Milliseconds())
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		tb.Fatalf("redisserver: %v", err)
	}
	s.sentinel, s.sentinelGone = s.run("redis-sentinel", "sentinel", conf)

	// A sentinel learns the replicas from the master's INFO, which it reads
	// every ten seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	replica, sentinel := s.client(s.ReplicaAddr), s.sentinelClient()
	s.until(ctx, "the replica in sync", func() bool {
		info, err := replica.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	s.until(ctx, "the sentinel to know the replica", func() bool {
		replicas, err := sentinel.Replicas(ctx, MasterName).Result()
		return err == nil && len(replicas) == 1
	})
	return s
}

// URL is the Sentinel form of the Redis URL, for NewRedisClient and configs.
func (s *Sentinel) URL() string {
	return "redis://" + s.SentinelAddr + "/0?master_name=" + MasterName
}

// KillMaster kills the master as a crash would, once what it was told has
// reached the replica, and returns at once: the failover is the sentinel's.
func (s *Sentinel) KillMaster() {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if n, err := s.client(s.MasterAddr).Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		s.tb.Fatalf("redisserver: replica did not catch up before the kill: %d, %v", n, err)
	}
	s.master.Process.Kill()
	<-s.masterGone
	s.master = nil
}

// Master asks the sentinel which server is the master now.
func (s *Sentinel) Master(ctx context.Context) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr})
	defer c.Close()
	addr, err := c.GetMasterAddrByName(ctx, MasterName).Result()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(addr[0], addr[1]), nil
}

func (s *Sentinel) client(addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	s.tb.Cleanup(func() { c.Close() })
	return c
}

func (s *Sentinel) sentinelClient() *redis.SentinelClient {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.SentinelAddr})
	s.tb.Cleanup(func() { c.Close() })
	return c
}

func (s *Sentinel) until(ctx context.Context, what string, ok func() bool) {
	s.tb.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			s.tb.Fatalf("redisserver: waiting for %s: %v; sentinel log:\n%s", what, ctx.Err(), readLog(filepath.Join(s.dir, "sentinel.log")))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Sentinel) run(bin, name string, args ...string) (*exec.Cmd, chan struct{}) {
	s.tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redisserver: start %s: %v", name, err)
	}
	gone := make(chan struct{})
	go func() { cmd.Wait(); close(gone) }()
	return cmd, gone
}

func serverArgs(addr, dir, name string) []string {
	return []string{"--port", port(addr), "--bind", host(addr), "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, name+".log"), "--dbfilename", name + ".rdb"}
}

// freeAddr returns a loopback TCP address nothing listens on.
func freeAddr(tb testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freeport.Port(tb)))
}

func host(addr string) string { h, _, _ := net.SplitHostPort(addr); return h }
func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
