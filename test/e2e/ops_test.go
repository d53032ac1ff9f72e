package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/routing/directory"
	"github.com/lineamica/centralino/test/redisserver"
	"github.com/lineamica/centralino/test/sipua"
)

const realm = "lineamica.gov.it"

func phone(t *testing.T, n *node, user, transport string) *sipua.Phone {
	return sipua.New(t, n.sipAddr(), realm, user, demoPassword+user, transport)
}

func mustRegister(t *testing.T, p *sipua.Phone) {
	t.Helper()
	if res := p.Register(300); res.StatusCode != 200 {
		t.Fatalf("%s: REGISTER got %d %s", p.User, res.StatusCode, res.Reason)
	}
}

func TestSHA256PhonesUDPCallsTCP(t *testing.T) {
	withRedis(t, func(t *testing.T, o nodeOptions) {
		o.edit = func(c *configs.Config) { c.Auth.Algorithms = []string{"SHA-256", "MD5"} }
		n := startNode(t, o)
		callee := phone(t, n, "inps.ricci", "tcp")
		mustRegister(t, callee) // sipgo answers the first challenge: SHA-256
		caller := phone(t, n, "campania.esposito", "udp")
		mustRegister(t, caller)
		res, inv := caller.Invite("8300201")
		if res.StatusCode != 200 {
			t.Fatalf("UDP phone calling TCP phone: %d %s", res.StatusCode, res.Reason)
		}
		select {
		case got := <-callee.Invites:
			if got.Transport() != "TCP" {
				t.Errorf("callee got the INVITE over %s", got.Transport())
			}
		case <-time.After(2 * time.Second):
			t.Fatal("callee saw no INVITE")
		}
		caller.Ack(inv, res)
		if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
			t.Fatalf("BYE across transports: %d", bye.StatusCode)
		}
	})
}

func TestMalformedBurstIsSurvived(t *testing.T) {
	n := startNode(t, nodeOptions{})
	garbage := [][]byte{
		[]byte("GARBAGE\r\n\r\n"),
		[]byte("INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n"),
		[]byte("INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK1\r\nCSeq: 1 INVITE\r\nCall-ID: a\r\n\r\n"),
		{0x80, 0x00, 0xff, 0xfe, 0x0d, 0x0a},
	}
	udp, err := net.Dial("udp", n.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for range 250 {
		for _, g := range garbage {
			udp.Write(g)
		}
	}
	tcp, err := net.Dial("tcp", n.sipAddr())
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range garbage {
		tcp.Write(g)
	}
	tcp.Close()
	time.Sleep(500 * time.Millisecond)
	p := phone(t, n, "age.marino", "udp")
	if res := p.Do(p.Request(sip.OPTIONS, "")); res.StatusCode != 200 {
		t.Fatalf("after the burst OPTIONS got %d", res.StatusCode)
	}
	mustRegister(t, p)
	if v := n.metric(t, `centralino_sip_malformed_messages_total{transport="any"}`); v < 100 {
		t.Errorf("malformed messages counted: %v, want the burst", v)
	}
}

// A node restarted gracefully loses no binding, not even the refresh it
// answered and held back from Redis (directory.write_back).
func TestRestartWithRedisLosesNoBinding(t *testing.T) {
	need(t, "redis-server")
	srv := redisserver.Start(t)
	holdRefreshes := func(c *configs.Config) { c.Directory.WriteBack = configs.Duration(10 * time.Second) }
	first := startNode(t, nodeOptions{redisURL: srv.URL(), edit: holdRefreshes})
	callee := phone(t, first, "aslna1.sorrentino", "udp")
	if res := callee.Register(60); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}
	mustRegister(t, callee) // for 300 s: a refresh, held until the node stops
	first.stop(t)

	second := startNode(t, nodeOptions{redisURL: srv.URL()})
	_, body := second.get("/api/registrations")
	var bindings []directory.Binding
	if err := json.Unmarshal([]byte(body), &bindings); err != nil {
		t.Fatalf("/api/registrations: %v: %s", err, body)
	}
	i := slices.IndexFunc(bindings, func(b directory.Binding) bool { return b.AOR == "aslna1.sorrentino" })
	if i < 0 {
		t.Fatalf("binding lost across the restart: %s", body)
	}
	if left := time.Until(bindings[i].Expires); left < 200*time.Second {
		t.Fatalf("the refresh for 300 s was lost across the restart: the binding expires in %v", left.Round(time.Second))
	}
	caller := phone(t, second, "campania.russo", "udp")
	if res, _ := caller.Invite("8110201"); res.StatusCode != 200 {
		t.Fatalf("call to a phone registered before the restart: %d %s", res.StatusCode, res.Reason)
	}
}

func TestRedisOutageDegradesAndRecovers(t *testing.T) {
	need(t, "redis-server")
	srv := redisserver.Start(t)
	n := startNode(t, nodeOptions{redisURL: srv.URL()})
	callee := phone(t, n, "inps.ricci", "udp")
	mustRegister(t, callee)
	caller := phone(t, n, "inps.colombo", "udp")
	mustRegister(t, caller)
	if res, _ := caller.Invite("inps.ricci"); res.StatusCode != 200 {
		t.Fatalf("call before the outage: %d", res.StatusCode)
	}

	srv.Freeze()
	defer srv.Thaw()
	waitFor(t, 15*time.Second, "centralino_redis_up 0", func() bool { return n.metric(t, "centralino_redis_up") == 0 })
	if code, _ := n.get("/readyz"); code != 503 {
		t.Errorf("/readyz during the outage: %d, want 503", code)
	}
	if !strings.Contains(n.logs.String(), "redis is down") {
		t.Errorf("no log line says Redis is down")
	}
	if res, _ := caller.Invite("inps.ricci"); res.StatusCode != 200 {
		t.Errorf("call between cached users during the outage: %d %s", res.StatusCode, res.Reason)
	}
	// The registrar gives up on Redis at its deadline: the phone is told to
	// come back (its retransmissions meanwhile are not judged again: their
	// reused nonce count would get a 401).
	if res := callee.Register(300); res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Errorf("REGISTER during the outage: %d %s, want 503 with Retry-After", res.StatusCode, res.Reason)
	}

	srv.Thaw()
	waitFor(t, 15*time.Second, "/readyz 200", func() bool { code, _ := n.get("/readyz"); return code == 200 })
	if _, body := n.get("/api/registrations"); !strings.Contains(body, `"aor":"inps.ricci"`) || !strings.Contains(body, `"aor":"inps.colombo"`) {
		t.Fatalf("bindings lost over the outage: %s", body)
	}
	if v := n.metric(t, `centralino_redis_errors_total{op="hgetall"}`) + n.metric(t, `centralino_redis_errors_total{op="ping"}`); v == 0 {
		t.Errorf("Redis errors not counted")
	}
}

func TestSIGTERMDrainsCalls(t *testing.T) {
	n := startNode(t, nodeOptions{})
	callee := phone(t, n, "puglia.mastrangelo", "udp")
	mustRegister(t, callee)
	caller := phone(t, n, "puglia.lorusso", "udp")
	mustRegister(t, caller)
	res, inv := caller.Invite("201")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	caller.Ack(inv, res)

	n.cmd.Process.Signal(os.Interrupt)
	waitFor(t, 5*time.Second, "/readyz 503", func() bool { code, _ := n.get("/readyz"); return code == 503 })
	if res, _ := caller.Invite("201"); res.StatusCode != 503 {
		t.Errorf("new call while draining: %d, want 503", res.StatusCode)
	}
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Errorf("BYE of a running call while draining: %d, want 200", bye.StatusCode)
	}
	select {
	case <-n.done:
		if code := n.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("exit code %d after drain, want 0", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("switch still running after its last call ended")
	}
}

func TestCheckConfigNamesTheField(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen:\n  - transport: sctp\n    addr: 127.0.0.1:5060\n"), 0o600)
	out, err := exec.Command(binary, "check-config", bad).CombinedOutput()
	if err == nil {
		t.Fatal("check-config accepted an sctp listener")
	}
	if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "listen[0].transport") {
		t.Errorf("check-config said %q, want one line naming listen[0].transport", out)
	}
	// A module's options are checked as the module itself checks them.
	badOption := filepath.Join(dir, "module.yaml")
	os.WriteFile(badOption, []byte("modules:\n  - name: ticketing\n    options: {regions: {r_campan: CAM}, retention: 30}\n"), 0o600)
	out, err = exec.Command(binary, "check-config", badOption).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `modules: ticketing: option "retention": unknown option`) {
		t.Errorf("check-config on an unknown module option: %v %q", err, out)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("realm: example.test\n"), 0o600)
	if out, err := exec.Command(binary, "check-config", good).CombinedOutput(); err != nil {
		t.Errorf("check-config on a valid file: %v %s", err, out)
	}
	if out, err := exec.Command(binary, "serve", "--log-level", "loud").CombinedOutput(); err == nil || !strings.Contains(string(out), "log level") {
		t.Errorf("a bad --log-level: %v %q", err, out)
	}
}

func TestDirectoryCommandsOnRedis(t *testing.T) {
	need(t, "redis-server")
	srv := redisserver.Start(t)
	n := startNode(t, nodeOptions{redisURL: srv.URL()})
	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binary, append([]string{"directory", "--redis", srv.URL()}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("centralino directory %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	cli("add-user", "campania.nuovo", "-agency", "r_campan", "-role", "phone", "-extension", "103", "-name", "Utente Nuovo", "-password", "segreta-1")
	if out := cli("users", "r_campan"); !strings.Contains(out, "campania.nuovo") {
		t.Fatalf("new user not listed:\n%s", out)
	}
	p := sipua.New(t, n.sipAddr(), realm, "campania.nuovo", "segreta-1", "udp")
	waitFor(t, 10*time.Second, "new user registers", func() bool { return p.Register(300).StatusCode == 200 })
	cli("passwd", "campania.nuovo", "segreta-2")
	waitFor(t, 10*time.Second, "old password refused", func() bool { return p.Register(300).StatusCode == 401 })
	p.Password = "segreta-2"
	if res := p.Register(300); res.StatusCode != 200 {
		t.Fatalf("new password: %d", res.StatusCode)
	}
	if out := cli("registrations"); !strings.Contains(out, "campania.nuovo") {
		t.Errorf("registration not listed:\n%s", out)
	}
	cli("remove-user", "campania.nuovo")
	if out := cli("users", "r_campan"); strings.Contains(out, "campania.nuovo") {
		t.Errorf("removed user still listed:\n%s", out)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
