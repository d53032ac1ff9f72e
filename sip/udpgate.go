package sip

import (
	"bytes"
	"net"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// inviteGate applies the call-rate cap (proxy.max_call_rate) to INVITEs over
// UDP at the socket, before sipgo sees them, and refuses the excess
// statelessly, as Kamailio's sl_send_reply does. Through sipgo a refused
// INVITE cost a full parse and a server transaction living 32 s with its
// timers: at twice the cap the refusals alone saturated the core, and the
// calls let in collapsed with the rest. The gate reads a few raw headers and
// answers 503 from them.
//
// It remembers, by source, transaction and Call-ID, the INVITEs it let in,
// so that their retransmissions go on to their transactions even when the
// cap is reached meanwhile, and those it refused, with their answer, which
// their retransmissions get again; the ACK of a refusal is absorbed. Entries
// live from gateTTL to twice that: an INVITE is retransmitted for at most
// 32 s (Timer B), and in practice only until its first answer.
type inviteGate struct {
	s    *Switch
	rate *callRate

	mu        sync.Mutex
	cur, prev map[string]gateEntry
	rotated   time.Time
}

type gateEntry struct {
	answer []byte // nil: let in
	dst    *net.UDPAddr
}

const (
	gateTTL = 16 * time.Second
	// gateRefusals bounds the refusals remembered per generation, so that
	// a flood does not grow the heap: past it, a refusal's retransmission
	// is refused again with a new To tag, which the client's transaction
	// absorbs as well.
	gateRefusals = 1 << 16
)

// newInviteGate returns nil when calls are not capped.
func newInviteGate(s *Switch, rate *callRate) *inviteGate {
	if rate == nil {
		return nil
	}
	return &inviteGate{s: s, rate: rate, cur: map[string]gateEntry{}, prev: map[string]gateEntry{}, rotated: time.Now()}
}

// intercept reports whether the gate has dealt with the datagram (an
// INVITE refused now or before, the ACK of a refusal); false leaves it to
// sipgo. It runs on the socket's reader.
func (g *inviteGate) intercept(c *udpConn, data []byte, src *net.UDPAddr) bool {
	invite := bytes.HasPrefix(data, []byte("INVITE "))
	if g == nil || !invite && !bytes.HasPrefix(data, []byte("ACK ")) {
		return false
	}
	var raw rawRequest
	if !raw.scan(data) || invite && hasTag(raw.toValue) {
		return false // unreadable (sipgo answers 400) or in a dialog
	}
	key := gateKey(src, raw.transaction(), raw.callID)

	g.mu.Lock()
	now := time.Now()
	if now.Sub(g.rotated) >= gateTTL {
		g.prev, g.cur, g.rotated = g.cur, make(map[string]gateEntry, len(g.cur)), now
	}
	e, seen := g.cur[key]
	if !seen {
		e, seen = g.prev[key]
	}
	switch {
	case !invite: // an ACK: of a refusal, or for sipgo
		g.mu.Unlock()
		return seen && e.answer != nil
	case seen && e.answer == nil: // a retransmission of a call let in
		g.mu.Unlock()
		return false
	case seen: // a retransmission of a refusal
		g.mu.Unlock()
		g.send(c, e.answer, e.dst)
		return true
	case g.rate.allow():
		g.cur[key] = gateEntry{}
		g.mu.Unlock()
		return false
	}
	g.mu.Unlock()

	s := g.s
	if f := s.flood; f != nil {
		// What sipgo's read filter would have done to the INVITE.
		if ip := src.AddrPort().Addr().Unmap(); !s.trusted(ip) && !f.allow(ip) {
			s.metrics.flooded.Inc()
			return true
		}
	}
	s.metrics.requests.WithLabelValues(string(sip.INVITE)).Inc()
	s.metrics.overloaded.WithLabelValues("call_rate").Inc()
	// Capacity returns within the second: a peer that honours Retry-After
	// (RFC 3261 §21.5.4) keeps away no longer.
	answer := statelessAnswer(&raw, src, 503, "Service Unavailable", []sip.Header{sip.NewHeader("Retry-After", "1")})
	dst := raw.replyAddr(src)
	g.mu.Lock()
	if len(g.cur) < gateRefusals {
		g.cur[key] = gateEntry{answer, dst}
	}
	g.mu.Unlock()
	if g.send(c, answer, dst) {
		s.metrics.responses.WithLabelValues(string(sip.INVITE), "503").Inc()
	}
	return true
}

func (g *inviteGate) send(c *udpConn, answer []byte, dst *net.UDPAddr) bool {
	if _, err := c.WriteToUDP(answer, dst); err != nil {
		g.s.log.Debug("refusal not sent", "to", dst, "error", err)
		return false
	}
	return true
}

// gateKey tells INVITE transactions apart as the registrar's reply cache
// does: by source, transaction (rawRequest.transaction) and Call-ID.
func gateKey(src *net.UDPAddr, tx, callID []byte) string {
	var b []byte
	b = src.AddrPort().AppendTo(b)
	b = append(b, 0)
	b = append(b, tx...)
	b = append(b, 0)
	b = append(b, callID...)
	return string(b)
}
