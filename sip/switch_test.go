package sip

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lineamica/centralino/media"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
	"github.com/lineamica/centralino/test/freeport"
	"github.com/lineamica/centralino/test/sipua"
)

const testRealm = "test.lineamica.gov.it"

// testSwitch runs a switch on loopback with two agencies and four users whose
// password is "pw-" + username.
type testSwitch struct {
	*Switch
	addr   string // host:port of the UDP and TCP listeners
	dir    *directory.Memory
	reg    *prometheus.Registry
	events chan modules.Event // everything the switch published
}

// nextEvent returns the next event of the given kind, skipping others.
func (sw *testSwitch) nextEvent(t *testing.T, kind string) modules.Event {
	t.Helper()
	return sw.nextEventWithin(t, kind, 2*time.Second)
}

func (sw *testSwitch) nextEventWithin(t *testing.T, kind string, d time.Duration) modules.Event {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev := <-sw.events:
			if ev.Kind() == kind {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s event", kind)
			return nil
		}
	}
}

func startSwitch(t testing.TB, edit func(*Config)) *testSwitch {
	t.Helper()
	port := freeport.Port(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := Config{
		NodeID: "test", Realm: testRealm,
		Listeners:  []Listener{{Transport: "udp", Addr: addr}, {Transport: "tcp", Addr: addr}},
		MinExpires: 60 * time.Second, MaxExpires: time.Hour, DefaultExpires: 600 * time.Second,
		NonceTTL:    time.Minute,
		MaxFailures: 5, FailureWindow: time.Minute, BlockFor: time.Minute,
		RingTimeout: 5 * time.Second,
	}
	if edit != nil {
		edit(&cfg)
	}
	dir := directory.NewMemory()
	ctx := context.Background()
	agencies := []directory.Agency{
		{Code: "r_campan", Name: "URP Campania", Region: "Campania", Sector: "general", Prefix: "8100", Numbers: []string{"8100000"}},
		{Code: "inps", Name: "INPS", Sector: "pensions", Prefix: "8300", Numbers: []string{"8300000"}},
	}
	users := []directory.User{
		{Username: "alice", Agency: "r_campan", Role: directory.RolePhone, Extension: "101"},
		{Username: "bob", Agency: "r_campan", Role: directory.RolePhone, Extension: "102"},
		{Username: "carla", Agency: "inps", Role: directory.RoleOperator, Extension: "201"},
		{Username: "dario", Agency: "inps", Role: directory.RolePhone, Extension: "101"},
	}
	for i := range users {
		users[i].SetPassword(testRealm, "pw-"+users[i].Username)
	}
	if err := directory.Load(ctx, dir, agencies, users); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus := modules.NewBus(modules.BusOptions{Logger: log})
	events := make(chan modules.Event, 256)
	bus.Subscribe("test", 256, nil, func(_ context.Context, ev modules.Event) { events <- ev })
	deps := Deps{Dir: dir, Router: &routing.Router{Dir: dir, RingTimeout: cfg.RingTimeout}, Events: bus, Metrics: reg, Log: log}
	if cfg.Anchor != "" && cfg.Anchor != AnchorNever {
		deps.Relay = startRelay(t, reg)
	}
	sw, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	if sw.Serving() {
		t.Fatal("Serving before Serve: /readyz would send phones to listeners not yet open")
	}
	if err := sw.Serve(sctx); err != nil {
		t.Fatal(err)
	}
	if !sw.Serving() {
		t.Fatal("not Serving once every listener listens")
	}
	t.Cleanup(func() { cancel(); sw.Close(); bus.Close(context.Background()) })
	return &testSwitch{Switch: sw, addr: addr, dir: dir, reg: reg, events: events}
}

// relayTimeout is the media timeout of the relays tests start.
var relayTimeout = 2 * time.Second

// startRelay starts a media relay on loopback, on a port range of its own
// below the ephemeral ports (32768 and up on Linux), which the phones and
// other tests running in parallel take and which the relay would then find
// busy when a call comes.
func startRelay(t testing.TB, reg prometheus.Registerer) *media.Relay {
	t.Helper()
	for range 20 {
		base := 20000 + 2*rand.IntN(6000)
		r, err := media.NewRelay(media.Config{PortMin: base, PortMax: base + 99,
			BindIPv4: netip.MustParseAddr("127.0.0.1"), Timeout: relayTimeout, HoldTimeout: 3 * relayTimeout,
			LatchWindow: 5 * time.Second, Registerer: reg})
		if err == nil {
			t.Cleanup(func() { r.Close() })
			return r
		}
	}
	t.Fatal("no media relay")
	return nil
}

// newPhone starts a test phone of user with password "pw-"+user.
func newPhone(t *testing.T, sw *testSwitch, user, transport string) *sipua.Phone {
	return sipua.New(t, sw.addr, testRealm, user, "pw-"+user, transport)
}

// register registers p with password for expires seconds.
func register(p *sipua.Phone, password string, expires int) *sip.Response {
	p.Password = password
	return p.Register(expires)
}

func TestRegisterOffersMD5AndSHA256(t *testing.T) {
	sw := startSwitch(t, nil)
	p := newPhone(t, sw, "alice", "udp")
	res := p.Do(p.Request(sip.REGISTER, "alice"))
	if res.StatusCode != 401 {
		t.Fatalf("unauthenticated REGISTER: got %d, want 401", res.StatusCode)
	}
	var algs []string
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		c, err := digest.ParseChallenge(h.Value())
		if err != nil {
			t.Fatal(err)
		}
		if c.Realm != testRealm || !c.SupportsQOP("auth") {
			t.Errorf("challenge %q: want realm %s and qop=auth", h.Value(), testRealm)
		}
		algs = append(algs, c.Algorithm)
	}
	if strings.Join(algs, ",") != "MD5,SHA-256" {
		t.Fatalf("algorithms offered: %v, want MD5 then SHA-256", algs)
	}
	// sipgo's client answers the first challenge: MD5.
	if res := register(p, "pw-alice", 300); res.StatusCode != 200 {
		t.Fatalf("REGISTER with MD5 digest: %d", res.StatusCode)
	}
	bs, _ := sw.dir.Bindings(context.Background(), "alice")
	if len(bs) != 1 || bs[0].Transport != "udp" || bs[0].Source == "" {
		t.Fatalf("bindings: %+v", bs)
	}
}

func TestRegisterWithSHA256(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Algorithms = []string{"SHA-256", "MD5"} })
	p := newPhone(t, sw, "bob", "udp")
	if res := register(p, "pw-bob", 300); res.StatusCode != 200 {
		t.Fatalf("REGISTER with SHA-256 digest: %d", res.StatusCode)
	}
	// The HA1 really is the SHA-256 one: a user with only an MD5 HA1 fails.
	u, _ := sw.dir.User(context.Background(), "bob")
	u.HA1SHA256 = directory.HA1("SHA-256", "bob", testRealm, "another password")
	sw.dir.PutUser(context.Background(), u)
	if res := register(newPhone(t, sw, "bob", "udp"), "pw-bob", 300); res.StatusCode != 401 {
		t.Fatalf("SHA-256 digest checked against the wrong HA1: %d", res.StatusCode)
	}
}

// authorize computes credentials for req against the challenge of res.
func authorize(t *testing.T, req *sip.Request, res *sip.Response, user, password string, nc int) string {
	t.Helper()
	chal, err := digest.ParseChallenge(res.GetHeader("WWW-Authenticate").Value())
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: req.Recipient.Addr(), Username: user, Password: password, Count: nc})
	if err != nil {
		t.Fatal(err)
	}
	return cred.String()
}

func TestNonceCannotBeReplayed(t *testing.T) {
	sw := startSwitch(t, nil)
	p := newPhone(t, sw, "alice", "udp")
	first := p.Request(sip.REGISTER, "alice")
	first.Recipient.User = ""
	chal := p.Do(first)
	auth := authorize(t, first, chal, "alice", "pw-alice", 1)

	send := func(cseq uint32, authz string) int {
		req := p.Request(sip.REGISTER, "alice")
		req.Recipient.User = ""
		req.AppendHeader(sip.NewHeader("Authorization", authz))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
		return p.Do(req).StatusCode
	}
	if code := send(2, auth); code != 200 {
		t.Fatalf("first use of the nonce: %d", code)
	}
	if code := send(3, auth); code != 401 {
		t.Fatalf("replayed credentials: got %d, want 401", code)
	}
	// The same nonce with a higher nonce-count is a legitimate reuse.
	if code := send(4, authorize(t, first, chal, "alice", "pw-alice", 2)); code != 200 {
		t.Fatalf("nonce reused with nc=2: %d", code)
	}
}

func TestExpiredNonceIsStale(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.NonceTTL = 200 * time.Millisecond })
	p := newPhone(t, sw, "alice", "udp")
	req := p.Request(sip.REGISTER, "alice")
	req.Recipient.User = ""
	chal := p.Do(req)
	time.Sleep(300 * time.Millisecond)
	again := p.Request(sip.REGISTER, "alice")
	again.Recipient.User = ""
	again.AppendHeader(sip.NewHeader("Authorization", authorize(t, req, chal, "alice", "pw-alice", 1)))
	res := p.Do(again)
	if res.StatusCode != 401 || !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "stale=true") {
		t.Fatalf("expired nonce: got %d %v, want 401 with stale=true", res.StatusCode, res.GetHeader("WWW-Authenticate"))
	}
	if v := testutil.ToFloat64(sw.metrics.authFailures.WithLabelValues("credentials")); v != 0 {
		t.Errorf("a stale nonce counted as a credential failure")
	}
}

func TestUnknownUserAndWrongPasswordLookAlike(t *testing.T) {
	sw := startSwitch(t, nil)
	shape := func(user, password string) string {
		p := newPhone(t, sw, user, "udp")
		res := register(p, password, 300)
		var params []string
		for _, h := range res.GetHeaders("WWW-Authenticate") {
			c, _ := digest.ParseChallenge(h.Value())
			params = append(params, fmt.Sprintf("%s/%v/%s", c.Algorithm, c.Stale, c.Realm))
		}
		return fmt.Sprintf("%d %s %v", res.StatusCode, res.Reason, params)
	}
	wrong, unknown := shape("alice", "not-her-password"), shape("mallory", "whatever")
	if wrong != unknown {
		t.Fatalf("wrong password answered %q, unknown user %q", wrong, unknown)
	}
	if !strings.HasPrefix(wrong, "401 ") {
		t.Fatalf("want a fresh 401 challenge, got %q", wrong)
	}
}

func TestRepeatedFailuresBlockTheSource(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.MaxFailures = 3 })
	p := newPhone(t, sw, "alice", "udp")
	for range 3 {
		register(p, "guess", 300)
	}
	if res := register(p, "pw-alice", 300); res.StatusCode != 403 {
		t.Fatalf("after 3 failures the right password got %d, want 403 while blocked", res.StatusCode)
	}
	if v := testutil.ToFloat64(sw.metrics.authFailures.WithLabelValues("blocked")); v < 1 {
		t.Errorf("blocked attempts not counted")
	}
}

func TestRegistrarExpiryRules(t *testing.T) {
	sw := startSwitch(t, nil)
	p := newPhone(t, sw, "alice", "udp")
	res := register(p, "pw-alice", 10)
	if res.StatusCode != 423 || res.GetHeader("Min-Expires") == nil || res.GetHeader("Min-Expires").Value() != "60" {
		t.Fatalf("Expires 10: got %d %v, want 423 with Min-Expires: 60", res.StatusCode, res.GetHeader("Min-Expires"))
	}
	res = register(p, "pw-alice", 99999)
	if res.StatusCode != 200 || !strings.Contains(res.GetHeader("Contact").Value(), "expires=3600") {
		t.Fatalf("Expires 99999: got %d %v, want 200 capped at 3600", res.StatusCode, res.GetHeader("Contact"))
	}
	// A second device of the same user adds a binding; the 200 lists both.
	other := newPhone(t, sw, "alice", "udp")
	res = register(other, "pw-alice", 300)
	if n := len(res.GetHeaders("Contact")); res.StatusCode != 200 || n != 2 {
		t.Fatalf("second device: %d with %d contacts, want 200 with 2", res.StatusCode, n)
	}
	// Contact: * with Expires: 0 removes them all.
	req := other.Request(sip.REGISTER, "alice")
	req.Recipient.User = ""
	req.RemoveHeader("Contact")
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Wildcard: true}})
	req.AppendHeader(sip.NewHeader("Expires", "0"))
	chal := other.Do(req)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := other.Client.DoDigestAuth(ctx, req, chal, sipgo.DigestAuth{Username: "alice", Password: "pw-alice"})
	if err != nil || res.StatusCode != 200 || res.GetHeader("Contact") != nil {
		t.Fatalf("Contact: *: %v %v, want 200 with no contact", err, res)
	}
	if bs, _ := sw.dir.Bindings(context.Background(), "alice"); len(bs) != 0 {
		t.Fatalf("bindings left after Contact: *: %+v", bs)
	}
}

func TestCallFromUDPPhoneToTCPPhone(t *testing.T) {
	sw := startSwitch(t, nil)
	callee := newPhone(t, sw, "carla", "tcp")
	if res := register(callee, "pw-carla", 300); res.StatusCode != 200 {
		t.Fatalf("TCP REGISTER: %d", res.StatusCode)
	}
	caller := newPhone(t, sw, "alice", "udp")
	// Alice (Campania) dials INPS's full number for Carla: 8300 + 201.
	res, _ := caller.Invite("8300201")
	if res.StatusCode != 200 {
		t.Fatalf("call to a TCP phone: %d %s", res.StatusCode, res.Reason)
	}
	select {
	case inv := <-callee.Invites:
		if inv.Transport() != "TCP" {
			t.Errorf("callee got the INVITE over %s, want TCP", inv.Transport())
		}
		if len(inv.GetHeaders("Record-Route")) != 2 {
			t.Errorf("UDP to TCP needs two Record-Route entries (RFC 5658), got %v", inv.GetHeaders("Record-Route"))
		}
	default:
		t.Fatal("callee saw no INVITE")
	}
	if rr := res.GetHeaders("Record-Route"); len(rr) != 2 {
		t.Errorf("caller sees Record-Route %v, want 2 entries", rr)
	}
}

func TestMaxForwardsAndLoop(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	p := newPhone(t, sw, "alice", "udp")
	req := p.Request(sip.INVITE, "bob")
	mf := sip.MaxForwardsHeader(0)
	req.AppendHeader(&mf)
	if res := p.Do(req); res.StatusCode != 483 {
		t.Fatalf("Max-Forwards 0: got %d, want 483", res.StatusCode)
	}
}

func TestOptionsKeepalive(t *testing.T) {
	sw := startSwitch(t, nil)
	p := newPhone(t, sw, "alice", "udp")
	if res := p.Do(p.Request(sip.OPTIONS, "")); res.StatusCode != 200 {
		t.Fatalf("OPTIONS to the switch: %d", res.StatusCode)
	}
}

func TestMalformedMessagesAreCountedNotFatal(t *testing.T) {
	sw := startSwitch(t, nil)
	conn, err := net.Dial("udp", sw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	garbage := []string{
		"NOT SIP AT ALL\r\n\r\n",
		"INVITE sip:bob@x SIP/2.0\r\nVia: broken\r\n\r\n",
		"INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nCSeq: 1 INVITE\r\nCall-ID: x\r\nContent-Length: 99999\r\n\r\n",
		"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKy\r\nCSeq: 1 REGISTER\r\nCall-ID: y\r\n\r\n",
		string([]byte{0xff, 0xfe, 0, 1, 2, 3}),
	}
	for range 50 {
		for _, g := range garbage {
			conn.Write([]byte(g))
		}
	}
	time.Sleep(300 * time.Millisecond)
	p := newPhone(t, sw, "alice", "udp")
	if res := p.Do(p.Request(sip.OPTIONS, "")); res.StatusCode != 200 {
		t.Fatalf("switch does not answer after garbage: %d", res.StatusCode)
	}
	if v := testutil.CollectAndCount(sw.metrics.malformed); v == 0 {
		t.Fatal("malformed messages not counted")
	}
}

func TestClientThatCannotAnswerTwoChallengesGetsMD5Alone(t *testing.T) {
	sw := startSwitch(t, nil)
	p := newPhone(t, sw, "alice", "udp")
	req := p.Request(sip.REGISTER, "alice")
	req.Recipient.User = ""
	cid := sip.CallIDHeader("legacy-phone-1")
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
	if n := len(p.Do(req).GetHeaders("WWW-Authenticate")); n != 2 {
		t.Fatalf("first challenge has %d algorithms, want 2", n)
	}
	// The phone gave up on that and registers again, still without credentials.
	again := req.Clone()
	again.RemoveHeader("Via")
	again.CSeq().SeqNo = 2
	res := p.Do(again)
	chals := res.GetHeaders("WWW-Authenticate")
	if len(chals) != 1 || !strings.Contains(chals[0].Value(), "algorithm=MD5") {
		t.Fatalf("retry got %v, want a single MD5 challenge", chals)
	}
	if res := register(p, "pw-alice", 300); res.StatusCode != 200 {
		t.Fatalf("legacy phone cannot register with MD5: %d", res.StatusCode)
	}
}

func TestCallEvents(t *testing.T) {
	sw := startSwitch(t, nil)
	callee := newPhone(t, sw, "carla", "udp")
	register(callee, "pw-carla", 300)
	reg := sw.nextEvent(t, modules.KindRegistered).(modules.Registered)
	if reg.User != "carla" || reg.Agency != "inps" || reg.Transport != "udp" {
		t.Errorf("Registered event: %+v", reg)
	}
	caller := newPhone(t, sw, "alice", "udp")
	res, inv := caller.Invite("8300201")
	if res.StatusCode != 200 {
		t.Fatalf("call: %d", res.StatusCode)
	}
	offered := sw.nextEvent(t, modules.KindCallOffered).(modules.CallOffered)
	if offered.SourceAgency != "r_campan" || offered.DestAgency != "inps" || offered.Callee != "8300201" || !offered.Caller.InDirectory || offered.Public {
		t.Errorf("CallOffered: %+v", offered)
	}
	if ev := sw.nextEvent(t, modules.KindCallRinging).(modules.CallRinging); ev.Code != 180 {
		t.Errorf("CallRinging code %d", ev.Code)
	}
	if ev := sw.nextEvent(t, modules.KindCallAnswered).(modules.CallAnswered); ev.User != "carla" {
		t.Errorf("CallAnswered by %q, want carla", ev.User)
	}
	caller.Ack(inv, res)
	time.Sleep(50 * time.Millisecond)
	if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
		t.Fatalf("BYE: %d", bye.StatusCode)
	}
	ended := sw.nextEvent(t, modules.KindCallEnded).(modules.CallEnded)
	if ended.Disposition != modules.DispositionAnswered || ended.HangupBy != modules.SideCaller || ended.Talk <= 0 || ended.CallID != offered.CallID {
		t.Errorf("CallEnded: %+v", ended)
	}
	if sw.ActiveCalls() != 0 {
		t.Errorf("active calls after BYE: %d", sw.ActiveCalls())
	}
	// A call to nobody ends at once, rejected.
	if res, _ := caller.Invite("8300999"); res.StatusCode != 404 {
		t.Fatalf("unknown number: %d", res.StatusCode)
	}
	if ev := sw.nextEvent(t, modules.KindCallEnded).(modules.CallEnded); ev.Disposition != modules.DispositionRejected || ev.Code != 404 {
		t.Errorf("CallEnded of a 404: %+v", ev)
	}
}

func TestFloodingSourceIsCutOff(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.FloodRate = 20 })
	conn, err := net.Dial("udp", sw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 500 {
		fmt.Fprintf(conn, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKflood%d\r\nFrom: <sip:x@x>;tag=1\r\nTo: <sip:x@x>\r\nCall-ID: flood-%d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
			sw.addr, conn.LocalAddr(), i, i)
	}
	time.Sleep(200 * time.Millisecond)
	dropped := testutil.ToFloat64(sw.metrics.flooded)
	if dropped < 400 {
		t.Fatalf("%v of 500 messages dropped at 20/s with a burst of 40, want most of them", dropped)
	}
	answered := testutil.ToFloat64(sw.metrics.responses.WithLabelValues("OPTIONS", "200"))
	if answered < 20 || answered > 100 {
		t.Errorf("%v OPTIONS answered, want about the burst (40)", answered)
	}
}

// Past proxy.max_call_rate new calls are answered 503 with Retry-After at
// once, before any other work; capacity comes back as the second goes on.
func TestCallsPastTheCallRateAreShed(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} { // at the socket, or in the proxy
		t.Run(transport, func(t *testing.T) { testCallsPastTheCallRateAreShed(t, transport) })
	}
}

func testCallsPastTheCallRateAreShed(t *testing.T, transport string) {
	sw := startSwitch(t, func(c *Config) { c.MaxCallRate = 5 })
	caller := newPhone(t, sw, "carla", transport)
	codes := map[int]int{}
	for range 10 {
		res := caller.Do(caller.Request(sip.INVITE, "8300999"))
		codes[res.StatusCode]++
		if res.StatusCode == 503 && res.GetHeader("Retry-After") == nil {
			t.Error("503 without Retry-After")
		}
	}
	// A burst of one second's worth (5), plus what refilled meanwhile.
	if codes[407] < 5 || codes[407] > 6 || codes[407]+codes[503] != 10 {
		t.Fatalf("10 INVITEs at once with a cap of 5/s: %v, want 5 challenged (407) and the rest 503", codes)
	}
	if shed := testutil.ToFloat64(sw.metrics.overloaded.WithLabelValues("call_rate")); shed != float64(codes[503]) {
		t.Errorf("centralino_sip_overload_shed_total{reason=call_rate} = %v, want %d", shed, codes[503])
	}
	time.Sleep(400 * time.Millisecond) // two calls' worth
	if res := caller.Do(caller.Request(sip.INVITE, "8300999")); res.StatusCode != 407 {
		t.Errorf("after 400 ms at 5/s: %d, want a call taken again (407)", res.StatusCode)
	}
}

func TestRingTimeoutWithASilentPhone(t *testing.T) {
	sw := startSwitch(t, func(c *Config) { c.RingTimeout = 500 * time.Millisecond })
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	err = sw.dir.PutBinding(context.Background(), directory.Binding{AOR: "dario", Contact: "sip:dario@" + silent.LocalAddr().String(),
		Source: silent.LocalAddr().String(), Transport: "udp", Expires: time.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	caller := newPhone(t, sw, "carla", "udp")
	start := time.Now()
	res, _ := caller.Invite("dario")
	if res.StatusCode != 408 {
		t.Fatalf("a phone that never answers: %d, want 408", res.StatusCode)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("408 came after %v; the ring timeout is 500ms", d)
	}
}

func TestLargeInviteReachesAUDPPhone(t *testing.T) {
	sw := startSwitch(t, nil)
	callee := newPhone(t, sw, "carla", "udp")
	register(callee, "pw-carla", 300)
	caller := newPhone(t, sw, "alice", "tcp")
	req := caller.Request(sip.INVITE, "8300201")
	// An offer with video and several SRTP keys: well over 1300 bytes.
	req.SetBody([]byte(string(caller.SDP()) + strings.Repeat("a=x-filler:"+strings.Repeat("k", 70)+"\r\n", 30)))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	if res := caller.DoAuth(req); res.StatusCode != 200 {
		t.Fatalf("a %d-byte INVITE to a UDP phone: %d %s", len(req.String()), res.StatusCode, res.Reason)
	}
}

// A retransmitted REGISTER over UDP gets the answer the first copy got, as
// from a server transaction: the same challenge, and a 200 (not a 500 for an
// out-of-order CSeq, nor a 401 for a reused nonce) that registers once.
func TestRegisterRetransmissionGetsTheSameAnswer(t *testing.T) {
	sw := startSwitch(t, nil)
	conn, err := net.Dial("udp", sw.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	exchange := func(text string) []byte {
		t.Helper()
		var got []byte
		for range 2 {
			if _, err := conn.Write([]byte(text)); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 4096)
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got != nil && !bytes.Equal(got, buf[:n]) {
				t.Fatalf("retransmission answered differently:\n%s\nthen\n%s", got, buf[:n])
			}
			got = buf[:n]
		}
		return got
	}
	request := func(branch string, cseq int, extra string) string {
		return fmt.Sprintf("REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n"+
			"From: <sip:alice@%s>;tag=r1\r\nTo: <sip:alice@%s>\r\nCall-ID: retrans-1\r\nCSeq: %d REGISTER\r\n"+
			"Contact: <sip:alice@%s>\r\nExpires: 300\r\n%sContent-Length: 0\r\n\r\n",
			testRealm, local, branch, testRealm, testRealm, cseq, local, extra)
	}
	first := request("a1", 1, "")
	msg, err := sip.ParseMessage(exchange(first))
	if err != nil {
		t.Fatal(err)
	}
	chal := msg.(*sip.Response)
	if chal.StatusCode != 401 {
		t.Fatalf("first REGISTER: %d", chal.StatusCode)
	}
	req, err := sip.ParseMessage([]byte(first))
	if err != nil {
		t.Fatal(err)
	}
	authz := "Authorization: " + authorize(t, req.(*sip.Request), chal, "alice", "pw-alice", 1) + "\r\n"
	msg, err = sip.ParseMessage(exchange(request("a2", 2, authz)))
	if err != nil {
		t.Fatal(err)
	}
	if res := msg.(*sip.Response); res.StatusCode != 200 || len(res.GetHeaders("Contact")) != 1 {
		t.Fatalf("authenticated REGISTER and its retransmission: %d with %d contacts", res.StatusCode, len(res.GetHeaders("Contact")))
	}
	sw.nextEvent(t, modules.KindRegistered)
	select {
	case ev := <-sw.events:
		t.Fatalf("one registration published twice: %v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	if v := testutil.ToFloat64(sw.metrics.authFailures.WithLabelValues("nonce")); v != 0 {
		t.Fatalf("the retransmission counted as %v nonce failures", v)
	}
}

// Where each peer reaches the switch, by transport and by the family of the
// peer's address: a specific listener serves its family, a wildcard both
// (with the host advertised for the family), a host name both.
func TestLocalAddressPerFamily(t *testing.T) {
	for _, tt := range []struct {
		name      string
		cfg       Config
		tp, dest  string
		wantHost  string
		wantPort  int
		wantHosts int
	}{
		{"IPv4 peer, two listeners", Config{Listeners: []Listener{{"udp", "127.0.0.1:5060", nil}, {"udp", "[::1]:5062", nil}}}, "udp", "127.0.0.1:7000", "127.0.0.1", 5060, 2},
		{"IPv6 peer, two listeners", Config{Listeners: []Listener{{"udp", "127.0.0.1:5060", nil}, {"udp", "[::1]:5062", nil}}}, "UDP", "[::1]:7000", "::1", 5062, 2},
		{"IPv6 peer, IPv4 listener only", Config{Listeners: []Listener{{"tcp", "127.0.0.1:5060", nil}}}, "tcp", "[::1]:7000", "127.0.0.1", 5060, 1},
		{"wildcard, IPv6 advertised", Config{Advertise: "198.51.100.7", AdvertiseIPv6: "2001:db8::7", Listeners: []Listener{{"udp", "0.0.0.0:5060", nil}}}, "udp", "[2001:db8::1]:5060", "2001:db8::7", 5060, 2},
		{"wildcard, IPv4 peer", Config{Advertise: "198.51.100.7", AdvertiseIPv6: "2001:db8::7", Listeners: []Listener{{"udp", "[::]:5060", nil}}}, "udp", "192.0.2.1:5060", "198.51.100.7", 5060, 2},
		{"a host name for both", Config{Advertise: "sip.example.it", Listeners: []Listener{{"udp", "[::]:5060", nil}}}, "udp", "[2001:db8::1]:5060", "sip.example.it", 5060, 1},
		{"an IPv6 advertise alone", Config{Advertise: "2001:db8::7", Listeners: []Listener{{"udp", "[::]:5060", nil}}}, "udp", "[2001:db8::1]:5060", "2001:db8::7", 5060, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := &Switch{}
			if err := s.setLocals(tt.cfg); err != nil {
				t.Fatal(err)
			}
			if l := s.local(tt.tp, tt.dest); l.host != tt.wantHost || l.port != tt.wantPort {
				t.Errorf("local(%s, %s) = %+v, want %s port %d", tt.tp, tt.dest, l, tt.wantHost, tt.wantPort)
			}
			if len(s.hosts) != tt.wantHosts {
				t.Errorf("hosts = %v, want %d", s.hosts, tt.wantHosts)
			}
			host := tt.wantHost
			if strings.Contains(host, ":") {
				host = "[" + host + "]" // as sipgo keeps a URI's host
			}
			if !s.isUs(sip.Uri{Host: host, Port: tt.wantPort}) {
				t.Errorf("%s is not recognised as the switch", host)
			}
		})
	}
}
