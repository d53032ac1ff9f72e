package media

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func testConfig() Config {
	return Config{
		PortMin: 41000, PortMax: 41999,
		BindIPv4: lo4, BindIPv6: lo6,
		LatchWindow: 2 * time.Second,
		Registerer:  prometheus.NewRegistry(),
	}
}

func newTestRelay(t testing.TB, cfg Config) *Relay {
	t.Helper()
	r, err := NewRelay(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// phone is a test endpoint: one UDP socket on loopback.
type phone struct {
	t    testing.TB
	conn *net.UDPConn
}

func newPhone(t testing.TB, ip netip.Addr) *phone {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &phone{t: t, conn: conn}
}

func (p *phone) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *phone) send(to netip.AddrPort, b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDPAddrPort(b, to); err != nil {
		p.t.Fatal(err)
	}
}

// recv returns the next datagram, or nil after wait.
func (p *phone) recv(wait time.Duration) ([]byte, netip.AddrPort) {
	p.t.Helper()
	buf := make([]byte, 2048)
	p.conn.SetReadDeadline(time.Now().Add(wait))
	n, from, err := p.conn.ReadFromUDPAddrPort(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil, netip.AddrPort{}
	}
	if err != nil {
		p.t.Fatal(err)
	}
	return buf[:n], from
}

func (p *phone) mustRecv() []byte {
	p.t.Helper()
	b, _ := p.recv(2 * time.Second)
	if b == nil {
		p.t.Fatal("no packet")
	}
	return b
}

func (p *phone) expectNothing(wait time.Duration) {
	p.t.Helper()
	if b, from := p.recv(wait); b != nil {
		p.t.Fatalf("unexpected %d-byte packet from %s", len(b), from)
	}
}

// audioSDP is a phone's SDP: PCMU and telephone-event on ip:port.
func audioSDP(ip netip.Addr, port int, proto string, extra ...string) []byte {
	fam := "IP4"
	if ip.Is6() {
		fam = "IP6"
	}
	lines := []string{
		"v=0", "o=- 1 1 IN " + fam + " " + ip.String(), "s=-", "c=IN " + fam + " " + ip.String(), "t=0 0",
		fmt.Sprintf("m=audio %d %s 0 101", port, proto),
		"a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15",
	}
	return []byte(strings.Join(append(lines, extra...), "\r\n") + "\r\n")
}

// relayAddr is where the phone receiving sdp must send m-line i.
func relayAddr(t testing.TB, sdp []byte, i int) netip.AddrPort {
	t.Helper()
	s, err := parseSDP(sdp)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(s.media[i].addr, uint16(s.media[i].port))
}

// relayKey is the relay's a=crypto in sdp for m-line 0 with the given tag
// (0: the first).
func relayKey(t testing.TB, sdp []byte, tag int) cryptoAttr {
	t.Helper()
	s, err := parseSDP(sdp)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range s.media[0].crypto {
		if tag == 0 || c.tag == tag {
			return c
		}
	}
	t.Fatalf("no a=crypto tag %d in\n%s", tag, sdp)
	return cryptoAttr{}
}

// connect runs one offer/answer for call id; it returns the SDP a receives
// (the answer) and the one b receives (the offer).
func connect(t testing.TB, r *Relay, id string, offer []byte, opts LegOptions, answer func(offerOut []byte) []byte) (toA, toB []byte) {
	t.Helper()
	toB, err := r.Offer(id, "tag-a", offer, opts)
	if err != nil {
		t.Fatal(err)
	}
	toA, err = r.Answer(id, "tag-b", answer(toB), LegOptions{Source: lo4})
	if err != nil {
		t.Fatal(err)
	}
	return toA, toB
}

func rtpPacket(seq uint16, ts, ssrc uint32, pt uint8, payload []byte) []byte {
	b, err := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}, Payload: payload}).Marshal()
	if err != nil {
		panic(err)
	}
	return b
}
