package sip

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/test/sipua"
)

func sdpAddr(t *testing.T, body []byte) *net.UDPAddr {
	t.Helper()
	a, err := sipua.SDPAddr(body)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// anchoredCall sets up alice → carla with media anchored and returns the
// phones, the INVITE, its 200 and the relay addresses each side was given.
func anchoredCall(t *testing.T, sw *testSwitch) (caller, callee *sipua.Phone, inv *sip.Request, res *sip.Response, toCallee, toCaller *net.UDPAddr) {
	callee = newPhone(t, sw, "carla", "udp")
	register(callee, "pw-carla", 300)
	caller = newPhone(t, sw, "alice", "udp")
	res, inv = caller.Invite("8300201")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d %s", res.StatusCode, res.Reason)
	}
	caller.Ack(inv, res)
	var got *sip.Request
	select {
	case got = <-callee.Invites:
	case <-time.After(2 * time.Second):
		t.Fatal("callee saw no INVITE")
	}
	toCaller = sdpAddr(t, got.Body()) // where the callee must send: the relay
	toCallee = sdpAddr(t, res.Body()) // where the caller must send: the relay
	for _, a := range []*net.UDPAddr{toCaller, toCallee} {
		if a.Port == caller.RTP.LocalAddr().(*net.UDPAddr).Port || a.Port == callee.RTP.LocalAddr().(*net.UDPAddr).Port {
			t.Fatalf("SDP points at a phone, not at the relay: %v", a)
		}
	}
	return
}

func TestMediaIsAnchoredAndRelayedBothWays(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Anchor = AnchorAlways })
	caller, callee, inv, res, toCallee, toCaller := anchoredCall(t, sw)

	sipua.SendRTP(t, caller.RTP, toCallee, 0, 1, []byte("buongiorno"))
	if got, _ := sipua.ReceiveRTP(t, callee.RTP); !bytes.Equal(got, []byte("buongiorno")) {
		t.Fatalf("callee got %q", got)
	}
	sipua.SendRTP(t, callee.RTP, toCaller, 0, 1, []byte("mi dica"))
	if got, src := sipua.ReceiveRTP(t, caller.RTP); !bytes.Equal(got, []byte("mi dica")) || src.Port != toCallee.Port {
		t.Fatalf("caller got %q from %v, want it from the relay port %d", got, src, toCallee.Port)
	}
	// An RFC 4733 digit "3" (event 3, end bit) from the caller is published.
	for i := range 3 {
		sipua.SendRTP(t, caller.RTP, toCallee, 101, uint16(2+i), []byte{3, 0x80 | 10, 0x03, 0x20})
	}
	if ev := sw.nextEvent(t, modules.KindDigitsCollected).(modules.DigitsCollected); ev.Digits != "3" || ev.Leg != modules.SideCaller {
		t.Errorf("DigitsCollected: %+v", ev)
	}
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
	ended := sw.nextEvent(t, modules.KindCallEnded).(modules.CallEnded)
	if ended.Media == nil || ended.Media.Caller.Packets == 0 || ended.Media.Callee.Packets == 0 {
		t.Fatalf("CallEnded carries no media quality: %+v", ended.Media)
	}
}

func TestPhoneBehindNATIsLatched(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Anchor = AnchorAlways })
	caller, callee, _, _, toCallee, toCaller := anchoredCall(t, sw)
	// The caller's NAT maps its media to another port than its SDP says.
	natted, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer natted.Close()
	sipua.SendRTP(t, natted, toCallee, 0, 1, []byte("dal NAT"))
	if got, _ := sipua.ReceiveRTP(t, callee.RTP); string(got) != "dal NAT" {
		t.Fatalf("callee got %q", got)
	}
	sipua.SendRTP(t, callee.RTP, toCaller, 0, 1, []byte("risposta"))
	if got, _ := sipua.ReceiveRTP(t, natted); string(got) != "risposta" {
		t.Fatalf("the reply did not reach the latched port: %q", got)
	}
	_ = caller
}

func TestMediaTimeoutEndsTheCall(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Anchor = AnchorAlways })
	_, callee, _, _, _, _ := anchoredCall(t, sw)
	// No media flows: after the relay's timeout both sides get a BYE.
	ended := sw.nextEventWithin(t, modules.KindCallEnded, 3*relayTimeout).(modules.CallEnded)
	if ended.HangupBy != modules.SideSwitch {
		t.Errorf("CallEnded by %s, want switch", ended.HangupBy)
	}
	if sw.ActiveCalls() != 0 {
		t.Errorf("active calls after the timeout: %d", sw.ActiveCalls())
	}
	select {
	case bye := <-callee.Byes:
		if r := bye.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "media timeout") {
			t.Errorf("BYE without a media timeout Reason: %v", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("callee got no BYE")
	}
}

func TestSRTPSoftphoneToPlainDeskPhone(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Anchor = AnchorAlways })
	desk, _ := sw.dir.User(context.Background(), "carla")
	desk.Media = "rtp"
	sw.dir.PutUser(context.Background(), desk)
	callee := newPhone(t, sw, "carla", "udp")
	register(callee, "pw-carla", 300)
	caller := newPhone(t, sw, "alice", "udp")

	key := make([]byte, 30)
	rand.Read(key)
	inline := base64.StdEncoding.EncodeToString(key)
	port := caller.RTP.LocalAddr().(*net.UDPAddr).Port
	offer := fmt.Sprintf("v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n", port, inline)
	inv := caller.Request(sip.INVITE, "8300201")
	inv.SetBody([]byte(offer))
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	res := caller.DoAuth(inv)
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	caller.Ack(inv, res)
	got := <-callee.Invites
	if b := string(got.Body()); !strings.Contains(b, "RTP/AVP") || strings.Contains(b, "a=crypto") {
		t.Fatalf("the desk phone was offered SRTP:\n%s", b)
	}
	if b := string(res.Body()); !strings.Contains(b, "RTP/SAVP") {
		t.Fatalf("the softphone was answered without SRTP:\n%s", b)
	}
	toCallee, toCaller := sdpAddr(t, res.Body()), sdpAddr(t, got.Body())

	// Softphone → desk phone: encrypted with the softphone's key, heard in clear.
	enc := sipua.SRTPContext(t, inline)
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: 1, Timestamp: 160, SSRC: 0xabc}, Payload: []byte("cifrato")}
	plain, _ := pkt.Marshal()
	secret, err := enc.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	caller.RTP.WriteToUDP(secret, toCallee)
	if p, _ := sipua.ReceiveRTP(t, callee.RTP); string(p) != "cifrato" {
		t.Fatalf("desk phone heard %q", p)
	}
	// Desk phone → softphone: plain in, encrypted with the relay's key out.
	sipua.SendRTP(t, callee.RTP, toCaller, 0, 1, []byte("in chiaro"))
	buf := make([]byte, 1500)
	caller.RTP.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := caller.RTP.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	dec := sipua.SRTPContext(t, sipua.CryptoKey(t, res.Body()))
	out, err := dec.DecryptRTP(nil, buf[:n], nil)
	if err != nil {
		t.Fatalf("the softphone got something it cannot decrypt: %v", err)
	}
	var back rtp.Packet
	if err := back.Unmarshal(out); err != nil || string(back.Payload) != "in chiaro" {
		t.Fatalf("softphone heard %q (%v)", back.Payload, err)
	}
}

// In a late offer the callee makes the relay's first offer; the caller's
// digits and media quality are still the caller's.
func TestLateOfferKeepsTheCallersSide(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Anchor = AnchorAlways })
	callee := newPhone(t, sw, "carla", "udp")
	register(callee, "pw-carla", 300)
	caller := newPhone(t, sw, "alice", "udp")
	res, inv := caller.InviteSDP("8300201", nil)
	if res.StatusCode != 200 {
		t.Fatalf("call: %d %s", res.StatusCode, res.Reason)
	}
	caller.AckSDP(inv, res, caller.SDP())
	select {
	case <-callee.Acks: // the relay has the answer
	case <-time.After(2 * time.Second):
		t.Fatal("the callee got no ACK")
	}
	toCallee := sdpAddr(t, res.Body())
	sipua.SendDigit(t, caller.RTP, toCallee, 101, 1, 8000, 5)
	if ev := sw.nextEvent(t, modules.KindDigitsCollected).(modules.DigitsCollected); ev.Digits != "5" || ev.Leg != modules.SideCaller {
		t.Errorf("DigitsCollected: %+v", ev)
	}
	// The digit is collected at its first end packet; the relay has counted
	// all three once they reach the callee, not before (a BYE sent at once
	// raced the last two: about one run in eight counted 2).
	for range 3 {
		sipua.ReceiveRTP(t, callee.RTP)
	}
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
	ended := sw.nextEvent(t, modules.KindCallEnded).(modules.CallEnded)
	if ended.Media == nil || ended.Media.Caller.Packets != 3 || ended.Media.Callee.Packets != 0 {
		t.Fatalf("CallEnded media: %+v", ended.Media)
	}
}
