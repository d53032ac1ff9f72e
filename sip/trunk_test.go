package sip

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/lineamica/centralino/routing"
)

func TestTrunkOutcome(t *testing.T) {
	for _, c := range []struct {
		code        int
		provisional bool
		cancelled   bool
		want        string
	}{
		{200, true, false, "answered"},
		{503, false, false, "failed"},
		{500, true, false, "failed"},
		{408, true, false, "timeout"},
		{0, false, false, "timeout"},    // no reply at all
		{0, true, false, "no_answer"},   // rang, then nothing
		{487, true, false, "no_answer"}, // cancelled at the ring timeout
		{487, true, true, "cancelled"},  // cancelled by the caller
		{486, true, false, "busy"},
		{404, false, false, "not_found"},
		{403, false, false, "rejected"},
	} {
		b := &branch{code: c.code, provisional: c.provisional}
		if got := trunkOutcome(b, c.cancelled); got != c.want {
			t.Errorf("code %d provisional %v cancelled %v: %s, want %s", c.code, c.provisional, c.cancelled, got, c.want)
		}
	}
}

func TestGrantedExpiry(t *testing.T) {
	contact := sip.Uri{Scheme: "sip", User: "centralino", Host: "192.0.2.1", Port: 5060}
	res := func(headers ...sip.Header) *sip.Response {
		r := sip.NewResponse(200, "OK")
		for _, h := range headers {
			r.AppendHeader(h)
		}
		return r
	}
	ours := &sip.ContactHeader{Address: contact, Params: sip.NewParams()}
	ours.Params.Add("expires", "120")
	other := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "x", Host: "192.0.2.9"}, Params: sip.NewParams()}
	other.Params.Add("expires", "30")
	for _, c := range []struct {
		name string
		res  *sip.Response
		want time.Duration
	}{
		{"our contact's expires", res(other, ours, sip.NewHeader("Expires", "60")), 120 * time.Second},
		{"Expires header", res(other, sip.NewHeader("Expires", "60")), 60 * time.Second},
		{"nothing: as asked", res(), 600 * time.Second},
		{"garbage: as asked", res(sip.NewHeader("Expires", "soon")), 600 * time.Second},
	} {
		if got := grantedExpiry(c.res, contact, 600*time.Second); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestAnswerChallenge(t *testing.T) {
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "0811234567", Host: "192.0.2.1", Port: 5070})
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 7, MethodName: sip.INVITE})
	chal := digest.Challenge{Realm: "gw", Nonce: "abc", Algorithm: "MD5", QOP: []string{"auth"}}
	res := sip.NewResponse(407, "Proxy Authentication Required")
	res.AppendHeader(sip.NewHeader("Proxy-Authenticate", chal.String()))
	if err := answerChallenge(req, res, "centralino", "secret"); err != nil {
		t.Fatal(err)
	}
	h := req.GetHeader("Proxy-Authorization")
	// The caller's CSeq: its ACK and BYE in the dialog count from it.
	if h == nil || req.CSeq().SeqNo != 7 {
		t.Fatalf("credentials %v, CSeq %d: want Proxy-Authorization and the caller's CSeq 7", h, req.CSeq().SeqNo)
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := digest.Digest(&chal, digest.Options{Method: "INVITE", URI: req.Recipient.String(), Username: "centralino", Password: "secret", Cnonce: cred.Cnonce, Count: cred.Nc})
	if cred.Response != want.Response || cred.URI != "sip:0811234567@192.0.2.1:5070" {
		t.Errorf("credentials %s do not answer the challenge", h.Value())
	}
	if err := answerChallenge(req, sip.NewResponse(401, "Unauthorized"), "a", "b"); err == nil {
		t.Error("a 401 without WWW-Authenticate was answered")
	}
}

// Calls from a trunk's peers are recognised by address; a digest trunk's
// account is found before the directory's users.
func TestTrunkInboundLookup(t *testing.T) {
	trunks := routing.NewTrunks([]routing.Trunk{
		{Name: "pstn", Peers: []routing.Peer{{Host: "192.0.2.10"}, {Host: "192.0.2.11"}}},
		{Name: "ministry", Peers: []routing.Peer{{Host: "198.51.100.1"}}, Inbound: routing.Inbound{Sources: []string{"198.51.100.0/28"}}},
		{Name: "pbx", Peers: []routing.Peer{{Host: "203.0.113.5"}}, Inbound: routing.Inbound{Trust: routing.TrustDigest, Username: "pbx", Password: "pw"},
			Outbound: routing.Outbound{Username: "centralino"}},
	})
	sw := &Switch{cfg: Config{Realm: testRealm}, log: slog.New(slog.DiscardHandler)}
	sw.trunks = newTrunkSet(sw, trunks, nil)
	for ip, want := range map[string]string{"192.0.2.11": "pstn", "198.51.100.14": "ministry", "198.51.100.16": "", "203.0.113.5": "", "127.0.0.1": ""} {
		if got := sw.trunks.byAddress(netip.MustParseAddr(ip)); got != want {
			t.Errorf("byAddress(%s) = %q, want %q", ip, got, want)
		}
	}
	// Trunks trusted by address are trusted sources: not flood-limited either.
	if !sw.trusted(netip.MustParseAddr("192.0.2.10")) || sw.trusted(netip.MustParseAddr("203.0.113.5")) {
		t.Error("trusted sources: want the pstn peer, not the digest trunk's")
	}
	u, err := sw.credentials(t.Context(), "pbx")
	if err != nil || u.Role != roleTrunk || sw.trunks.byUser("pbx") != "pbx" || sw.trunks.byUser("alice") != "" {
		t.Errorf("account of the pbx trunk: %+v, %v", u, err)
	}
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "centralino", Host: "127.0.0.1"})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "8100101", Host: "example"}})
	if got := sw.trunks.dialled(req, "pbx"); got != "8100101" {
		t.Errorf("call to the registered contact dials %q, want To's 8100101", got)
	}
	if got := sw.trunks.dialled(req, "pstn"); got != "centralino" {
		t.Errorf("a trunk that does not register dials %q, want the Request-URI's user", got)
	}
}

func TestPeerURI(t *testing.T) {
	for _, c := range []struct {
		user string
		peer routing.Peer
		want string
	}{
		{"0811234567", routing.Peer{Host: "192.0.2.1", Port: 5060, Transport: "udp"}, "sip:0811234567@192.0.2.1:5060"},
		{"", routing.Peer{Host: "gw.example.it", Port: 5061, Transport: "tls"}, "sip:gw.example.it:5061;transport=tls"},
		{"112", routing.Peer{Host: "2001:db8::1", Port: 5070, Transport: "tcp"}, "sip:112@[2001:db8::1]:5070;transport=tcp"},
	} {
		if u := peerURI(c.user, c.peer); u.String() != c.want {
			t.Errorf("peerURI(%q, %s) = %s, want %s", c.user, c.peer.Host, u.String(), c.want)
		}
	}
}
