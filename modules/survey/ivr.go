package survey

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// ivr is the survey's SIP user agent: a phone of the directory, registered
// with the switch over UDP on loopback, that answers the calls the switch
// sends to the survey's number.
type ivr struct {
	m       *Survey
	prompts *prompts
	ua      *sipgo.UserAgent
	client  *sipgo.Client
	dialogs *sipgo.DialogServerCache
	conn    net.PacketConn
	host    string
	port    int

	cancel   context.CancelFunc
	sessions sync.WaitGroup
	mu       sync.Mutex
	live     map[string]*session // by Call-ID
}

// registerFor is the Expires the IVR asks for; it refreshes at two thirds.
const registerFor = 300 * time.Second

func startIVR(m *Survey, p *prompts) (*ivr, error) {
	conn, err := net.ListenPacket("udp", m.opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("survey: listen %s: %w", m.opts.Listen, err)
	}
	addr := conn.LocalAddr().(*net.UDPAddr)
	v := &ivr{m: m, prompts: p, conn: conn, host: addr.IP.String(), port: addr.Port, live: map[string]*session{}}
	fail := func(err error) (*ivr, error) {
		conn.Close()
		return nil, fmt.Errorf("survey: %w", err)
	}
	if v.ua, err = sipgo.NewUA(sipgo.WithUserAgent("Centralino-survey"), sipgo.WithUserAgentHostname(v.host)); err != nil {
		return fail(err)
	}
	srv, err := sipgo.NewServer(v.ua)
	if err != nil {
		return fail(err)
	}
	if v.client, err = sipgo.NewClient(v.ua, sipgo.WithClientHostname(v.host), sipgo.WithClientPort(v.port)); err != nil {
		return fail(err)
	}
	v.dialogs = sipgo.NewDialogServerCache(v.client, v.contact())
	srv.OnInvite(v.onInvite)
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = v.dialogs.ReadAck(req, tx) })
	srv.OnBye(v.onBye)
	srv.OnInfo(v.onInfo)
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	go func() { _ = srv.ServeUDP(conn) }()
	go v.registration(ctx)
	m.log.Info("survey IVR listening", "addr", conn.LocalAddr().String(), "user", m.opts.User)
	return v, nil
}

func (v *ivr) contact() sip.ContactHeader {
	return sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: v.m.opts.User, Host: v.host, Port: v.port}}
}

// registration keeps the IVR registered, retrying with a growing pause
// while the switch is not there yet (modules start before it listens).
func (v *ivr) registration(ctx context.Context) {
	wait := 200 * time.Millisecond
	registered := false
	for {
		err := v.register(ctx, registerFor)
		next := registerFor * 2 / 3
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if registered || wait >= 5*time.Second {
				v.m.log.Warn("survey IVR not registered", "switch", v.m.opts.Switch, "err", err)
			}
			registered, next = false, wait
			wait = min(wait*2, 30*time.Second)
		} else {
			if !registered {
				v.m.log.Info("survey IVR registered", "switch", v.m.opts.Switch, "user", v.m.opts.User)
			}
			registered, wait = true, 200*time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

func (v *ivr) register(ctx context.Context, expires time.Duration) error {
	host, port, err := sip.ParseAddr(v.m.opts.Switch)
	if err != nil {
		return err
	}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: host, Port: port})
	aor := sip.Uri{Scheme: "sip", User: v.m.opts.User, Host: host}
	from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: aor})
	c := v.contact()
	req.AppendHeader(&c)
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires.Seconds()))))
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := v.client.Do(ctx, req)
	if err == nil && (res.StatusCode == 401 || res.StatusCode == 407) {
		res, err = v.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: v.m.opts.User, Password: v.m.opts.Password})
	}
	if err != nil {
		return err
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("REGISTER: %d %s", res.StatusCode, res.Reason)
	}
	return nil
}

// ratedWait is how long an INVITE waits for the transfer event that says
// which agency it rates.
const ratedWait = 2 * time.Second

func (v *ivr) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if req.To().Params.Has("tag") {
		// A re-INVITE (a session refresh, hold): the session stays as it is.
		_ = tx.Respond(sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
		return
	}
	dlg, err := v.dialogs.ReadInvite(req, tx)
	if err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 400, "Bad Request", nil))
		return
	}
	offer, err := parseOffer(req.Body())
	if err != nil {
		v.m.log.Info("survey call refused", "call_id", req.CallID().Value(), "err", err)
		_ = dlg.Respond(488, "Not Acceptable Here", nil, sip.NewHeader("Warning", fmt.Sprintf("399 centralino-survey %q", err.Error())))
		dlg.Close()
		return
	}
	_ = dlg.Respond(100, "Trying", nil)
	r, ok := v.m.waitRated(req.CallID().Value(), ratedWait)
	if !ok {
		// Dialled directly: there is no call to rate.
		_ = dlg.Respond(403, "Forbidden", nil, sip.NewHeader("Reason", `SIP;cause=403;text="the survey follows a call"`))
		dlg.Close()
		return
	}
	if r.ticket == "" && req.GetHeader(ticketHeader) != nil {
		r.ticket = req.GetHeader(ticketHeader).Value()
	}
	s, err := newSession(v, dlg, offer, r)
	if err != nil {
		v.m.log.Warn("survey call refused", "call_id", req.CallID().Value(), "err", err)
		_ = dlg.Respond(500, "Server Internal Error", nil)
		dlg.Close()
		return
	}
	if err := dlg.Respond(200, "OK", s.answerSDP(), sip.NewHeader("Content-Type", "application/sdp")); err != nil {
		s.close()
		dlg.Close()
		return
	}
	v.mu.Lock()
	v.live[req.CallID().Value()] = s
	v.mu.Unlock()
	v.sessions.Add(1)
	go func() {
		defer v.sessions.Done()
		s.run()
		v.mu.Lock()
		delete(v.live, req.CallID().Value())
		v.mu.Unlock()
	}()
}

func (v *ivr) onBye(req *sip.Request, tx sip.ServerTransaction) {
	if err := v.dialogs.ReadBye(req, tx); err != nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
	}
}

// onInfo takes a key sent as SIP INFO (application/dtmf-relay, or
// application/dtmf with the digit alone).
func (v *ivr) onInfo(req *sip.Request, tx sip.ServerTransaction) {
	v.mu.Lock()
	s := v.live[req.CallID().Value()]
	v.mu.Unlock()
	if s == nil {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	digit, ok := infoDigit(req)
	if !ok {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 415, "Unsupported Media Type", nil))
		return
	}
	_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	s.key(digit)
}

func infoDigit(req *sip.Request) (rune, bool) {
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = strings.ToLower(strings.TrimSpace(strings.SplitN(h.Value(), ";", 2)[0]))
	}
	body := strings.TrimSpace(string(req.Body()))
	switch ct {
	case "application/dtmf-relay":
		for _, line := range strings.Split(body, "\n") {
			k, val, ok := strings.Cut(line, "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "signal") {
				return oneDigit(strings.TrimSpace(val))
			}
		}
	case "application/dtmf":
		return oneDigit(body)
	}
	return 0, false
}

func oneDigit(s string) (rune, bool) {
	if len(s) == 1 && strings.Contains("0123456789*#", s) {
		return rune(s[0]), true
	}
	return 0, false
}

// stop unregisters, ends the calls in progress and closes the UA.
func (v *ivr) stop(ctx context.Context) error {
	v.cancel()
	v.mu.Lock()
	for _, s := range v.live {
		s.hangup()
	}
	v.mu.Unlock()
	done := make(chan struct{})
	go func() { v.sessions.Wait(); close(done) }()
	var errs []error
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, errors.New("survey calls still ending"))
	}
	uctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if err := v.register(uctx, 0); err != nil {
		v.m.log.Debug("survey IVR not unregistered", "err", err)
	}
	cancel()
	errs = append(errs, v.ua.Close())
	if err := v.conn.Close(); !errors.Is(err, net.ErrClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
