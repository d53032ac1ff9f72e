// Package sipua is a SIP phone for tests, on sipgo: it registers with digest
// auth, places calls and answers them. It talks to a real switch over real
// sockets.
package sipua

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/lineamica/centralino/test/freeport"
)

// Phone is one user's phone. A UDP phone listens on a port of its own; a
// TCP, TLS or WebSocket phone is reached over the connection it registered
// on. TLS phones accept any server certificate (tests use self-signed ones).
type Phone struct {
	User, Password string
	Realm          string
	Transport      string // udp, tcp, tls or ws
	Switch         string // host:port of the switch
	IP             string // the phone's own address: loopback of the switch address's family
	Client         *sipgo.Client
	// Invites receives each INVITE the phone answers (it rings, then answers 200).
	Invites chan *sip.Request
	// Transferred receives the answer to each INVITE the phone placed because
	// it was referred (it accepts every REFER and calls the target at once).
	Transferred chan *sip.Response
	// TransferCalls receives the same calls with their INVITE, for the test
	// to ACK and go on in them (dropped when nobody reads).
	TransferCalls chan Call
	// Byes receives each BYE the phone gets.
	Byes chan *sip.Request
	// Acks receives each ACK the phone gets (a late offer's answer is in it).
	Acks chan *sip.Request
	// RTP is the phone's media socket, announced in every SDP it sends.
	RTP *net.UDPConn
	// Reply is the final answer to INVITEs: 0 answers (200 with SDP), -1
	// leaves them ringing (the person is away), another status rejects.
	Reply atomic.Int32

	t      testing.TB
	listen string

	mu       sync.Mutex
	answered map[string][2]sip.Message // Call-ID -> the INVITE it answered and its 200
}

// New starts a phone and stops it when the test ends.
func New(t testing.TB, switchAddr, realm, user, password, transport string) *Phone {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("sipua-"+user),
		sipgo.WithUserAgenTLSConfig(&tls.Config{InsecureSkipVerify: true}))
	if err != nil {
		t.Fatal(err)
	}
	p := &Phone{User: user, Password: password, Realm: realm, Transport: transport, Switch: switchAddr,
		Invites: make(chan *sip.Request, 8), Byes: make(chan *sip.Request, 8), Acks: make(chan *sip.Request, 8),
		Transferred: make(chan *sip.Response, 8), TransferCalls: make(chan Call, 8), t: t, IP: "127.0.0.1"}
	if host, _, _ := net.SplitHostPort(switchAddr); strings.Contains(host, ":") {
		p.IP = "::1"
	}
	if p.RTP, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(p.IP)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.RTP.Close() })
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnInvite(p.answer)
	srv.OnAck(func(req *sip.Request, _ sip.ServerTransaction) {
		select {
		case p.Acks <- req:
		default:
		}
	})
	srv.OnRefer(p.referred)
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		select {
		case p.Byes <- req:
		default:
		}
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	opts := []sipgo.ClientOption{sipgo.WithClientHostname(p.IP)}
	if transport == "udp" {
		port := freeport.Port(t)
		p.listen = net.JoinHostPort(p.IP, strconv.Itoa(port))
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan struct{})
		go srv.ListenAndServe(context.WithValue(ctx, sipgo.ListenReadyCtxKey, sipgo.ListenReadyCtxValue(ready)), "udp", p.listen)
		select {
		case <-ready:
		case <-time.After(5 * time.Second):
			t.Fatal("phone listener not ready")
		}
		t.Cleanup(cancel)
		opts = append(opts, sipgo.WithClientPort(port))
	}
	if p.Client, err = sipgo.NewClient(ua, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return p
}

func (p *Phone) answer(req *sip.Request, tx sip.ServerTransaction) {
	select {
	case p.Invites <- req:
	default:
	}
	tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
	switch reply := p.Reply.Load(); reply {
	case 0:
	case -1:
		<-tx.Done() // rings until cancelled
		return
	default:
		tx.Respond(sip.NewResponseFromRequest(req, int(reply), "Rejected", nil))
		return
	}
	time.Sleep(20 * time.Millisecond) // rings a moment, as a person would
	res := sip.NewResponseFromRequest(req, 200, "OK", p.SDP())
	res.AppendHeader(p.contact())
	res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	p.mu.Lock()
	if p.answered == nil {
		p.answered = map[string][2]sip.Message{}
	}
	p.answered[req.CallID().Value()] = [2]sip.Message{req, res}
	p.mu.Unlock()
	tx.Respond(res)
}

// SDP is the phone's session description: G.711 µ-law and telephone-event
// on its RTP socket.
func (p *Phone) SDP() []byte {
	port := p.RTP.LocalAddr().(*net.UDPAddr).Port
	return []byte(fmt.Sprintf("v=0\r\no=%s 1 1 %s\r\ns=-\r\nc=%s\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n", p.User, p.sdpAddr(), p.sdpAddr(), port))
}

// sdpAddr is the phone's address as SDP writes it (RFC 4566 §5.7).
func (p *Phone) sdpAddr() string {
	if strings.Contains(p.IP, ":") {
		return "IN IP6 " + p.IP
	}
	return "IN IP4 " + p.IP
}

func (p *Phone) port() int {
	if p.listen == "" {
		return 5060
	}
	_, port, _ := sip.ParseAddr(p.listen)
	return port
}

func (p *Phone) contact() *sip.ContactHeader {
	return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: p.User, Host: p.IP, Port: p.port()}}
}

// Request builds a request from the phone to user "to" (empty: the switch).
func (p *Phone) Request(method sip.RequestMethod, to string) *sip.Request {
	host, port, _ := sip.ParseAddr(p.Switch)
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // sipgo keeps URI hosts as written
	}
	ruri := sip.Uri{Scheme: "sip", User: to, Host: host, Port: port}
	if p.Transport != "udp" {
		ruri.UriParams = sip.NewParams()
		ruri.UriParams.Add("transport", p.Transport)
	}
	req := sip.NewRequest(method, ruri)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.User, Host: p.Realm}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: to, Host: p.Realm}, Params: sip.NewParams()})
	req.AppendHeader(p.contact())
	return req
}

// Do sends a request and returns its final response.
func (p *Phone) Do(req *sip.Request) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Client.Do(ctx, req)
	if err != nil {
		p.t.Fatalf("%s: %v", req.Method, err)
	}
	return res
}

// DoAuth sends req and answers one 401/407 challenge with the phone's password.
func (p *Phone) DoAuth(req *sip.Request) *sip.Response {
	p.t.Helper()
	res := p.Do(req)
	if res.StatusCode != 401 && res.StatusCode != 407 {
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.Client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.User, Password: p.Password})
	if err != nil {
		p.t.Fatalf("%s with auth: %v", req.Method, err)
	}
	return res
}

// Register registers the phone for expires seconds.
func (p *Phone) Register(expires int) *sip.Response {
	p.t.Helper()
	req := p.Request(sip.REGISTER, p.User)
	req.Recipient.User = ""
	req.AppendHeader(sip.NewHeader("Expires", fmt.Sprint(expires)))
	return p.DoAuth(req)
}

// Invite calls "to" and returns the final response and the INVITE sent.
func (p *Phone) Invite(to string) (*sip.Response, *sip.Request) {
	p.t.Helper()
	return p.InviteSDP(to, p.SDP())
}

// InviteSDP calls "to" offering body; nil sends no SDP (a late offer: the
// answer's SDP is the offer, and AckSDP answers it).
func (p *Phone) InviteSDP(to string, body []byte) (*sip.Response, *sip.Request) {
	p.t.Helper()
	req := p.Request(sip.INVITE, to)
	if body != nil {
		req.SetBody(body)
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	return p.DoAuth(req), req
}

// Ack acknowledges the 2xx res to the INVITE inv and returns the dialog's
// next request builder: ACK and BYE follow the route set of res (RFC 3261 §12).
func (p *Phone) Ack(inv *sip.Request, res *sip.Response) {
	p.t.Helper()
	p.AckSDP(inv, res, nil)
}

// AckSDP acknowledges like Ack, with body (the answer to a late offer) if not nil.
func (p *Phone) AckSDP(inv *sip.Request, res *sip.Response, body []byte) {
	p.t.Helper()
	ack := p.inDialog(sip.ACK, inv, res, inv.CSeq().SeqNo)
	if body != nil {
		ack.SetBody(body)
		ack.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	}
	if err := p.Client.WriteRequest(ack); err != nil {
		p.t.Fatalf("ACK: %v", err)
	}
}

// Bye ends the call set up by inv and answered by res; it returns the final response.
func (p *Phone) Bye(inv *sip.Request, res *sip.Response) *sip.Response {
	p.t.Helper()
	return p.Do(p.inDialog(sip.BYE, inv, res, inv.CSeq().SeqNo+1))
}

func (p *Phone) inDialog(method sip.RequestMethod, inv *sip.Request, res *sip.Response, cseq uint32) *sip.Request {
	target := res.Contact().Address
	req := sip.NewRequest(method, target)
	// The caller's route set is the Record-Route of the answer, reversed.
	rr := res.GetHeaders("Record-Route")
	for i := len(rr) - 1; i >= 0; i-- {
		req.AppendHeader(&sip.RouteHeader{Address: rr[i].(*sip.RecordRouteHeader).Address})
	}
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(res.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetTransport(inv.Transport())
	req.SetDestination(p.nextHop(req))
	return req
}

// nextHop is where an in-dialog request goes (RFC 3261 §12.2.1.1, loose
// routing): its first Route, the switch's Record-Route for this side.
func (p *Phone) nextHop(req *sip.Request) string {
	r := req.Route()
	if r == nil {
		return p.Switch
	}
	port := r.Address.Port
	if port == 0 {
		port = 5060
	}
	return net.JoinHostPort(strings.Trim(r.Address.Host, "[]"), strconv.Itoa(port))
}

// SDPAddr reads the connection address and audio port of an SDP body.
func SDPAddr(body []byte) (*net.UDPAddr, error) {
	var ip string
	var port int
	for _, line := range strings.Split(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(line, "c=IN IP4 "); ok {
			ip = v
		}
		if v, ok := strings.CutPrefix(line, "c=IN IP6 "); ok {
			ip = v
		}
		if v, ok := strings.CutPrefix(line, "m=audio "); ok {
			port, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	if ip == "" || port == 0 {
		return nil, fmt.Errorf("no audio address in SDP:\n%s", body)
	}
	return &net.UDPAddr{IP: net.ParseIP(ip), Port: port}, nil
}

// SendRTP sends one RTP packet from conn (the phone's RTP socket, or another
// one to play a NAT) to addr.
func SendRTP(t testing.TB, conn *net.UDPConn, to *net.UDPAddr, pt uint8, seq uint16, payload []byte) {
	t.Helper()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x1234}, Payload: payload}
	buf, err := pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(buf, to); err != nil {
		t.Fatal(err)
	}
}

// ReceiveRTP waits up to 2 s for an RTP packet on conn and returns its
// payload and where it came from.
func ReceiveRTP(t testing.TB, conn *net.UDPConn) ([]byte, *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, src, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no RTP: %v", err)
	}
	var pkt rtp.Packet
	if err := pkt.Unmarshal(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return pkt.Payload, src
}

// ReInvite sends a re-INVITE in the dialog of inv/res with the phone's SDP,
// marked with direction (sendrecv, sendonly, inactive), and returns the answer.
func (p *Phone) ReInvite(inv *sip.Request, res *sip.Response, cseq uint32, direction string) *sip.Response {
	p.t.Helper()
	req := p.inDialog(sip.INVITE, inv, res, cseq)
	req.AppendHeader(p.contact())
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(strings.Replace(string(p.SDP()), "a=sendrecv", "a="+direction, 1)))
	answer := p.Do(req)
	if answer.StatusCode == 200 {
		p.Ack(req, answer)
	}
	return answer
}

// referred accepts a REFER and calls its target, as a blind transfer asks,
// or, when the Refer-To carries a Replaces header, an attended one.
func (p *Phone) referred(req *sip.Request, tx sip.ServerTransaction) {
	tx.Respond(sip.NewResponseFromRequest(req, 202, "Accepted", nil))
	referTo := req.ReferTo().Address
	go func() {
		inv := p.Request(sip.INVITE, referTo.User)
		inv.SetBody(p.SDP())
		inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		inv.AppendHeader(sip.NewHeader("Referred-By", req.From().Address.String()))
		if replaces, ok := referTo.Headers.Get("Replaces"); ok {
			if v, err := url.QueryUnescape(replaces); err == nil {
				inv.AppendHeader(sip.NewHeader("Replaces", v))
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := p.Client.Do(ctx, inv)
		if err == nil && (res.StatusCode == 401 || res.StatusCode == 407) {
			res, err = p.Client.DoDigestAuth(ctx, inv, res, sipgo.DigestAuth{Username: p.User, Password: p.Password})
		}
		if err != nil {
			res = sip.NewResponseFromRequest(inv, 408, err.Error(), nil)
		}
		select {
		case p.TransferCalls <- Call{Invite: inv, Answer: res}:
		default:
		}
		p.Transferred <- res
	}()
}

// ReferAnswered asks the caller of a call this phone answered to call target:
// the operator's blind transfer.
func (p *Phone) ReferAnswered(callID string, target string) *sip.Response {
	p.t.Helper()
	return p.referAnswered(callID, sip.Uri{Scheme: "sip", User: target, Host: p.Realm})
}

// ReferAnsweredReplacing asks the caller of a call this phone answered to
// call target in place of the consultation call consult/consultRes this
// phone placed to it (RFC 3891 Replaces): the operator's attended transfer.
func (p *Phone) ReferAnsweredReplacing(callID string, target string, consult *sip.Request, consultRes *sip.Response) *sip.Response {
	p.t.Helper()
	uri := sip.Uri{Scheme: "sip", User: target, Host: p.Realm, Headers: sip.NewParams()}
	toTag, _ := consultRes.To().Params.Get("tag")
	fromTag, _ := consult.From().Params.Get("tag")
	replaces := consult.CallID().Value() + ";to-tag=" + toTag + ";from-tag=" + fromTag
	uri.Headers.Add("Replaces", url.QueryEscape(replaces))
	return p.referAnswered(callID, uri)
}

func (p *Phone) referAnswered(callID string, referTo sip.Uri) *sip.Response {
	p.t.Helper()
	req := p.answeredRequest(sip.REFER, callID, 1)
	req.AppendHeader(p.contact())
	req.AppendHeader(&sip.ReferToHeader{Address: referTo})
	return p.Do(req)
}

// HangUpAnswered ends a call this phone answered: the operator hangs up
// first.
func (p *Phone) HangUpAnswered(callID string) *sip.Response {
	p.t.Helper()
	return p.Do(p.answeredRequest(sip.BYE, callID, 2))
}

// answeredRequest builds a request of this phone in a call it answered.
func (p *Phone) answeredRequest(method sip.RequestMethod, callID string, cseq uint32) *sip.Request {
	p.t.Helper()
	p.mu.Lock()
	d, ok := p.answered[callID]
	p.mu.Unlock()
	if !ok {
		p.t.Fatalf("no answered call %s", callID)
	}
	inv, res := d[0].(*sip.Request), d[1].(*sip.Response)
	req := sip.NewRequest(method, inv.Contact().Address)
	for _, h := range inv.GetHeaders("Record-Route") {
		req.AppendHeader(&sip.RouteHeader{Address: h.(*sip.RecordRouteHeader).Address})
	}
	req.AppendHeader(&sip.FromHeader{Address: res.To().Address, Params: res.To().Params.Clone()})
	req.AppendHeader(&sip.ToHeader{Address: inv.From().Address, Params: inv.From().Params.Clone()})
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetTransport(inv.Transport())
	req.SetDestination(p.nextHop(req))
	return req
}

// Refer asks the other side of the call inv/res to call target (RFC 3515).
func (p *Phone) Refer(inv *sip.Request, res *sip.Response, cseq uint32, target string) *sip.Response {
	p.t.Helper()
	req := p.inDialog(sip.REFER, inv, res, cseq)
	req.AppendHeader(p.contact())
	req.AppendHeader(&sip.ReferToHeader{Address: sip.Uri{Scheme: "sip", User: target, Host: p.Realm}})
	return p.Do(req)
}

// Call is a call the phone placed: its INVITE and the final answer.
type Call struct {
	Invite *sip.Request
	Answer *sip.Response
}

// dtmfSeq numbers the RFC 4733 packets SendDTMF sends.
var dtmfSeq atomic.Uint32

// SendDTMF sends one key as RFC 4733 telephone-event packets of payload
// type pt from conn to addr: three updates, then the end of the event three
// times, all with the event's timestamp, as phones do.
func SendDTMF(t testing.TB, conn *net.UDPConn, to *net.UDPAddr, pt uint8, digit rune) {
	t.Helper()
	ev := strings.IndexRune("0123456789*#ABCD", digit)
	if ev < 0 {
		t.Fatalf("no DTMF event for %q", digit)
	}
	ts := uint32(time.Now().UnixNano() / 125000) // 8 kHz
	for i := range 6 {
		dur := uint16(160 * (min(i, 3) + 1))
		flags := byte(10) // volume -10 dBm0
		if i >= 3 {
			flags |= 0x80 // end
		}
		seq := uint16(dtmfSeq.Add(1))
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: 0x1234, Marker: i == 0},
			Payload: []byte{byte(ev), flags, byte(dur >> 8), byte(dur)}}
		buf, err := pkt.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDP(buf, to); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// InfoDTMF sends a key as SIP INFO (application/dtmf-relay) in the dialog
// of inv/res and returns the answer.
func (p *Phone) InfoDTMF(inv *sip.Request, res *sip.Response, cseq uint32, digit rune) *sip.Response {
	p.t.Helper()
	req := p.inDialog(sip.INFO, inv, res, cseq)
	req.AppendHeader(sip.NewHeader("Content-Type", "application/dtmf-relay"))
	req.SetBody([]byte(fmt.Sprintf("Signal=%c\r\nDuration=160\r\n", digit)))
	return p.Do(req)
}
