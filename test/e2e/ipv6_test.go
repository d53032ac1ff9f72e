package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/test/sipua"
)

// startDualStack runs a node listening on 127.0.0.1 and on [::1] (UDP and
// TCP, the same port), with the relay on both families by default.
func startDualStack(t *testing.T) (n *node, addr6 string) {
	t.Helper()
	if c, err := net.ListenPacket("udp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		c.Close()
	}
	n = startNode(t, nodeOptions{edit: func(c *configs.Config) {
		_, port, _ := net.SplitHostPort(c.Listen[0].Addr)
		c.Listen = append(c.Listen,
			configs.Listener{Transport: "udp", Addr: "[::1]:" + port},
			configs.Listener{Transport: "tcp", Addr: "[::1]:" + port})
	}})
	return n, fmt.Sprintf("[::1]:%d", n.SIPPort)
}

// Calls between IPv6 and IPv4 phones: each phone registers in its own
// family; the switch names itself in each leg's family in Via and
// Record-Route (two Record-Routes when the legs differ), the relay is shown
// to each phone in its own family, audio passes both ways through it, and
// the ACK and the BYE find their way from either side.
func TestIPv6AndIPv4Calls(t *testing.T) {
	n, addr6 := startDualStack(t)
	for _, tc := range []struct {
		name                  string
		caller6, callee6      bool
		callerTp, calleeTp    string
		calleeHangsUp         bool
		wantDoubleRecordRoute bool
	}{
		{name: "v6 to v4", caller6: true, callerTp: "udp", calleeTp: "udp", wantDoubleRecordRoute: true},
		{name: "v4 to v6", callee6: true, callerTp: "udp", calleeTp: "udp", calleeHangsUp: true, wantDoubleRecordRoute: true},
		{name: "v6 to v6", caller6: true, callee6: true, callerTp: "udp", calleeTp: "udp"},
		{name: "v6 tcp to v4 udp", caller6: true, callerTp: "tcp", calleeTp: "udp", calleeHangsUp: true, wantDoubleRecordRoute: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := func(v6 bool) string {
				if v6 {
					return addr6
				}
				return n.sipAddr()
			}
			callee := sipua.New(t, at(tc.callee6), realm, "puglia.mastrangelo", demoPassword+"puglia.mastrangelo", tc.calleeTp)
			caller := sipua.New(t, at(tc.caller6), realm, "puglia.lorusso", demoPassword+"puglia.lorusso", tc.callerTp)
			for _, p := range []*sipua.Phone{callee, caller} {
				mustRegister(t, p)
				t.Cleanup(func() { p.Register(0) }) // the next case's phones are the same users
			}
			if _, body := n.get("/api/registrations"); tc.callee6 && !strings.Contains(body, `"source":"[::1]:`) {
				t.Fatalf("the IPv6 phone's binding lost its source: %s", body)
			}

			res, inv := caller.InviteSDP("201", caller.SDP())
			if res.StatusCode != 200 {
				t.Fatalf("call: %d %s", res.StatusCode, res.Reason)
			}
			var got *sip.Request
			select {
			case got = <-callee.Invites:
			case <-time.After(2 * time.Second):
				t.Fatal("the callee saw no INVITE")
			}

			// Signalling: the switch as each side reaches it.
			if v := got.Via(); v == nil || isV6(v.Host) != tc.callee6 {
				t.Errorf("callee's top Via %v is not in its family", v)
			}
			rr := got.GetHeaders("Record-Route")
			if want := map[bool]int{true: 2, false: 1}[tc.wantDoubleRecordRoute]; len(rr) != want {
				t.Fatalf("callee saw %d Record-Route, want %d: %v", len(rr), want, rr)
			}
			top, bottom := rr[0].(*sip.RecordRouteHeader).Address, rr[len(rr)-1].(*sip.RecordRouteHeader).Address
			if isV6(top.Host) != tc.callee6 || isV6(bottom.Host) != tc.caller6 {
				t.Errorf("Record-Route %v: top should be in the callee's family, bottom in the caller's", rr)
			}
			if tp, _ := bottom.UriParams.Get("transport"); tp != map[string]string{"udp": "", "tcp": "tcp"}[tc.callerTp] {
				t.Errorf("caller's Record-Route %v has transport %q", bottom, tp)
			}

			// Media: each phone is shown the relay in its own family.
			toCaller, err := sipua.SDPAddr(got.Body())
			if err != nil {
				t.Fatal(err)
			}
			toCallee, err := sipua.SDPAddr(res.Body())
			if err != nil {
				t.Fatal(err)
			}
			checkRelay(t, "callee", got.Body(), toCaller, tc.callee6, caller)
			checkRelay(t, "caller", res.Body(), toCallee, tc.caller6, callee)

			caller.Ack(inv, res)
			select {
			case <-callee.Acks:
			case <-time.After(2 * time.Second):
				t.Fatal("the ACK did not reach the callee")
			}
			for i := range uint16(3) {
				sipua.SendRTP(t, caller.RTP, toCallee, 0, 100+i, []byte(fmt.Sprintf("ciao %d", i)))
				if p, src := sipua.ReceiveRTP(t, callee.RTP); string(p) != fmt.Sprintf("ciao %d", i) || !src.IP.Equal(toCaller.IP) {
					t.Fatalf("callee got %q from %v, want %q from the relay %v", p, src, fmt.Sprintf("ciao %d", i), toCaller.IP)
				}
				sipua.SendRTP(t, callee.RTP, toCaller, 0, 200+i, []byte(fmt.Sprintf("pronto %d", i)))
				if p, src := sipua.ReceiveRTP(t, caller.RTP); string(p) != fmt.Sprintf("pronto %d", i) || !src.IP.Equal(toCallee.IP) {
					t.Fatalf("caller got %q from %v, want %q from the relay %v", p, src, fmt.Sprintf("pronto %d", i), toCallee.IP)
				}
			}

			if tc.calleeHangsUp { // the caller's CSeq is free for a re-INVITE
				// Hold: a re-INVITE across the families, answered in the caller's.
				ans := caller.ReInvite(inv, res, inv.CSeq().SeqNo+1, "sendonly")
				if ans.StatusCode != 200 {
					t.Fatalf("re-INVITE: %d %s", ans.StatusCode, ans.Reason)
				}
				select {
				case re := <-callee.Invites:
					checkRelay(t, "callee (re-INVITE)", re.Body(), toCaller, tc.callee6, caller)
				case <-time.After(2 * time.Second):
					t.Fatal("the re-INVITE did not reach the callee")
				}
				checkRelay(t, "caller (re-INVITE)", ans.Body(), toCallee, tc.caller6, callee)
			}

			var bye *sip.Response
			var byes chan *sip.Request
			if tc.calleeHangsUp {
				bye, byes = callee.HangUpAnswered(got.CallID().Value()), caller.Byes
			} else {
				bye, byes = caller.Bye(inv, res), callee.Byes
			}
			if bye.StatusCode != 200 {
				t.Fatalf("BYE: %d %s", bye.StatusCode, bye.Reason)
			}
			select {
			case <-byes:
			case <-time.After(2 * time.Second):
				t.Fatal("the other side saw no BYE")
			}
		})
	}
	waitFor(t, 5*time.Second, "the calls over", func() bool { return n.metric(t, "centralino_active_calls") == 0 })
}

// checkRelay wants the SDP a phone got to point at the relay in the phone's
// family, not at the other phone.
func checkRelay(t *testing.T, who string, body []byte, relay *net.UDPAddr, v6 bool, other *sipua.Phone) {
	t.Helper()
	want := map[bool]string{true: "c=IN IP6 ::1", false: "c=IN IP4 127.0.0.1"}[v6]
	if !strings.Contains(string(body), want+"\r\n") {
		t.Errorf("%s's SDP does not say %q:\n%s", who, want, body)
	}
	if relay.Port == udpPort(other.RTP) {
		t.Errorf("%s's SDP points at the other phone, not at the relay: %v", who, relay)
	}
}

func isV6(host string) bool { return strings.Contains(host, ":") }

// A phone behind NAT registering over IPv6 asks for rport: the answer goes
// back to where the REGISTER came from and its Via says so, the address
// without brackets (RFC 3581, RFC 5118 §4.5).
func TestIPv6RegisterReceivedRport(t *testing.T) {
	_, addr6 := startDualStack(t)
	conn, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	req := "REGISTER sip:" + realm + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP [2001:db8::9]:5062;rport;branch=z9hG4bK-v6nat\r\n" +
		"From: <sip:puglia.lorusso@" + realm + ">;tag=v6\r\nTo: <sip:puglia.lorusso@" + realm + ">\r\n" +
		"Call-ID: v6nat@test\r\nCSeq: 1 REGISTER\r\nContact: <sip:puglia.lorusso@[2001:db8::9]:5062>\r\n" +
		"Max-Forwards: 70\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
	dst, _ := net.ResolveUDPAddr("udp", addr6)
	if _, err := conn.WriteTo([]byte(req), dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no answer at the source address: %v", err)
	}
	res := string(buf[:n])
	if want := fmt.Sprintf("Via: SIP/2.0/UDP [2001:db8::9]:5062;rport=%d;branch=z9hG4bK-v6nat;received=::1\r\n", port); !strings.Contains(res, want) {
		t.Errorf("answer lacks %q:\n%s", want, res)
	}
}
