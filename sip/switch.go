// Package sip is the switch's protocol core: transports, registrar, digest
// authentication and an RFC 3261 §16 stateful proxy built on sipgo's transport
// and transaction layers. It asks routing/ where a call goes and never knows
// about concrete modules.
package sip

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

// Listener is one SIP socket.
type Listener struct {
	Transport string // udp, tcp, tls, ws, wss
	Addr      string // host:port
	TLS       *tls.Config
}

// Config is what the switch needs to know; cmd/centralino fills it from the
// config file.
type Config struct {
	NodeID string
	Realm  string
	// Advertise is the host written in Via and Record-Route for IPv4 (a
	// host name: for both families); default: each listener's own host.
	// AdvertiseIPv6 is the same for IPv6 (an IPv6 address Advertise
	// gives it too).
	Advertise, AdvertiseIPv6 string
	Listeners                []Listener

	MinExpires, MaxExpires, DefaultExpires time.Duration

	Algorithms              []string // digest algorithms offered, in order of preference; default DefaultAlgorithms
	NonceTTL                time.Duration
	Trusted                 []netip.Prefix // sources whose requests are not challenged (trunks, load generators)
	MaxFailures             int            // auth failures per source within FailureWindow before it is blocked
	FailureWindow, BlockFor time.Duration

	RingTimeout time.Duration
	// NodeSecret is shared by the nodes of a network: a request one node
	// forwards to another is signed with it. Empty: a single node.
	NodeSecret []byte
	// FloodRate caps the reads per second of one untrusted source IP (burst:
	// twice as many); 0 disables the limit.
	FloodRate float64
	// MaxCallRate caps the new calls (initial INVITEs) the node takes a
	// second; past it they are answered 503. 0 disables the cap.
	MaxCallRate float64
	// Anchor is when media goes through the relay: AnchorAlways, AnchorNAT
	// or AnchorNever; an agency's Media setting overrides it for its side.
	Anchor string
}

// Router decides where calls go; *routing.Router implements it.
type Router interface {
	Route(ctx context.Context, req routing.Request) (routing.Decision, error)
	// Overflow is the next decision for a call agency from could not complete.
	Overflow(ctx context.Context, req routing.Request, from string, why routing.OverflowReason) (routing.Decision, error)
}

// Switch is a registrar and stateful proxy.
type Switch struct {
	cfg     Config
	dir     directory.Store
	router  Router
	queues  routing.QueueState // nil: no queues, no feature codes
	nodes   *nodeForwarding    // nil: a single node
	events  Publisher
	relay   Relay
	headers HeaderSource
	handoff Handoffs
	log     *slog.Logger
	metrics *metrics
	trunks  *trunkSet

	ua     *sipgo.UserAgent
	server *sipgo.Server
	client *sipgo.Client
	// handlers by method, as given to sipgo's server (kept for the fuzz target)
	handlers map[sip.RequestMethod]sipgo.RequestHandler

	host   string              // the first listener's advertised host (Call-IDs, Warning)
	locals map[string][2]local // per transport (lower case): where IPv4 and IPv6 peers reach us
	hosts  []string            // every advertised host, without brackets
	ports  []int               // every listening port

	nonces   *nonceAuthority
	legacy   *legacyClients
	throttle *failureThrottle
	flood    *floodLimit   // nil: no limit
	callRate *callRate     // nil: no cap
	gate     *inviteGate   // the cap over UDP; nil: no cap
	regs     *udpRegistrar // REGISTERs over UDP

	dirDeadline sharedDeadline // bounds the registrar's directory calls

	draining  atomic.Bool
	serving   atomic.Bool // every listener listens: Serve has returned nil
	calls     sync.Map    // Call-ID -> *call, for answered calls
	transfers transfers
	handoffs  sync.Map // Call-ID (the caller's and the IVR's) -> *handoff
	active    atomic.Int64
}

// sipgo refuses UDP messages over 1300 bytes (an INVITE with SRTP keys,
// video or two Record-Routes); send them as Kamailio does, fragmented by IP
// if need be, and read datagrams up to the UDP maximum. Package variables of
// sipgo, set before any transport runs.
//
// A completed transaction waits before it is forgotten only long enough
// to absorb late copies, as Kamailio's wt_timer (5 s), not RFC 3261's 64·T1
// (32 s): at thousands of calls a second, the INVITE transactions kept for
// 2xx retransmissions (Timers L and M, RFC 6026) and the BYE transactions
// kept for their retransmissions (Timer J) were hundreds of thousands of
// live objects, gigabytes of heap and a garbage collector that fell behind.
// What comes later still finds its way: a 2xx retransmission without its
// transaction is forwarded statelessly (forwardStrayResponse), an INVITE
// stops being retransmitted at the first 100 Trying, and a late BYE copy
// is answered by the dialog's end.
func init() {
	sip.UDPMTUSize = 65535 + 200
	sip.TransportBufferReadSize = 65535
	sip.Timer_D, sip.Timer_J, sip.Timer_L, sip.Timer_M = transactionLinger, transactionLinger, transactionLinger, transactionLinger
}

const transactionLinger = 5 * time.Second

// Deps are what the switch works with. Events, Relay and Metrics may be nil.
type Deps struct {
	Dir     directory.Store
	Router  Router
	Queues  routing.QueueState // operator states, told of calls; may be nil
	Events  Publisher
	Relay   Relay        // the media relay; nil: media is never anchored
	Headers HeaderSource // headers a call carries to its transfers; may be nil
	Peers   Peers        // the other nodes sharing the directory; nil: a single node
	Handoff Handoffs     // where a caller goes when the operator hangs up first; may be nil
	Metrics prometheus.Registerer
	Log     *slog.Logger
	Trunks  *routing.Trunks // the trunks the router also uses; may be nil
}

// New builds a switch; Serve starts its listeners.
func New(cfg Config, d Deps) (*Switch, error) {
	if len(cfg.Listeners) == 0 {
		return nil, errors.New("sip: no listener")
	}
	log := d.Log
	s := &Switch{
		cfg:      cfg,
		dir:      d.Dir,
		router:   d.Router,
		queues:   d.Queues,
		events:   d.Events,
		relay:    d.Relay,
		headers:  d.Headers,
		handoff:  d.Handoff,
		log:      log,
		nonces:   newNonceAuthority(cfg.NonceTTL),
		legacy:   newLegacyClients(),
		throttle: newFailureThrottle(cfg.MaxFailures, cfg.FailureWindow, cfg.BlockFor),
	}
	if s.events == nil {
		s.events = noEvents{}
	}
	if len(s.cfg.Algorithms) == 0 {
		s.cfg.Algorithms = DefaultAlgorithms
	}
	s.metrics = newMetrics(d.Metrics, s)
	s.trunks = newTrunkSet(s, d.Trunks, d.Metrics)
	s.nodes = newNodeForwarding(d.Peers, cfg.NodeSecret, d.Metrics)
	if s.relay != nil {
		s.relay.OnTimeout(s.mediaTimeout)
		s.relay.OnDTMF(s.dtmf)
	}
	if err := s.setLocals(cfg); err != nil {
		return nil, err
	}

	// sipgo logs each unparsable message at error level with its full text;
	// countingHandler turns that into a metric and a bounded debug line.
	sipLog := slog.New(&countingHandler{next: log.Handler(), malformed: s.metrics.malformed})
	transportOpts := []sip.TransportLayerOption{sip.WithTransportLayerLogger(sipLog)}
	if cfg.FloodRate > 0 {
		s.flood = newFloodLimit(cfg.FloodRate, s.trusted, s.metrics.flooded)
		transportOpts = append(transportOpts, sip.WithTransportLayerReadFilter(s.flood.filter))
	}
	s.callRate = newCallRate(cfg.MaxCallRate)
	s.gate = newInviteGate(s, s.callRate)
	s.regs = newUDPRegistrar(s)
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("Centralino"),
		sipgo.WithUserAgentHostname(s.host),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sipLog),
			sip.WithTransactionLayerUnhandledResponseHandler(s.forwardStrayResponse),
		),
		sipgo.WithUserAgentTransportLayerOptions(transportOpts...),
	)
	if err != nil {
		return nil, err
	}
	s.ua = ua
	if s.server, err = sipgo.NewServer(ua, sipgo.WithServerLogger(sipLog)); err != nil {
		return nil, err
	}
	if s.client, err = sipgo.NewClient(ua, sipgo.WithClientHostname(s.host), sipgo.WithClientLogger(sipLog)); err != nil {
		return nil, err
	}
	s.handlers = map[sip.RequestMethod]sipgo.RequestHandler{
		sip.REGISTER: s.instrument(s.handleRegister),
		sip.ACK:      s.handleAck,
		sip.CANCEL:   s.instrument(s.handleStrayCancel),
		sip.INVITE:   s.instrument(s.handleInvite),
		sip.OPTIONS:  s.instrument(s.handleOptions),
	}
	for _, m := range []sip.RequestMethod{sip.BYE, sip.INFO, sip.UPDATE, sip.REFER, sip.NOTIFY, sip.MESSAGE, sip.PRACK, sip.SUBSCRIBE, sip.PUBLISH} {
		s.handlers[m] = s.instrument(s.handleRequest)
	}
	for m, h := range s.handlers {
		s.server.OnRequest(m, h)
	}
	return s, nil
}

// local is where peers of one transport and address family reach the
// switch: the host written in Via and Record-Route, and the port.
type local struct {
	host string
	port int
}

// setLocals works out, from the listeners and the advertised hosts, where
// peers of each transport and family reach the switch. A listener on a
// specific address serves its family; one on 0.0.0.0, [::] or a host name
// serves both (Go opens wildcard sockets dual-stack). The first listener
// of a transport and family wins.
func (s *Switch) setLocals(cfg Config) error {
	adv := [2]string{cfg.Advertise, cfg.AdvertiseIPv6}
	if ip, err := netip.ParseAddr(cfg.Advertise); err == nil && ip.Is6() {
		adv = [2]string{"", cmp.Or(cfg.AdvertiseIPv6, cfg.Advertise)}
	} else if err != nil && adv[1] == "" {
		adv[1] = cfg.Advertise // a host name serves both families
	}
	s.locals = map[string][2]local{}
	for _, l := range cfg.Listeners {
		host, port, err := net.SplitHostPort(l.Addr)
		if err != nil {
			return fmt.Errorf("sip: listener %s: %w", l.Addr, err)
		}
		p, _ := strconv.Atoi(port)
		tp := strings.ToLower(l.Transport)
		ip, err := netip.ParseAddr(cmp.Or(host, "::")) // no host: all interfaces
		specific := err == nil && !ip.IsUnspecified()
		ls := s.locals[tp]
		for fam := range ls {
			h := cmp.Or(adv[fam], host)
			switch {
			case ls[fam].host != "":
				continue
			case specific && ip.Unmap().Is6() != (fam == 1):
				continue // a specific address serves its own family
			case err == nil && !specific && adv[fam] == "" && (fam == 1 || adv[1] != ""):
				continue // a wildcard needs a host to advertise; the IPv4 slot keeps it as before
			}
			ls[fam] = local{host: strings.Trim(h, "[]"), port: p}
			if s.host == "" {
				s.host = ls[fam].host
			}
			if !slices.Contains(s.hosts, ls[fam].host) {
				s.hosts = append(s.hosts, ls[fam].host)
			}
		}
		s.locals[tp] = ls
		if !slices.Contains(s.ports, p) {
			s.ports = append(s.ports, p)
		}
	}
	return nil
}

// local is where a peer at dest ("host:port") reaches the switch over
// transport tp: the listener of the peer's family, else of the other one.
func (s *Switch) local(tp, dest string) local {
	fam := 0
	if isIPv6(dest) {
		fam = 1
	}
	ls := s.locals[strings.ToLower(tp)]
	switch {
	case ls[fam].host != "":
		return ls[fam]
	case ls[1-fam].host != "":
		return ls[1-fam]
	}
	return local{host: s.host}
}

// isIPv6 reports whether a "host:port" (or a bare host) is an IPv6
// address; a host name counts as IPv4, which sipgo's resolver prefers.
func isIPv6(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && ip.Unmap().Is6()
}

// Serve starts every listener and returns once they all listen, or the first
// error. Listeners stop when ctx ends.
func (s *Switch) Serve(ctx context.Context) error {
	errc := make(chan error, len(s.cfg.Listeners))
	s.regs.run(ctx)
	for _, l := range s.cfg.Listeners {
		ready := make(chan struct{})
		lctx := context.WithValue(ctx, sipgo.ListenReadyCtxKey, sipgo.ListenReadyCtxValue(ready))
		go func() {
			var err error
			switch tp := strings.ToLower(l.Transport); tp {
			case "udp":
				err = s.serveUDP(ctx, l.Addr, ready)
			case "tls", "wss":
				err = s.server.ListenAndServeTLS(lctx, tp, l.Addr, l.TLS)
			default:
				err = s.server.ListenAndServe(lctx, tp, l.Addr)
			}
			if err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("sip: listen %s %s: %w", l.Transport, l.Addr, err)
			}
		}()
		select {
		case <-ready:
			s.log.Info("listening", "transport", l.Transport, "addr", l.Addr)
		case err := <-errc:
			return err
		case <-time.After(5 * time.Second):
			return fmt.Errorf("sip: listen %s %s: not ready after 5s", l.Transport, l.Addr)
		}
	}
	s.trunks.start(ctx)
	s.serving.Store(true)
	return nil
}

// Serving reports whether every listener listens (Serve has succeeded).
func (s *Switch) Serving() bool { return s.serving.Load() }

// serveUDP serves a UDP listener of our own making (see udpConn) through
// sipgo until ctx ends.
func (s *Switch) serveUDP(ctx context.Context, addr string, ready chan struct{}) error {
	c, err := s.listenUDP("udp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		c.Close()
	}()
	close(ready)
	return s.server.ServeUDP(c)
}

// Drain makes the switch refuse new calls (503) while calls in progress go on.
func (s *Switch) Drain() { s.draining.Store(true) }

// Draining reports whether Drain was called.
func (s *Switch) Draining() bool { return s.draining.Load() }

// ActiveCalls is the number of confirmed calls through the switch.
func (s *Switch) ActiveCalls() int64 { return s.active.Load() }

// Close stops the trunks' probes and registrations, then the user agent
// and its transports.
func (s *Switch) Close() error {
	s.trunks.stop()
	return s.ua.Close()
}

// instrument counts requests and the final answers the switch gives.
func (s *Switch) instrument(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if err := s.accept(req); err != nil {
			s.respond(req, tx, 400, err.Error())
			return
		}
		h(req, tx)
	}
}

// accept counts a request and says why the switch cannot handle it, if it
// cannot (counted as malformed; the caller answers 400).
func (s *Switch) accept(req *sip.Request) error {
	s.metrics.requests.WithLabelValues(string(req.Method)).Inc()
	err := validate(req)
	if err != nil {
		s.metrics.malformed.WithLabelValues(transportName(req.Transport())).Inc()
	}
	return err
}

// validate checks what the proxy needs (RFC 3261 §16.3); sipgo has already
// rejected requests without Via or CSeq.
func validate(req *sip.Request) error {
	switch {
	case req.From() == nil:
		return errors.New("Missing From")
	case req.To() == nil:
		return errors.New("Missing To")
	case req.CallID() == nil || req.CallID().Value() == "":
		return errors.New("Missing Call-ID")
	case req.CSeq() == nil || req.CSeq().MethodName != req.Method:
		return errors.New("Bad CSeq")
	case req.Recipient.Host == "":
		return errors.New("Bad Request-URI")
	case req.IsInvite() && req.Contact() == nil:
		// RFC 3261 §8.1.1.8: the dialog's remote target; the switch's own
		// requests in the dialog (media timeout BYEs) need it.
		return errors.New("Missing Contact")
	}
	return nil
}

// responder sends the answers to a request: a sipgo server transaction.
type responder interface {
	Respond(res *sip.Response) error
}

// answerFunc answers the request being handled with a response of ours.
type answerFunc func(code int, reason string, hdrs ...sip.Header)

// answerer answers req through tx.
func (s *Switch) answerer(req *sip.Request, tx responder) answerFunc {
	return func(code int, reason string, hdrs ...sip.Header) { s.respond(req, tx, code, reason, hdrs...) }
}

// respond answers a request with a final or provisional response of ours.
func (s *Switch) respond(req *sip.Request, tx responder, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	s.send(req, tx, res)
}

func (s *Switch) send(req *sip.Request, tx responder, res *sip.Response) {
	s.sent(req.Method, callID(req), res.StatusCode, tx.Respond(res))
}

// sent logs a response that could not be sent, or counts it.
func (s *Switch) sent(method sip.RequestMethod, callID string, code int, err error) {
	if err != nil {
		s.log.Debug("response not sent", "call_id", callID, "code", code, "error", err)
		return
	}
	s.metrics.responses.WithLabelValues(string(method), strconv.Itoa(code)).Inc()
}

func (s *Switch) handleOptions(req *sip.Request, tx sip.ServerTransaction) {
	// OPTIONS to the switch itself (no user part, or addressed to us) is a
	// keepalive or a health probe: answer it. Otherwise it is for a user.
	if req.Recipient.User == "" {
		s.respond(req, tx, 200, "OK",
			sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, REFER, NOTIFY, MESSAGE, PRACK, SUBSCRIBE"),
			sip.NewHeader("Accept", "application/sdp"))
		return
	}
	s.handleRequest(req, tx)
}

func (s *Switch) handleStrayCancel(req *sip.Request, tx sip.ServerTransaction) {
	// sipgo answers CANCELs that match a pending INVITE itself; this one matches nothing.
	s.respond(req, tx, 481, "Call/Transaction Does Not Exist")
}

// isUs reports whether a URI points at this switch.
func (s *Switch) isUs(u sip.Uri) bool {
	if !s.isOurHost(u.Host) && u.Host != s.cfg.Realm && !s.isOurIP(u.Host) {
		return false
	}
	return u.Port == 0 || slices.Contains(s.ports, u.Port)
}

// isOurHost reports whether host (bracketed or not) is one the switch advertises.
func (s *Switch) isOurHost(host string) bool {
	return slices.Contains(s.hosts, strings.Trim(host, "[]"))
}

func (s *Switch) isOurIP(host string) bool {
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return false
	}
	for _, l := range s.cfg.Listeners {
		h, _, _ := net.SplitHostPort(l.Addr)
		if lip, err := netip.ParseAddr(h); err == nil && (lip == ip || lip.IsUnspecified()) {
			return true
		}
	}
	return false
}

// trusted reports whether ip is a trusted source: in Config.Trusted, or an
// address of a trunk trusted by address. Trusted sources are not challenged
// nor flood-limited.
func (s *Switch) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.Trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return s.trunks.byAddress(ip) != ""
}

func callID(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// sourceIP is the IP a request came from.
func sourceIP(req *sip.Request) netip.Addr { return sourceIPOf(req.Source()) }

func sourceIPOf(hostPort string) netip.Addr {
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// do sends a request of the switch's own and waits for its final answer.
func (s *Switch) do(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := s.client.TransactionRequest(ctx, req, asIs)
	if err != nil {
		return nil, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			return nil, tx.Err()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
