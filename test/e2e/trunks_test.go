package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/test/freeport"
	"github.com/lineamica/centralino/test/sipua"
)

// gateway is a trunk's peer on its own loopback address (127.0.0.x), as a
// PSTN gateway or a central body's PBX would be: it answers OPTIONS unless
// told not to, answers INVITEs with a chosen status, acts as a registrar
// with digest auth, and places calls to the switch.
type gateway struct {
	addr   string // host:port
	client *sipgo.Client
	t      *testing.T

	mu         sync.Mutex
	silent     bool // OPTIONS get no answer
	inviteCode int  // the answer to INVITEs; 0: none at all
	invites    []*sip.Request
	registers  []*sip.Request // with credentials that check out
	// password of the account "centralino": when set, the gateway
	// challenges REGISTERs and INVITEs.
	password string
}

func startGateway(t *testing.T, host string) *gateway {
	t.Helper()
	port := freeport.Port(t)
	g := &gateway{addr: fmt.Sprintf("%s:%d", host, port), inviteCode: 200, t: t}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("gateway-" + host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		g.mu.Lock()
		silent := g.silent
		g.mu.Unlock()
		if !silent {
			tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		}
	})
	srv.OnInvite(g.invite)
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnRegister(g.register)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ready := make(chan struct{})
	go srv.ListenAndServe(context.WithValue(ctx, sipgo.ListenReadyCtxKey, sipgo.ListenReadyCtxValue(ready)), "udp", g.addr)
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatalf("gateway %s not listening", g.addr)
	}
	if g.client, err = sipgo.NewClient(ua, sipgo.WithClientAddr(g.addr), sipgo.WithClientConnectionAddr(g.addr)); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *gateway) invite(req *sip.Request, tx sip.ServerTransaction) {
	g.mu.Lock()
	g.invites = append(g.invites, req)
	code, auth := g.inviteCode, g.password != ""
	g.mu.Unlock()
	if auth && g.challenge(req, tx, 407, "Proxy-Authorization") {
		return
	}
	switch code {
	case 0:
		return // a gateway that has hung
	case 200:
		tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		sdp := "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(sdp))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		host, port, _ := sip.ParseAddr(g.addr)
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "gw", Host: host, Port: port}})
		tx.Respond(res)
	default:
		tx.Respond(sip.NewResponseFromRequest(req, code, "Service Unavailable", nil))
	}
}

// challenge answers req with a digest challenge for the gateway's one
// account, centralino/g.password, unless it carries credentials of that
// account in header; it reports whether it did.
func (g *gateway) challenge(req *sip.Request, tx sip.ServerTransaction, code int, header string) bool {
	g.mu.Lock()
	password := g.password
	g.mu.Unlock()
	chal := &digest.Challenge{Realm: "gw.example", Nonce: sip.GenerateTagN(16), Algorithm: "MD5", QOP: []string{"auth"}}
	if h := req.GetHeader(header); h != nil {
		cred, err := digest.ParseCredentials(h.Value())
		if err == nil {
			chal.Nonce, chal.Realm = cred.Nonce, cred.Realm
			want, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: cred.URI, Username: "centralino",
				Password: password, Cnonce: cred.Cnonce, Count: cred.Nc})
			if err == nil && cred.Username == "centralino" && want.Response == cred.Response {
				return false
			}
		}
		tx.Respond(sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
		return true
	}
	res := sip.NewResponseFromRequest(req, code, "Unauthorized", nil)
	name := "WWW-Authenticate"
	if code == 407 {
		name = "Proxy-Authenticate"
	}
	res.AppendHeader(sip.NewHeader(name, chal.String()))
	tx.Respond(res)
	return true
}

// register is a registrar that grants two seconds, so that refreshes come
// quickly.
func (g *gateway) register(req *sip.Request, tx sip.ServerTransaction) {
	if g.challenge(req, tx, 401, "Authorization") {
		return
	}
	g.mu.Lock()
	g.registers = append(g.registers, req)
	g.mu.Unlock()
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	c := req.Contact().Clone()
	c.Params = sip.NewParams()
	c.Params.Add("expires", "2")
	if exp := req.GetHeader("Expires"); exp != nil && exp.Value() == "0" {
		c.Params.Add("expires", "0")
	}
	res.AppendHeader(c)
	tx.Respond(res)
}

func (g *gateway) set(f func(g *gateway)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *gateway) invitesFor(number string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, r := range g.invites {
		if r.Recipient.User == number {
			n++
		}
	}
	return n
}

// call sends an INVITE from the gateway to the switch at sw for number,
// answering a challenge with user/password when given.
func (g *gateway) call(sw, number, user, password string) *sip.Response {
	g.t.Helper()
	host, port, _ := sip.ParseAddr(sw)
	return g.callURI(sw, sip.Uri{Scheme: "sip", User: number, Host: host, Port: port}, number, user, password)
}

// callURI sends an INVITE for the number in To to the Request-URI ruri.
func (g *gateway) callURI(sw string, ruri sip.Uri, number, user, password string) *sip.Response {
	g.t.Helper()
	req := sip.NewRequest(sip.INVITE, ruri)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: number, Host: "lineamica.gov.it"}, Params: sip.NewParams()})
	// A caller of its own per gateway: the tickets of one caller would be linked.
	gh, gp, _ := sip.ParseAddr(g.addr)
	caller := "+39333123" + strings.ReplaceAll(gh, ".", "")
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: caller, Host: "pstn.example"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "gw", Host: gh, Port: gp}})
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte("v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40002 RTP/AVP 0\r\n"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := g.client.Do(ctx, req)
	if err == nil && res.StatusCode == 407 && user != "" {
		res, err = g.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: user, Password: password})
	}
	if err != nil {
		g.t.Fatalf("INVITE from %s: %v", g.addr, err)
	}
	if res.IsSuccess() {
		// Answered: acknowledge and hang up at once, along the route set.
		inDialog := func(method sip.RequestMethod, cseq uint32) *sip.Request {
			r := sip.NewRequest(method, res.Contact().Address)
			for _, h := range res.GetHeaders("Record-Route") {
				r.PrependHeader(&sip.RouteHeader{Address: h.(*sip.RecordRouteHeader).Address})
			}
			r.AppendHeader(sip.HeaderClone(req.From()))
			r.AppendHeader(sip.HeaderClone(res.To()))
			r.AppendHeader(sip.HeaderClone(req.CallID()))
			r.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
			r.SetDestination(sw)
			return r
		}
		if err := g.client.WriteRequest(inDialog(sip.ACK, req.CSeq().SeqNo)); err != nil {
			g.t.Fatalf("ACK: %v", err)
		}
		if bye, err := g.client.Do(ctx, inDialog(sip.BYE, req.CSeq().SeqNo+1)); err != nil || bye.StatusCode != 200 {
			g.t.Errorf("BYE from %s: %v %v", g.addr, bye, err)
		}
	}
	return res
}

func peerOf(g *gateway, name string, priority int) routing.Peer {
	host, port, _ := sip.ParseAddr(g.addr)
	return routing.Peer{Name: name, Host: host, Port: port, Priority: priority}
}

// trunkAPI is GET /api/trunks.
type trunkAPI []struct {
	Name  string `json:"name"`
	Peers []struct {
		Name           string  `json:"name"`
		Up             bool    `json:"up"`
		LatencySeconds float64 `json:"latency_seconds"`
		Registration   *struct {
			Up bool `json:"up"`
		} `json:"registration"`
	} `json:"peers"`
}

func (n *node) trunks(t *testing.T) trunkAPI {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr + "/api/trunks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out trunkAPI
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func (a trunkAPI) peerUp(trunk, peer string) (up, found bool) {
	for _, tr := range a {
		for _, p := range tr.Peers {
			if tr.Name == trunk && p.Name == peer {
				return p.Up, true
			}
		}
	}
	return false, false
}

// callOut places a call from a phone of the directory and hangs up at once
// when it is answered; it returns the final status.
func callOut(t *testing.T, p *sipua.Phone, number string) int {
	t.Helper()
	res, inv := p.Invite(number)
	if res.StatusCode == 200 {
		p.Ack(inv, res)
		if bye := p.Bye(inv, res); bye.StatusCode != 200 {
			t.Errorf("BYE of the call to %s: %d", number, bye.StatusCode)
		}
	}
	return res.StatusCode
}

// Calls to the PSTN go to the priority-1 gateway; when it answers 503, or not
// at all, the same call goes on to the priority-2 gateway; when it stops
// answering OPTIONS it is marked down and skipped, until it answers again.
func TestTrunkFailover(t *testing.T) {
	gw1, gw2 := startGateway(t, "127.0.0.2"), startGateway(t, "127.0.0.3")
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		c.Trunks = []routing.Trunk{{
			Name: "pstn", Prefixes: []string{"0"},
			Peers:        []routing.Peer{peerOf(gw2, "gw2", 2), peerOf(gw1, "gw1", 1)},
			Probe:        routing.Probe{Interval: 200 * time.Millisecond, Failures: 2, Successes: 2},
			ReplyTimeout: time.Second,
		}}
	}})
	caller := phone(t, n, "campania.esposito", "udp")

	// Both gateways answer; the priority-1 one takes the call.
	if code := callOut(t, caller, "0811111111"); code != 200 {
		t.Fatalf("call to the PSTN: %d", code)
	}
	if gw1.invitesFor("0811111111") != 1 || gw2.invitesFor("0811111111") != 0 {
		t.Fatalf("the call did not go to gw1 alone: gw1 %d, gw2 %d", gw1.invitesFor("0811111111"), gw2.invitesFor("0811111111"))
	}
	waitFor(t, 3*time.Second, "a probe latency for gw1", func() bool {
		for _, tr := range n.trunks(t) {
			for _, p := range tr.Peers {
				if p.Name == "gw1" && p.LatencySeconds > 0 {
					return true
				}
			}
		}
		return false
	})

	// gw1 is out of service: the same call fails over to gw2.
	gw1.set(func(g *gateway) { g.inviteCode = 503 })
	if code := callOut(t, caller, "0812222222"); code != 200 {
		t.Fatalf("call failing over after a 503: %d, want the 200 of gw2", code)
	}
	if gw1.invitesFor("0812222222") != 1 || gw2.invitesFor("0812222222") != 1 {
		t.Fatalf("503 failover: gw1 %d, gw2 %d INVITEs", gw1.invitesFor("0812222222"), gw2.invitesFor("0812222222"))
	}

	// gw1 hangs: no answer at all within the reply timeout, and gw2 takes the call.
	gw1.set(func(g *gateway) { g.inviteCode = 0 })
	if code := callOut(t, caller, "0813333333"); code != 200 {
		t.Fatalf("call failing over after no answer: %d", code)
	}
	if gw2.invitesFor("0813333333") != 1 {
		t.Fatal("no answer from gw1: the call did not reach gw2")
	}
	for outcome, want := range map[string]float64{"answered": 1, "failed": 1, "timeout": 1} {
		sample := fmt.Sprintf(`centralino_trunk_calls_total{outcome=%q,peer="gw1",trunk="pstn"}`, outcome)
		if v := n.metric(t, sample); v != want {
			t.Errorf("%s = %v, want %v", sample, v, want)
		}
	}
	if v := n.metric(t, `centralino_trunk_calls_total{outcome="answered",peer="gw2",trunk="pstn"}`); v != 2 {
		t.Errorf("calls answered by gw2 = %v, want 2", v)
	}

	// gw1 stops answering OPTIONS: down in the metrics and the API, and skipped.
	gw1.set(func(g *gateway) { g.silent, g.inviteCode = true, 200 })
	waitFor(t, 5*time.Second, "gw1 down", func() bool {
		return n.metric(t, `centralino_trunk_peer_up{peer="gw1",trunk="pstn"}`) == 0
	})
	if up, found := n.trunks(t).peerUp("pstn", "gw1"); up || !found {
		t.Errorf("API: gw1 up=%v found=%v, want listed and down", up, found)
	}
	if code := callOut(t, caller, "0814444444"); code != 200 {
		t.Fatalf("call with gw1 down: %d", code)
	}
	if gw1.invitesFor("0814444444") != 0 || gw2.invitesFor("0814444444") != 1 {
		t.Fatalf("gw1 down was not skipped: gw1 %d, gw2 %d", gw1.invitesFor("0814444444"), gw2.invitesFor("0814444444"))
	}
	if !strings.Contains(n.logs.String(), "trunk peer down") {
		t.Error("the peer going down was not logged")
	}

	// It answers again: back up, and back to taking the calls.
	gw1.set(func(g *gateway) { g.silent = false })
	waitFor(t, 5*time.Second, "gw1 up again", func() bool {
		up, _ := n.trunks(t).peerUp("pstn", "gw1")
		return up && n.metric(t, `centralino_trunk_peer_up{peer="gw1",trunk="pstn"}`) == 1
	})
	if code := callOut(t, caller, "0815555555"); code != 200 || gw1.invitesFor("0815555555") != 1 {
		t.Fatalf("call with gw1 back up: %d, gw1 %d INVITEs", code, gw1.invitesFor("0815555555"))
	}
}

// Calls from a trunk trusted by address come in without a challenge and are
// marked with the trunk's name; from any other address they are challenged;
// a trunk trusted by digest answers the challenge with its own account.
func TestTrunkInbound(t *testing.T) {
	gw := startGateway(t, "127.0.0.2")
	pbx := startGateway(t, "127.0.0.5")
	stranger := startGateway(t, "127.0.0.4")
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		c.Trunks = []routing.Trunk{
			{Name: "pstn-napoli", Prefixes: []string{"0"}, Peers: []routing.Peer{peerOf(gw, "gw", 1)}},
			{Name: "inps-pbx", Peers: []routing.Peer{peerOf(pbx, "pbx", 1)},
				Inbound: routing.Inbound{Trust: routing.TrustDigest, Username: "inps-pbx", Password: "pbx-secret"}},
		}
		c.Modules = []modules.Config{{Name: "ticketing", Options: map[string]any{
			"regions": map[string]any{"r_campan": "CAM"}, "only_trunks": true}}}
	}})
	operator := phone(t, n, "campania.deluca", "udp")
	mustRegister(t, operator)

	if res := gw.call(n.sipAddr(), "8100000", "", ""); res.StatusCode != 200 {
		t.Fatalf("call from the trusted gateway: %d %s, want 200 without a challenge", res.StatusCode, res.Reason)
	}
	if res := stranger.call(n.sipAddr(), "8100000", "", ""); res.StatusCode != 407 {
		t.Fatalf("call from an address of no trunk: %d, want 407", res.StatusCode)
	}
	if res := pbx.call(n.sipAddr(), "8100000", "", ""); res.StatusCode != 407 {
		t.Fatalf("call from the digest trunk without credentials: %d, want 407", res.StatusCode)
	}
	if res := pbx.call(n.sipAddr(), "8100000", "inps-pbx", "wrong"); res.StatusCode != 407 {
		t.Fatalf("call from the digest trunk with a wrong password: %d, want 407", res.StatusCode)
	}
	if res := pbx.call(n.sipAddr(), "8100000", "inps-pbx", "pbx-secret"); res.StatusCode != 200 {
		t.Fatalf("call from the digest trunk with its account: %d %s", res.StatusCode, res.Reason)
	}
	// A trunk's call never leaves through a trunk: no transit between gateways.
	if res := gw.call(n.sipAddr(), "0811234567", "", ""); res.StatusCode != 404 {
		t.Fatalf("call from a trunk to a trunk's number: %d, want 404", res.StatusCode)
	}

	// The tickets of the two trunk calls name their trunks.
	var list struct {
		Tickets []struct {
			Caller struct {
				Trunk string `json:"trunk"`
			} `json:"caller"`
		} `json:"tickets"`
	}
	waitFor(t, 5*time.Second, "two tickets", func() bool {
		req, _ := http.NewRequest("GET", "http://"+n.HTTPAddr+"/api/ticketing/tickets?agency=r_campan", nil)
		req.Header.Set("X-Agency", "r_campan")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		list.Tickets = nil
		json.NewDecoder(resp.Body).Decode(&list)
		return len(list.Tickets) == 2
	})
	trunks := map[string]bool{}
	for _, tk := range list.Tickets {
		trunks[tk.Caller.Trunk] = true
	}
	if !trunks["pstn-napoli"] || !trunks["inps-pbx"] {
		t.Errorf("tickets' trunks: %v, want pstn-napoli and inps-pbx", trunks)
	}
}

// The switch registers with a peer that needs it, answering the registrar's
// challenge, and refreshes the registration before it expires.
func TestTrunkRegistration(t *testing.T) {
	reg := startGateway(t, "127.0.0.6")
	reg.set(func(g *gateway) { g.password = "reg-secret" })
	bad := startGateway(t, "127.0.0.7")
	bad.set(func(g *gateway) { g.password = "another" })
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		good, wrong := peerOf(reg, "registrar", 1), peerOf(bad, "wrong-password", 2)
		good.Register, wrong.Register = true, true // calls go to the registrar, priority 1
		c.Trunks = []routing.Trunk{{
			Name: "voip", Prefixes: []string{"00"}, Peers: []routing.Peer{good, wrong},
			Outbound: routing.Outbound{Username: "centralino", Password: "reg-secret", Expires: time.Minute},
			Probe:    routing.Probe{Interval: time.Second},
		}}
	}})
	waitFor(t, 8*time.Second, "a refreshed registration", func() bool {
		reg.mu.Lock()
		defer reg.mu.Unlock()
		return len(reg.registers) >= 2
	})
	if v := n.metric(t, `centralino_trunk_registration_up{peer="registrar",trunk="voip"}`); v != 1 {
		t.Errorf("registration_up of the registrar = %v, want 1", v)
	}
	waitFor(t, 5*time.Second, "the failed registration counted", func() bool {
		return n.metric(t, `centralino_trunk_registration_failures_total{peer="wrong-password",trunk="voip"}`) >= 1
	})
	if v := n.metric(t, `centralino_trunk_registration_up{peer="wrong-password",trunk="voip"}`); v != 0 {
		t.Errorf("registration_up with a wrong password = %v, want 0", v)
	}
	for _, tr := range n.trunks(t) {
		for _, p := range tr.Peers {
			if p.Registration == nil || p.Registration.Up != (p.Name == "registrar") {
				t.Errorf("API registration of %s: %+v", p.Name, p.Registration)
			}
		}
	}
	logs := n.logs.String()
	if !strings.Contains(logs, "trunk registered") || !strings.Contains(logs, "trunk registration failed") {
		t.Error("registration and its failure not logged")
	}
	if strings.Contains(logs, "reg-secret") {
		t.Error("the outbound password is in the log")
	}

	// The registrar challenges calls too: the switch answers with the
	// trunk's account, and the caller never sees the challenge.
	caller := phone(t, n, "campania.esposito", "udp")
	mustRegister(t, caller)
	if code := callOut(t, caller, "00491234567"); code != 200 {
		t.Fatalf("call through a peer that challenges INVITEs: %d", code)
	}
	if got := reg.invitesFor("00491234567"); got != 2 {
		t.Errorf("the peer got %d INVITEs, want the first and the authenticated one", got)
	}
	// The peer calls the contact the switch registered, with the number in To.
	host, port, _ := sip.ParseAddr(n.sipAddr())
	if res := reg.callURI(n.sipAddr(), sip.Uri{Scheme: "sip", User: "centralino", Host: host, Port: port}, "8100101", "", ""); res.StatusCode != 200 {
		t.Fatalf("call to the registered contact for campania.esposito's number: %d %s", res.StatusCode, res.Reason)
	}
	select {
	case inv := <-caller.Invites:
		if inv.From().Address.User != "+39333123127006" {
			t.Errorf("campania.esposito was called by %s", inv.From().Address.User)
		}
	case <-time.After(time.Second):
		t.Error("the call to the registered contact did not reach campania.esposito")
	}
}
