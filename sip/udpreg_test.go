package sip

import (
	"crypto/md5"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReplyCacheRemembersThenForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newReplyCache()
	c.now = func() time.Time { return now }
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	dst := netip.MustParseAddrPort("192.0.2.1:5062")
	claim := func(tx string) ([]byte, netip.AddrPort, replyKey, bool) {
		return c.claim(src, []byte(tx), []byte("c1"))
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
	for i := range c.buckets {
		for _, sl := range c.buckets[i].slots {
			if sl.data != nil {
				t.Fatal("an answer older than replyTTL survives the sweep")
			}
		}
	}
	if _, _, _, fresh := claim("z9hG4bKa"); !fresh {
		t.Fatal("a copy after replyTTL is not processed again")
	}
}

// An answer outlives replyWays-1 REGISTERs that land in its bucket after
// it; the next takes its slot, the oldest.
func TestReplyCacheKeepsAnswersAgainstCollisions(t *testing.T) {
	c := newReplyCache()
	src := netip.MustParseAddrPort("192.0.2.1:5060")
	_, _, k, _ := c.claim(src, []byte("z9hG4bKfirst"), []byte("c1"))
	c.store(k, []byte("SIP/2.0 200 OK"), src)
	for n := 0; n < replyWays; n++ {
		if data, _, _, fresh := c.claim(src, []byte("z9hG4bKfirst"), []byte("c1")); fresh || string(data) != "SIP/2.0 200 OK" {
			t.Fatalf("after %d colliding REGISTERs the answer is gone", n)
		}
		for i := 0; ; i++ { // another REGISTER of the same bucket
			branch := []byte("z9hG4bK" + strconv.Itoa(n) + "-" + strconv.Itoa(i))
			if c.bucket(src, branch, []byte("c1")) == k.slot/replyWays {
				c.claim(src, branch, []byte("c1"))
				break
			}
		}
	}
	if _, _, _, fresh := c.claim(src, []byte("z9hG4bKfirst"), []byte("c1")); !fresh {
		t.Fatalf("the answer outlived %d colliding REGISTERs in %d slots", replyWays, replyWays)
	}
}

func TestRawRegisterFindsWhatAnswersCopy(t *testing.T) {
	for _, tc := range []struct {
		name, msg      string
		branch, callID string
		vias           int
		ok             bool
	}{
		{"plain", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>\r\nCall-ID: abc@h\r\nCSeq: 1 REGISTER\r\n\r\n", "z9hG4bK1", "abc@h", 1, true},
		{"compact, case and spaces", "REGISTER sip:x SIP/2.0\r\nv : SIP/2.0/UDP h ; BRANCH = z9hG4bK2 ;rport\r\nf: <sip:a@x>\r\nt: <sip:a@x>\r\ni:  id2 \r\ncseq: 2 REGISTER\r\n\r\n", "z9hG4bK2", "id2", 1, true},
		{"two Vias on one line", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=top, SIP/2.0/UDP b;branch=low\r\nFrom: <sip:a@x>\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n", "top", "c", 1, true},
		{"Via lines apart", "REGISTER sip:x SIP/2.0\nVia: SIP/2.0/UDP a;branch=top\nFrom: <sip:a@x>\nVia: SIP/2.0/UDP b;branch=low\nTo: <sip:a@x>\ni: c\nCSeq: 1 REGISTER\n\n", "top", "c", 2, true},
		{"no branch (RFC 2543)", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@x>\r\nTo: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n", "", "c", 1, true},
		{"Call-ID in the body only", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=b\r\nFrom: <sip:a@x>\r\nTo: <sip:a@x>\r\nCSeq: 1 REGISTER\r\n\r\nCall-ID: c\r\n", "b", "", 1, false},
		{"no To", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=b\r\nFrom: <sip:a@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\r\n", "b", "c", 1, false},
		{"garbage", "REGISTER \x00\xff;branch=;", "", "", 0, false},
	} {
		var m rawRequest
		ok := m.scan([]byte(tc.msg))
		if ok != tc.ok || string(m.branch()) != tc.branch || string(m.callID) != tc.callID || len(m.vias) != tc.vias {
			t.Errorf("%s: %q, %q, %d Vias, %v; want %q, %q, %d, %v", tc.name, m.branch(), m.callID, len(m.vias), ok, tc.branch, tc.callID, tc.vias, tc.ok)
		}
	}
}

// An answer copies the request's Vias, From, To, Call-ID and CSeq as sent,
// fills in rport and received when asked (RFC 3581), and tags the To.
func TestRawReplyCopiesTheRequestHeaders(t *testing.T) {
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	uc := newUDPConn(conn, nil, nil, slog.Default())
	defer uc.Close()
	src := sink.LocalAddr().(*net.UDPAddr)
	for _, tc := range []struct{ name, req, want string }{
		{"rport asked", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5099;rport;branch=z9hG4bK1, SIP/2.0/UDP p;branch=z2\r\nv: SIP/2.0/UDP q;branch=z3\r\nf: <sip:a@x>;tag=1\r\nTo: \"A\" <sip:a@x;tag=uri>\r\nCall-ID: c1\r\nCSeq: 7 REGISTER\r\n\r\n",
			"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.0.0.9:5099;rport=" + strconv.Itoa(src.Port) + ";branch=z9hG4bK1;received=127.0.0.1, SIP/2.0/UDP p;branch=z2\r\nv: SIP/2.0/UDP q;branch=z3\r\nf: <sip:a@x>;tag=1\r\nTo: \"A\" <sip:a@x;tag=uri>;tag=*\r\nCall-ID: c1\r\nCSeq: 7 REGISTER\r\nContent-Length: 0\r\n\r\n"},
		{"no rport, tagged To", "REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(src.Port) + ";branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=1\r\nTo: sip:a@x;tag=9\r\nCall-ID: c2\r\nCSeq: 8 REGISTER\r\n\r\n",
			"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:" + strconv.Itoa(src.Port) + ";branch=z9hG4bK2\r\nFrom: <sip:a@x>;tag=1\r\nTo: sip:a@x;tag=9\r\nCall-ID: c2\r\nCSeq: 8 REGISTER\r\nContent-Length: 0\r\n\r\n"},
	} {
		var m rawRequest
		if !m.scan([]byte(tc.req)) {
			t.Fatalf("%s: not read", tc.name)
		}
		from := &net.UDPAddr{IP: src.IP, Port: src.Port}
		u := &udpReply{conn: uc, src: from, dst: m.replyAddr(from), raw: &m}
		if err := u.reply(401, "Unauthorized", nil); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		sink.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := sink.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("%s: no answer at the reply address: %v", tc.name, err)
		}
		got := string(buf[:n])
		if i := strings.Index(tc.want, ";tag=*"); i >= 0 { // our tag is random
			j := strings.Index(got[i+5:], "\r\n")
			if j < 0 || !strings.HasPrefix(got, tc.want[:i+5]) {
				t.Fatalf("%s:\n%s\nwant\n%s", tc.name, got, tc.want)
			}
			got = got[:i+5] + "*" + got[i+5+j:]
		}
		if got != tc.want {
			t.Errorf("%s:\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}

// Answers go to the port of the top Via's sent-by (RFC 3261 §18.2.2) when the
// client did not ask for rport; 5060 when it names none or cannot be read.
func TestSentByPort(t *testing.T) {
	for via, want := range map[string]int{
		"SIP/2.0/UDP 10.0.0.1:5099;branch=z9hG4bK1": 5099,
		"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1":      5060,
		"SIP/2.0/UDP phone.example.org:7000":        7000,
		"SIP/2.0/UDP   h:5071 ;branch=x":            5071,
		"SIP/2.0/UDP [2001:db8::1]:5072;rport":      5072,
		"SIP/2.0/UDP [2001:db8::1];branch=y":        5060,
		"SIP/2.0/UDP 2001:db8::1":                   5060, // unbracketed IPv6: no port to read
		"SIP/2.0/UDP h:0":                           5060,
		"SIP/2.0/UDP h:65536":                       5060,
		"SIP/2.0/UDP h:50x0":                        5060,
		"SIP/2.0/UDP h:5070 extra":                  5060,
		"SIP/2.0/UDP":                               5060,
		"":                                          5060,
	} {
		if got := sentByPort([]byte(via)); got != want {
			t.Errorf("sentByPort(%q) = %d, want %d", via, got, want)
		}
	}
}

// BenchmarkUDPRegister: one registration (a REGISTER, its challenge, the
// REGISTER with credentials, its 200) through the UDP registrar on the
// memory directory, the answers read off a real socket. The figures are the
// switch's own work per registration plus this client's (two requests, an
// MD5 digest), without sipp's or the scheduler's.
func BenchmarkUDPRegister(b *testing.B) {
	r := newRawRegistrant(b, startSwitch(b, nil))
	contact := "Contact: <sip:alice@" + r.src.String() + ">\r\n"
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if ok := r.register(i, contact); !strings.HasPrefix(ok, "SIP/2.0 200 ") {
			b.Fatalf("registration: %s", ok)
		}
	}
}

// A REGISTER in a form the scan leaves to sipgo (a folded Contact line) is
// answered as any other, and counted.
func TestUnusualRegisterIsParsedWhole(t *testing.T) {
	sw := startSwitch(t, nil)
	r := newRawRegistrant(t, sw)
	uri := "sip:alice@" + r.src.String()
	for i, tc := range []struct {
		contact    string
		fullParses float64
	}{
		{"Contact:\r\n <" + uri + ">\r\n", 2}, // the challenged REGISTER and the one with credentials
		{"Contact: <" + uri + ">\r\n", 2},
	} {
		if res := r.register(i+1, tc.contact); !strings.HasPrefix(res, "SIP/2.0 200 ") || !strings.Contains(res, "Contact: <"+uri+">;expires=") {
			t.Fatalf("%q: %s", tc.contact, res)
		}
		if n := testutil.ToFloat64(sw.metrics.fullParses); n != tc.fullParses {
			t.Fatalf("%q: %v REGISTERs parsed whole, want %v", tc.contact, n, tc.fullParses)
		}
	}
}

// An overloaded registrar answers 503 to a REGISTER that waited too long in
// its queue, but a copy of one it has answered gets that answer again: a
// phone registered must not be told it is not.
func TestOverloadedRegistrarAnswersCopiesAsBefore(t *testing.T) {
	sw := startSwitch(t, nil)
	r := newRawRegistrant(t, sw)
	contact := "Contact: <sip:alice@" + r.src.String() + ">\r\n"
	first := r.register(1, contact)
	if !strings.HasPrefix(first, "SIP/2.0 200 ") {
		t.Fatalf("registration: %s", first)
	}
	r.queued = time.Now().Add(-2 * regMaxWait)
	if again := r.hand(r.msg); again != first {
		t.Fatalf("a late copy of the REGISTER answered 200:\n%s\nwant the same answer again", again)
	}
	if res := r.send(2, 1, contact, ""); !strings.HasPrefix(res, "SIP/2.0 503 ") || !strings.Contains(res, "Retry-After:") {
		t.Fatalf("a new REGISTER that waited too long: %s, want 503 with Retry-After", res)
	}
}

// A client that makes no branch (RFC 2543) registers: its REGISTER with
// credentials, on the Call-ID of the challenged one, is not taken for a
// copy of it.
func TestRegisterWithoutBranch(t *testing.T) {
	sw := startSwitch(t, nil)
	r := newRawRegistrant(t, sw)
	r.via = "Via: SIP/2.0/UDP " + r.src.String() + "\r\nX-Try: " // the Via the same for both REGISTERs
	if res := r.register(1, "Contact: <sip:alice@"+r.src.String()+">\r\n"); !strings.HasPrefix(res, "SIP/2.0 200 ") {
		t.Fatalf("REGISTER with credentials: %s", res)
	}
}

// rawRegistrant registers alice through the UDP registrar with REGISTERs
// written by hand, and reads the answers off a real socket.
type rawRegistrant struct {
	tb          testing.TB
	sw          *testSwitch
	conn        *udpConn
	phone       *net.UDPConn
	src         *net.UDPAddr
	via         string
	ha1, ha2    string
	msg, answer []byte
	queued      time.Time // when the REGISTERs handed were queued; zero: not queued
}

func newRawRegistrant(tb testing.TB, sw *testSwitch) *rawRegistrant {
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		return c
	}
	r := &rawRegistrant{tb: tb, sw: sw, conn: newUDPConn(listen(), sw.regs, sw.gate, sw.log), phone: listen(), answer: make([]byte, 2048)}
	tb.Cleanup(func() { r.conn.Close() }) // ends its sender; closing the socket twice is harmless
	r.src = r.phone.LocalAddr().(*net.UDPAddr)
	r.via = "Via: SIP/2.0/UDP " + r.src.String() + ";branch=z9hG4bK-"
	r.ha1, r.ha2 = md5Hex("alice:"+testRealm+":pw-alice"), md5Hex("REGISTER:sip:test")
	return r
}

// register runs registration i, with contact (a whole header line), and
// returns the answer to its credentials.
func (r *rawRegistrant) register(i int, contact string) string {
	challenge := r.send(i, 1, contact, "")
	_, rest, ok := strings.Cut(challenge, `nonce="`)
	nonce, _, _ := strings.Cut(rest, `"`)
	if !ok || !strings.HasPrefix(challenge, "SIP/2.0 401 ") {
		r.tb.Fatalf("challenge: %s", challenge)
	}
	response := md5Hex(r.ha1 + ":" + nonce + ":00000001:c0ffee:auth:" + r.ha2)
	return r.send(i, 2, contact, `Authorization: Digest username="alice", realm="`+testRealm+`", nonce="`+nonce+
		`", uri="sip:test", response="`+response+`", algorithm=MD5, cnonce="c0ffee", qop=auth, nc=00000001`+"\r\n")
}

// send hands the registrar REGISTER number cseq of registration i, and
// returns its answer.
func (r *rawRegistrant) send(i, cseq int, contact, authz string) string {
	msg := append(r.msg[:0], "REGISTER sip:test SIP/2.0\r\n"...)
	msg = append(msg, r.via...)
	msg = strconv.AppendInt(msg, int64(i), 10)
	msg = append(msg, '-', byte('0'+cseq))
	msg = append(msg, "\r\nFrom: <sip:alice@test>;tag=1\r\nTo: <sip:alice@test>\r\nCall-ID: raw-"...)
	msg = strconv.AppendInt(msg, int64(i), 10)
	msg = append(msg, "\r\nCSeq: "...)
	msg = strconv.AppendInt(msg, int64(cseq), 10)
	msg = append(msg, " REGISTER\r\n"...)
	msg = append(msg, contact...)
	msg = append(msg, "Max-Forwards: 70\r\nExpires: 3600\r\n"...)
	msg = append(msg, authz...)
	msg = append(msg, "Content-Length: 0\r\n\r\n"...)
	r.msg = msg
	return r.hand(msg)
}

// hand gives the registrar msg, queued at r.queued (zero: not queued), and
// returns its answer.
func (r *rawRegistrant) hand(msg []byte) string {
	buf := r.sw.regs.bufs.Get().(*[]byte)
	*buf = append((*buf)[:0], msg...)
	r.sw.regs.handle(regJob{conn: r.conn, buf: buf, src: r.src, queued: r.queued})
	r.phone.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := r.phone.ReadFromUDP(r.answer)
	if err != nil {
		r.tb.Fatal(err)
	}
	return string(r.answer[:n])
}

func md5Hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
