package sip

import (
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
