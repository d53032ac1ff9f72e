package media

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// plainCall connects phones a and b with plain RTP and returns where each
// sends: the relay port in the answer (for a) and in the offer (for b).
func plainCall(t *testing.T, r *Relay, id string, a, b *phone, extra ...string) (toRelayFromA, toRelayFromB netip.AddrPort) {
	t.Helper()
	toA, toB := connect(t, r, id, audioSDP(lo4, int(a.addr().Port()), "RTP/AVP", extra...), LegOptions{Source: lo4},
		func([]byte) []byte { return audioSDP(lo4, int(b.addr().Port()), "RTP/AVP", extra...) })
	return relayAddr(t, toA, 0), relayAddr(t, toB, 0)
}

func TestRelayRTPBothWays(t *testing.T) {
	for _, mux := range []bool{false, true} {
		t.Run(map[bool]string{false: "rtcp port", true: "rtcp-mux"}[mux], func(t *testing.T) {
			r := newTestRelay(t, testConfig())
			a, b := newPhone(t, lo4), newPhone(t, lo4)
			var extra []string
			if mux {
				extra = []string{"a=rtcp-mux"}
			}
			ra, rb := plainCall(t, r, "c1", a, b, extra...)
			if want := 2 + 2*map[bool]int{false: 1, true: 0}[mux]; int(r.sockets.Load()) != want {
				t.Errorf("%d sockets bound, want %d", r.sockets.Load(), want)
			}

			pkt := rtpPacket(1, 160, 0xa, 0, []byte("hello from a"))
			a.send(ra, pkt)
			if got, from := b.recv(2 * time.Second); !bytes.Equal(got, pkt) || from != rb {
				t.Fatalf("b got %x from %s, want %x from %s", got, from, pkt, rb)
			}
			back := rtpPacket(7, 320, 0xb, 0, []byte("hello from b"))
			b.send(rb, back)
			if got := a.mustRecv(); !bytes.Equal(got, back) {
				t.Fatalf("a got %x, want %x", got, back)
			}
			// RTCP: on the odd port, or on the RTP port with rtcp-mux.
			rr := []byte{0x81, 201, 0, 7, 0, 0, 0, 0xa, 0, 0, 0, 0xb, 0x10, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0}
			ta := ra
			if !mux {
				ta = netip.AddrPortFrom(ra.Addr(), ra.Port()+1)
			}
			bRTCP := b
			if !mux { // b's RTCP goes to its SDP port+1
				bRTCP = newPhoneAt(t, b.addr().Port()+1)
			}
			a.send(ta, rr)
			if got := bRTCP.mustRecv(); !bytes.Equal(got, rr) {
				t.Fatalf("RTCP: got %x", got)
			}
			q, ok := r.Release("c1")
			if !ok || q.A.Packets != 2 || q.B.Packets != 1 {
				t.Fatalf("quality %+v ok=%v", q, ok)
			}
			if q.B.ReportedLoss != 0 || q.A.ReportedLoss != float64(0x10)/256 {
				t.Errorf("reported loss a=%v b=%v", q.A.ReportedLoss, q.B.ReportedLoss)
			}
			if r.sockets.Load() != 0 {
				t.Errorf("%d sockets left", r.sockets.Load())
			}
		})
	}
}

// newPhoneAt binds a phone on a given loopback port.
func newPhoneAt(t *testing.T, port uint16) *phone {
	p := newPhone(t, lo4)
	p.conn.Close()
	conn, err := listenUDP(lo4, int(port))
	if err != nil {
		t.Skipf("port %d busy: %v", port, err)
	}
	t.Cleanup(func() { conn.Close() })
	p.conn = conn
	return p
}

func TestRelayIPv6(t *testing.T) {
	r := newTestRelay(t, testConfig())
	a, b := newPhone(t, lo6), newPhone(t, lo6)
	toA, toB := connect(t, r, "v6", audioSDP(lo6, int(a.addr().Port()), "RTP/AVP"), LegOptions{Source: lo6},
		func([]byte) []byte { return audioSDP(lo6, int(b.addr().Port()), "RTP/AVP") })
	pkt := rtpPacket(1, 160, 1, 0, []byte("v6"))
	a.send(relayAddr(t, toA, 0), pkt)
	if got := b.mustRecv(); !bytes.Equal(got, pkt) {
		t.Fatalf("got %x", got)
	}
	if relayAddr(t, toB, 0).Addr() != lo6 {
		t.Fatalf("offer to b advertises %s", relayAddr(t, toB, 0))
	}
}

func TestLatching(t *testing.T) {
	cfg := testConfig()
	cfg.LatchWindow = 300 * time.Millisecond
	r := newTestRelay(t, cfg)
	nat := newPhone(t, lo4) // where the NATed phone really sends from
	b := newPhone(t, lo4)
	// The SDP names a port nobody listens on (the phone's private address).
	toA, toB := connect(t, r, "nat", audioSDP(lo4, 9, "RTP/AVP"), LegOptions{Source: lo4},
		func([]byte) []byte { return audioSDP(lo4, int(b.addr().Port()), "RTP/AVP") })
	ra, rb := relayAddr(t, toA, 0), relayAddr(t, toB, 0)

	nat.send(ra, rtpPacket(1, 160, 0xa, 0, []byte("a")))
	b.mustRecv()
	reply := rtpPacket(1, 160, 0xb, 0, []byte("to the real port"))
	b.send(rb, reply)
	if got := nat.mustRecv(); !bytes.Equal(got, reply) {
		t.Fatalf("reply did not reach the latched port: %x", got)
	}

	// A foreign IP is never latched, in the window or after it.
	foreign := newPhone(t, netip.MustParseAddr("127.0.0.2"))
	foreign.send(ra, rtpPacket(2, 320, 0xa, 0, []byte("hijack")))
	b.expectNothing(100 * time.Millisecond)
	time.Sleep(cfg.LatchWindow)
	foreign.send(ra, rtpPacket(3, 480, 0xf, 0, []byte("hijack")))
	b.expectNothing(100 * time.Millisecond)
	// Same IP, another port, same SSRC: no re-latch.
	other := newPhone(t, lo4)
	other.send(ra, rtpPacket(4, 640, 0xa, 0, []byte("same ssrc")))
	b.expectNothing(100 * time.Millisecond)
	b.send(rb, reply)
	if got := nat.mustRecv(); !bytes.Equal(got, reply) {
		t.Fatal("latch moved")
	}
	// Same IP, new SSRC (phone restarted behind its NAT): re-latch.
	other.send(ra, rtpPacket(100, 9000, 0xc, 0, []byte("restarted")))
	b.mustRecv()
	b.send(rb, reply)
	if got := other.mustRecv(); !bytes.Equal(got, reply) {
		t.Fatal("no re-latch on SSRC change")
	}
}

func TestLatchWindowCloses(t *testing.T) {
	cfg := testConfig()
	cfg.LatchWindow = 100 * time.Millisecond
	r := newTestRelay(t, cfg)
	late, b := newPhone(t, lo4), newPhone(t, lo4)
	toA, _ := connect(t, r, "late", audioSDP(lo4, 9, "RTP/AVP"), LegOptions{Source: lo4},
		func([]byte) []byte { return audioSDP(lo4, int(b.addr().Port()), "RTP/AVP") })
	time.Sleep(2 * cfg.LatchWindow)
	late.send(relayAddr(t, toA, 0), rtpPacket(1, 160, 1, 0, []byte("late")))
	b.expectNothing(200 * time.Millisecond)
}

// srtpCtx is a phone's SRTP context for key.
func srtpCtx(t *testing.T, c cryptoAttr) *srtp.Context {
	t.Helper()
	k, _ := suites[c.suite].profile.KeyLen()
	ctx, err := srtp.CreateContext(c.key[:k], c.key[k:], suites[c.suite].profile)
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestSRTPToPlain(t *testing.T) {
	r := newTestRelay(t, testConfig())
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	keyA := cryptoAttr{tag: 1, suite: 1, key: newKey(1)}
	offer := audioSDP(lo4, int(a.addr().Port()), "RTP/SAVP",
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(keyA.key))
	toA, toB := connect(t, r, "srtp", offer, LegOptions{Source: lo4, PeerTransport: TransportRTP},
		func(o []byte) []byte {
			if bytes.Contains(o, []byte("crypto")) || !bytes.Contains(o, []byte("RTP/AVP")) {
				t.Fatalf("plain leg offered SRTP:\n%s", o)
			}
			return audioSDP(lo4, int(b.addr().Port()), "RTP/AVP")
		})
	ra, rb := relayAddr(t, toA, 0), relayAddr(t, toB, 0)
	encA, decA := srtpCtx(t, keyA), srtpCtx(t, relayKey(t, toA, 1))

	for seq := uint16(1); seq <= 3; seq++ {
		plain := rtpPacket(seq, uint32(seq)*160, 0xa, 0, []byte("secret voice"))
		enc, err := encA.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		a.send(ra, enc)
		if got := b.mustRecv(); !bytes.Equal(got, plain) {
			t.Fatalf("plain leg got %x, want %x", got, plain)
		}
		if seq == 1 { // a replayed SRTP packet is refused
			a.send(ra, enc)
			b.expectNothing(50 * time.Millisecond)
		}
	}
	plain := rtpPacket(9, 1440, 0xb, 0, []byte("desk phone"))
	b.send(rb, plain)
	got := a.mustRecv()
	if bytes.Equal(got, plain) {
		t.Fatal("SRTP leg received plain RTP")
	}
	dec, err := decA.DecryptRTP(nil, got, nil)
	if err != nil || !bytes.Equal(dec, plain) {
		t.Fatalf("decrypt: %v %x", err, dec)
	}
	// Plain RTP sent to the SRTP leg's port fails authentication.
	a.send(ra, plain)
	b.expectNothing(50 * time.Millisecond)
}

func TestSRTPRekey(t *testing.T) {
	r := newTestRelay(t, testConfig())
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	keyA := cryptoAttr{tag: 5, suite: 0, key: newKey(0)} // GCM
	keyB := cryptoAttr{tag: 2, suite: 1, key: newKey(1)} // the relay's tag 2 is AES_CM_128_HMAC_SHA1_80
	offer := audioSDP(lo4, int(a.addr().Port()), "RTP/SAVP",
		"a=crypto:5 AEAD_AES_128_GCM inline:"+base64.StdEncoding.EncodeToString(keyA.key))
	var relayToB cryptoAttr
	toA, toB := connect(t, r, "rekey", offer, LegOptions{Source: lo4},
		func(o []byte) []byte {
			relayToB = relayKey(t, o, 2)
			return audioSDP(lo4, int(b.addr().Port()), "RTP/SAVP",
				"a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(keyB.key))
		})
	relayToA := relayKey(t, toA, 5)
	if bytes.Equal(relayToA.key, keyA.key) || bytes.Equal(relayToB.key, keyB.key) || bytes.Equal(relayToA.key, relayToB.key) {
		t.Fatal("relay reused a key")
	}
	plain := rtpPacket(1, 160, 0xa, 0, []byte("a to b"))
	enc, _ := srtpCtx(t, keyA).EncryptRTP(nil, plain, nil)
	a.send(relayAddr(t, toA, 0), enc)
	dec, err := srtpCtx(t, relayToB).DecryptRTP(nil, b.mustRecv(), nil)
	if err != nil || !bytes.Equal(dec, plain) {
		t.Fatalf("a→b: %v %x", err, dec)
	}
	plain = rtpPacket(1, 160, 0xb, 0, []byte("b to a"))
	enc, _ = srtpCtx(t, keyB).EncryptRTP(nil, plain, nil)
	b.send(relayAddr(t, toB, 0), enc)
	dec, err = srtpCtx(t, relayToA).DecryptRTP(nil, a.mustRecv(), nil)
	if err != nil || !bytes.Equal(dec, plain) {
		t.Fatalf("b→a: %v %x", err, dec)
	}
}

func TestSRTCPBridged(t *testing.T) {
	r := newTestRelay(t, testConfig())
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	keyA := cryptoAttr{tag: 1, suite: 2, key: newKey(2)}
	offer := audioSDP(lo4, int(a.addr().Port()), "RTP/SAVP", "a=rtcp-mux",
		"a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:"+base64.StdEncoding.EncodeToString(keyA.key))
	toA, _ := connect(t, r, "srtcp", offer, LegOptions{Source: lo4, PeerTransport: TransportRTP},
		func([]byte) []byte { return audioSDP(lo4, int(b.addr().Port()), "RTP/AVP", "a=rtcp-mux") })
	sr := []byte{0x80, 200, 0, 6, 0, 0, 0, 0xa, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 160, 0, 0, 0, 1, 0, 0, 0, 12}
	enc, err := srtpCtx(t, keyA).EncryptRTCP(nil, sr, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.send(relayAddr(t, toA, 0), enc)
	if got := b.mustRecv(); !bytes.Equal(got, sr) {
		t.Fatalf("SRTCP→RTCP: got %x", got)
	}
}

func TestQualityLossAndJitter(t *testing.T) {
	r := newTestRelay(t, testConfig())
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := plainCall(t, r, "q", a, b)
	sent := 0
	for i := range uint32(46) {
		seq := uint16(65530 + i) // wraps
		if seq == 65534 || seq == 3 || seq == 4 || seq == 20 {
			continue // 4 lost
		}
		a.send(ra, rtpPacket(seq, i*160, 0xa, 0, make([]byte, 160)))
		b.mustRecv()
		sent++
	}
	q, _ := r.Release("q")
	if q.A.Lost != 4 || q.A.Packets != uint64(sent) {
		t.Fatalf("lost %d of %d, packets %d; want 4 and %d", q.A.Lost, 46, q.A.Packets, sent)
	}
	if want := 4.0 / 46; q.A.LossRatio != want {
		t.Errorf("loss ratio %v, want %v", q.A.LossRatio, want)
	}
	// Sent back to back instead of every 20 ms: the jitter is large.
	if q.A.Jitter < 5*time.Millisecond {
		t.Errorf("jitter %v", q.A.Jitter)
	}
	if q.MOS <= 1 || q.MOS >= 4.4 {
		t.Errorf("MOS %v with 8.7%% loss: %+v", q.MOS, q)
	}
}

func TestRTPStatsJitter(t *testing.T) {
	// 20 ms packets arriving alternately 5 ms early and late: |D| = 10 ms
	// after the first, and J converges to it (RFC 3550 A.8).
	var s rtpStats
	for i := range 500 {
		arrival := int64(i)*20e6 + int64(5e6*(1-2*(i%2)))
		s.update(uint16(i), uint32(i)*160, 1, arrival, 8000)
	}
	if s.jitter < 0.0099 || s.jitter > 0.0101 {
		t.Fatalf("jitter %v s, want 0.010", s.jitter)
	}
	if exp, rec := s.counts(); exp != 500 || rec != 500 {
		t.Fatalf("expected %d received %d", exp, rec)
	}
}

func TestEModel(t *testing.T) {
	r, mos := emodel(0, 20*time.Millisecond, "PCMU")
	if r < 92 || mos < 4.3 || mos > 4.5 {
		t.Errorf("clean G.711: R %v MOS %v", r, mos)
	}
	_, lossy := emodel(0.05, 20*time.Millisecond, "PCMU")
	_, far := emodel(0, 400*time.Millisecond, "PCMU")
	_, g729 := emodel(0, 20*time.Millisecond, "G729")
	if !(lossy < mos && far < mos && g729 < mos) {
		t.Errorf("MOS clean %v, 5%% loss %v, 400 ms %v, G.729 %v", mos, lossy, far, g729)
	}
}

func TestTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.Timeout = 150 * time.Millisecond
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	r := newTestRelay(t, cfg)
	fired := make(chan string, 1)
	r.OnTimeout(func(id string, q Quality) { fired <- id })
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := plainCall(t, r, "idle", a, b)
	// Media keeps it alive.
	for range 6 {
		a.send(ra, rtpPacket(1, 160, 1, 0, nil))
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case id := <-fired:
		t.Fatalf("%s timed out with media flowing", id)
	default:
	}
	select {
	case id := <-fired:
		if id != "idle" {
			t.Fatalf("timeout for %q", id)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no timeout")
	}
	if _, ok := r.Release("idle"); ok {
		t.Error("timed-out call still held")
	}
	if n := testutil.ToFloat64(r.m.timeouts); n != 1 {
		t.Errorf("timeouts %v", n)
	}
	if r.sockets.Load() != 0 {
		t.Errorf("%d sockets left", r.sockets.Load())
	}
}

func TestHoldUsesHoldTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.Timeout = 100 * time.Millisecond
	r := newTestRelay(t, cfg)
	var fired atomic.Bool
	r.OnTimeout(func(string, Quality) { fired.Store(true) })
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	plainCall(t, r, "held", a, b)
	// re-INVITE from b puts a on hold.
	if _, err := r.Offer("held", "tag-b", audioSDP(lo4, int(b.addr().Port()), "RTP/AVP", "a=sendonly"), LegOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Answer("held", "tag-a", audioSDP(lo4, int(a.addr().Port()), "RTP/AVP", "a=recvonly"), LegOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	if fired.Load() {
		t.Fatal("held call timed out with Timeout")
	}
}

func TestDTMFOnce(t *testing.T) {
	r := newTestRelay(t, testConfig())
	type digit struct {
		leg string
		d   rune
		dur time.Duration
	}
	got := make(chan digit, 10)
	r.OnDTMF(func(id, leg string, d rune, dur time.Duration) { got <- digit{leg, d, dur} })
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	_, rb := plainCall(t, r, "dtmf", a, b)
	ev := func(seq uint16, end bool, dur uint16) []byte {
		flags := byte(10)
		if end {
			flags |= 0x80
		}
		return rtpPacket(seq, 8000, 0xb, 101, []byte{11, flags, byte(dur >> 8), byte(dur)}) // '#'
	}
	seq := uint16(10)
	for i, end := range []bool{false, false, false, true, true, true} {
		b.send(rb, ev(seq, end, uint16(160*(i+1))))
		a.mustRecv() // forwarded too
		seq++
	}
	select {
	case d := <-got:
		if d != (digit{"b", '#', 80 * time.Millisecond}) {
			t.Fatalf("got %+v", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no digit")
	}
	select {
	case d := <-got:
		t.Fatalf("digit reported twice: %+v", d)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestReleaseNoLeak(t *testing.T) {
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = 42000, 42007 // four pairs: two calls at most
	r := newTestRelay(t, cfg)
	offer := audioSDP(lo4, 4000, "RTP/AVP")
	answer := audioSDP(lo4, 5000, "RTP/AVP")
	for i := range 10000 {
		if _, err := r.Offer("x", "a", offer, LegOptions{}); err != nil {
			t.Fatalf("iteration %d: %v", i, err)
		}
		if i%2 == 0 { // half of the calls answered (RTCP ports bound too)
			if _, err := r.Answer("x", "b", answer, LegOptions{}); err != nil {
				t.Fatalf("iteration %d: %v", i, err)
			}
		}
		if _, ok := r.Release("x"); !ok {
			t.Fatalf("iteration %d: not released", i)
		}
	}
	if n := r.ports.size(); n != 4 || r.sockets.Load() != 0 || len(r.calls) != 0 {
		t.Fatalf("free pairs %d, sockets %d, calls %d", n, r.sockets.Load(), len(r.calls))
	}
	// Two calls fit, the third finds the range exhausted.
	for _, id := range []string{"1", "2"} {
		if _, err := r.Offer(id, "a", offer, LegOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Offer("3", "a", offer, LegOptions{}); err != ErrNoPorts {
		t.Fatalf("third call: %v", err)
	}
}

// A pair whose RTCP port another program holds is skipped: a call without
// rtcp-mux needs it.
func TestPairWithRTCPPortTakenIsSkipped(t *testing.T) {
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = 42100, 42107
	r := newTestRelay(t, cfg)
	for _, port := range []int{42101, 42105} {
		held, err := listenUDP(lo4, port)
		if err != nil {
			t.Fatal(err)
		}
		defer held.Close()
	}
	toB, err := r.Offer("x", "a", audioSDP(lo4, 4000, "RTP/AVP"), LegOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Answer("x", "b", audioSDP(lo4, 5000, "RTP/AVP"), LegOptions{}); err != nil {
		t.Fatalf("answer without rtcp-mux: %v", err)
	}
	if got := relayAddr(t, toB, 0).Port(); got != 42102 && got != 42106 {
		t.Errorf("offer on port %d, want a pair whose RTCP port is free", got)
	}
}

func TestMetrics(t *testing.T) {
	cfg := testConfig()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	r := newTestRelay(t, cfg)
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, _ := plainCall(t, r, "m", a, b)
	for seq := range uint16(5) {
		a.send(ra, rtpPacket(seq, uint32(seq)*160, 1, 0, make([]byte, 160)))
		b.mustRecv()
	}
	check := func(name string, want float64) {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			m := mf.GetMetric()[0]
			got := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			if got != want {
				t.Errorf("%s = %v, want %v", name, got, want)
			}
			return
		}
		t.Errorf("%s missing", name)
	}
	check("centralino_media_packets_total", 5)
	check("centralino_media_bytes_total", 5*172)
	check("centralino_media_sessions", 1)
	check("centralino_media_ports_allocated", 4)
	r.Release("m")
	check("centralino_media_packets_total", 5) // kept after release
	check("centralino_media_sessions", 0)
	check("centralino_media_ports_allocated", 0)
	check("centralino_media_mos", 1)
	check("centralino_media_jitter_seconds", 1) // only a sent
	check("centralino_media_loss_ratio", 1)
}

func TestReinviteAddressChangeAndNewStream(t *testing.T) {
	r := newTestRelay(t, testConfig())
	a, b := newPhone(t, lo4), newPhone(t, lo4)
	ra, rb := plainCall(t, r, "re", a, b)

	// a moves to a new port and adds video; b answers both.
	a2, av, bv := newPhone(t, lo4), newPhone(t, lo4), newPhone(t, lo4)
	video := func(p *phone) []string {
		return []string{fmt.Sprintf("m=video %d RTP/AVP 96", p.addr().Port()), "a=rtpmap:96 H264/90000"}
	}
	toB, err := r.Offer("re", "tag-a", audioSDP(lo4, int(a2.addr().Port()), "RTP/AVP", video(av)...), LegOptions{Source: lo4})
	if err != nil {
		t.Fatal(err)
	}
	toA, err := r.Answer("re", "tag-b", audioSDP(lo4, int(b.addr().Port()), "RTP/AVP", video(bv)...), LegOptions{Source: lo4})
	if err != nil {
		t.Fatal(err)
	}
	if relayAddr(t, toA, 0) != ra || relayAddr(t, toB, 0) != rb {
		t.Fatal("audio ports changed on re-INVITE")
	}
	pkt := rtpPacket(1, 160, 0xb, 0, []byte("to the new address"))
	b.send(rb, pkt)
	if got := a2.mustRecv(); !bytes.Equal(got, pkt) {
		t.Fatalf("a2 got %x", got)
	}
	a.expectNothing(50 * time.Millisecond)
	frame := rtpPacket(1, 3000, 0xc, 96, []byte("video"))
	av.send(relayAddr(t, toA, 1), frame)
	if got := bv.mustRecv(); !bytes.Equal(got, frame) {
		t.Fatalf("video got %x", got)
	}

	// Now b re-offers (reverse direction) and a answers: still relayed.
	if _, err := r.Offer("re", "tag-b", audioSDP(lo4, int(b.addr().Port()), "RTP/AVP", video(bv)...), LegOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Answer("re", "tag-a", audioSDP(lo4, int(a2.addr().Port()), "RTP/AVP", video(av)...), LegOptions{}); err != nil {
		t.Fatal(err)
	}
	a2.send(ra, pkt)
	if got := b.mustRecv(); !bytes.Equal(got, pkt) {
		t.Fatalf("b got %x", got)
	}
}
