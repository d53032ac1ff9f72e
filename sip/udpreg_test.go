package sip

import (
	"net/netip"
	"testing"
	"time"
)

func TestReplyCacheRemembersThenForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newReplyCache()
	c.now = func() time.Time { return now }
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	dst := netip.MustParseAddrPort("192.0.2.1:5062")
	claim := func(branch string) ([]byte, netip.AddrPort, replyKey, bool) {
		return c.claim(src, []byte(branch), []byte("c1"))
	}
	_, _, k, fresh := claim("z9hG4bKa")
	if !fresh {
		t.Fatal("first copy not processed")
	}
	if data, _, _, fresh := claim("z9hG4bKa"); fresh || data != nil {
		t.Fatal("a copy that arrives while the first is processed is not dropped")
	}
	c.store(k, []byte("SIP/2.0 200 OK"), dst)
	now = now.Add(5 * time.Second)
	if data, to, _, fresh := claim("z9hG4bKa"); fresh || string(data) != "SIP/2.0 200 OK" || to != dst {
		t.Fatalf("retransmission: %q to %v, %v; want the answer again to %v", data, to, fresh, dst)
	}
	// A stuck first copy lets a retransmission through after claimTTL.
	claim("z9hG4bKb")
	now = now.Add(claimTTL)
	if _, _, _, fresh := claim("z9hG4bKb"); !fresh {
		t.Fatal("a copy is still dropped after claimTTL")
	}
	// A released claim (an unreadable message) lets the next copy through.
	_, _, kc, _ := claim("z9hG4bKc")
	c.release(kc)
	if _, _, _, fresh := claim("z9hG4bKc"); !fresh {
		t.Fatal("a copy after a released claim is dropped")
	}
	now = now.Add(replyTTL)
	c.sweep()
	for i := range c.slots {
		if c.slots[i].data != nil {
			t.Fatal("an answer older than replyTTL survives the sweep")
		}
	}
	if _, _, _, fresh := claim("z9hG4bKa"); !fresh {
		t.Fatal("a copy after replyTTL is not processed again")
	}
}

func TestTxKeyReadsTheTopViaBranchAndCallID(t *testing.T) {
	for _, tc := range []struct {
		name, msg      string
		branch, callID string
		ok             bool
	}{
		{"plain", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1\r\nCall-ID: abc@h\r\n\r\n", "z9hG4bK1", "abc@h", true},
		{"compact, case and spaces", "REGISTER sip:x SIP/2.0\r\nv : SIP/2.0/UDP h ; BRANCH = z9hG4bK2 ;rport\r\ni:  id2 \r\n\r\n", "z9hG4bK2", "id2", true},
		{"two Vias on one line", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=top, SIP/2.0/UDP b;branch=low\r\nCall-ID: c\r\n\r\n", "top", "c", true},
		{"second Via header ignored", "REGISTER sip:x SIP/2.0\nVia: SIP/2.0/UDP a;branch=top\nVia: SIP/2.0/UDP b;branch=low\ni: c\n\n", "top", "c", true},
		{"no branch (RFC 2543)", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCall-ID: c\r\n\r\n", "", "c", true},
		{"Call-ID in the body only", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=b\r\n\r\nCall-ID: c\r\n", "", "", false},
		{"no Via", "REGISTER sip:x SIP/2.0\r\nCall-ID: c\r\n\r\n", "", "", false},
		{"garbage", "REGISTER \x00\xff;branch=;", "", "", false},
	} {
		branch, callID, ok := txKey([]byte(tc.msg))
		if ok != tc.ok || string(branch) != tc.branch || string(callID) != tc.callID {
			t.Errorf("%s: %q, %q, %v; want %q, %q, %v", tc.name, branch, callID, ok, tc.branch, tc.callID, tc.ok)
		}
	}
}
