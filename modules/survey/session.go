package survey

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/pion/rtp"

	"github.com/lineamica/centralino/modules"
)

// offer is what the IVR takes from an SDP offer: where to send, and the
// payload types of the G.711 law it speaks and of telephone-event.
type offer struct {
	remote   netip.AddrPort
	codec    uint8 // its payload type
	law      uint8 // 0 µ-law (PCMU), 8 A-law (PCMA)
	event    uint8
	hasEvent bool
	// The answer has as many m-lines as the offer (RFC 3264 §6): the
	// others, refused with port 0, around the audio one at index audio.
	refused []string
	audio   int
}

// parseOffer reads the first audio m-line of an SDP offer. The IVR speaks
// G.711 only: the first of PCMU and PCMA in the offer's order.
func parseOffer(body []byte) (offer, error) {
	var o offer
	var conn netip.Addr
	port, found := 0, false
	var pts []uint8
	names := map[uint8]string{0: "pcmu/8000", 8: "pcma/8000"}
	inAudio := false
	for _, line := range strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "c=IN IP4 ") || strings.HasPrefix(line, "c=IN IP6 "):
			f := strings.Fields(line[9:])
			if len(f) == 0 {
				continue
			}
			if a, err := netip.ParseAddr(f[0]); err == nil && (!found || inAudio) {
				conn = a
			}
		case strings.HasPrefix(line, "m="):
			inAudio = false
			f := strings.Fields(line[2:])
			if found || len(f) < 4 || f[0] != "audio" || f[2] != "RTP/AVP" {
				if len(f) >= 4 {
					o.refused = append(o.refused, fmt.Sprintf("m=%s 0 %s %s", f[0], f[2], f[3]))
				}
				continue
			}
			o.audio = len(o.refused)
			p, err := strconv.Atoi(f[1])
			if err != nil || p <= 0 || p > 65535 {
				return o, errors.New("bad audio port")
			}
			port, found, inAudio = p, true, true
			for _, s := range f[3:] {
				if pt, err := strconv.Atoi(s); err == nil && pt >= 0 && pt < 128 {
					pts = append(pts, uint8(pt))
				}
			}
		case inAudio && strings.HasPrefix(line, "a=rtpmap:"):
			ptS, name, ok := strings.Cut(line[len("a=rtpmap:"):], " ")
			if pt, err := strconv.Atoi(ptS); ok && err == nil && pt >= 0 && pt < 128 {
				names[uint8(pt)] = strings.ToLower(strings.TrimSpace(name))
			}
		}
	}
	if !found || !conn.IsValid() {
		return o, errors.New("no plain RTP audio stream offered")
	}
	o.remote = netip.AddrPortFrom(conn, uint16(port))
	chosen := false
	for _, pt := range pts {
		switch n := names[pt]; {
		case !chosen && (n == "pcmu/8000" || n == "pcma/8000"):
			o.codec, o.law, chosen = pt, 0, true
			if n == "pcma/8000" {
				o.law = 8
			}
		case strings.HasPrefix(n, "telephone-event/8000") && !o.hasEvent:
			o.event, o.hasEvent = pt, true
		}
	}
	if !chosen {
		return o, errors.New("no G.711 codec offered")
	}
	return o, nil
}

// session is one caller in the IVR.
type session struct {
	v      *ivr
	dlg    *sipgo.DialogServerSession
	offer  offer
	rated  rated
	conn   *net.UDPConn
	keys   chan rune
	ctx    context.Context // ends when the caller hangs up or the IVR stops
	cancel context.CancelFunc

	mu     sync.Mutex
	remote netip.AddrPort // latched to where the caller's RTP comes from
	seq    uint16
	ts     uint32
	ssrc   uint32
	mark   bool
}

func newSession(v *ivr, dlg *sipgo.DialogServerSession, o offer, r rated) (*session, error) {
	ip := net.ParseIP(v.host)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		return nil, fmt.Errorf("RTP socket: %w", err)
	}
	s := &session{v: v, dlg: dlg, offer: o, rated: r, conn: conn, keys: make(chan rune, 8),
		remote: o.remote, seq: uint16(rand.Uint32()), ts: rand.Uint32(), ssrc: rand.Uint32(), mark: true}
	s.ctx, s.cancel = context.WithCancel(dlg.Context())
	return s, nil
}

func (s *session) answerSDP() []byte {
	port := s.conn.LocalAddr().(*net.UDPAddr).Port
	law := "PCMU"
	if s.offer.law == 8 {
		law = "PCMA"
	}
	ipv := "IP4"
	if strings.Contains(s.v.host, ":") {
		ipv = "IP6"
	}
	fmts := strconv.Itoa(int(s.offer.codec))
	maps := fmt.Sprintf("a=rtpmap:%d %s/8000\r\n", s.offer.codec, law)
	if s.offer.hasEvent {
		fmts += " " + strconv.Itoa(int(s.offer.event))
		maps += fmt.Sprintf("a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-15\r\n", s.offer.event, s.offer.event)
	}
	id := strconv.FormatUint(uint64(s.ssrc), 10)
	var b strings.Builder
	b.WriteString("v=0\r\no=survey " + id + " 1 IN " + ipv + " " + s.v.host + "\r\ns=survey\r\nc=IN " + ipv + " " + s.v.host + "\r\nt=0 0\r\n")
	for i := 0; i <= len(s.offer.refused); i++ {
		if i == s.offer.audio {
			b.WriteString("m=audio " + strconv.Itoa(port) + " RTP/AVP " + fmts + "\r\n" + maps + "a=ptime:20\r\na=sendrecv\r\n")
		}
		if i < len(s.offer.refused) {
			b.WriteString(s.offer.refused[i] + "\r\n")
		}
	}
	return []byte(b.String())
}

// key takes a key from SIP INFO or RTP; extra keys are dropped.
func (s *session) key(d rune) {
	select {
	case s.keys <- d:
	default:
	}
}

// hangup ends the session from the IVR's side (shutdown).
func (s *session) hangup() { s.cancel() }

func (s *session) close() { s.conn.Close() }

// run is the survey: question, a reason after a negative vote, thanks.
func (s *session) run() {
	defer s.close()
	defer s.cancel()
	go s.receive()
	ctx := context.Background()
	s.v.m.offered(ctx, s.rated)
	p := s.v.prompts
	vote, ok := s.ask(p.question, "123")
	if !ok {
		s.v.m.noVote(ctx, s.rated)
		s.finish(p.goodbye)
		return
	}
	ev := modules.RatingGiven{Time: time.Now(), Agency: s.rated.agency, TicketCode: s.rated.ticket,
		CallID: s.rated.call.CallID, Rating: modules.Rating(vote - '0'), Channel: "phone"}
	if ev.Rating == modules.RatingNegative {
		if why, ok := s.ask(p.reason, "1234"); ok {
			ev.Reason = reasons[why]
		}
	}
	s.v.m.record(ctx, ev)
	s.finish(p.thanks)
}

// ask plays a prompt and waits for one of the valid keys; silence or a
// wrong key plays it once more. A key may interrupt the prompt.
func (s *session) ask(p prompt, valid string) (rune, bool) {
	for range 2 {
		d, ok := s.playAndWait(p)
		if s.ctx.Err() != nil {
			return 0, false
		}
		if ok && strings.ContainsRune(valid, d) {
			return d, true
		}
	}
	return 0, false
}

func (s *session) playAndWait(p prompt) (rune, bool) {
	for len(s.keys) > 0 { // keys from before this prompt
		<-s.keys
	}
	played := make(chan struct{})
	stop := make(chan struct{})
	go func() { s.play(p, stop); close(played) }()
	defer func() { close(stop); <-played }()
	select {
	case d := <-s.keys:
		return d, true
	case <-s.ctx.Done():
		return 0, false
	case <-played:
	}
	t := time.NewTimer(time.Duration(s.v.m.opts.DigitTimeout))
	defer t.Stop()
	select {
	case d := <-s.keys:
		return d, true
	case <-s.ctx.Done():
	case <-t.C:
	}
	return 0, false
}

// finish plays the last prompt and hangs up, unless the caller did first.
func (s *session) finish(p prompt) {
	s.play(p, nil)
	if s.dlg.Context().Err() != nil {
		return // the caller hung up
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.dlg.Bye(ctx); err != nil {
		s.v.m.log.Debug("survey BYE", "call_id", s.dlg.InviteRequest.CallID().Value(), "err", err)
	}
}

// frame is 20 ms of G.711 at 8 kHz.
const frame = 160

// play streams a prompt until its end, stop, or the end of the call.
func (s *session) play(p prompt, stop <-chan struct{}) {
	audio := p.ulaw
	if s.offer.law == 8 {
		audio = p.alaw
	}
	s.mu.Lock()
	s.mark = true
	s.mu.Unlock()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 0, 12+frame)
	for off := 0; off < len(audio); off += frame {
		chunk := audio[off:min(off+frame, len(audio))]
		buf = s.packet(buf[:0], chunk)
		s.mu.Lock()
		to := s.remote
		s.mu.Unlock()
		_, _ = s.conn.WriteToUDPAddrPort(buf, to)
		select {
		case <-tick.C:
		case <-stop:
			return
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *session) packet(buf, payload []byte) []byte {
	s.mu.Lock()
	h := rtp.Header{Version: 2, PayloadType: s.offer.codec, SequenceNumber: s.seq, Timestamp: s.ts, SSRC: s.ssrc, Marker: s.mark}
	s.seq++
	s.ts += frame
	s.mark = false
	s.mu.Unlock()
	out, err := h.MarshalTo(buf[:cap(buf)])
	if err != nil {
		return buf
	}
	return append(buf[:out], payload...)
}

// receive reads the caller's RTP: it latches to its source (symmetric RTP,
// for callers behind NAT) and takes RFC 4733 telephone-events as keys.
func (s *session) receive() {
	buf := make([]byte, 1500)
	var lastEvent uint32
	seen := false
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var h rtp.Header
		hl, err := h.Unmarshal(buf[:n])
		if err != nil || h.Version != 2 {
			continue
		}
		s.mu.Lock()
		s.remote = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		s.mu.Unlock()
		if !s.offer.hasEvent || h.PayloadType != s.offer.event || n-hl < 4 {
			continue
		}
		// One event is several packets with the same timestamp (and
		// three copies of its end): the first makes the key.
		if seen && h.Timestamp == lastEvent {
			continue
		}
		seen, lastEvent = true, h.Timestamp
		if ev := buf[hl]; ev < 16 {
			s.key(rune("0123456789*#ABCD"[ev]))
		}
	}
}
