package media

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// bufSize holds any UDP payload on an Ethernet path plus SRTP's tag growth.
const bufSize = 2048

// stream relays one m-line between the two sides of a call.
type stream struct {
	ends   [2]*end
	mux    atomic.Bool // both sides negotiated rtcp-mux
	params atomic.Pointer[params]
}

// params is what the hot path needs from the negotiated SDPs; it is
// replaced, never changed, when a re-INVITE changes codecs.
type params struct {
	opaque bool        // T.38 udptl: relayed without RTP handling
	clock  [128]uint32 // RTP clock rate per payload type, 0 unknown
	dtmf   [128]bool   // telephone-event payload types
	main   uint32      // clock rate of the first codec, for RTCP jitter
	codec  string      // first codec, for the E-model
}

func newParams(ms ...*mediaDesc) *params {
	p := &params{}
	for _, m := range ms {
		p.opaque = isOpaque(m.proto)
		for _, f := range m.formats {
			pt, ok := parsePT(f)
			if !ok {
				continue
			}
			p.clock[pt] = m.clockRate(pt)
			p.dtmf[pt] = m.rtpmap[pt].name == "TELEPHONE-EVENT"
		}
		if pt, name, ok := m.firstCodec(); ok {
			p.codec, p.main = name, p.clock[pt]
		}
	}
	return p
}

// end is the relay's face toward one endpoint for one m-line: an even RTP
// port and, unless rtcp-mux is negotiated, the odd RTCP port above it.
type end struct {
	c    *call
	st   *stream
	side int
	peer *end // the other side's end of the same stream
	ip   netip.Addr
	port int
	rtp  *sock
	rtcp atomic.Pointer[sock] // opened when a negotiation lacks rtcp-mux

	// rx decrypts what the endpoint sends and tx encrypts what the relay
	// sends it; nil until negotiated (packets are dropped), plain for RTP.
	rx, tx atomic.Pointer[cipher]

	// Signalling state, under call.mu.
	sdpRTP, sdpRTCP netip.AddrPort
	source          netip.Addr
	keys            [][]byte // the relay's own SRTP key per suite, made on demand
	answerTag       int      // a=crypto tag the endpoint offered and the relay answers

	// Owned by the RTP socket's goroutine.
	stats rtpStats
	dtmf  dtmfState

	// From the endpoint's RTCP reports and the relay's forwarding of SRs.
	fraction atomic.Uint32 // fraction lost it reported (/256)
	jitter   atomic.Uint32 // jitter it reported, timestamp units
	rttMs    atomic.Int64  // relay↔endpoint round trip, 0 unknown
	srSent   atomic.Uint64 // NTP middle bits<<32 | ms when the relay forwarded it an SR
}

// ourKey returns the relay's key for suite toward this endpoint.
func (e *end) ourKey(suite int) []byte {
	if e.keys == nil {
		e.keys = make([][]byte, len(suites))
	}
	if e.keys[suite] == nil {
		e.keys[suite] = newKey(suite)
	}
	return e.keys[suite]
}

// setCrypto keys the end from the endpoint's chosen a=crypto (nil: plain),
// keeping existing contexts, and their replay and rollover state, when
// neither key nor suite changed.
func (e *end) setCrypto(a *cryptoAttr) error {
	if a == nil {
		e.rx.Store(plain)
		e.tx.Store(plain)
		return nil
	}
	if rx := e.rx.Load(); rx == nil || rx.suite != a.suite || string(rx.key) != string(a.key) {
		c, err := newCipher(a.suite, a.key, true)
		if err != nil {
			return err
		}
		e.rx.Store(c)
	}
	if tx := e.tx.Load(); tx == nil || tx.suite != a.suite {
		c, err := newCipher(a.suite, e.ourKey(a.suite), false)
		if err != nil {
			return err
		}
		e.tx.Store(c)
	}
	return nil
}

// latchState is where a socket sends and from where it accepts; it is
// replaced as a whole so the hot path sees a consistent view.
type latchState struct {
	peer     netip.AddrPort // the endpoint: its SDP address until latched
	latched  bool
	ssrc     uint32        // SSRC seen when latching
	allowed  [2]netip.Addr // SDP IP and signalling source IP
	deadline int64         // ns since relay epoch; latching closes then
}

// sock is one relay UDP socket, served by its call's loop.
type sock struct {
	sockOS
	fd     int // -1 once closed
	v6     bool
	lp     *loop
	tok    int32 // in lp
	e      *end
	isRTCP bool
	latch  atomic.Pointer[latchState]
	lastRx atomic.Int64 // ns since relay epoch of the last accepted packet

	packets, bytes, dropped atomic.Uint64

	// Scratch of the loop: the datagram's size as received, pion's headers.
	rxLen   int
	hdr     rtp.Header
	rtcpHdr rtcp.Header
}

// reset points the socket at a new endpoint address, dropping any latch.
func (s *sock) reset(peer netip.AddrPort, source netip.Addr) {
	s.latch.Store(&latchState{peer: peer, allowed: [2]netip.Addr{peer.Addr(), source}})
}

// openWindow lets an unlatched socket latch until deadline.
func (s *sock) openWindow(deadline int64) {
	for {
		l := s.latch.Load()
		if l == nil || l.latched {
			return
		}
		n := *l
		n.deadline = deadline
		if s.latch.CompareAndSwap(l, &n) {
			return
		}
	}
}

// admit applies the latching rule (see doc.go) to a packet from src. relatch
// asks the caller to latch on src once the packet proved genuine (SRTP
// authenticated).
func (s *sock) admit(src netip.AddrPort, ssrc uint32, now int64) (l *latchState, ok, relatch bool) {
	l = s.latch.Load()
	switch {
	case l == nil:
		return nil, false, false
	case src == l.peer:
		return l, true, !l.latched
	case !l.latched:
		ip := src.Addr()
		return l, now < l.deadline && (ip == l.allowed[0] || ip == l.allowed[1]), true
	default:
		return l, src.Addr() == l.peer.Addr() && ssrc != l.ssrc, true
	}
}

// accepted records a genuine packet and commits a latch decided by admit.
func (s *sock) accepted(l *latchState, src netip.AddrPort, ssrc uint32, relatch bool, now int64) {
	s.lastRx.Store(now)
	if relatch {
		n := *l
		n.peer, n.latched, n.ssrc = src, true, ssrc
		s.latch.CompareAndSwap(l, &n) // lost only to a concurrent re-INVITE, which wins
	}
}

// forward is the per-packet entry point: relay the datagram. send counts
// it before it leaves (a scrape never lags a packet already delivered);
// a packet not relayed is counted dropped.
func (s *sock) forward(pkt []byte, src netip.AddrPort, now int64) {
	s.rxLen = len(pkt)
	if !s.relay(pkt, src, now) {
		s.dropped.Add(1)
	}
}

func (s *sock) relay(pkt []byte, src netip.AddrPort, now int64) bool {
	p := s.e.st.params.Load()
	switch {
	case p.opaque:
		l, ok, relatch := s.admit(src, 0, now)
		if !ok || s.isRTCP { // T.38 has no RTCP
			return false
		}
		s.accepted(l, src, 0, relatch, now)
		return s.send(pkt, false)
	case s.isRTCP || isRTCP(pkt):
		if s.isRTCP == s.e.st.mux.Load() {
			return false // RTCP only where the negotiation put it
		}
		return s.relayRTCP(pkt, src, now, p)
	}
	return s.relayRTP(pkt, src, now, p)
}

func (s *sock) relayRTP(pkt []byte, src netip.AddrPort, now int64, p *params) bool {
	h, ok := parseRTPHeader(pkt)
	if !ok {
		return false
	}
	l, ok, relatch := s.admit(src, h.ssrc, now)
	e := s.e
	rx := e.rx.Load()
	if !ok || rx == nil {
		return false
	}
	if rx.rtp != nil {
		var err error
		if pkt, err = rx.rtp.DecryptRTP(pkt, pkt, &s.hdr); err != nil {
			return false
		}
	}
	if relatch {
		s.kernelRelatch()
	}
	s.kernelTakeBack(src)
	s.accepted(l, src, h.ssrc, relatch, now)
	if !p.dtmf[h.pt] {
		e.stats.update(h.seq, h.ts, h.ssrc, now, p.clock[h.pt])
	} else {
		e.stats.update(h.seq, h.ts, h.ssrc, now, 0)
		if d, dur, ok := e.dtmf.decode(h.payload(pkt), h.ts, p.clock[h.pt]); ok {
			e.c.r.emitDTMF(e.c.id, e.side, d, dur)
		}
	}
	// Offered before the send, so that the next packet, which the far end
	// may answer this one with, already finds the kernel's entry.
	s.kernelOffer(h, p)
	return s.send(pkt, false)
}

func (s *sock) relayRTCP(pkt []byte, src netip.AddrPort, now int64, p *params) bool {
	if len(pkt) < 8 || pkt[0]>>6 != 2 {
		return false
	}
	ssrc := binary.BigEndian.Uint32(pkt[4:8])
	l, ok, relatch := s.admit(src, ssrc, now)
	e := s.e
	rx := e.rx.Load()
	if !ok || rx == nil {
		return false
	}
	if rx.rtcp != nil {
		var err error
		rx.mu.Lock()
		pkt, err = rx.rtcp.DecryptRTCP(pkt, pkt, &s.rtcpHdr)
		rx.mu.Unlock()
		if err != nil {
			return false
		}
	}
	s.accepted(l, src, ssrc, relatch, now)
	e.readReport(parseRTCP(pkt), now, p)
	return s.send(pkt, true)
}

// readReport keeps what the endpoint says about the media it receives, and
// the relay↔endpoint round trip from the SR the relay last forwarded it.
func (e *end) readReport(r rtcpReport, now int64, p *params) {
	nowMs := uint32(now / 1e6)
	if r.sr {
		e.peer.srSent.Store(uint64(r.ntpMid)<<32 | uint64(nowMs))
	}
	if !r.blocks {
		return
	}
	e.fraction.Store(uint32(r.fraction))
	e.jitter.Store(r.jitter)
	if sent := e.srSent.Load(); r.lsr != 0 && uint32(sent>>32) == r.lsr {
		rtt := int64(nowMs-uint32(sent)) - int64(r.dlsr)*1000/65536
		if rtt >= 0 {
			e.rttMs.Store(rtt)
		}
	}
}

// send writes pkt to the other side's endpoint from the other side's socket
// (so symmetric-RTP phones see the port they sent to), encrypting for an
// SRTP leg.
func (s *sock) send(pkt []byte, isRTCP bool) bool {
	to := s.e.peer
	tx := to.tx.Load()
	dst := to.rtp
	if isRTCP && !to.st.mux.Load() {
		dst = to.rtcp.Load()
	}
	if tx == nil || dst == nil {
		return false
	}
	l := dst.latch.Load()
	if l == nil {
		return false
	}
	out := pkt
	var err error
	switch {
	case tx.rtp == nil:
	case isRTCP:
		tx.mu.Lock()
		out, err = tx.rtcp.EncryptRTCP(s.lp.out[:0], pkt, &s.rtcpHdr)
		tx.mu.Unlock()
	default:
		out, err = tx.rtp.EncryptRTP(s.lp.out[:0], pkt, &s.hdr)
	}
	if err != nil {
		return false
	}
	s.packets.Add(1)
	s.bytes.Add(uint64(s.rxLen))
	return s.lp.sendto(dst, out, l.peer)
}

// isRTCP tells RTCP from RTP on a muxed port (RFC 5761 §4).
func isRTCP(pkt []byte) bool { return len(pkt) >= 2 && pkt[1] >= 192 && pkt[1] <= 223 }

// rtpHeader is the part of an RTP header the relay reads, in place.
type rtpHeader struct {
	pt      uint8
	seq     uint16
	ts      uint32
	ssrc    uint32
	off     int // payload offset
	padding bool
}

func parseRTPHeader(b []byte) (h rtpHeader, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return h, false
	}
	h.off = 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < h.off+4 {
			return h, false
		}
		h.off += 4 + 4*int(binary.BigEndian.Uint16(b[h.off+2:]))
	}
	if h.off > len(b) {
		return h, false
	}
	h.padding = b[0]&0x20 != 0
	h.pt = b[1] & 0x7f
	h.seq = binary.BigEndian.Uint16(b[2:])
	h.ts = binary.BigEndian.Uint32(b[4:])
	h.ssrc = binary.BigEndian.Uint32(b[8:])
	return h, true
}

// payload returns the payload of the (decrypted) packet b, nil if the
// padding count is impossible.
func (h rtpHeader) payload(b []byte) []byte {
	end := len(b)
	if h.padding && end > h.off {
		end -= int(b[end-1])
	}
	if end < h.off {
		return nil
	}
	return b[h.off:end]
}
