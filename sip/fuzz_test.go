package sip

import (
	"net"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/emiago/sipgo/siptest"
)

// FuzzHandleRequest feeds arbitrary bytes through the parser and the switch's
// request handlers, from a trusted and from an untrusted source. Forwarded
// requests are answered by a recorder instead of leaving the machine. The
// switch must never panic; every request must get an answer or be dropped.
func FuzzHandleRequest(f *testing.F) {
	seeds := []string{
		"INVITE sip:8300201@test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport\r\nFrom: <sip:alice@test>;tag=1\r\nTo: <sip:8300201@test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:alice@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n",
		"REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: c2\r\nCSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nAuthorization: Digest username=\"alice\", realm=\"test.lineamica.gov.it\", nonce=\"AAAA\", uri=\"sip:test\", response=\"00\", qop=auth, nc=00000001, cnonce=\"x\"\r\nContent-Length: 0\r\n\r\n",
		"BYE sip:alice@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bKc\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: <sip:bob@test>;tag=3\r\nTo: <sip:alice@test>;tag=4\r\nCall-ID: c3\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
		"OPTIONS sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKd\r\nFrom: <sip:x@test>;tag=5\r\nTo: <sip:test>\r\nCall-ID: c4\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	sw := startSwitch(f, func(c *Config) { c.MaxFailures = 0 })
	sw.client.TxRequester = &siptest.ClientTxRequester{OnRequest: func(req *sip.Request) *sip.Response {
		return sip.NewResponseFromRequest(req, 486, "Busy Here", nil)
	}}
	trusted := sw.cfg
	trusted.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	f.Fuzz(func(t *testing.T, data []byte, fromTrunk bool) {
		msg, err := sip.ParseMessage(data)
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		if _, err := sip.ServerTxKeyMake(req); err != nil {
			return // sipgo answers 400 before any handler
		}
		req.SetSource("127.0.0.1:5070")
		req.SetTransport("UDP")
		h := sw.handlers[req.Method]
		if h == nil {
			return
		}
		sw.cfg.Trusted = nil
		if fromTrunk {
			sw.cfg.Trusted = trusted.Trusted
		}
		tx := siptest.NewServerTxRecorder(req)
		h(req, tx)
	})
}

// FuzzUDPRegister feeds arbitrary datagrams to the stateless UDP registrar,
// each twice (the second copy is a retransmission). Its socket is connected
// to a sink, so no answer can reach another program: sending fails after the
// answer is built and remembered. It must never panic.
func FuzzUDPRegister(f *testing.F) {
	f.Add([]byte("REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb;rport\r\nFrom: <sip:alice@test>;tag=2\r\nTo: <sip:alice@test>\r\nCall-ID: c2\r\nCSeq: 1 REGISTER\r\nContact: <sip:alice@127.0.0.1:5070>;expires=60\r\nAuthorization: Digest username=\"alice\", realm=\"test.lineamica.gov.it\", nonce=\"AAAA\", uri=\"sip:test\", response=\"00\", qop=auth, nc=00000001, cnonce=\"x\"\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("REGISTER sip:test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKy\r\nCSeq: 1 REGISTER\r\nCall-ID: y\r\n\r\n"))
	f.Add([]byte("REGISTER sip:test SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bKz\r\nf: <sip:a@test>;tag=1\r\nt: <sip:a@test>\r\ni: z\r\nCSeq: 2 REGISTER\r\nm: *\r\nExpires: 0\r\nl: 0\r\n\r\n"))
	sw := startSwitch(f, func(c *Config) { c.MaxFailures = 0 })
	c := fuzzConn(f, sw)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}
	f.Fuzz(func(t *testing.T, data []byte) {
		for range 2 {
			buf := sw.regs.bufs.Get().(*[]byte)
			*buf = append((*buf)[:0], data...)
			sw.regs.handle(regJob{conn: c, buf: buf, src: src})
		}
	})
}

// The INVITE gate reads raw datagrams on the socket's reader: whatever
// arrives, it neither panics nor blocks, and answers or passes each copy.
func FuzzInviteGate(f *testing.F) {
	f.Add([]byte("INVITE sip:8300201@test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport\r\nFrom: <sip:alice@test>;tag=1\r\nTo: <sip:8300201@test>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"))
	f.Add([]byte("ACK sip:8300201@test SIP/2.0\r\nv: SIP/2.0/UDP h:5070;branch=z9hG4bKa\r\nf: <sip:alice@test>;tag=1\r\nt: <sip:8300201@test>;tag=x\r\ni: c1\r\nCSeq: 1 ACK\r\n\r\n"))
	f.Add([]byte("INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:5070;branch=b, SIP/2.0/UDP a\r\nFrom: a\r\nTo: <sip:b>;tag=\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"))
	sw := startSwitch(f, func(c *Config) { c.MaxCallRate = 0.001 })
	c := fuzzConn(f, sw)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}
	f.Fuzz(func(t *testing.T, data []byte) {
		for range 2 {
			sw.gate.intercept(c, data, src)
		}
	})
}

// fuzzConn is one of sw's UDP sockets as the registrar and the gate see it,
// connected to a sink that reads nothing: answers go nowhere else.
func fuzzConn(f *testing.F, sw *testSwitch) *udpConn {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sink.Close() })
	conn, err := net.DialUDP("udp", nil, sink.LocalAddr().(*net.UDPAddr))
	if err != nil {
		f.Fatal(err)
	}
	uc := newUDPConn(conn, sw.regs, sw.gate, sw.log)
	f.Cleanup(func() { uc.Close() })
	return uc
}
