package sip

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/sipua"
)

// handoffTo sends INPS's callers to a number when the operator hangs up.
type handoffTo string

func (h handoffTo) AfterHangup(agency string) (string, bool) { return string(h), agency == "inps" }

// A citizen's call (from a trusted trunk) answered by INPS's operator, who
// hangs up first: the citizen stays, the switch calls the hand-off number
// (dario's phone stands in for the survey IVR) with the relay's ports, the
// media flows between the citizen and it, and its BYE ends the citizen's call.
func TestHandoffKeepsTheCallerWhenTheOperatorHangsUp(t *testing.T) {
	sw := startSwitch(t, func(c *Config) {
		c.Anchor = AnchorAlways
		c.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	sw.handoff = handoffTo("8300101")
	ivr := newPhone(t, sw, "dario", "udp")
	register(ivr, "pw-dario", 300)
	caller, callee, inv, _, toCallee, toCaller := anchoredCall(t, sw)
	if r := callee.HangUpAnswered(inv.CallID().Value()); r.StatusCode != 200 {
		t.Fatalf("the operator's BYE: %d", r.StatusCode)
	}
	select {
	case in := <-ivr.Invites:
		if a := sdpAddr(t, in.Body()); a.String() != toCaller.String() {
			t.Errorf("the hand-off offers %v, want the relay's operator side %v", a, toCaller)
		}
		// The relay sends the caller's media to the target once the
		// target's 200 reaches the switch.
		heard := false
		for i := range 20 {
			sipua.SendRTP(t, caller.RTP, toCallee, 0, uint16(i), []byte("three"))
			ivr.RTP.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			buf := make([]byte, 1500)
			if n, err := ivr.RTP.Read(buf); err == nil && n > 12 && bytes.Equal(buf[12:n], []byte("three")) {
				heard = true
				break
			}
		}
		if !heard {
			t.Fatal("the hand-off target does not hear the caller")
		}
		sipua.SendRTP(t, ivr.RTP, toCaller, 0, 1, []byte("survey"))
		if p, _ := sipua.ReceiveRTP(t, caller.RTP); !bytes.Equal(p, []byte("survey")) {
			t.Errorf("the caller got %q", p)
		}
		select {
		case <-caller.Byes:
			t.Fatal("the caller was hung up on")
		default:
		}
		tr := sw.nextEvent(t, modules.KindCallTransferred).(modules.CallTransferred)
		if tr.NewCallID != in.CallID().Value() || tr.Target != "8300101" || tr.FromAgency != "inps" || tr.By != "" {
			t.Errorf("transfer event %+v", tr)
		}
		if r := ivr.HangUpAnswered(in.CallID().Value()); r.StatusCode != 200 {
			t.Fatalf("the hand-off target's BYE: %d", r.StatusCode)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the hand-off target was not called")
	}
	select {
	case <-caller.Byes:
	case <-time.After(3 * time.Second):
		t.Fatal("the caller got no BYE at the end")
	}
	deadline := time.Now().Add(2 * time.Second)
	for sw.ActiveCalls() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := sw.ActiveCalls(); n != 0 {
		t.Errorf("%d calls left active", n)
	}
}

// A user of the directory calling a colleague is not handed off.
func TestNoHandoffForDirectoryUsers(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Anchor = AnchorAlways })
	sw.handoff = handoffTo("8300101")
	ivr := newPhone(t, sw, "dario", "udp")
	register(ivr, "pw-dario", 300)
	caller, callee, inv, _, _, _ := anchoredCall(t, sw)
	callee.HangUpAnswered(inv.CallID().Value())
	select {
	case <-caller.Byes:
	case <-time.After(3 * time.Second):
		t.Fatal("the caller got no BYE")
	}
	select {
	case <-ivr.Invites:
		t.Fatal("a directory user was handed off")
	default:
	}
}
