package media

import (
	"encoding/base64"
	"net/netip"
	"testing"

	"github.com/pion/srtp/v3"
)

// rig is a connected call whose sockets' forward functions are driven
// directly: leg a is SRTP (AES_CM_128_HMAC_SHA1_80) or plain, leg b plain.
type rig struct {
	sa, sb     *sock // the relay's RTP sockets facing a and b
	srcA, srcB netip.AddrPort
	encA       *srtp.Context // a's own SRTP sender
	now        func() int64
}

func newRig(tb testing.TB, srtpA bool) *rig {
	cfg := testConfig()
	cfg.Kernel = KernelOff // the rig drives the loop's path directly
	r := newTestRelay(tb, cfg)
	a, b := newPhone(tb, lo4), newPhone(tb, lo4)
	proto, extra := "RTP/AVP", []string{"a=rtcp-mux"}
	var encA *srtp.Context
	if srtpA {
		key := newKey(1)
		proto = "RTP/SAVP"
		extra = append(extra, "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"+base64.StdEncoding.EncodeToString(key))
		var err error
		if encA, err = srtp.CreateContext(key[:16], key[16:], suites[1].profile); err != nil {
			tb.Fatal(err)
		}
	}
	connect(tb, r, "rig", audioSDP(lo4, int(a.addr().Port()), proto, extra...), LegOptions{Source: lo4, PeerTransport: TransportRTP},
		func([]byte) []byte { return audioSDP(lo4, int(b.addr().Port()), "RTP/AVP", "a=rtcp-mux") })
	st := r.calls["rig"].streams[0]
	return &rig{sa: st.ends[0].rtp, sb: st.ends[1].rtp, srcA: a.addr(), srcB: b.addr(), encA: encA, now: r.now}
}

// packetsFromA returns n consecutive packets as a sends them.
func (g *rig) packetsFromA(tb testing.TB, first uint16, n int) [][]byte {
	pkts := make([][]byte, n)
	for i := range pkts {
		p := rtpPacket(first+uint16(i), uint32(first+uint16(i))*160, 0xa, 0, make([]byte, 160))
		if g.encA != nil {
			var err error
			if p, err = g.encA.EncryptRTP(make([]byte, 0, bufSize), p, nil); err != nil {
				tb.Fatal(err)
			}
		}
		pkts[i] = p
	}
	return pkts
}

func TestForwardAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, tc := range []struct {
		name  string
		srtpA bool
	}{{"plain", false}, {"srtp", true}} {
		t.Run(tc.name, func(t *testing.T) {
			g := newRig(t, tc.srtpA)
			const runs = 1000
			fromA := g.packetsFromA(t, 1, runs+1)
			fromB := rtpPacket(1, 160, 0xb, 0, make([]byte, 160))
			i := 0
			allocs := testing.AllocsPerRun(runs, func() {
				g.sa.forward(fromA[i], g.srcA, g.now()) // a→b: decrypt for SRTP
				i++
				fromB[3]++                           // next sequence number
				g.sb.forward(fromB, g.srcB, g.now()) // b→a: encrypt for SRTP
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per packet pair", allocs)
			}
			if d := g.sa.dropped.Load() + g.sb.dropped.Load(); d != 0 {
				t.Fatalf("%d packets dropped", d)
			}
		})
	}
}

func BenchmarkForward(b *testing.B) {
	for _, bc := range []struct {
		name  string
		srtpA bool
		fromA bool
	}{
		{"plain", false, true},
		{"srtp-to-rtp", true, true},
		{"rtp-to-srtp", true, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g := newRig(b, bc.srtpA)
			b.ReportAllocs()
			if !bc.fromA {
				pkt := rtpPacket(1, 160, 0xb, 0, make([]byte, 160))
				for b.Loop() {
					pkt[3]++
					g.sb.forward(pkt, g.srcB, g.now())
				}
				return
			}
			// SRTP packets are single use (replay protection): made in batches
			// off the clock.
			const batch = 4096
			seq := uint16(1)
			var pkts [][]byte
			i := 0
			for b.Loop() {
				if i == len(pkts) {
					b.StopTimer()
					pkts, i = g.packetsFromA(b, seq, batch), 0
					seq += batch
					b.StartTimer()
				}
				g.sa.forward(pkts[i], g.srcA, g.now())
				i++
			}
		})
	}
}

// FuzzRTPPacket feeds arbitrary datagrams to both sockets of an SRTP↔RTP
// call (rtcp-mux, so RTCP parsing and SRTCP are on the path).
func FuzzRTPPacket(f *testing.F) {
	g := newRig(f, true)
	f.Add(rtpPacket(1, 160, 0xa, 0, []byte("x")))
	f.Add(rtpPacket(2, 8000, 0xa, 101, []byte{1, 0x80, 0, 160}))
	f.Add([]byte{0x81, 201, 0, 7, 0, 0, 0, 0xa, 0, 0, 0, 0xb, 0x10, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xb0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9}) // extension past the end
	f.Add([]byte{0xa0, 101, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xff})     // padding past the start
	f.Fuzz(func(t *testing.T, data []byte) {
		data = data[:min(len(data), bufSize)] // what a socket read can return
		pkt := make([]byte, len(data), bufSize)
		copy(pkt, data)
		g.sa.forward(pkt, g.srcA, g.now())
		copy(pkt, data)
		g.sb.forward(pkt, g.srcB, g.now())
	})
}

// FuzzRewriteSDP runs arbitrary bodies through parse and write, and through
// a relay's offer, answer and release.
func FuzzRewriteSDP(f *testing.F) {
	cfg := testConfig()
	cfg.PortMin, cfg.PortMax = 43000, 43199
	r := newTestRelay(f, cfg)
	f.Add(audioSDP(lo4, 4000, "RTP/AVP", "a=rtcp:4001 IN IP4 127.0.0.1", "a=sendonly"))
	f.Add(audioSDP(lo6, 4000, "RTP/SAVP", "a=rtcp-mux",
		"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20"))
	f.Add([]byte("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\nm=image 4000 udptl t38\r\na=candidate:x\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := parseSDP(body)
		if err != nil {
			return
		}
		rw := rewrite{addr: lo4}
		for _, m := range s.media {
			mr := mediaRewrite{proto: "RTP/SAVP", crypto: []string{formatCrypto(1, 0, newKey(0))}}
			if m.port != 0 {
				mr.port = 40000
			}
			rw.media = append(rw.media, mr)
		}
		again, err := parseSDP(s.write(rw))
		if err != nil || len(again.media) != len(s.media) {
			t.Fatalf("rewritten SDP does not parse back: %v\n%s", err, s.write(rw))
		}
		if _, err := r.Offer("fuzz", "a", body, LegOptions{Source: lo4}); err == nil {
			_, _ = r.Answer("fuzz", "b", body, LegOptions{Source: lo4})
		}
		r.Release("fuzz")
	})
}
