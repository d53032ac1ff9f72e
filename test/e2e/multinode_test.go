package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/test/redisserver"
)

// twoNodes starts Campania's node on 127.0.0.2 and INPS's on 127.0.0.3,
// sharing one redis-server and the cluster secret.
func twoNodes(t *testing.T) (campania, inps *node) {
	return twoNodesOn(t, "127.0.0.2", "127.0.0.3")
}

func twoNodesOn(t *testing.T, campaniaIP, inpsIP string) (campania, inps *node) {
	t.Helper()
	need(t, "redis-server")
	srv := redisserver.Start(t)
	clustered := func(c *configs.Config) {
		c.Cluster.Secret = "e2e secret of the nodes"
		c.Cluster.Heartbeat = configs.Duration(200 * time.Millisecond)
	}
	campania = startNode(t, nodeOptions{redisURL: srv.URL(), nodeID: "campania", host: campaniaIP, edit: clustered})
	inps = startNode(t, nodeOptions{redisURL: srv.URL(), nodeID: "inps", host: inpsIP, edit: clustered})
	return campania, inps
}

// liveNodes lists the node IDs n sees alive.
func liveNodes(t *testing.T, n *node) []string {
	t.Helper()
	code, body := n.get("/api/nodes")
	if code != 200 {
		t.Fatalf("GET /api/nodes: %d %s", code, body)
	}
	var list []struct{ ID string }
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("GET /api/nodes: %v: %s", err, body)
	}
	var ids []string
	for _, n := range list {
		ids = append(ids, n.ID)
	}
	return ids
}

// A phone on INPS's node calls an operator whose phone is connected to
// Campania's node over TCP: only that node can reach it. The call crosses
// both nodes, is answered, and the caller's BYE follows the recorded route
// through both to the callee's connection. The nodes may share a host.
func TestCallAcrossNodes(t *testing.T) {
	t.Run("two addresses", func(t *testing.T) { testCallAcrossNodes(t, "127.0.0.2", "127.0.0.3") })
	t.Run("one address", func(t *testing.T) { testCallAcrossNodes(t, "127.0.0.1", "127.0.0.1") })
}

func testCallAcrossNodes(t *testing.T, campaniaIP, inpsIP string) {
	campania, inps := twoNodesOn(t, campaniaIP, inpsIP)
	if ids := liveNodes(t, inps); strings.Join(ids, ",") != "campania,inps" {
		t.Fatalf("INPS's node sees nodes %v, want campania and inps", ids)
	}
	callee := phone(t, campania, "campania.deluca", "tcp")
	mustRegister(t, callee)
	caller := phone(t, inps, "inps.colombo", "udp")
	mustRegister(t, caller)

	res, inv := caller.Invite("campania.deluca")
	if res.StatusCode != 200 {
		t.Fatalf("call across nodes: %d %s", res.StatusCode, res.Reason)
	}
	var route []string
	for _, h := range res.GetHeaders("Record-Route") {
		route = append(route, h.Value())
	}
	if rr := strings.Join(route, " "); !strings.Contains(rr, campania.sipAddr()) || !strings.Contains(rr, inps.sipAddr()) {
		t.Errorf("Record-Route %s does not cross both nodes", rr)
	}
	caller.Ack(inv, res)
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE across nodes: %d %s", bye.StatusCode, bye.Reason)
	}
	select {
	case <-callee.Byes:
	case <-time.After(5 * time.Second):
		t.Fatal("the callee got no BYE")
	}
	// Campania's node trusted INPS's forward: no second challenge, no failure.
	if v := campania.metric(t, `centralino_sip_node_requests_total{direction="in",result="accepted"}`); v < 1 {
		t.Errorf("Campania's node accepted %v forwarded requests, want the INVITE", v)
	}
	if v := campania.metric(t, `centralino_sip_auth_failures_total{reason="credentials"}`); v != 0 {
		t.Errorf("auth failures on Campania's node: %v", v)
	}

	// A phone cannot pass itself off as a node.
	forged := caller.Request(sip.INVITE, "campania.deluca")
	forged.Recipient.Host, forged.Recipient.Port = campania.Host, campania.SIPPort
	forged.AppendHeader(sip.NewHeader("X-Centralino-Node", "inps;ts=1;sig=00"))
	if res := caller.Do(forged); res.StatusCode != 403 {
		t.Errorf("forged node request: %d %s, want 403", res.StatusCode, res.Reason)
	}
}

// A user who registered a phone on INPS's node registers another on
// Campania's: INPS's node, which cached where the user was for the first
// call, rings both for the next.
func TestUserRegistersOnAnotherNode(t *testing.T) {
	campania, inps := twoNodes(t)
	soft := phone(t, inps, "campania.deluca", "udp")
	mustRegister(t, soft)
	caller := phone(t, inps, "inps.colombo", "udp")
	mustRegister(t, caller)
	call := func() int {
		t.Helper()
		res, inv := caller.Invite("campania.deluca")
		if res.StatusCode == 200 {
			caller.Ack(inv, res)
			caller.Bye(inv, res)
		}
		return res.StatusCode
	}
	if code := call(); code != 200 {
		t.Fatalf("first call: %d", code)
	}
	<-soft.Invites

	soft.Reply.Store(486) // busy from now on
	desk := phone(t, campania, "campania.deluca", "tcp")
	mustRegister(t, desk)
	if code := call(); code != 200 {
		t.Fatalf("second call: %d, want the new phone's answer", code)
	}
	select {
	case <-desk.Invites:
	default:
		t.Error("the phone registered on Campania's node did not ring")
	}
}

// The same with sipp on both sides: the callee's scenario wants the ACK and
// the BYE, which cross both nodes.
func TestSippCallAcrossNodes(t *testing.T) {
	campania, inps := twoNodes(t)
	addr, callee := sippCallee(t, campania, "uas.xml")
	registerWith(t, campania, "campania.deluca", addr)
	if r := call(t, inps, "uac_call.xml", "inps.colombo", "8100201"); r.err != nil {
		t.Fatalf("caller: %v\n%s", r.err, r.output)
	}
	if r := callee(); r.err != nil {
		t.Fatalf("callee: %v\n%s", r.err, r.output)
	}
	if v := inps.metric(t, `centralino_call_outcomes_total{destination_agency="r_campan",outcome="answered",source_agency="inps"}`); v != 1 {
		t.Errorf("answered call counted %v times on the calling node, want 1", v)
	}
	if v := campania.metric(t, `centralino_call_attempts_total{destination_agency="r_campan",source_agency="inps"}`); v != 0 {
		t.Errorf("the delivering node counted the call as its own: %v", v)
	}
}

// An operator's state set on one node is the state on the other.
func TestOperatorStateAcrossNodes(t *testing.T) {
	campania, inps := twoNodes(t)
	op := phone(t, inps, "campania.deluca", "udp")
	mustRegister(t, op)
	if code, reason := dialFeature(t, op, "*11"); code != 603 {
		t.Fatalf("*11 on INPS's node: %d %s", code, reason)
	}
	if got := operatorState(t, campania, "campania.deluca"); got != "available" {
		t.Errorf("Campania's node after *11 on INPS's: %q, want available", got)
	}
	if code, body := campania.put("/api/operators/campania.deluca", "r_campan", `{"state": "paused"}`); code != 200 {
		t.Fatalf("PUT on Campania's node: %d %s", code, body)
	}
	if got := operatorState(t, inps, "campania.deluca"); got != "paused" {
		t.Errorf("INPS's node after a pause on Campania's: %q, want paused", got)
	}
}

// When Campania's node dies, the phones connected to it cannot be reached:
// a call to one gets 480, and a call to the URP's public number follows the
// overflow chain to the national centre, whose operator is on the live node.
func TestNodeDownOverflows(t *testing.T) {
	campania, inps := twoNodes(t)
	mustRegister(t, phone(t, campania, "campania.deluca", "tcp"))
	national := phone(t, inps, "lineamica.bianchi", "udp")
	mustRegister(t, national)
	caller := phone(t, inps, "inps.colombo", "udp")
	mustRegister(t, caller)

	campania.cmd.Process.Kill() // a crash: no goodbye
	<-campania.done
	waitFor(t, 5*time.Second, "INPS's node gives Campania's up", func() bool {
		return strings.Join(liveNodes(t, inps), ",") == "inps"
	})

	if res, _ := caller.Invite("campania.deluca"); res.StatusCode != 480 {
		t.Errorf("call to a phone of the dead node: %d %s, want 480", res.StatusCode, res.Reason)
	}
	res, inv := caller.Invite("8100000")
	if res.StatusCode != 200 {
		t.Fatalf("call to the URP of the dead node: %d %s, want the national centre's answer", res.StatusCode, res.Reason)
	}
	select {
	case got := <-national.Invites:
		if got.CallID().Value() != inv.CallID().Value() {
			t.Errorf("the national centre rang for another call")
		}
	default:
		t.Error("the national centre's operator did not ring")
	}
	caller.Ack(inv, res)
	caller.Bye(inv, res)
	if v := inps.metric(t, `centralino_sip_node_requests_total{direction="out",result="node_gone"}`); v < 1 {
		t.Errorf("node_gone forwards counted: %v", v)
	}
}

// With the directory behind Redis Sentinel, the switch keeps serving when
// the master dies: the replica is promoted and the node follows it.
func TestSentinelFailover(t *testing.T) {
	s := redisserver.StartSentinel(t)
	n := startNode(t, nodeOptions{redisURL: s.URL()})
	callee := phone(t, n, "inps.ricci", "udp")
	mustRegister(t, callee)
	caller := phone(t, n, "inps.colombo", "udp")
	mustRegister(t, caller)

	s.KillMaster()
	waitFor(t, 30*time.Second, "a REGISTER stored after the failover", func() bool {
		return caller.Register(300).StatusCode == 200
	})
	if code, body := n.get("/readyz"); code != 200 {
		t.Errorf("/readyz after the failover: %d %s", code, body)
	}
	res, inv := caller.Invite("inps.ricci")
	if res.StatusCode != 200 {
		t.Fatalf("call to a phone registered before the failover: %d %s", res.StatusCode, res.Reason)
	}
	caller.Ack(inv, res)
	caller.Bye(inv, res)
	// The queue state is behind Sentinel too.
	if code, reason := dialFeature(t, callee, "*11"); code != 603 {
		t.Errorf("*11 after the failover: %d %s", code, reason)
	}
}
