package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/test/sipua"
)

func TestMediaThroughTheRelayWithHold(t *testing.T) {
	n := startNode(t, nodeOptions{})
	callee := phone(t, n, "puglia.mastrangelo", "udp")
	mustRegister(t, callee)
	caller := phone(t, n, "puglia.lorusso", "udp")
	res, inv := caller.Invite("201")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	caller.Ack(inv, res)
	got := <-callee.Invites
	toCaller, err := sipua.SDPAddr(got.Body())
	if err != nil {
		t.Fatal(err)
	}
	toCallee, err := sipua.SDPAddr(res.Body())
	if err != nil {
		t.Fatal(err)
	}
	if toCaller.Port == caller.RTP.LocalAddr().(*net.UDPAddr).Port || toCallee.Port == callee.RTP.LocalAddr().(*net.UDPAddr).Port {
		t.Fatalf("the phones were given each other's address, not the relay's: %v %v", toCaller, toCallee)
	}
	sipua.SendRTP(t, caller.RTP, toCallee, 0, 1, []byte("pronto"))
	if p, _ := sipua.ReceiveRTP(t, callee.RTP); string(p) != "pronto" {
		t.Fatalf("callee heard %q", p)
	}
	sipua.SendRTP(t, callee.RTP, toCaller, 0, 1, []byte("buongiorno"))
	if p, _ := sipua.ReceiveRTP(t, caller.RTP); string(p) != "buongiorno" {
		t.Fatalf("caller heard %q", p)
	}

	// Hold and resume: the answers keep pointing at the relay, media resumes.
	if held := caller.ReInvite(inv, res, 2, "sendonly"); held.StatusCode != 200 {
		t.Fatalf("hold: %d", held.StatusCode)
	} else if !strings.Contains(string(held.Body()), "a=recvonly") && !strings.Contains(string(held.Body()), "a=sendrecv") {
		t.Logf("hold answer:\n%s", held.Body())
	}
	resumed := caller.ReInvite(inv, res, 3, "sendrecv")
	if resumed.StatusCode != 200 {
		t.Fatalf("resume: %d", resumed.StatusCode)
	}
	if a, _ := sipua.SDPAddr(resumed.Body()); a == nil || a.Port != toCallee.Port {
		t.Errorf("after resume the caller must still send to the relay port %d, got %v", toCallee.Port, a)
	}
	sipua.SendRTP(t, caller.RTP, toCallee, 0, 2, []byte("ci sono"))
	if p, _ := sipua.ReceiveRTP(t, callee.RTP); string(p) != "ci sono" {
		t.Fatalf("after resume the callee heard %q", p)
	}
	if v := n.metric(t, "centralino_media_sessions"); v != 1 {
		t.Errorf("centralino_media_sessions = %v during the call", v)
	}
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
	time.Sleep(100 * time.Millisecond)
	if v := n.metric(t, "centralino_media_ports_allocated"); v != 0 {
		t.Errorf("ports still allocated after BYE: %v", v)
	}
}
