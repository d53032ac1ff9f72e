package sip

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawPhone sends hand-made datagrams to the switch, as a phone retransmitting
// over UDP does, and reads what comes back.
type rawPhone struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newRawPhone(t *testing.T, sw *testSwitch) *rawPhone {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	to, err := net.ResolveUDPAddr("udp", sw.addr)
	if err != nil {
		t.Fatal(err)
	}
	return &rawPhone{t, conn, to}
}

// request is a request of CSeq number cseq; with branch "", its Via has no
// branch, as an RFC 2543 client's.
func (p *rawPhone) request(method, branch, callID, tag string, cseq int) []byte {
	to := "<sip:8300999@centralino.test>"
	if tag != "" {
		to += ";tag=" + tag
	}
	if branch != "" {
		branch = ";branch=" + branch
	}
	return fmt.Appendf(nil, "%s sip:8300999@centralino.test SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport%s\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:carla@centralino.test>;tag=f1\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\n"+
		"Contact: <sip:carla@%s>\r\nContent-Length: 0\r\n\r\n",
		method, p.conn.LocalAddr(), branch, to, callID, cseq, method, p.conn.LocalAddr())
}

func (p *rawPhone) send(msg []byte) {
	if _, err := p.conn.WriteToUDP(msg, p.to); err != nil {
		p.t.Fatal(err)
	}
}

// final returns the next final answer, skipping provisional ones; nil if
// none comes within wait.
func (p *rawPhone) final(wait time.Duration) []byte {
	buf := make([]byte, 4096)
	deadline := time.Now().Add(wait)
	for {
		p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		if !bytes.HasPrefix(buf[:n], []byte("SIP/2.0 1")) {
			return bytes.Clone(buf[:n])
		}
	}
}

func statusOf(res []byte) string {
	if len(res) < 11 {
		return fmt.Sprintf("%q", res)
	}
	return string(res[8:11])
}

// capReached starts a switch that takes a burst of one call, then none for
// 100 s, and has a phone's INVITE (of branch and callID) take it: the proxy
// challenges it. It returns the INVITE.
func capReached(t *testing.T, branch, callID string) (*testSwitch, *rawPhone, []byte) {
	sw := startSwitch(t, func(c *Config) { c.MaxCallRate = 0.01 })
	p := newRawPhone(t, sw)
	admitted := p.request("INVITE", branch, callID, "", 1)
	p.send(admitted)
	if res := p.final(2 * time.Second); statusOf(res) != "407" {
		t.Fatalf("the first INVITE: %s, want challenged (407)", statusOf(res))
	}
	return sw, p, admitted
}

// Past the cap, an INVITE over UDP is refused at the socket: its
// retransmissions get the same answer, the ACK of the answer goes no
// further, and retransmissions of a call let in before the cap was reached
// still reach their transaction. Re-INVITEs are never capped.
func TestCallRateRefusesStatelessly(t *testing.T) {
	sw, p, admitted := capReached(t, "z9hG4bK-in", "in@test")
	refused := p.request("INVITE", "z9hG4bK-out", "out@test", "", 1)
	p.send(refused)
	first := p.final(2 * time.Second)
	if statusOf(first) != "503" || !bytes.Contains(first, []byte("\r\nRetry-After: 1\r\n")) {
		t.Fatalf("the INVITE past the cap: %q, want 503 with Retry-After", first)
	}
	p.send(refused)
	if again := p.final(2 * time.Second); !bytes.Equal(again, first) {
		t.Errorf("its retransmission got\n%s\nwant the same answer\n%s", again, first)
	}
	// The ACK of the 503 carries its To tag and the INVITE's branch.
	p.send(p.request("ACK", "z9hG4bK-out", "out@test", toTag(first), 1))

	// The admitted INVITE's retransmission is its transaction's, which
	// answers 407 again (now or at its own retransmission timer): never 503.
	p.send(admitted)
	if res := p.final(2 * time.Second); statusOf(res) != "407" {
		t.Errorf("a retransmission of the admitted INVITE: %s, want its 407", statusOf(res))
	}
	// In a dialog, nothing is capped: the re-INVITE reaches the proxy (which
	// knows no such dialog).
	p.send(p.request("INVITE", "z9hG4bK-re", "re@test", "x1", 1))
	if res := p.final(2 * time.Second); statusOf(res) == "503" || res == nil {
		t.Errorf("a re-INVITE: %s, want it past the cap", statusOf(res))
	}

	if n := testutil.ToFloat64(sw.metrics.overloaded.WithLabelValues("call_rate")); n != 1 {
		t.Errorf("refusals counted: %v, want 1 (a retransmission is no new refusal)", n)
	}
	if n := testutil.ToFloat64(sw.metrics.requests.WithLabelValues(string(sip.ACK))); n != 0 {
		t.Errorf("%v ACKs reached the proxy; the ACK of a refusal must not", n)
	}
}

// toTag is the To tag of an answer.
func toTag(res []byte) string {
	return string(bytes.SplitN(bytes.SplitN(res, []byte(";tag="), 3)[2], []byte("\r\n"), 2)[0])
}

// A client that makes no branch (RFC 2543) resends its INVITE, with
// credentials, in the Call-ID of the challenged one and with the next CSeq:
// the gate takes it for a new INVITE, capped as any, and tells its copies
// and its ACK by the top Via, the CSeq number and the From tag. (The
// INVITEs here carry no credentials: the gate reads none.)
func TestCallRateWithoutBranch(t *testing.T) {
	sw, p, admitted := capReached(t, "", "old@test")
	// Another caller's INVITE in all but the From tag is no copy of it.
	p.send(bytes.Replace(admitted, []byte(";tag=f1"), []byte(";tag=f2"), 1))
	if res := p.final(2 * time.Second); statusOf(res) != "503" {
		t.Fatalf("an INVITE of another From tag past the cap: %s, want 503", statusOf(res))
	}
	second := p.request("INVITE", "", "old@test", "", 2)
	p.send(second)
	first := p.final(2 * time.Second)
	if statusOf(first) != "503" {
		t.Fatalf("the INVITE resent past the cap: %s, want 503 (taken for a copy of the first?)", statusOf(first))
	}
	p.send(p.request("ACK", "", "old@test", toTag(first), 2))
	p.send(second)
	if again := p.final(2 * time.Second); !bytes.Equal(again, first) {
		t.Errorf("its retransmission got\n%s\nwant the same answer\n%s", again, first)
	}
	if n := testutil.ToFloat64(sw.metrics.overloaded.WithLabelValues("call_rate")); n != 2 {
		t.Errorf("refusals counted: %v, want 2", n)
	}
	if n := testutil.ToFloat64(sw.metrics.requests.WithLabelValues(string(sip.ACK))); n != 0 {
		t.Errorf("%v ACKs reached the proxy; the ACK of the refusal must not", n)
	}
}
