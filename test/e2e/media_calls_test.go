package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/sipua"
)

// mediaCall places an anchored call from puglia.lorusso to extension 201
// (puglia.mastrangelo) offering body, and returns the phones, the dialog and
// the relay addresses each side was given.
type mediaCall struct {
	caller, callee     *sipua.Phone
	inv                *sip.Request
	res                *sip.Response
	got                *sip.Request // the INVITE the callee received
	toCallee, toCaller *net.UDPAddr // where the caller, and the callee, send: the relay
}

func placeMediaCall(t *testing.T, n *node, offer func(caller *sipua.Phone) []byte) *mediaCall {
	t.Helper()
	m := &mediaCall{callee: phone(t, n, "puglia.mastrangelo", "udp"), caller: phone(t, n, "puglia.lorusso", "udp")}
	mustRegister(t, m.callee)
	m.res, m.inv = m.caller.InviteSDP("201", offer(m.caller))
	if m.res.StatusCode != 200 {
		t.Fatalf("call: %d %s", m.res.StatusCode, m.res.Reason)
	}
	m.caller.Ack(m.inv, m.res)
	select {
	case m.got = <-m.callee.Invites:
	case <-time.After(2 * time.Second):
		t.Fatal("the callee saw no INVITE")
	}
	var err error
	if m.toCaller, err = sipua.SDPAddr(m.got.Body()); err != nil {
		t.Fatal(err)
	}
	if m.toCallee, err = sipua.SDPAddr(m.res.Body()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*net.UDPAddr{m.toCaller, m.toCallee} {
		if a.Port == udpPort(m.caller.RTP) || a.Port == udpPort(m.callee.RTP) {
			t.Fatalf("SDP points at a phone, not at the relay: %v", a)
		}
	}
	return m
}

func udpPort(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }

// A citizen's SRTP softphone calls an office desk phone that speaks plain
// RTP: the desk phone is offered RTP, the softphone is answered SRTP with
// the switch's key, and the audio is decrypted on each far side.
func TestSRTPSoftphoneToPlainDeskPhone(t *testing.T) {
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		for i := range c.Network.Users {
			if c.Network.Users[i].Username == "puglia.mastrangelo" {
				c.Network.Users[i].Media = "rtp"
			}
		}
	}})
	inline := sipua.SRTPKey()
	m := placeMediaCall(t, n, func(p *sipua.Phone) []byte { return p.SRTPSDP(inline) })
	if b := string(m.got.Body()); !strings.Contains(b, "RTP/AVP") || strings.Contains(b, "a=crypto") {
		t.Fatalf("the desk phone was offered SRTP:\n%s", b)
	}
	if b := string(m.res.Body()); !strings.Contains(b, "RTP/SAVP") {
		t.Fatalf("the softphone was answered without SRTP:\n%s", b)
	}
	enc := sipua.SRTPContext(t, inline)
	dec := sipua.SRTPContext(t, sipua.CryptoKey(t, m.res.Body()))
	for i := range uint16(3) {
		sipua.SendSRTP(t, enc, m.caller.RTP, m.toCallee, 1+i, []byte("cifrato"))
		if p, _ := sipua.ReceiveRTP(t, m.callee.RTP); string(p) != "cifrato" {
			t.Fatalf("the desk phone heard %q", p)
		}
		sipua.SendRTP(t, m.callee.RTP, m.toCaller, 0, 1+i, []byte("in chiaro"))
		if p := sipua.ReceiveSRTP(t, dec, m.caller.RTP); string(p) != "in chiaro" {
			t.Fatalf("the softphone heard %q", p)
		}
	}
	// A forged packet (not encrypted with the softphone's key) is not relayed.
	sipua.SendRTP(t, m.caller.RTP, m.toCallee, 0, 9, []byte("falso"))
	m.callee.RTP.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := m.callee.RTP.ReadFromUDP(make([]byte, 1500)); err == nil {
		t.Error("plain RTP sent to the softphone's SRTP port reached the desk phone")
	}
	if bye := m.caller.Bye(m.inv, m.res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
}

// A phone behind NAT sends its media from another port than its SDP says:
// the relay latches on it and the reply reaches that port.
func TestPhoneBehindNATIsLatched(t *testing.T) {
	n := startNode(t, nodeOptions{})
	m := placeMediaCall(t, n, func(p *sipua.Phone) []byte { return p.SDP() })
	natted, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer natted.Close()
	sipua.SendRTP(t, natted, m.toCallee, 0, 1, []byte("dal NAT"))
	if p, _ := sipua.ReceiveRTP(t, m.callee.RTP); string(p) != "dal NAT" {
		t.Fatalf("the callee heard %q", p)
	}
	sipua.SendRTP(t, m.callee.RTP, m.toCaller, 0, 1, []byte("risposta"))
	if p, src := sipua.ReceiveRTP(t, natted); string(p) != "risposta" || src.Port != m.toCallee.Port {
		t.Fatalf("the NATed port got %q from %v, want it from the relay port %d", p, src, m.toCallee.Port)
	}
}

// When no media flows either way for media.timeout, the switch ends the call
// with a BYE to each side saying why, and counts it.
func TestMediaTimeoutEndsTheCall(t *testing.T) {
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) { c.Media.Timeout = configs.Duration(time.Second) }})
	m := placeMediaCall(t, n, func(p *sipua.Phone) []byte { return p.SDP() })
	for _, p := range []*sipua.Phone{m.caller, m.callee} {
		select {
		case bye := <-p.Byes:
			if r := bye.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "media timeout") {
				t.Errorf("%s: BYE without a media timeout Reason: %v", p.User, r)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s got no BYE after the media stopped", p.User)
		}
	}
	if v := n.metric(t, "centralino_media_timeouts_total"); v != 1 {
		t.Errorf("centralino_media_timeouts_total = %v", v)
	}
	if v := n.metric(t, "centralino_media_ports_allocated"); v != 0 {
		t.Errorf("ports still allocated after the timeout: %v", v)
	}
}

// RFC 4733 digits on a relayed stream reach the modules as call.digits
// events (the chaos module, quiet here, subscribes to every event and the
// bus counts what it hands it).
func TestDTMFDigitsArePublished(t *testing.T) {
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		c.Modules = []modules.Config{{Name: "chaos", Options: map[string]any{}}}
	}})
	m := placeMediaCall(t, n, func(p *sipua.Phone) []byte { return p.SDP() })
	sipua.SendDigit(t, m.caller.RTP, m.toCallee, 101, 1, 8000, 3)
	sipua.SendDigit(t, m.caller.RTP, m.toCallee, 101, 4, 16000, 11) // "#"
	const digits = `centralino_module_events_total{kind="call.digits",module="chaos"}`
	deadline := time.Now().Add(3 * time.Second)
	for n.metric(t, digits) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if v := n.metric(t, digits); v != 2 {
		t.Errorf("%s = %v, want 2 (each digit once, though its end packet came three times)", digits, v)
	}
	// The telephone-event packets are relayed too.
	for range 6 {
		if _, err := readRTP(m.callee.RTP); err != nil {
			t.Fatalf("the callee did not get the telephone-event packets: %v", err)
		}
	}
}

func readRTP(c *net.UDPConn) (int, error) {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := c.ReadFromUDP(make([]byte, 1500))
	return n, err
}

// A late offer: the INVITE carries no SDP, the callee offers in its 200 and
// the caller answers in the ACK. Both SDPs the phones see point at the relay
// and the audio passes it both ways.
func TestLateOfferIsAnchored(t *testing.T) {
	n := startNode(t, nodeOptions{})
	callee, caller := phone(t, n, "puglia.mastrangelo", "udp"), phone(t, n, "puglia.lorusso", "udp")
	mustRegister(t, callee)
	res, inv := caller.InviteSDP("201", nil)
	if res.StatusCode != 200 {
		t.Fatalf("call: %d %s", res.StatusCode, res.Reason)
	}
	caller.AckSDP(inv, res, caller.SDP())
	if got := <-callee.Invites; len(got.Body()) != 0 {
		t.Fatalf("the callee got an SDP in a late-offer INVITE:\n%s", got.Body())
	}
	var ack *sip.Request
	select {
	case ack = <-callee.Acks:
	case <-time.After(2 * time.Second):
		t.Fatal("the callee got no ACK")
	}
	toCallee, err := sipua.SDPAddr(res.Body()) // the offer, as the caller saw it
	if err != nil {
		t.Fatal(err)
	}
	toCaller, err := sipua.SDPAddr(ack.Body()) // the answer, as the callee saw it
	if err != nil {
		t.Fatal(err)
	}
	if toCallee.Port == udpPort(callee.RTP) || toCaller.Port == udpPort(caller.RTP) {
		t.Fatalf("the phones were given each other's address, not the relay's: %v %v", toCallee, toCaller)
	}
	sipua.SendRTP(t, caller.RTP, toCallee, 0, 1, []byte("pronto"))
	if p, _ := sipua.ReceiveRTP(t, callee.RTP); string(p) != "pronto" {
		t.Fatalf("the callee heard %q", p)
	}
	sipua.SendRTP(t, callee.RTP, toCaller, 0, 1, []byte("buongiorno"))
	if p, src := sipua.ReceiveRTP(t, caller.RTP); string(p) != "buongiorno" || src.Port != toCallee.Port {
		t.Fatalf("the caller heard %q from %v", p, src)
	}
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
	time.Sleep(100 * time.Millisecond)
	if v := n.metric(t, "centralino_media_ports_allocated"); v != 0 {
		t.Errorf("ports still allocated after BYE: %v", v)
	}
}
