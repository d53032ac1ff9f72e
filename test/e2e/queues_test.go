package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/routing/directory"
	"github.com/lineamica/centralino/test/sipua"
)

// campaniaQueue gives URP Campania three operators in a round-robin queue
// (2 s per operator, at most 6 s in all) overflowing to Linea Amica.
func campaniaQueue(c *configs.Config) {
	for i, a := range c.Network.Agencies {
		if a.Code == "r_campan" {
			c.Network.Agencies[i].Queue = directory.QueueConfig{Strategy: "round-robin", RingTimeout: 2 * time.Second, MaxWait: 6 * time.Second}
		}
	}
	for _, u := range []struct{ name, ext string }{{"campania.gallo", "202"}, {"campania.vitale", "203"}} {
		c.Network.Users = append(c.Network.Users, configs.User{
			User:     directory.User{Username: u.name, Agency: "r_campan", Role: directory.RoleOperator, Extension: u.ext},
			Password: "demo-" + u.name,
		})
	}
}

// dialFeature dials a feature code and returns the final answer.
func dialFeature(t *testing.T, p *sipua.Phone, code string) (int, string) {
	t.Helper()
	res, _ := p.Invite(code)
	return res.StatusCode, res.Reason
}

// answeredBy waits for the operator whose phone rang with callID.
func answeredBy(t *testing.T, callID string, ops map[string]*sipua.Phone) string {
	t.Helper()
	for name, p := range ops {
		select {
		case inv := <-p.Invites:
			if inv.CallID().Value() == callID {
				return name
			}
		default:
		}
	}
	return ""
}

// operatorState reads an operator's state as its agency's desk application
// would (the test operators are URP Campania's).
func operatorState(t *testing.T, n *node, user string) string {
	t.Helper()
	code, body := n.getAs("/api/operators/"+user, "r_campan")
	if code != 200 {
		t.Fatalf("GET /api/operators/%s: %d %s", user, code, body)
	}
	var v struct{ State string }
	json.Unmarshal([]byte(body), &v)
	return v.State
}

// Operators log in with *11, calls to the URP's public number go round the
// three of them, a busy operator is skipped, a paused one too, and when
// nobody answers the call overflows to the national centre.
func TestQueueRoundRobinBusyPauseAndOverflow(t *testing.T) {
	// No trusted source here: the phones must authenticate for the switch
	// to know who dials a feature code.
	n := startNode(t, nodeOptions{edit: campaniaQueue})
	names := []string{"campania.deluca", "campania.gallo", "campania.vitale"}
	ops := map[string]*sipua.Phone{}
	for _, name := range names {
		ops[name] = phone(t, n, name, "udp")
		mustRegister(t, ops[name])
		if code, reason := dialFeature(t, ops[name], "*11"); code != 603 || reason != "Accesso alla coda effettuato" {
			t.Fatalf("%s dialling *11: %d %s", name, code, reason)
		}
		if s := operatorState(t, n, name); s != "available" {
			t.Fatalf("%s after *11: %s", name, s)
		}
	}
	desk := phone(t, n, "campania.russo", "udp")
	mustRegister(t, desk)
	if code, _ := dialFeature(t, desk, "*11"); code != 403 {
		t.Errorf("a desk phone dialling *11: %d, want 403", code)
	}

	citizen := phone(t, n, "campania.esposito", "udp")
	call := func() (string, func()) {
		t.Helper()
		res, inv := citizen.Invite("8100000")
		if res.StatusCode != 200 {
			t.Fatalf("citizen's call: %d %s", res.StatusCode, res.Reason)
		}
		citizen.Ack(inv, res)
		who := answeredBy(t, inv.CallID().Value(), ops)
		return who, func() { citizen.Bye(inv, res) }
	}

	// Round robin: each operator in turn.
	var order []string
	for range 3 {
		who, hangup := call()
		order = append(order, who)
		hangup()
	}
	if order[0] == order[1] || order[1] == order[2] || order[0] == order[2] || order[0] == "" {
		t.Fatalf("round robin answered by %v, want the three operators in turn", order)
	}

	// The next in turn is on a call: skipped, and shown busy.
	busyOp, hangupBusy := call()
	if busyOp != order[0] {
		t.Fatalf("fourth call answered by %s, want %s (round robin)", busyOp, order[0])
	}
	waitFor(t, 3*time.Second, "the operator shown busy", func() bool { return operatorState(t, n, busyOp) == "busy" })
	next, hangup := call()
	if next == busyOp || next == "" {
		t.Fatalf("call while %s is busy answered by %q", busyOp, next)
	}
	hangup()
	hangupBusy()
	waitFor(t, 3*time.Second, "the operator available again", func() bool { return operatorState(t, n, busyOp) == "available" })

	// Paused with *13 (and through the API): not rung.
	if code, reason := dialFeature(t, ops[order[1]], "*13"); code != 603 || reason != "Pausa attivata" {
		t.Fatalf("*13: %d %s", code, reason)
	}
	if code, body := n.put("/api/operators/"+order[2], "r_campan", `{"state":"paused"}`); code != 200 {
		t.Fatalf("PUT paused: %d %s", code, body)
	}
	if code, _ := n.put("/api/operators/"+order[2], "inps", `{"state":"logged-out"}`); code != 404 {
		t.Fatalf("INPS changing URP Campania's operator: %d, want 404", code)
	}
	if code, _ := n.get("/api/operators/" + order[2]); code != 401 {
		t.Fatalf("reading an operator without X-Agency: %d, want 401", code)
	}
	for range 2 {
		who, hangup := call()
		if who != order[0] {
			t.Fatalf("with two operators paused the call went to %q, want %s", who, order[0])
		}
		hangup()
		// Idle again only once the switch has seen the BYE through.
		waitFor(t, 3*time.Second, "the operator available after the call", func() bool { return operatorState(t, n, order[0]) == "available" })
	}

	// Nobody answers: after the queue's maximum wait the national centre does.
	ops[order[0]].Reply.Store(-1)
	if code, _ := dialFeature(t, ops[order[1]], "*14"); code != 603 {
		t.Fatalf("*14: %d", code)
	}
	ops[order[1]].Reply.Store(-1)
	centre := phone(t, n, "lineamica.bianchi", "udp")
	mustRegister(t, centre)
	res, inv := citizen.Invite("8100000")
	if res.StatusCode != 200 {
		t.Fatalf("call overflowing to the centre: %d %s", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	select {
	case got := <-centre.Invites:
		if got.CallID().Value() != inv.CallID().Value() {
			t.Fatalf("the centre got another call")
		}
	default:
		t.Fatalf("the call was answered, but not by the centre")
	}
	citizen.Bye(inv, res)
	if v := n.metric(t, `centralino_queue_wait_seconds_count{agency="r_campan",outcome="overflowed"}`); v != 1 {
		t.Errorf("overflowed calls counted: %v, want 1", v)
	}
	if v := n.metric(t, `centralino_overflows_total{destination_agency="lineamica",reason="no-answer",source_agency="r_campan"}`); v != 1 {
		t.Errorf("overflows for no answer: %v, want 1", v)
	}
	if v := n.metric(t, `centralino_queue_wait_seconds_count{agency="r_campan",outcome="answered"}`); v != 7 {
		t.Errorf("answered calls counted: %v, want 7", v)
	}
	if v := n.metric(t, `centralino_queue_operators{agency="r_campan",state="paused"}`); v != 1 {
		t.Errorf("paused operators: %v, want 1", v)
	}

	// *12 logs out; the API lists the queue without the operator.
	if code, _ := dialFeature(t, ops[order[0]], "*12"); code != 603 {
		t.Fatalf("*12: %d", code)
	}
	if s := operatorState(t, n, order[0]); s != "logged-out" {
		t.Errorf("after *12: %s", s)
	}
	code, body := n.getAs("/api/queues/r_campan", "r_campan")
	if code != 200 || strings.Contains(body, order[0]) || !strings.Contains(body, `"strategy":"round-robin"`) {
		t.Errorf("GET /api/queues/r_campan: %d %s", code, body)
	}
}

// Outside office hours the call goes to the overflow target; when that is
// closed too the caller hears why, with the reopening time.
func TestOutOfHours(t *testing.T) {
	today := time.Now().In(rome(t)).Format("2006-01-02")
	n := startNode(t, nodeOptions{trusted: []string{"127.0.0.1/32"}, edit: func(c *configs.Config) {
		for i, a := range c.Network.Agencies {
			switch a.Code {
			case "asl_na1", "age":
				c.Network.Agencies[i].Closures = []string{today}
			}
			if a.Code == "age" {
				c.Network.Agencies[i].Overflow = ""
			}
		}
	}})
	centre := phone(t, n, "lineamica.bianchi", "udp")
	mustRegister(t, centre)
	citizen := phone(t, n, "3331234567", "udp")

	res, inv := citizen.Invite("8110000")
	if res.StatusCode != 200 {
		t.Fatalf("call to the closed ASL: %d %s, want the centre to answer", res.StatusCode, res.Reason)
	}
	citizen.Ack(inv, res)
	citizen.Bye(inv, res)
	select {
	case <-centre.Invites:
	default:
		t.Fatal("the closed ASL's call did not reach the centre")
	}
	if v := n.metric(t, `centralino_overflows_total{destination_agency="lineamica",reason="closed",source_agency="asl_na1"}`); v != 1 {
		t.Errorf("overflows for a closed office: %v, want 1", v)
	}

	res, _ = citizen.Invite("8400000")
	if res.StatusCode != 480 || !strings.HasPrefix(res.Reason, "Ufficio chiuso") {
		t.Fatalf("call to the closed Agenzia without overflow: %d %s", res.StatusCode, res.Reason)
	}
	if h := res.GetHeader("Reason"); h == nil || !strings.Contains(h.Value(), "Ufficio chiuso") {
		t.Errorf("no Reason header telling the office is closed: %v", h)
	}
}

func rome(t *testing.T) *time.Location {
	loc, err := time.LoadLocation("Europe/Rome")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
