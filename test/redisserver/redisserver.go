// Package redisserver runs a throwaway redis-server for tests.
//
// Each Server listens only on a unix socket in its own temporary directory and
// keeps nothing on disk, so tests can run in parallel and leave no trace.
package redisserver

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long Start waits for the server to answer PING.
const startTimeout = 10 * time.Second

// Server is a running (or stopped) redis-server.
type Server struct {
	tb   testing.TB
	dir  string
	sock string

	mu     sync.Mutex
	cmd    *exec.Cmd     // nil while stopped
	exited chan struct{} // closed once cmd has been reaped
}

// Start launches redis-server and waits until it answers. The server is killed
// and its directory removed when the test ends. Without a redis-server binary
// the test is skipped, or fails when CI=true: CI must never skip silently.
func Start(tb testing.TB) *Server {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("redisserver: redis-server not found on PATH (required in CI): %v", err)
		}
		tb.Skipf("redisserver: redis-server not found on PATH: %v", err)
	}
	// Not tb.TempDir: its paths embed the test name and can exceed the
	// ~104-byte limit of a unix socket path.
	dir, err := os.MkdirTemp("", "redis")
	if err != nil {
		tb.Fatalf("redisserver: %v", err)
	}
	s := &Server{tb: tb, dir: dir, sock: filepath.Join(dir, "redis.sock")}
	tb.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	s.start()
	return s
}

// URL returns the server's address for redis clients (unix://...).
func (s *Server) URL() string { return "unix://" + s.sock }

// Socket returns the path of the server's unix socket.
func (s *Server) Socket() string { return s.sock }

// Stop kills the server the hard way, as a crash would. Data is lost.
// Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart stops the server if it runs and starts a new, empty one on the same
// socket.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.start()
}

func (s *Server) start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	logPath := filepath.Join(s.dir, "redis.log")
	cmd := exec.Command("redis-server",
		"--port", "0",
		"--unixsocket", s.sock,
		"--unixsocketperm", "700",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", logPath,
	)
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redisserver: start: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		// Reaping at once also tells the loop below when the server dies at startup.
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for !ping(s.sock) {
		select {
		case <-exited:
			s.tb.Fatalf("redisserver: redis-server exited at startup; log:\n%s", readLog(logPath))
		default:
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			s.tb.Fatalf("redisserver: no answer on %s after %v; log:\n%s", s.sock, startTimeout, readLog(logPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.exited = cmd, exited
}

// ping speaks just enough RESP to know the server is ready.
func ping(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "+PONG"
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// Freeze stops the server process without killing it (SIGSTOP): clients see
// an unreachable Redis, and no data is lost. Thaw resumes it.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}
