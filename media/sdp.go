package media

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// maxMedia bounds the m-lines of one SDP: each active one costs sockets, so a
// hostile body must not be able to ask for hundreds.
const maxMedia = 16

// sdp is a parsed session description. The original lines are kept so that
// writing it back preserves everything the relay does not understand.
type sdp struct {
	session []string // lines before the first m=
	media   []*mediaDesc
}

// mediaDesc is one m= section and what the relay reads from it.
type mediaDesc struct {
	lines    []string // the m= line first
	kind     string   // audio, video, image, ...
	port     int
	proto    string
	formats  []string
	addr     netip.Addr // media-level c=, else session-level c=
	rtcpPort int        // a=rtcp, else port+1
	rtcpAddr netip.Addr // a=rtcp address, else addr
	mux      bool       // a=rtcp-mux
	dir      string     // sendrecv, sendonly, recvonly or inactive
	crypto   []cryptoAttr
	rtpmap   map[uint8]rtpmap
}

type rtpmap struct {
	name  string // encoding name, upper case
	clock uint32
}

// staticRTPMap holds the RFC 3551 payload types phones use without a=rtpmap.
var staticRTPMap = map[uint8]rtpmap{
	0: {"PCMU", 8000}, 3: {"GSM", 8000}, 4: {"G723", 8000},
	8: {"PCMA", 8000}, 9: {"G722", 8000}, 18: {"G729", 8000},
}

// parseSDP reads an SDP body. It rejects what the relay cannot anchor
// (hostnames in c=, unknown transports are left to the caller).
func parseSDP(b []byte) (*sdp, error) {
	s := &sdp{}
	var sessAddr netip.Addr
	sessDir := "sendrecv"
	for raw := range bytes.SplitSeq(b, []byte("\n")) {
		line := strings.TrimRight(string(raw), "\r")
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return nil, fmt.Errorf("%w: malformed line %q", ErrBadSDP, truncate(line))
		}
		if line[0] == 'm' {
			if len(s.media) == maxMedia {
				return nil, fmt.Errorf("%w: more than %d m-lines", ErrBadSDP, maxMedia)
			}
			m, err := parseMLine(line[2:])
			if err != nil {
				return nil, err
			}
			m.lines = []string{line}
			m.dir = sessDir
			s.media = append(s.media, m)
			continue
		}
		if len(s.media) == 0 {
			s.session = append(s.session, line)
		} else {
			m := s.media[len(s.media)-1]
			m.lines = append(m.lines, line)
		}
		if err := s.parseAttr(line, &sessAddr, &sessDir); err != nil {
			return nil, err
		}
	}
	if len(s.media) == 0 {
		return nil, fmt.Errorf("%w: no m-line", ErrBadSDP)
	}
	for _, m := range s.media {
		if !m.addr.IsValid() {
			m.addr = sessAddr
		}
		if m.port != 0 && !m.addr.IsValid() {
			return nil, fmt.Errorf("%w: m-line without c= address", ErrBadSDP)
		}
		if !m.rtcpAddr.IsValid() {
			m.rtcpAddr = m.addr
		}
		if m.rtcpPort == 0 && m.port != 0 {
			m.rtcpPort = m.port + 1
		}
	}
	return s, nil
}

// parseAttr reads the c= and a= lines the relay needs, at session level
// (before any m=) or for the current m-line.
func (s *sdp) parseAttr(line string, sessAddr *netip.Addr, sessDir *string) error {
	var m *mediaDesc
	if len(s.media) > 0 {
		m = s.media[len(s.media)-1]
	}
	if line[0] == 'c' {
		a, err := parseConnAddr(line[2:])
		if err != nil {
			return err
		}
		if m == nil {
			*sessAddr = a
		} else {
			m.addr = a
		}
		return nil
	}
	if line[0] != 'a' {
		return nil
	}
	name, value, _ := strings.Cut(line[2:], ":")
	switch name {
	case "sendrecv", "sendonly", "recvonly", "inactive":
		if m == nil {
			*sessDir = name
		} else {
			m.dir = name
		}
	}
	if m == nil {
		return nil
	}
	switch name {
	case "rtcp-mux":
		m.mux = true
	case "rtcp":
		return m.parseRTCP(value)
	case "crypto":
		if c, ok := parseCrypto(value); ok {
			m.crypto = append(m.crypto, c)
		}
	case "rtpmap":
		ptStr, enc, _ := strings.Cut(value, " ")
		pt, ok := parsePT(ptStr)
		if !ok {
			return nil // an rtpmap we cannot read only costs its statistics
		}
		name, rest, _ := strings.Cut(enc, "/")
		clockStr, _, _ := strings.Cut(rest, "/")
		clock, err := strconv.ParseUint(clockStr, 10, 32)
		if err != nil {
			return nil
		}
		if m.rtpmap == nil {
			m.rtpmap = map[uint8]rtpmap{}
		}
		m.rtpmap[pt] = rtpmap{strings.ToUpper(name), uint32(clock)}
	}
	return nil
}

func (m *mediaDesc) parseRTCP(v string) error {
	f := strings.Fields(v)
	if len(f) == 0 {
		return fmt.Errorf("%w: empty a=rtcp", ErrBadSDP)
	}
	p, err := strconv.ParseUint(f[0], 10, 16)
	if err != nil {
		return fmt.Errorf("%w: a=rtcp port %q", ErrBadSDP, truncate(f[0]))
	}
	m.rtcpPort = int(p)
	if len(f) >= 4 {
		a, err := parseConnAddr(strings.Join(f[1:4], " "))
		if err != nil {
			return err
		}
		m.rtcpAddr = a
	}
	return nil
}

func parseMLine(v string) (*mediaDesc, error) {
	f := strings.Fields(v)
	if len(f) < 3 {
		return nil, fmt.Errorf("%w: m-line %q", ErrBadSDP, truncate(v))
	}
	portStr, _, _ := strings.Cut(f[1], "/") // a port count is not supported and dropped
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%w: m-line port %q", ErrBadSDP, truncate(f[1]))
	}
	return &mediaDesc{kind: f[0], port: int(port), proto: f[2], formats: f[3:]}, nil
}

func parseConnAddr(v string) (netip.Addr, error) {
	f := strings.Fields(v)
	if len(f) != 3 || f[0] != "IN" {
		return netip.Addr{}, fmt.Errorf("%w: connection %q", ErrBadSDP, truncate(v))
	}
	host, _, _ := strings.Cut(f[2], "/") // multicast TTL
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" || (f[1] == "IP4") != a.Is4() || (f[1] != "IP4" && f[1] != "IP6") {
		return netip.Addr{}, fmt.Errorf("%w: connection %q", ErrUnsupported, truncate(v))
	}
	return a, nil
}

// clockRate returns the RTP clock rate of payload type pt in m (0 if unknown).
func (m *mediaDesc) clockRate(pt uint8) uint32 {
	if r, ok := m.rtpmap[pt]; ok {
		return r.clock
	}
	return staticRTPMap[pt].clock
}

// firstCodec returns the first payload type of m and its encoding name.
func (m *mediaDesc) firstCodec() (pt uint8, name string, ok bool) {
	for _, f := range m.formats {
		if pt, ok := parsePT(f); ok {
			if r, ok := m.rtpmap[pt]; ok {
				return pt, r.name, true
			}
			return pt, staticRTPMap[pt].name, true
		}
	}
	return 0, "", false
}

func parsePT(f string) (uint8, bool) {
	pt, err := strconv.ParseUint(f, 10, 7)
	return uint8(pt), err == nil
}

// onHold reports whether any active stream is not sendrecv (or uses the
// RFC 2543 c=0.0.0.0 hold).
func (s *sdp) onHold() bool {
	for _, m := range s.media {
		if m.port != 0 && (m.dir != "sendrecv" || m.addr.IsUnspecified()) {
			return true
		}
	}
	return false
}

// rewrite says how to write an SDP back for the side that will receive it.
type rewrite struct {
	addr  netip.Addr     // relay address for c= and a=rtcp
	media []mediaRewrite // one per m-line
}

type mediaRewrite struct {
	port   int      // relay RTP port; 0 disables the m-line
	proto  string   // transport written in the m-line
	crypto []string // a=crypto values replacing the original ones
}

// droppedAttrs are ICE attributes the relay cannot honour (it is the only
// candidate) and BUNDLE, since each m-line gets its own relay port.
func dropped(name, value string) bool {
	switch name {
	case "candidate", "end-of-candidates", "remote-candidates",
		"ice-ufrag", "ice-pwd", "ice-options", "ice-lite", "ice-mismatch":
		return true
	case "group":
		return strings.HasPrefix(value, "BUNDLE")
	}
	return false
}

// write renders s with the relay's addresses, ports and keys, preserving
// every other line and its order.
func (s *sdp) write(rw rewrite) []byte {
	var b bytes.Buffer
	conn := connLine(rw.addr)
	for _, l := range s.session {
		writeLine(&b, l, conn, 0)
	}
	for i, m := range s.media {
		mr := rw.media[i]
		fmt.Fprintf(&b, "m=%s %d %s", m.kind, mr.port, mr.proto)
		for _, f := range m.formats {
			b.WriteString(" " + f)
		}
		b.WriteString("\r\n")
		cryptoDone := false
		writeCrypto := func() {
			for _, c := range mr.crypto {
				b.WriteString("a=crypto:" + c + "\r\n")
			}
			cryptoDone = true
		}
		for _, l := range m.lines[1:] {
			if !cryptoDone && l[0] == 'a' {
				writeCrypto() // before the first attribute, where phones look for it
			}
			rtcpPort := 0
			if mr.port != 0 {
				rtcpPort = mr.port + 1
			}
			writeLine(&b, l, conn, rtcpPort)
		}
		if !cryptoDone {
			writeCrypto()
		}
	}
	return b.Bytes()
}

// writeLine writes one original line, rewritten or dropped. rtcpPort is the
// relay's RTCP port for the section (0: drop a=rtcp).
func writeLine(b *bytes.Buffer, l, conn string, rtcpPort int) {
	switch l[0] {
	case 'o':
		// A phone may take the family of the whole session from the origin
		// (baresip 1.0 does): when the relay bridges families, the origin's
		// address moves to the relay's family too (RFC 4566 §5.2).
		if f := strings.Fields(l[2:]); len(f) == 6 && f[4] != conn[5:8] {
			l = "o=" + strings.Join(f[:4], " ") + " " + conn[5:]
		}
	case 'c':
		if a, err := parseConnAddr(l[2:]); err == nil && a.IsUnspecified() {
			break // RFC 2543 hold stays a hold
		}
		l = conn
	case 'a':
		name, value, _ := strings.Cut(l[2:], ":")
		switch {
		case dropped(name, value), name == "crypto":
			return
		case name == "rtcp" && rtcpPort == 0:
			return
		case name == "rtcp":
			l = fmt.Sprintf("a=rtcp:%d", rtcpPort)
			if len(strings.Fields(value)) >= 4 {
				l += " " + conn[2:]
			}
		}
	}
	b.WriteString(l + "\r\n")
}

func connLine(a netip.Addr) string {
	if a.Is4() {
		return "c=IN IP4 " + a.String()
	}
	return "c=IN IP6 " + a.String()
}

// transportProto returns proto switched to SRTP or plain RTP, keeping the
// feedback (AVPF) variant.
func transportProto(proto string, secure bool) string {
	if isOpaque(proto) {
		return proto
	}
	p := "RTP/AVP"
	if secure {
		p = "RTP/SAVP"
	}
	if strings.HasSuffix(proto, "F") {
		p += "F"
	}
	return p
}

// isSecure reports whether proto is SDES-keyed SRTP.
func isSecure(proto string) bool { return strings.HasPrefix(proto, "RTP/SAVP") }

// isOpaque reports whether proto is relayed as plain datagrams (T.38 fax).
func isOpaque(proto string) bool { return strings.EqualFold(proto, "udptl") }

func supportedProto(proto string) bool {
	switch proto {
	case "RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF":
		return true
	}
	return isOpaque(proto)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
