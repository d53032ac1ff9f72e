package media

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrBadSDP: the body is not an SDP the relay can read.
	ErrBadSDP = errors.New("media: malformed SDP")
	// ErrUnsupported: the SDP asks for something the relay cannot anchor
	// (DTLS-SRTP, hostnames, no usable a=crypto, an address family without an
	// advertised address). The proxy may forward the SDP unanchored or answer 488.
	ErrUnsupported = errors.New("media: unsupported SDP")
	// ErrNoPorts: the port range is exhausted.
	ErrNoPorts = errors.New("media: no free relay port")
	// ErrUnknownCall: no session for the call ID (never offered, or released).
	ErrUnknownCall = errors.New("media: unknown call")
	// ErrNoOffer: an answer came before any offer.
	ErrNoOffer = errors.New("media: answer without offer")
	// ErrClosed: the relay is closed.
	ErrClosed = errors.New("media: relay closed")
)

// Config configures a Relay. Zero values take the defaults noted.
type Config struct {
	PortMin, PortMax int // relay ports, RTP even and RTCP odd; default 30000–39999

	// BindIPv4 and BindIPv6 are where relay sockets listen; default all
	// interfaces. IPv6 is only used when an IPv6 address is advertised.
	BindIPv4, BindIPv6 netip.Addr
	// AdvertiseIPv4 and AdvertiseIPv6 are written in SDP; default the bind
	// address when it is a specific one.
	AdvertiseIPv4, AdvertiseIPv6 netip.Addr

	Timeout     time.Duration // no media either way: default 60 s
	HoldTimeout time.Duration // the same while on hold or before the answer: default 1 h
	LatchWindow time.Duration // latching allowed after each answer: default 10 s

	// Kernel is whether latched plain-RTP IPv4 streams are forwarded in the
	// kernel (eBPF) rather than by the relay's loops.
	Kernel KernelMode

	Registerer prometheus.Registerer // nil: no metrics
	Logger     *slog.Logger          // nil: discard
}

// KernelMode selects in-kernel forwarding.
type KernelMode int

const (
	// KernelAuto forwards in the kernel when the eBPF program loads and
	// attaches, in userspace otherwise.
	KernelAuto KernelMode = iota
	// KernelOn fails NewRelay when the program cannot load or attach.
	KernelOn
	// KernelOff always forwards in userspace.
	KernelOff
)

// ParseKernelMode reads "auto", "on" or "off".
func ParseKernelMode(s string) (KernelMode, bool) {
	switch s {
	case "auto":
		return KernelAuto, true
	case "on":
		return KernelOn, true
	case "off":
		return KernelOff, true
	}
	return 0, false
}

// Transport is how the relay presents media to the side receiving an offer.
type Transport int

const (
	// TransportAsOffered mirrors the offerer: SRTP iff the offer was SRTP.
	TransportAsOffered Transport = iota
	// TransportRTP offers plain RTP/AVP.
	TransportRTP
	// TransportSRTP offers SDES RTP/SAVP with the relay's own keys.
	TransportSRTP
)

// Family is the address family the relay presents to the side receiving an
// offer.
type Family int

const (
	FamilyAsOffered Family = iota // the offerer's family
	FamilyIPv4
	FamilyIPv6
)

// LegOptions is what the proxy knows about the side whose SDP it passes.
type LegOptions struct {
	// Source is the IP the SIP message carrying the SDP came from: media
	// from it may latch (see the package documentation).
	Source netip.Addr
	// PeerTransport and PeerFamily apply to Offer only: how the relay
	// presents media to the side that receives the rewritten offer. An answer
	// always follows its offer.
	PeerTransport Transport
	PeerFamily    Family
}

// Quality is a call's media quality as the relay saw it.
type Quality struct {
	A, B LegQuality // media sent by the first offerer (A) and by the other side (B)
	// R and MOS are the ITU-T G.107 E-model estimate for the worse
	// direction; 0 when no RTP flowed.
	R, MOS float64
}

// LegQuality describes the media one endpoint sent, and what it reported
// about the media it received.
type LegQuality struct {
	Packets, Bytes uint64        // RTP and RTCP accepted from the endpoint
	Lost           int64         // RTP packets lost on the way to the relay (RFC 3550 A.3)
	LossRatio      float64       // Lost over expected
	Jitter         time.Duration // interarrival jitter at the relay (RFC 3550 A.8), worst stream
	ReportedLoss   float64       // fraction lost in the endpoint's last RTCP report
	ReportedJitter time.Duration // jitter in the endpoint's last RTCP report
	RTT            time.Duration // relay↔endpoint round trip from RTCP, 0 unknown
}

// legNames names the sides in callbacks: "a" made the first offer.
var legNames = [2]string{"a", "b"}

// Relay anchors the media of calls: see the package documentation.
type Relay struct {
	cfg   Config
	log   *slog.Logger
	ports *portPool
	epoch time.Time
	m     *metrics

	mu      sync.Mutex
	calls   map[string]*call
	retired counts // of released calls, so counters never go back
	closed  bool

	sockets   atomic.Int64
	loops     []*loop // serve the sockets; a call's all on one
	kern      *kernel // nil: userspace forwarding only
	nextLoop  atomic.Uint32
	releasing sync.WaitGroup // releases in flight, for Close
	onTimeout atomic.Pointer[func(string, Quality)]
	onDTMF    atomic.Pointer[func(string, string, rune, time.Duration)]
	dtmf      chan dtmfEvent
	stop      chan struct{}

	sweeperDone, dispatcherDone chan struct{}
}

type dtmfEvent struct {
	callID string
	side   int
	digit  rune
	dur    time.Duration
}

type counts struct{ packets, bytes, dropped uint64 }

// NewRelay validates cfg, registers the metrics and starts the timeout
// sweeper. Close releases everything.
func NewRelay(cfg Config) (*Relay, error) {
	if cfg.PortMin == 0 && cfg.PortMax == 0 {
		cfg.PortMin, cfg.PortMax = 30000, 39999
	}
	cfg.Timeout = cmp(cfg.Timeout, 60*time.Second)
	cfg.HoldTimeout = cmp(cfg.HoldTimeout, time.Hour)
	cfg.LatchWindow = cmp(cfg.LatchWindow, 10*time.Second)
	if !cfg.BindIPv4.IsValid() {
		cfg.BindIPv4 = netip.IPv4Unspecified()
	}
	if !cfg.BindIPv6.IsValid() {
		cfg.BindIPv6 = netip.IPv6Unspecified()
	}
	if !cfg.AdvertiseIPv4.IsValid() && !cfg.BindIPv4.IsUnspecified() {
		cfg.AdvertiseIPv4 = cfg.BindIPv4
	}
	if !cfg.AdvertiseIPv6.IsValid() && !cfg.BindIPv6.IsUnspecified() {
		cfg.AdvertiseIPv6 = cfg.BindIPv6
	}
	switch {
	case cfg.PortMin <= 0 || cfg.PortMax > 65535 || cfg.PortMax-cfg.PortMin < 1:
		return nil, fmt.Errorf("media: bad port range %d–%d", cfg.PortMin, cfg.PortMax)
	case !cfg.AdvertiseIPv4.IsValid() && !cfg.AdvertiseIPv6.IsValid():
		return nil, errors.New("media: no address to advertise")
	case cfg.AdvertiseIPv4.IsValid() && !cfg.AdvertiseIPv4.Is4(), cfg.AdvertiseIPv6.IsValid() && !cfg.AdvertiseIPv6.Is6():
		return nil, errors.New("media: advertised address of the wrong family")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Relay{
		cfg:   cfg,
		log:   cfg.Logger,
		ports: newPortPool(cfg.PortMin, cfg.PortMax),
		epoch: time.Now(),
		calls: map[string]*call{},
		dtmf:  make(chan dtmfEvent, 256),
		stop:  make(chan struct{}),

		sweeperDone:    make(chan struct{}),
		dispatcherDone: make(chan struct{}),
	}
	m, err := newMetrics(r, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r.m = m
	for range runtime.GOMAXPROCS(0) {
		lp, err := newLoop(r)
		if err != nil {
			r.stopLoops()
			r.m.unregister()
			return nil, fmt.Errorf("media: event loop: %w", err)
		}
		r.loops = append(r.loops, lp)
	}
	if cfg.Kernel != KernelOff {
		k, err := newKernel(r)
		switch {
		case err == nil:
			r.kern = k
			r.log.Info("media: forwarding latched plain RTP in the kernel (eBPF)")
		case cfg.Kernel == KernelOn:
			r.stopLoops()
			r.m.unregister()
			return nil, fmt.Errorf("media: kernel forwarding: %w", err)
		default:
			r.log.Info("media: kernel forwarding unavailable, forwarding in userspace", "err", err)
		}
	}
	tick := min(time.Second, cfg.Timeout/4, cfg.HoldTimeout/4)
	go r.sweep(tick)
	go r.dispatchDTMF()
	return r, nil
}

func cmp(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// now is the hot path's clock: monotonic ns since the relay started.
func (r *Relay) now() int64 { return int64(time.Since(r.epoch)) }

// OnTimeout sets the function called, from the relay's sweeper goroutine,
// when a call had no media either way for Timeout (HoldTimeout while on hold
// or not yet answered). The relay has already released the call; the proxy
// ends the dialog.
func (r *Relay) OnTimeout(f func(callID string, q Quality)) { r.onTimeout.Store(&f) }

// OnDTMF sets the function called, from one relay goroutine in order, once
// per RFC 4733 digit a leg sends ("a" or "b").
func (r *Relay) OnDTMF(f func(callID, leg string, digit rune, duration time.Duration)) {
	r.onDTMF.Store(&f)
}

// Offer rewrites the SDP offer from the side with the given tag (the From
// tag of the request carrying it, the To tag of a response carrying a late
// offer) to point at the relay, allocating ports for a new call or new
// m-lines. The result goes to the other side.
func (r *Relay) Offer(callID, tag string, body []byte, opts LegOptions) ([]byte, error) {
	s, err := parseSDP(body)
	if err != nil {
		return nil, err
	}
	c, err := r.call(callID, tag)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrUnknownCall
	}
	x := c.sideOf(tag)
	peerAddr, err := r.peerAdvertise(opts.PeerFamily, s)
	if err != nil {
		return nil, err
	}
	rw := rewrite{addr: peerAddr, media: make([]mediaRewrite, len(s.media))}
	secure := make([]bool, len(s.media))
	for i, m := range s.media {
		secure[i] = !isOpaque(m.proto) && (opts.PeerTransport == TransportSRTP ||
			opts.PeerTransport == TransportAsOffered && isSecure(m.proto))
		rw.media[i].proto = transportProto(m.proto, secure[i])
		if m.port == 0 {
			continue
		}
		if !supportedProto(m.proto) {
			return nil, fmt.Errorf("%w: transport %q", ErrUnsupported, truncate(m.proto))
		}
		if !r.advertise(m.addr.Is6()).IsValid() {
			return nil, fmt.Errorf("%w: no advertised address for %s", ErrUnsupported, m.addr)
		}
		var key *cryptoAttr
		if isSecure(m.proto) {
			if len(m.crypto) == 0 {
				return nil, fmt.Errorf("%w: no usable a=crypto", ErrUnsupported)
			}
			key = &m.crypto[0] // the offerer's preference
		}
		st, err := c.stream(i, m.addr, peerAddr, x)
		if err != nil {
			return nil, err
		}
		ex, ey := st.ends[x], st.ends[1-x]
		if err := ex.applySDP(m, opts.Source); err != nil {
			return nil, err
		}
		if key != nil {
			ex.answerTag = key.tag
		}
		if err := ex.setCrypto(key); err != nil {
			return nil, err
		}
		if !m.mux {
			if err := st.ensureRTCP(); err != nil {
				return nil, err
			}
		}
		st.params.Store(newParams(m))
		rw.media[i].port = ey.port
		if secure[i] {
			for si := range suites {
				rw.media[i].crypto = append(rw.media[i].crypto, formatCrypto(si+1, si, ey.ourKey(si)))
			}
		}
	}
	c.offer = &pendingOffer{side: x, sdp: s, secure: secure}
	c.kernelRelease()
	return s.write(rw), nil
}

// Answer rewrites the SDP answer from the side with the given tag (the To
// tag of the response, the From tag of an ACK carrying a late answer) to
// the pending offer. It may be called again for the same offer (183 then
// 200, or another fork: the last answer wins). Media flows afterwards.
func (r *Relay) Answer(callID, tag string, body []byte, opts LegOptions) ([]byte, error) {
	s, err := parseSDP(body)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	c := r.calls[callID]
	r.mu.Unlock()
	if c == nil {
		return nil, ErrUnknownCall
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return nil, ErrUnknownCall
	case c.offer == nil:
		return nil, ErrNoOffer
	case len(s.media) != len(c.offer.sdp.media):
		return nil, fmt.Errorf("%w: answer has %d m-lines, offer %d", ErrBadSDP, len(s.media), len(c.offer.sdp.media))
	}
	o, now := c.offer, r.now()
	x, y := o.side, 1-o.side
	if y == 1 {
		c.tags[1] = tag
	}
	rw := rewrite{media: make([]mediaRewrite, len(s.media))}
	for i, m := range s.media {
		om := o.sdp.media[i]
		rw.media[i].proto = om.proto
		if m.port == 0 || om.port == 0 || i >= len(c.streams) || c.streams[i] == nil {
			continue
		}
		st := c.streams[i]
		ex, ey := st.ends[x], st.ends[y]
		rw.addr = r.advertise(ex.ip.Is6())
		if err := ey.applySDP(m, opts.Source); err != nil {
			return nil, err
		}
		key, err := answerKey(m, o.secure[i])
		if err != nil {
			return nil, err
		}
		if err := ey.setCrypto(key); err != nil {
			return nil, err
		}
		st.mux.Store(om.mux && m.mux)
		if !st.mux.Load() {
			if err := st.ensureRTCP(); err != nil {
				return nil, err
			}
		}
		st.params.Store(newParams(om, m))
		st.openWindows(now + int64(r.cfg.LatchWindow))
		rw.media[i].port = ex.port
		if tx := ex.tx.Load(); isSecure(om.proto) && tx.rtp != nil {
			rw.media[i].crypto = []string{formatCrypto(ex.answerTag, tx.suite, tx.key)}
		}
	}
	if !rw.addr.IsValid() { // every m-line disabled
		rw.addr = r.advertise(!r.cfg.AdvertiseIPv4.IsValid())
	}
	c.hold = o.sdp.onHold() || s.onHold()
	c.answered, c.activeSince = true, now
	c.kernelRelease()
	return s.write(rw), nil
}

// answerKey picks the a=crypto of an answer among the tags the relay
// offered (tag i+1 for suites[i]); nil for a plain answer.
func answerKey(m *mediaDesc, offeredSRTP bool) (*cryptoAttr, error) {
	if !isSecure(m.proto) {
		return nil, nil // a phone answering RTP/AVP to SDES gets plain RTP
	}
	if offeredSRTP {
		for i, a := range m.crypto {
			if a.tag == a.suite+1 {
				return &m.crypto[i], nil
			}
		}
	}
	return nil, fmt.Errorf("%w: SRTP answer without a key the relay offered", ErrUnsupported)
}

// Release frees the call's ports and returns its final quality; false if
// the call is unknown (never offered, already released or timed out).
// Call it on BYE, CANCEL and failure.
func (r *Relay) Release(callID string) (Quality, bool) {
	r.mu.Lock()
	c := r.calls[callID]
	if c == nil || c.releasing {
		r.mu.Unlock()
		return Quality{}, false
	}
	c.releasing = true
	r.releasing.Add(1)
	defer r.releasing.Done()
	r.mu.Unlock()

	c.close()
	q := c.quality()
	total := c.counts()
	r.mu.Lock()
	delete(r.calls, callID)
	r.retired.packets += total.packets
	r.retired.bytes += total.bytes
	r.retired.dropped += total.dropped
	r.mu.Unlock()
	for _, st := range c.streams {
		if st != nil {
			r.ports.put(st.ends[0].port)
			r.ports.put(st.ends[1].port)
		}
	}
	r.m.observe(q)
	return q, true
}

// Close releases every call and stops the relay.
func (r *Relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	close(r.stop)
	<-r.sweeperDone
	for _, id := range r.callIDs() {
		r.Release(id)
	}
	r.releasing.Wait() // releases the proxy started meanwhile
	r.stopLoops()      // every socket is removed
	if r.kern != nil {
		r.kern.close()
	}
	close(r.dtmf) // no socket is left to send on it
	<-r.dispatcherDone
	r.m.unregister()
	return nil
}

func (r *Relay) stopLoops() {
	for _, lp := range r.loops {
		lp.stop()
	}
}

func (r *Relay) callIDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.calls))
	for id := range r.calls {
		ids = append(ids, id)
	}
	return ids
}

func (r *Relay) call(id, tag string) (*call, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	c := r.calls[id]
	if c == nil {
		lp := r.loops[int(r.nextLoop.Add(1))%len(r.loops)]
		c = &call{r: r, lp: lp, id: id, tags: [2]string{tag}, activeSince: r.now()}
		r.calls[id] = c
	}
	return c, nil
}

// advertise returns the SDP address of a family (invalid if not configured).
func (r *Relay) advertise(v6 bool) netip.Addr {
	if v6 {
		return r.cfg.AdvertiseIPv6
	}
	return r.cfg.AdvertiseIPv4
}

func (r *Relay) bindIP(v6 bool) netip.Addr {
	if v6 {
		return r.cfg.BindIPv6
	}
	return r.cfg.BindIPv4
}

// peerAdvertise is the relay address shown to the side receiving offer s.
func (r *Relay) peerAdvertise(f Family, s *sdp) (netip.Addr, error) {
	v6 := f == FamilyIPv6
	if f == FamilyAsOffered {
		for _, m := range s.media {
			if m.port != 0 {
				v6 = m.addr.Is6()
				break
			}
		}
	}
	a := r.advertise(v6)
	if !a.IsValid() {
		return a, fmt.Errorf("%w: no advertised address for the peer's family", ErrUnsupported)
	}
	return a, nil
}

func (r *Relay) sweep(tick time.Duration) {
	defer close(r.sweeperDone)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		for _, id := range r.expired(r.now()) {
			q, ok := r.Release(id)
			if !ok {
				continue
			}
			r.m.timeouts.Inc()
			r.log.Info("media timeout", "call", id, "mos", q.MOS)
			if f := r.onTimeout.Load(); f != nil {
				(*f)(id, q)
			}
		}
	}
}

func (r *Relay) expired(now int64) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for id, c := range r.calls {
		if c.expired(now) {
			ids = append(ids, id)
		}
	}
	return ids
}

func (r *Relay) emitDTMF(callID string, side int, digit rune, dur time.Duration) {
	select {
	case r.dtmf <- dtmfEvent{callID, side, digit, dur}:
	default: // a stuck consumer must not stall the media
	}
}

func (r *Relay) dispatchDTMF() {
	defer close(r.dispatcherDone)
	for ev := range r.dtmf {
		if f := r.onDTMF.Load(); f != nil {
			(*f)(ev.callID, legNames[ev.side], ev.digit, ev.dur)
		}
	}
}

// call is one relayed call: streams per m-line between side 0 (the first
// offerer) and side 1.
type call struct {
	r  *Relay
	lp *loop // serves all the call's sockets
	id string

	releasing bool // under r.mu

	mu          sync.Mutex // serialises signalling; guards what follows
	closed      bool
	tags        [2]string
	streams     []*stream // by m-line; nil while never active
	socks       []*sock
	offer       *pendingOffer
	answered    bool
	hold        bool
	activeSince int64 // ns; the last answer, for the timeout
}

// pendingOffer is the last offer, kept for its answers.
type pendingOffer struct {
	side   int
	sdp    *sdp
	secure []bool // the relay offered SDES to the answerer, per m-line
}

// sideOf maps a tag to a side: the first offerer's tag is side 0, any
// other (the answerer, or a fork replacing it) side 1.
func (c *call) sideOf(tag string) int {
	if tag == c.tags[0] {
		return 0
	}
	c.tags[1] = tag
	return 1
}

// stream returns m-line i's stream, creating it with side x's end in the
// family of addrX and the other in the family of addrY.
func (c *call) stream(i int, addrX, addrY netip.Addr, x int) (*stream, error) {
	for len(c.streams) <= i {
		c.streams = append(c.streams, nil)
	}
	if st := c.streams[i]; st != nil {
		return st, nil
	}
	st := &stream{}
	st.params.Store(&params{})
	ex, err := c.newEnd(st, x, addrX.Is6())
	if err != nil {
		return nil, err
	}
	ey, err := c.newEnd(st, 1-x, addrY.Is6())
	if err != nil {
		closeFD(ex.rtp.fd)
		c.r.ports.put(ex.port)
		return nil, err
	}
	ex.peer, ey.peer = ey, ex
	st.ends[x], st.ends[1-x] = ex, ey
	c.streams[i] = st // from here Release frees the ports
	if err := c.start(ex.rtp); err != nil {
		closeFD(ey.rtp.fd)
		return nil, err
	}
	if err := c.start(ey.rtp); err != nil {
		return nil, err
	}
	return st, nil
}

func (c *call) newEnd(st *stream, side int, v6 bool) (*end, error) {
	ip := c.r.bindIP(v6)
	port, fd, err := c.r.ports.bind(ip)
	if err != nil {
		return nil, err
	}
	e := &end{c: c, st: st, side: side, ip: ip, port: port}
	e.rtp = &sock{fd: fd, v6: v6, e: e}
	return e, nil
}

// start hands a socket to the call's loop; the call's close removes it.
func (c *call) start(s *sock) error {
	if err := c.lp.add(s); err != nil {
		closeFD(s.fd)
		s.fd = -1
		return err
	}
	c.socks = append(c.socks, s)
	c.r.sockets.Add(1)
	return nil
}

// ensureRTCP opens the RTCP sockets of both ends (rtcp-mux not negotiated).
func (st *stream) ensureRTCP() error {
	for _, e := range st.ends {
		if e.rtcp.Load() != nil {
			continue
		}
		fd, err := bindUDP(e.ip, e.port+1)
		if err != nil {
			return fmt.Errorf("%w: RTCP port %d: %v", ErrNoPorts, e.port+1, err)
		}
		s := &sock{fd: fd, v6: e.ip.Is6(), e: e, isRTCP: true}
		if e.sdpRTCP.IsValid() {
			s.reset(e.sdpRTCP, e.source)
		}
		if err := e.c.start(s); err != nil {
			return err
		}
		e.rtcp.Store(s)
	}
	return nil
}

func (st *stream) openWindows(deadline int64) {
	for _, e := range st.ends {
		e.rtp.openWindow(deadline)
		if s := e.rtcp.Load(); s != nil {
			s.openWindow(deadline)
		}
	}
}

// applySDP takes the endpoint's addresses from its m-line; a changed
// address or signalling source drops the latch.
func (e *end) applySDP(m *mediaDesc, source netip.Addr) error {
	if m.addr.IsUnspecified() {
		return nil // RFC 2543 hold: keep the addresses
	}
	if m.addr.Is6() != e.ip.Is6() {
		return fmt.Errorf("%w: address family change", ErrUnsupported)
	}
	rtpAddr := netip.AddrPortFrom(m.addr, uint16(m.port))
	rtcpAddr := netip.AddrPortFrom(m.rtcpAddr, uint16(m.rtcpPort))
	if rtpAddr == e.sdpRTP && rtcpAddr == e.sdpRTCP && source == e.source {
		return nil
	}
	e.sdpRTP, e.sdpRTCP, e.source = rtpAddr, rtcpAddr, source
	e.rtp.reset(rtpAddr, source)
	if s := e.rtcp.Load(); s != nil {
		s.reset(rtcpAddr, source)
	}
	return nil
}

func (c *call) expired(now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := c.activeSince
	for _, s := range c.socks {
		_, _, klast := s.kernelLive()
		last = max(last, s.lastRx.Load(), klast)
	}
	limit := c.r.cfg.Timeout
	if c.hold || !c.answered {
		limit = c.r.cfg.HoldTimeout
	}
	return now-last > int64(limit)
}

// close removes the call's sockets from its loop, after which its
// statistics are stable.
func (c *call) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, s := range c.socks {
		c.lp.remove(s)
	}
	c.r.sockets.Add(-int64(len(c.socks)))
}

// kernelRelease takes the call's streams back from the kernel after a
// negotiation: addresses, codecs or keys may have changed, and the loop
// offloads again from the new state. Under c.mu.
func (c *call) kernelRelease() {
	if c.r.kern == nil {
		return
	}
	c.lp.mu.Lock()
	defer c.lp.mu.Unlock()
	for _, s := range c.socks {
		s.kernelDrop()
	}
}

func (c *call) counts() (t counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.socks {
		kp, kb, _ := s.kernelLive()
		t.packets += s.packets.Load() + kp
		t.bytes += s.bytes.Load() + kb
		t.dropped += s.dropped.Load()
	}
	return t
}

// quality sums a closed call's statistics per leg and runs the E-model on
// each direction, keeping the worse.
func (c *call) quality() Quality {
	var q Quality
	legs := [2]*LegQuality{&q.A, &q.B}
	var expected, received [2]uint64
	codec := ""
	for _, st := range c.streams {
		if st == nil {
			continue
		}
		p := st.params.Load()
		if codec == "" {
			codec = p.codec
		}
		for side, e := range st.ends {
			lq := legs[side]
			for _, s := range []*sock{e.rtp, e.rtcp.Load()} {
				if s != nil {
					lq.Packets += s.packets.Load()
					lq.Bytes += s.bytes.Load()
				}
			}
			exp, rec := e.stats.counts()
			expected[side] += exp
			received[side] += rec
			lq.Jitter = max(lq.Jitter, time.Duration(e.stats.jitter*float64(time.Second)))
			lq.ReportedLoss = max(lq.ReportedLoss, float64(e.fraction.Load())/256)
			if p.main != 0 {
				lq.ReportedJitter = max(lq.ReportedJitter, time.Duration(e.jitter.Load())*time.Second/time.Duration(p.main))
			}
			lq.RTT = max(lq.RTT, time.Duration(e.rttMs.Load())*time.Millisecond)
		}
	}
	for side, lq := range legs {
		lq.Lost = int64(expected[side]) - int64(received[side])
		if expected[side] > 0 && lq.Lost > 0 {
			lq.LossRatio = float64(lq.Lost) / float64(expected[side])
		}
	}
	if received[0]+received[1] == 0 {
		return q
	}
	q.R = 100
	for side := range legs {
		from, to := legs[side], legs[1-side]
		loss := max(from.LossRatio, to.ReportedLoss)
		jitter := max(from.Jitter, to.ReportedJitter)
		// One-way delay: half of each hop's round trip, a jitter buffer of
		// twice the jitter and one 20 ms packet.
		delay := (from.RTT+to.RTT)/2 + 2*jitter + 20*time.Millisecond
		if r, mos := emodel(loss, delay, codec); r <= q.R {
			q.R, q.MOS = r, mos
		}
	}
	return q
}
