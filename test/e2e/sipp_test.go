package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/freeport"
)

const demoPassword = "demo-"

// registerWith registers user's contact contactAddr through sipp.
func registerWith(t *testing.T, n *node, user, contactAddr string) {
	t.Helper()
	r := sipp(t, n, "register.xml", "-m", "1", "-au", user, "-ap", demoPassword+user,
		"-key", "aor", user, "-key", "binding", contactAddr)
	if r.err != nil {
		t.Fatalf("registering %s: %v\n%s", user, r.err, r.output)
	}
}

// sippCallee starts a sipp callee on a free port and returns its address
// and the function that waits for it.
func sippCallee(t *testing.T, n *node, scenario string, args ...string) (string, func() sippResult) {
	t.Helper()
	port := freeport.Port(t)
	wait := sippBackground(t, n, scenario, append([]string{"-m", "1", "-p", strconv.Itoa(port), "-mp", strconv.Itoa(freeport.Port(t))}, args...)...)
	time.Sleep(300 * time.Millisecond) // let sipp bind before anyone calls it
	return fmt.Sprintf("127.0.0.1:%d", port), wait
}

func call(t *testing.T, n *node, scenario, user, dial string) sippResult {
	t.Helper()
	return sipp(t, n, scenario, "-m", "1", "-au", user, "-ap", demoPassword+user,
		"-key", "aor", user, "-key", "dial", dial, "-p", strconv.Itoa(freeport.Port(t)), "-mp", strconv.Itoa(freeport.Port(t)))
}

func TestSippRegisterWithDigest(t *testing.T) {
	withRedis(t, func(t *testing.T, o nodeOptions) {
		n := startNode(t, o)
		registerWith(t, n, "campania.russo", "127.0.0.1:5999")
		_, body := n.get("/api/registrations")
		if !strings.Contains(body, `"aor":"campania.russo"`) || !strings.Contains(body, "sip:campania.russo@127.0.0.1:5999") {
			t.Fatalf("binding not listed: %s", body)
		}
		if v := n.metric(t, `centralino_registrar_bindings{transport="udp"}`); v != 1 {
			t.Errorf("centralino_registrar_bindings{udp} = %v, want 1", v)
		}
		// A wrong password is refused: sipp gets a second 401 where it wants 200.
		r := sipp(t, n, "register.xml", "-m", "1", "-au", "campania.russo", "-ap", "wrong",
			"-key", "aor", "campania.russo", "-key", "binding", "127.0.0.1:5998")
		if r.err == nil {
			t.Fatal("REGISTER with a wrong password succeeded")
		}
		if v := n.metric(t, `centralino_sip_auth_failures_total{reason="credentials"}`); v < 1 {
			t.Errorf("auth failure not counted: %v", v)
		}
	})
}

func TestSippCallThroughProxy(t *testing.T) {
	withRedis(t, func(t *testing.T, o nodeOptions) {
		n := startNode(t, o)
		addr, callee := sippCallee(t, n, "uas.xml")
		registerWith(t, n, "inps.ricci", addr)
		// Campania's phone dials INPS's operator by full number: prefix 8300 + 201.
		if r := call(t, n, "uac_call.xml", "campania.esposito", "8300201"); r.err != nil {
			t.Fatalf("caller: %v\n%s", r.err, r.output)
		}
		if r := callee(); r.err != nil {
			t.Fatalf("callee: %v\n%s", r.err, r.output)
		}
		if v := n.metric(t, `centralino_call_outcomes_total{destination_agency="inps",outcome="answered",source_agency="r_campan"}`); v != 1 {
			t.Errorf("answered call not counted: %v", v)
		}
		if v := n.metric(t, `centralino_active_calls`); v != 0 {
			t.Errorf("active calls after BYE = %v, want 0", v)
		}
	})
}

func TestSippCancel(t *testing.T) {
	n := startNode(t, nodeOptions{})
	addr, callee := sippCallee(t, n, "uas_ring.xml")
	registerWith(t, n, "puglia.lorusso", addr)
	// Extension 101 dialled inside Puglia's own agency.
	if r := call(t, n, "uac_cancel.xml", "puglia.desantis", "101"); r.err != nil {
		t.Fatalf("caller: %v\n%s", r.err, r.output)
	}
	if r := callee(); r.err != nil {
		t.Fatalf("callee did not see the CANCEL: %v\n%s", r.err, r.output)
	}
}

func TestSippUnknownAndUnregistered(t *testing.T) {
	n := startNode(t, nodeOptions{})
	if r := call(t, n, "uac_404.xml", "age.marino", "8999999"); r.err != nil {
		t.Errorf("unknown number: %v\n%s", r.err, r.output)
	}
	if r := call(t, n, "uac_480.xml", "age.marino", "age.greco"); r.err != nil {
		t.Errorf("known user without registration: %v\n%s", r.err, r.output)
	}
}

func TestSippForkFirstAnswerWins(t *testing.T) {
	n := startNode(t, nodeOptions{})
	answerer, answered := sippCallee(t, n, "uas.xml")
	ringer, cancelled := sippCallee(t, n, "uas_ring.xml")
	registerWith(t, n, "lineamica.bianchi", answerer)
	registerWith(t, n, "lineamica.bianchi", ringer)
	_, body := n.get("/api/registrations")
	if strings.Count(body, `"aor":"lineamica.bianchi"`) != 2 {
		t.Fatalf("want two contacts for lineamica.bianchi: %s", body)
	}
	if r := call(t, n, "uac_call.xml", "lineamica.romano", "201"); r.err != nil {
		t.Fatalf("caller: %v\n%s", r.err, r.output)
	}
	if r := answered(); r.err != nil {
		t.Errorf("answering contact: %v\n%s", r.err, r.output)
	}
	if r := cancelled(); r.err != nil {
		t.Errorf("losing contact was not cancelled: %v\n%s", r.err, r.output)
	}
}
