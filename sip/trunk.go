package sip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

// roleTrunk marks the account a trunk authenticates with: it may call in,
// on behalf of any caller, but never register.
const roleTrunk directory.Role = "trunk"

// trunkSet is the switch's side of the trunks (docs/trunks.md): which trunk
// a request comes in on, branches to peers and failover between them,
// OPTIONS probes, outbound registrations and the per-peer metrics.
type trunkSet struct {
	s      *Switch
	state  *routing.Trunks
	byName map[string]routing.Trunk
	// sources are the addresses of trunks trusted by address.
	sources []trunkSource
	// accounts are the inbound digest accounts, by username.
	accounts map[string]trunkAccount

	peerUp      *prometheus.GaugeVec
	latency     *prometheus.HistogramVec
	calls       *prometheus.CounterVec
	regUp       *prometheus.GaugeVec
	regFailures *prometheus.CounterVec

	mu   sync.Mutex
	regs map[[2]string]RegistrationStatus // (trunk, peer) -> state

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type trunkSource struct {
	prefix netip.Prefix
	trunk  string
}

type trunkAccount struct {
	user  directory.User
	trunk string
}

// RegistrationStatus is the state of the switch's registration with a peer.
type RegistrationStatus struct {
	Up        bool      `json:"up"`
	Expires   time.Time `json:"expires,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// trunkBranch marks a branch to a trunk's peer.
type trunkBranch struct {
	trunk, peer  string
	replyTimeout time.Duration
	authed       bool // it already answered the peer's challenge
}

func newTrunkSet(s *Switch, state *routing.Trunks, reg prometheus.Registerer) *trunkSet {
	if state == nil {
		state = routing.NewTrunks(nil)
	}
	ts := &trunkSet{
		s: s, state: state, byName: map[string]routing.Trunk{}, accounts: map[string]trunkAccount{},
		regs: map[[2]string]RegistrationStatus{},
		peerUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "centralino", Subsystem: "trunk", Name: "peer_up",
			Help: "Whether a trunk's peer is up (1) or down (0) by its OPTIONS probes.",
		}, []string{"trunk", "peer"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "centralino", Subsystem: "trunk", Name: "probe_latency_seconds",
			Help:    "Round trip of the OPTIONS probes a trunk's peer answered.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"trunk", "peer"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "trunk", Name: "calls_total",
			Help: "Calls sent to a trunk's peer, by outcome: answered, busy, not_found, rejected, failed (5xx), timeout (408 or no answer at all), no_answer, cancelled.",
		}, []string{"trunk", "peer", "outcome"}),
		regUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "centralino", Subsystem: "trunk", Name: "registration_up",
			Help: "Whether the switch is registered with a trunk's peer (1) or not (0).",
		}, []string{"trunk", "peer"}),
		regFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "trunk", Name: "registration_failures_total",
			Help: "Failed registrations with a trunk's peer.",
		}, []string{"trunk", "peer"}),
	}
	if reg != nil {
		reg.MustRegister(ts.peerUp, ts.latency, ts.calls, ts.regUp, ts.regFailures)
	}
	for _, tr := range state.List() {
		ts.byName[tr.Name] = tr
		for _, p := range tr.Peers {
			ts.peerUp.WithLabelValues(tr.Name, p.Name).Set(1)
			if p.Register {
				ts.regUp.WithLabelValues(tr.Name, p.Name).Set(0)
			}
		}
		switch tr.Inbound.Trust {
		case routing.TrustDigest:
			u := directory.User{Username: tr.Inbound.Username, Role: roleTrunk}
			u.SetPassword(s.cfg.Realm, tr.Inbound.Password)
			ts.accounts[u.Username] = trunkAccount{user: u, trunk: tr.Name}
		default:
			for _, p := range ts.trustedSources(tr) {
				ts.sources = append(ts.sources, trunkSource{prefix: p, trunk: tr.Name})
			}
		}
	}
	return ts
}

// trustedSources are the addresses a trunk trusted by address calls from:
// its inbound sources, else its peers' addresses (host names resolved now).
func (ts *trunkSet) trustedSources(tr routing.Trunk) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range tr.Inbound.Sources {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		} else if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	if len(tr.Inbound.Sources) > 0 {
		return out
	}
	for _, p := range tr.Peers {
		ips := []netip.Addr{}
		if ip, err := netip.ParseAddr(p.Host); err == nil {
			ips = append(ips, ip)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			resolved, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.Host)
			cancel()
			if err != nil {
				ts.s.log.Warn("trunk peer not resolved: its calls will be challenged", "trunk", tr.Name, "peer", p.Name, "error", err)
			}
			ips = append(ips, resolved...)
		}
		for _, ip := range ips {
			ip = ip.Unmap()
			out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	return out
}

// byAddress returns the trunk trusted by address that ip belongs to.
func (ts *trunkSet) byAddress(ip netip.Addr) string {
	for _, src := range ts.sources {
		if src.prefix.Contains(ip) {
			return src.trunk
		}
	}
	return ""
}

// byUser returns the trunk whose inbound account username is.
func (ts *trunkSet) byUser(username string) string { return ts.accounts[username].trunk }

// credentials finds the digest secrets of a username: a trunk's inbound
// account, else a user of the directory.
func (s *Switch) credentials(ctx context.Context, username string) (directory.User, error) {
	if a, ok := s.trunks.accounts[username]; ok {
		return a.user, nil
	}
	return s.dir.User(ctx, username)
}

// dialled is the number a request from trunk asks for: its Request-URI's
// user, except on a call to the contact the switch registered with the
// peer, which carries the account name there and the number in To.
func (ts *trunkSet) dialled(req *sip.Request, trunk string) string {
	tr, ok := ts.byName[trunk]
	if ok && tr.Outbound.Username != "" && req.Recipient.User == tr.Outbound.Username && req.To().Address.User != "" {
		return req.To().Address.User
	}
	return req.Recipient.User
}

// branches turns a decision to leave through a trunk into one group per
// peer: tried one after another, in the order routing chose.
func (ts *trunkSet) branches(req, fwd *sip.Request, dec routing.Decision) [][]branchTarget {
	var groups [][]branchTarget
	for _, t := range dec.Targets {
		br := fwd.Clone()
		br.Recipient = peerURI(fwd.Recipient.User, t.Peer)
		if fromPhone(req) {
			fixContact(br, req.Source(), req.Transport())
		}
		tp := nextHop(br)
		ts.s.addVia(br, req, tp)
		if req.IsInvite() || req.Method == sip.SUBSCRIBE || req.Method == sip.REFER {
			ts.s.addRecordRoute(br, req, tp)
		}
		tb := &trunkBranch{trunk: t.Trunk, peer: t.Peer.Name, replyTimeout: ts.byName[t.Trunk].ReplyTimeout}
		groups = append(groups, []branchTarget{{req: br, trunk: tb}})
	}
	return groups
}

// peerURI addresses user (none: the peer itself) at a peer.
func peerURI(user string, p routing.Peer) sip.Uri {
	host := p.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // an IPv6 address
	}
	u := sip.Uri{Scheme: "sip", User: user, Host: host, Port: p.Port, UriParams: sip.NewParams()}
	if p.Transport != "udp" {
		u.UriParams.Add("transport", p.Transport)
	}
	return u
}

// watchTrunkReply gives up a branch to a peer that has not answered at all
// within the trunk's reply timeout, so that the next peer is tried at once
// rather than after the ring timeout (Kamailio's fr_timer).
func (f *forker) watchTrunkReply(b *branch) {
	if b.trunk == nil || b.trunk.replyTimeout <= 0 {
		return
	}
	time.AfterFunc(b.trunk.replyTimeout, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if b.done || b.provisional || b.dropped {
			return
		}
		b.dropped = true
		f.considerLocal(408, "Request Timeout")
		b.tx.Terminate()
	})
}

// trunkGroupEnded counts the outcome of the peer just tried and says whether
// the call may go on to the next one: only when the peer failed (5xx), timed
// out (408) or never answered at all, as Kamailio's dispatcher fails over.
// A busy callee or a number the peer refuses ends the call there. Groups of
// users always go on.
func (f *forker) trunkGroupEnded() bool {
	more := true
	for _, b := range f.live {
		if b.trunk == nil {
			continue
		}
		outcome := trunkOutcome(b, f.cancelled)
		f.s.trunks.calls.WithLabelValues(b.trunk.trunk, b.trunk.peer, outcome).Inc()
		more = more && (outcome == "timeout" || outcome == "failed")
	}
	return more
}

func trunkOutcome(b *branch, cancelled bool) string {
	switch {
	case b.code == 0 && b.provisional, b.code == 487 && !cancelled:
		return "no_answer" // rang until the ring timeout
	case b.code == 0 || b.code == 408:
		return "timeout"
	}
	return outcomeOf(b.code)
}

// trunkChallenged answers a peer's 401/407 to a branch with the trunk's
// outbound credentials (Kamailio's uac_auth): the branch goes on as a new
// transaction carrying them. It reports whether it did.
func (f *forker) trunkChallenged(b *branch, res *sip.Response) bool {
	if b.trunk == nil || b.trunk.authed || b.cancelAsked || res.StatusCode != 401 && res.StatusCode != 407 || f.cancelled || f.final != 0 {
		return false
	}
	out := f.s.trunks.byName[b.trunk.trunk].Outbound
	if out.Username == "" {
		return false
	}
	req := b.req.Clone()
	if err := answerChallenge(req, res, out.Username, out.Password); err != nil {
		f.s.log.Warn("trunk challenge not answered", "trunk", b.trunk.trunk, "peer", b.trunk.peer, "error", err)
		return false
	}
	req.RemoveHeader("Via")
	f.s.addVia(req, f.req, strings.ToLower(req.Transport()))
	tx, err := f.s.client.TransactionRequest(context.Background(), req, asIs)
	if err != nil {
		f.s.log.Warn("trunk branch not sent again", "trunk", b.trunk.trunk, "peer", b.trunk.peer, "error", err)
		return false
	}
	b.tx.Terminate()
	b.req, b.tx, b.trunk.authed, b.provisional = req, tx, true, false
	return true
}

// answerChallenge adds to req the credentials that answer the challenge of
// res. The CSeq stays: for a proxied INVITE it is the caller's, and the
// caller's ACK, BYE and re-INVITEs in the dialog count from it (Kamailio's
// uac_auth does the same unless the dialog module rewrites every later
// CSeq); the switch's own REGISTER moves it on itself.
func answerChallenge(req *sip.Request, res *sip.Response, username, password string) error {
	name, answer := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		name, answer = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := firstHeader(res, name)
	if h == nil {
		return fmt.Errorf("%d without %s", res.StatusCode, name)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return fmt.Errorf("unreadable %s: %w", name, err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	cred, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: req.Recipient.String(), Username: username, Password: password})
	if err != nil {
		return err
	}
	req.RemoveHeader(answer)
	req.AppendHeader(sip.NewHeader(answer, cred.String()))
	return nil
}

// start runs the probes and the registrations until stop.
func (ts *trunkSet) start(ctx context.Context) {
	ctx, ts.cancel = context.WithCancel(ctx)
	for _, tr := range ts.state.List() {
		for _, p := range tr.Peers {
			ts.wg.Add(1)
			go func() {
				defer ts.wg.Done()
				ts.watch(ctx, tr, p)
			}()
			if p.Register {
				ts.wg.Add(1)
				go func() {
					defer ts.wg.Done()
					ts.keepRegistered(ctx, tr, p)
				}()
			}
		}
	}
}

// stop ends the probes and removes the registrations.
func (ts *trunkSet) stop() {
	if ts.cancel != nil {
		ts.cancel()
		ts.wg.Wait()
	}
}

// watch probes a peer every interval.
func (ts *trunkSet) watch(ctx context.Context, tr routing.Trunk, p routing.Peer) {
	tick := time.NewTicker(tr.Probe.Interval)
	defer tick.Stop()
	for {
		ts.probe(ctx, tr, p)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probe sends one OPTIONS to a peer. Any answer but 408 and 5xx counts: a
// peer that refuses OPTIONS (405) or wants credentials for it is alive.
func (ts *trunkSet) probe(ctx context.Context, tr routing.Trunk, p routing.Peer) {
	pctx, cancel := context.WithTimeout(ctx, probeTimeout(tr.Probe.Interval))
	defer cancel()
	from := sip.Uri{Scheme: "sip", User: "centralino", Host: ts.s.cfg.Realm}
	req := ts.s.newRequest(sip.OPTIONS, peerURI("", p), from, peerURI("", p), sip.GenerateTagN(16), 1)
	start := time.Now()
	res, err := ts.s.do(pctx, req)
	rtt := time.Since(start)
	if ctx.Err() != nil {
		return // the switch is stopping
	}
	why := ""
	switch {
	case err != nil:
		why = "no answer"
	case res.StatusCode == 408 || res.StatusCode >= 500:
		why = strconv.Itoa(res.StatusCode) + " " + res.Reason
	default:
		ts.latency.WithLabelValues(tr.Name, p.Name).Observe(rtt.Seconds())
	}
	up, changed := ts.state.Probed(tr.Name, p.Name, why == "", rtt, why, time.Now())
	log := ts.s.log.With("trunk", tr.Name, "peer", p.Name)
	switch {
	case changed && up:
		ts.peerUp.WithLabelValues(tr.Name, p.Name).Set(1)
		log.Info("trunk peer up", "latency", rtt)
	case changed:
		ts.peerUp.WithLabelValues(tr.Name, p.Name).Set(0)
		log.Warn("trunk peer down", "reason", why)
	case why != "":
		log.Debug("trunk probe failed", "reason", why)
	}
}

// probeTimeout is how long a probe waits for its answer: the interval, but
// no less than a second (a loaded peer is not a dead one) and no more than 5 s.
func probeTimeout(interval time.Duration) time.Duration {
	return min(max(interval, time.Second), 5*time.Second)
}

// keepRegistered registers with a peer and refreshes the registration at
// three quarters of the lifetime granted; after a failure it tries again
// after a probe interval. When the switch stops it unregisters.
func (ts *trunkSet) keepRegistered(ctx context.Context, tr routing.Trunk, p routing.Peer) {
	callID := sip.GenerateTagN(24)
	var cseq uint32
	log := ts.s.log.With("trunk", tr.Name, "peer", p.Name)
	for {
		granted, err := ts.register(ctx, tr, p, callID, &cseq, tr.Outbound.Expires)
		if ctx.Err() != nil {
			break
		}
		wait := granted * 3 / 4
		ts.mu.Lock()
		was := ts.regs[[2]string{tr.Name, p.Name}]
		if err != nil {
			ts.regs[[2]string{tr.Name, p.Name}] = RegistrationStatus{LastError: err.Error()}
			ts.regUp.WithLabelValues(tr.Name, p.Name).Set(0)
			ts.regFailures.WithLabelValues(tr.Name, p.Name).Inc()
			log.Warn("trunk registration failed", "error", err)
			wait = tr.Probe.Interval
		} else {
			ts.regs[[2]string{tr.Name, p.Name}] = RegistrationStatus{Up: true, Expires: time.Now().Add(granted)}
			ts.regUp.WithLabelValues(tr.Name, p.Name).Set(1)
			if !was.Up {
				log.Info("trunk registered", "expires", granted)
			}
		}
		ts.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(max(wait, time.Second)):
			continue
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := ts.register(ctx, tr, p, callID, &cseq, 0); err != nil {
		log.Debug("trunk unregistration failed", "error", err)
	}
}

// register sends one REGISTER (expires 0: unregister), answering a
// challenge with the trunk's outbound credentials, and returns the lifetime
// the peer granted.
func (ts *trunkSet) register(ctx context.Context, tr routing.Trunk, p routing.Peer, callID string, cseq *uint32, expires time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	aor := sip.Uri{Scheme: "sip", User: tr.Outbound.Username, Host: p.Host}
	*cseq++
	req := ts.s.newRequest(sip.REGISTER, peerURI("", p), aor, aor, callID, *cseq)
	tp := strings.ToLower(p.Transport)
	l := ts.s.local(tp, req.Destination())
	contact := sip.Uri{Scheme: "sip", User: tr.Outbound.Username, Host: l.host, Port: l.port, UriParams: sip.NewParams()}
	if tp != "udp" {
		contact.UriParams.Add("transport", tp)
	}
	req.AppendHeader(&sip.ContactHeader{Address: contact})
	req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires.Seconds()))))
	res, err := ts.s.do(ctx, req)
	if err == nil && (res.StatusCode == 401 || res.StatusCode == 407) {
		req = req.Clone()
		if err := answerChallenge(req, res, tr.Outbound.Username, tr.Outbound.Password); err != nil {
			return 0, err
		}
		req.CSeq().SeqNo++ // a new request of the switch's own registration (RFC 3261 §22.2)
		*cseq = req.CSeq().SeqNo
		req.RemoveHeader("Via")
		ts.s.addVia(req, nil, tp)
		res, err = ts.s.do(ctx, req)
	}
	switch {
	case err != nil:
		return 0, fmt.Errorf("no answer: %w", err)
	case !res.IsSuccess():
		return 0, fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	return grantedExpiry(res, contact, expires), nil
}

// grantedExpiry reads the lifetime a registrar granted our contact: its
// expires parameter, else the Expires header, else what was asked.
func grantedExpiry(res *sip.Response, contact sip.Uri, asked time.Duration) time.Duration {
	for _, h := range allHeaders(res, "Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c.Address.User != contact.User || c.Address.Host != contact.Host || c.Address.Port != contact.Port {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	if h := firstHeader(res, "Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return asked
}

// newRequest builds a request of the switch's own (a probe, a
// registration), ready to send.
func (s *Switch) newRequest(method sip.RequestMethod, ruri, from, to sip.Uri, callID string, cseq uint32) *sip.Request {
	req := sip.NewRequest(method, ruri)
	fh := &sip.FromHeader{Address: from, Params: sip.NewParams()}
	fh.Params.Add("tag", sip.GenerateTagN(10))
	req.AppendHeader(fh)
	req.AppendHeader(&sip.ToHeader{Address: to, Params: sip.NewParams()})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.NewHeader("User-Agent", "Centralino"))
	req.SetBody(nil)
	s.addVia(req, nil, nextHop(req))
	return req
}

// TrunkStatus is a trunk as GET /api/trunks lists it.
type TrunkStatus struct {
	Name     string       `json:"name"`
	Prefixes []string     `json:"prefixes,omitempty"`
	Numbers  []string     `json:"numbers,omitempty"`
	Inbound  string       `json:"inbound"` // how its calls are let in: address or digest
	Peers    []PeerStatus `json:"peers"`
}

// PeerStatus is a trunk's peer with its health.
type PeerStatus struct {
	routing.Peer
	Up             bool                `json:"up"`
	LatencySeconds float64             `json:"latency_seconds"` // of the last answered probe
	LastProbe      time.Time           `json:"last_probe,omitzero"`
	Failures       int                 `json:"failures,omitempty"` // failed probes in a row
	LastError      string              `json:"last_error,omitempty"`
	Registration   *RegistrationStatus `json:"registration,omitempty"` // for peers the switch registers with
}

// Trunks lists the trunks with the health of their peers.
func (s *Switch) Trunks() []TrunkStatus {
	ts := s.trunks
	out := []TrunkStatus{}
	for _, tr := range ts.state.List() {
		st := TrunkStatus{Name: tr.Name, Prefixes: tr.Prefixes, Numbers: tr.Numbers, Inbound: tr.Inbound.Trust}
		for _, p := range tr.Peers {
			h := ts.state.Health(tr.Name, p.Name)
			ps := PeerStatus{Peer: p, Up: h.Up, LatencySeconds: h.Latency.Seconds(), LastProbe: h.LastProbe, Failures: h.Failures, LastError: h.LastError}
			if p.Register {
				ts.mu.Lock()
				r := ts.regs[[2]string{tr.Name, p.Name}]
				ts.mu.Unlock()
				ps.Registration = &r
			}
			st.Peers = append(st.Peers, ps)
		}
		out = append(out, st)
	}
	return out
}
