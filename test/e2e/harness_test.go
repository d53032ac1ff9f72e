// Package e2e runs the built centralino binary against real peers: sipp
// scenarios, Go user agents on sipgo and a real redis-server.
package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/test/freeport"
	"github.com/lineamica/centralino/test/redisserver"
	"github.com/lineamica/centralino/test/syncbuf"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "centralino-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "centralino")
	// The "chaos" tag adds a module that misbehaves on purpose (modules/chaos).
	build := exec.Command("go", "build", "-tags", "chaos", "-o", binary, "../../cmd/centralino")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building centralino:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need skips a test whose tool is missing, except in CI where it fails.
func need(t testing.TB, tool string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI must install it)", tool)
		}
		t.Skipf("%s is not installed", tool)
	}
	return p
}

// node is a running centralino process.
type node struct {
	Host     string // IP of the SIP listeners
	SIPPort  int
	WSPort   int
	HTTPAddr string
	cmd      *exec.Cmd
	logs     *syncbuf.Buffer // written by the process while tests read it
	done     chan struct{}
}

type nodeOptions struct {
	redisURL string
	trusted  []string
	nodeID   string
	host     string // IP for the SIP listeners; default 127.0.0.1 (HTTP stays there)
	edit     func(*configs.Config)
}

// startNode runs centralino serve on the demo network with free ports.
func startNode(t *testing.T, o nodeOptions) *node {
	t.Helper()
	cfg := configs.Demo()
	n := &node{Host: cmp.Or(o.host, "127.0.0.1"), SIPPort: freeport.Port(t), WSPort: freeport.Port(t), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", freeport.Port(t))}
	cfg.NodeID = "e2e"
	if o.nodeID != "" {
		cfg.NodeID = o.nodeID
	}
	cfg.Listen = []configs.Listener{
		{Transport: "udp", Addr: fmt.Sprintf("%s:%d", n.Host, n.SIPPort)},
		{Transport: "tcp", Addr: fmt.Sprintf("%s:%d", n.Host, n.SIPPort)},
		{Transport: "ws", Addr: fmt.Sprintf("%s:%d", n.Host, n.WSPort)},
	}
	cfg.HTTP.Addr = n.HTTPAddr
	cfg.Log.Level = "debug"
	cfg.Auth.Trusted = o.trusted
	cfg.Proxy.RingTimeout = configs.Duration(10 * time.Second)
	cfg.Proxy.DrainPeriod = configs.Duration(3 * time.Second)
	if o.redisURL != "" {
		cfg.Directory = configs.Directory{Backend: "redis", RedisURL: o.redisURL}
	}
	if o.edit != nil {
		o.edit(cfg)
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "centralino.yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	n.logs = &syncbuf.Buffer{}
	n.cmd = exec.Command(binary, "serve", "--config", file)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.done = make(chan struct{})
	go func() { n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("centralino log:\n%s", n.logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := n.get("/readyz"); code == 200 {
			return n
		}
		select {
		case <-n.done:
			t.Fatalf("centralino exited early:\n%s", n.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("centralino not ready after 10s:\n%s", n.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the process to exit.
func (n *node) stop(t *testing.T) {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(15 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		t.Errorf("centralino did not stop within 15s of SIGTERM")
	}
}

func (n *node) get(path string) (int, string) { return n.call(http.MethodGet, path, "", "") }

// getAs reads path on behalf of agency (its X-Agency header).
func (n *node) getAs(path, agency string) (int, string) {
	return n.call(http.MethodGet, path, agency, "")
}

// put sends a JSON body with PUT on behalf of agency.
func (n *node) put(path, agency, body string) (int, string) {
	return n.call(http.MethodPut, path, agency, body)
}

// call sends a request to the node's HTTP API, with an X-Agency header when
// agency is not "".
func (n *node) call(method, path, agency, body string) (int, string) {
	req, err := http.NewRequest(method, "http://"+n.HTTPAddr+path, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	if agency != "" {
		req.Header.Set("X-Agency", agency)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// metric returns the value of one sample line of /metrics, e.g.
// `centralino_sip_auth_failures_total{reason="credentials"}`; 0 if absent.
func (n *node) metric(t *testing.T, sample string) float64 {
	t.Helper()
	_, body := n.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return 0
}

func (n *node) sipAddr() string { return fmt.Sprintf("%s:%d", n.Host, n.SIPPort) }

// sippResult is the outcome of one sipp run.
type sippResult struct {
	err    error
	output string
}

// sipp runs a scenario from scenarios/ against the node, bounded in time.
func sipp(t *testing.T, n *node, scenario string, args ...string) sippResult {
	t.Helper()
	bin := need(t, "sipp")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	full := append([]string{n.sipAddr(), "-sf", filepath.Join("scenarios", scenario),
		"-i", "127.0.0.1", "-nostdin", "-timeout", "30s", "-timeout_error",
		"-trace_err", "-error_file", filepath.Join(dir, "errors.log")}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Dir = "."
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	errs, _ := os.ReadFile(filepath.Join(dir, "errors.log"))
	return sippResult{err: err, output: out.String() + string(errs)}
}

// background starts sipp and returns a function that waits for it.
func sippBackground(t *testing.T, n *node, scenario string, args ...string) func() sippResult {
	t.Helper()
	res := make(chan sippResult, 1)
	go func() { res <- sipp(t, n, scenario, args...) }()
	return func() sippResult { return <-res }
}

// withRedis runs f once on the memory directory and once on a real Redis.
func withRedis(t *testing.T, f func(t *testing.T, o nodeOptions)) {
	t.Run("memory", func(t *testing.T) { f(t, nodeOptions{}) })
	t.Run("redis", func(t *testing.T) {
		need(t, "redis-server")
		srv := redisserver.Start(t)
		f(t, nodeOptions{redisURL: srv.URL()})
	})
}
