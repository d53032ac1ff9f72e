package media

import (
	"encoding/binary"
	"math"
	"time"
)

// RFC 3550 A.1 constants.
const (
	maxDropout  = 3000
	maxMisorder = 100
	seqMod      = 1 << 16
)

// rtpStats follows one endpoint's RTP stream as the relay receives it
// (RFC 3550 A.1, A.3 and A.8). Only the socket's reader goroutine touches it.
type rtpStats struct {
	ssrc     uint32
	started  bool
	baseSeq  uint32
	maxSeq   uint16
	cycles   uint32
	badSeq   uint32
	received uint64

	// Totals of earlier SSRCs (a phone restarting its stream).
	prevExpected, prevReceived uint64

	haveTransit bool
	lastArrival int64  // ns
	lastTS      uint32 // RTP timestamp
	jitter      float64
}

// update accounts one packet; arrival is in ns, clock the payload's RTP
// clock rate (0: unknown, or DTMF whose timestamps stand still, so no jitter).
func (s *rtpStats) update(seq uint16, ts, ssrc uint32, arrival int64, clock uint32) {
	if !s.started || ssrc != s.ssrc {
		s.restart(seq, ssrc)
	} else if !s.updateSeq(seq) {
		return
	}
	if clock == 0 {
		return
	}
	if s.haveTransit {
		// D(i-1,i) in seconds: arrival spacing minus timestamp spacing (A.8).
		d := float64(arrival-s.lastArrival)/1e9 - float64(int32(ts-s.lastTS))/float64(clock)
		s.jitter += (math.Abs(d) - s.jitter) / 16
	}
	s.haveTransit, s.lastArrival, s.lastTS = true, arrival, ts
}

func (s *rtpStats) restart(seq uint16, ssrc uint32) {
	if s.started {
		s.prevExpected += s.expectedCur()
		s.prevReceived += s.received
	}
	s.started, s.ssrc = true, ssrc
	s.baseSeq, s.maxSeq, s.cycles, s.badSeq = uint32(seq), seq, 0, seqMod+1
	s.received = 1
	s.haveTransit = false
}

// updateSeq is RFC 3550 A.1 update_seq without probation (the latch already
// vets the source). It reports whether the packet is part of the stream.
func (s *rtpStats) updateSeq(seq uint16) bool {
	udelta := seq - s.maxSeq
	switch {
	case udelta < maxDropout:
		if seq < s.maxSeq {
			s.cycles += seqMod
		}
		s.maxSeq = seq
	case udelta <= seqMod-maxMisorder:
		if uint32(seq) != s.badSeq {
			s.badSeq = (uint32(seq) + 1) & (seqMod - 1)
			return false
		}
		// Two sequential packets after a big jump: the source restarted.
		ssrc := s.ssrc
		s.restart(seq, ssrc)
		return true
	}
	s.received++
	return true
}

func (s *rtpStats) expectedCur() uint64 {
	if !s.started {
		return 0
	}
	return uint64(s.cycles) + uint64(s.maxSeq) - uint64(s.baseSeq) + 1
}

// counts returns packets expected and received over all SSRCs (A.3).
func (s *rtpStats) counts() (expected, received uint64) {
	return s.prevExpected + s.expectedCur(), s.prevReceived + s.received
}

// rtcpReport is what the relay reads from one RTCP compound packet.
type rtcpReport struct {
	sr        bool   // a sender report
	ntpMid    uint32 // middle 32 bits of the SR's NTP timestamp
	blocks    bool   // had a reception report block
	fraction  uint8  // fraction lost of the first block (/256)
	jitter    uint32 // its interarrival jitter, timestamp units
	lsr, dlsr uint32 // its last-SR and delay-since-last-SR
}

// parseRTCP walks a (decrypted) compound RTCP packet without allocating.
func parseRTCP(b []byte) (r rtcpReport) {
	for len(b) >= 4 {
		if b[0]>>6 != 2 {
			return r
		}
		n := 4 * (int(binary.BigEndian.Uint16(b[2:4])) + 1)
		if n > len(b) {
			return r
		}
		p, rc := b[:n], int(b[0]&0x1f)
		first := 0
		switch b[1] {
		case 200: // SR
			if len(p) >= 28 {
				r.sr, r.ntpMid = true, binary.BigEndian.Uint32(p[10:14])
				first = 28
			}
		case 201: // RR
			first = 8
		}
		if first != 0 && rc > 0 && len(p) >= first+24 && !r.blocks {
			blk := p[first : first+24]
			r.blocks = true
			r.fraction = blk[4]
			r.jitter = binary.BigEndian.Uint32(blk[12:16])
			r.lsr = binary.BigEndian.Uint32(blk[16:20])
			r.dlsr = binary.BigEndian.Uint32(blk[20:24])
		}
		b = b[n:]
	}
	return r
}

// dtmfDigits maps RFC 4733 events 0–15 to digits.
const dtmfDigits = "0123456789*#ABCD"

// dtmfState remembers the last event reported, so that an event's three
// end-bit retransmissions make one digit.
type dtmfState struct {
	have bool
	ts   uint32
}

// decode reads a telephone-event payload and returns the digit once, at the
// first packet carrying the end bit.
func (d *dtmfState) decode(payload []byte, ts uint32, clock uint32) (digit rune, dur time.Duration, ok bool) {
	if len(payload) < 4 || payload[1]&0x80 == 0 || payload[0] >= byte(len(dtmfDigits)) {
		return 0, 0, false
	}
	if d.have && d.ts == ts {
		return 0, 0, false
	}
	d.have, d.ts = true, ts
	if clock == 0 {
		clock = 8000
	}
	dur = time.Duration(binary.BigEndian.Uint16(payload[2:4])) * time.Second / time.Duration(clock)
	return rune(dtmfDigits[payload[0]]), dur, true
}

// impairment is a codec's equipment impairment (ITU-T G.113 Appendix I).
type impairment struct{ ie, bpl float64 }

var codecImpairment = map[string]impairment{
	"PCMU": {0, 25.1}, "PCMA": {0, 25.1}, // with packet loss concealment
	"G729": {11, 19}, "G723": {15, 16.1},
}

// emodel returns the ITU-T G.107 R-factor and MOS, simplified to delay and
// packet loss: R = 93.2 − Id − Ie_eff.
func emodel(loss float64, delay time.Duration, codec string) (r, mos float64) {
	imp, ok := codecImpairment[codec]
	if !ok {
		imp = codecImpairment["PCMU"]
	}
	d := float64(delay) / float64(time.Millisecond)
	id := 0.024 * d
	if d > 177.3 {
		id += 0.11 * (d - 177.3)
	}
	ppl := 100 * loss
	ieEff := imp.ie + (95-imp.ie)*ppl/(ppl+imp.bpl)
	r = max(0, min(100, 93.2-id-ieEff))
	return r, 1 + 0.035*r + 7e-6*r*(r-60)*(100-r)
}
