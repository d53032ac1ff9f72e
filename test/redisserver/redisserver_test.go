package redisserver

import (
	"strings"
	"testing"
	"time"
)

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.URL(), "unix://") || !strings.HasSuffix(s.URL(), "/redis.sock") {
		t.Fatalf("URL() = %q, want unix://.../redis.sock", s.URL())
	}
	if !ping(s.Socket()) {
		t.Fatal("server does not answer after Start")
	}
	s.Stop()
	if ping(s.Socket()) {
		t.Fatal("server still answers after Stop")
	}
	s.Stop() // stopping twice is harmless
	s.Restart()
	if !ping(s.Socket()) {
		t.Fatal("server does not answer after Restart")
	}
}

func TestServersAreIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.URL() == b.URL() {
		t.Fatalf("two servers share %s", a.URL())
	}
	a.Stop()
	if !ping(b.Socket()) {
		t.Fatal("stopping one server stopped the other")
	}
}

func TestSentinelFailover(t *testing.T) {
	s := StartSentinel(t)
	ctx := t.Context()
	if m, err := s.Master(ctx); err != nil || m != s.MasterAddr {
		t.Fatalf("master before the kill: %s, %v; want %s", m, err, s.MasterAddr)
	}
	s.KillMaster()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if m, err := s.Master(ctx); err == nil && m == s.ReplicaAddr {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica was not promoted")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
