package sip

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestNodeSignature(t *testing.T) {
	invite := func() *sip.Request {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "inps.ricci", Host: "127.0.0.2", Port: 5060})
		from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "campania.russo", Host: testRealm}, Params: sip.NewParams()}
		from.Params.Add("tag", "abc")
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "inps.ricci", Host: testRealm}})
		req.AppendHeader(sip.NewHeader("Call-ID", "call-1"))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
		return req
	}
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	n := &nodeForwarding{secret: []byte("0123456789abcdef"), now: func() time.Time { return now }}
	req := invite()
	req.AppendHeader(sip.NewHeader(nodeHeader, "forged;ts=1;sig=00")) // a phone's, replaced
	n.sign(req, "campania")
	if got := len(req.GetHeaders(nodeHeader)); got != 1 {
		t.Fatalf("%d %s headers after signing, want 1", got, nodeHeader)
	}
	value := req.GetHeader(nodeHeader).Value()
	if node, ok := n.verify(req, value); !ok || node != "campania" {
		t.Fatalf("verify(%q) = %q, %v; want campania, true", value, node, ok)
	}
	if _, ok := n.verify(req, value); ok {
		t.Errorf("the same signed request accepted twice (a replay)")
	}

	tests := []struct {
		name   string
		change func(req *sip.Request, n *nodeForwarding)
	}{
		{"another user", func(req *sip.Request, _ *nodeForwarding) { req.Recipient.User = "inps.colombo" }},
		{"another call", func(req *sip.Request, _ *nodeForwarding) {
			req.RemoveHeader("Call-ID")
			req.AppendHeader(sip.NewHeader("Call-ID", "call-2"))
		}},
		{"another secret", func(_ *sip.Request, n *nodeForwarding) { n.secret = []byte("fedcba9876543210") }},
		{"another caller", func(req *sip.Request, _ *nodeForwarding) { req.From().Address.User = "inps.colombo" }},
		{"too old", func(_ *sip.Request, n *nodeForwarding) {
			n.now = func() time.Time { return now.Add(2 * nodeClockSkew) }
		}},
	}
	for _, tt := range tests {
		req, m := invite(), &nodeForwarding{secret: n.secret, now: n.now}
		tt.change(req, m)
		if _, ok := m.verify(req, value); ok {
			t.Errorf("%s: signature accepted", tt.name)
		}
	}
	for _, bad := range []string{"", "campania", "campania;ts=x;sig=", ";ts=1;sig=00"} {
		if _, ok := n.verify(invite(), bad); ok {
			t.Errorf("verify(%q) accepted", bad)
		}
	}
}
