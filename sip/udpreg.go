package sip

import (
	"bytes"
	"context"
	"crypto/rand"
	"hash/maphash"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// The UDP registrar answers REGISTER without sipgo's server transactions.
// A non-INVITE server transaction on UDP lives 32 s after its answer (Timer
// J) to absorb retransmissions: at thousands of registrations a second that
// is hundreds of thousands of live transactions, a heap of gigabytes and most
// of the switch's CPU in the garbage collector. Kamailio answers REGISTER
// statelessly (sl); so does this registrar. The switch's UDP sockets are read
// through udpConn, which takes REGISTER datagrams off before sipgo sees them
// and queues them to a fixed pool of workers; everything else goes on to
// sipgo. The answer to each recent REGISTER is remembered (replyCache), so a
// retransmission gets the same answer, as from a transaction, without being
// processed again. REGISTERs over TCP, TLS and WebSocket still go through
// sipgo's transactions, which end as soon as they are answered.

const (
	// udpSocketBuffer is asked for both directions of each SIP UDP socket:
	// the kernel's default (208 KB) drops bursts at a few thousand requests
	// a second. Linux caps the request at net.core.rmem_max/wmem_max unless
	// the process may override it (CAP_NET_ADMIN).
	udpSocketBuffer = 4 << 20
	// regQueueLen bounds the REGISTERs waiting for a worker: about regStale's
	// worth at 20,000 registrations a second (40,000 REGISTERs with their
	// challenges), so that a burst the switch can catch up with waits here
	// rather than being refused; past it the switch answers 503 at once
	// (back-pressure) rather than letting the backlog grow into timeouts.
	regQueueLen = 16384
	// regStale is how long a REGISTER may wait in the queue: by then its
	// client has sent it again (T1, RFC 3261 §17.1.2.2), so an overloaded
	// switch drops the old copy unread instead of spending its CPU twice.
	regStale = 500 * time.Millisecond
	// regWorkersPerCPU: workers wait on Redis round trips, so there are
	// more of them than CPUs.
	regWorkersPerCPU = 32
	// replySlots remembered answers (each about 600 bytes while it lives):
	// at 20,000 REGISTERs a second (40,000 answers) that covers 3 s, the
	// first two retransmissions (0.5 and 1.5 s after the request), and at
	// ordinary rates the whole Timer J (replyTTL).
	replySlots = 1 << 17
	replyTTL   = 32 * time.Second // 64·T1, Timer J (RFC 3261 §17.2.2)
	// claimTTL is how long a REGISTER being processed keeps its
	// retransmissions out; a worker stuck longer (a directory timeout)
	// lets the next copy through.
	claimTTL = 2 * time.Second
)

// udpConn is a SIP UDP socket as sipgo reads it, minus the REGISTERs.
type udpConn struct {
	*net.UDPConn
	regs *udpRegistrar

	once sync.Once
	sc   sip.Connection // sipgo's connection for this socket, looked up once
}

// ReadFrom gives sipgo every datagram but REGISTERs, which go to the
// registrar's queue.
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.UDPConn.ReadFromUDP(b)
		if err != nil {
			return n, nil, err
		}
		if !bytes.HasPrefix(b[:n], []byte("REGISTER ")) {
			return n, addr, nil
		}
		c.regs.enqueue(c, b[:n], addr)
	}
}

// remember makes sipgo send requests to src (INVITEs to the phone that has
// just registered from there) from this socket, as it does for every source
// it reads itself, rather than from a new one that NAT would not let through.
func (c *udpConn) remember(pool *sip.ConnectionPool, src string) {
	c.once.Do(func() { c.sc = pool.Get(c.LocalAddr().String()) })
	if c.sc != nil {
		pool.Add(src, c.sc)
	}
}

// udpRegistrar is the queue and the workers of the UDP registrar.
type udpRegistrar struct {
	s       *Switch
	jobs    chan regJob
	parser  *sip.Parser
	replies *replyCache
	bufs    sync.Pool // of *[]byte, datagram copies
}

type regJob struct {
	conn   *udpConn
	buf    *[]byte
	src    *net.UDPAddr
	queued time.Time
}

func newUDPRegistrar(s *Switch) *udpRegistrar {
	return &udpRegistrar{
		s:       s,
		jobs:    make(chan regJob, regQueueLen),
		parser:  sip.NewParser(),
		replies: newReplyCache(),
		bufs:    sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }},
	}
}

// run starts the workers and the sweeper of remembered answers; they stop
// with ctx.
func (r *udpRegistrar) run(ctx context.Context) {
	go func() {
		t := time.NewTicker(replyTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.replies.sweep()
			}
		}
	}()
	for range regWorkersPerCPU * runtime.GOMAXPROCS(0) {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-r.jobs:
					r.handle(j)
				}
			}
		}()
	}
}

// enqueue runs on the socket's reader: it applies the flood limit that
// sipgo's read filter applies to everything else, copies the datagram and
// queues it, or answers 503 when the queue is full.
func (r *udpRegistrar) enqueue(c *udpConn, data []byte, src *net.UDPAddr) {
	if f := r.s.flood; f != nil {
		if ip := src.AddrPort().Addr().Unmap(); !r.s.trusted(ip) && !f.allow(ip) {
			r.s.metrics.flooded.Inc()
			return
		}
	}
	buf := r.bufs.Get().(*[]byte)
	*buf = append((*buf)[:0], data...)
	select {
	case r.jobs <- regJob{c, buf, src, time.Now()}:
	default:
		r.s.metrics.overloaded.WithLabelValues("queue_full").Inc()
		if req := r.parse(buf, src); req != nil {
			r.s.respond(req, &udpReply{conn: c, src: src, dst: replyAddr(req, src)}, 503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		}
	}
}

// parse reads a queued REGISTER and returns its buffer to the pool; nil
// when it is not a request that can be answered.
func (r *udpRegistrar) parse(buf *[]byte, src *net.UDPAddr) *sip.Request {
	msg, err := r.parser.ParseSIP(*buf)
	r.bufs.Put(buf)
	req, ok := msg.(*sip.Request)
	if err != nil || !ok || req.Via() == nil {
		r.s.metrics.malformed.WithLabelValues("udp").Inc()
		r.s.log.Debug("malformed REGISTER dropped", "source", src, "error", err)
		return nil
	}
	req.SetTransport("UDP")
	req.SetSource(src.String())
	return req
}

func (r *udpRegistrar) handle(j regJob) {
	if !j.queued.IsZero() && time.Since(j.queued) > regStale {
		r.bufs.Put(j.buf)
		r.s.metrics.overloaded.WithLabelValues("stale").Inc()
		return
	}
	// A retransmission is recognised before it is parsed, so that an
	// overloaded switch does not spend its CPU twice on the same REGISTER.
	var key replyKey
	remembered := false
	if branch, id, ok := txKey(*j.buf); ok {
		data, dst, k, fresh := r.replies.claim(j.src.AddrPort(), branch, id)
		switch {
		case data != nil: // already answered
			r.bufs.Put(j.buf)
			if _, err := j.conn.WriteToUDPAddrPort(data, dst); err != nil {
				r.s.log.Debug("response not resent", "call_id", k.callID, "error", err)
			}
			return
		case !fresh: // being processed
			r.bufs.Put(j.buf)
			return
		}
		key, remembered = k, true
	}
	req := r.parse(j.buf, j.src)
	if req == nil {
		if remembered {
			r.replies.release(key)
		}
		return
	}
	reply := &udpReply{conn: j.conn, src: j.src, dst: replyAddr(req, j.src)}
	if remembered {
		reply.cache, reply.key = r.replies, key
	}
	if !r.s.accept(req, reply) {
		return
	}
	j.conn.remember(r.s.ua.TransportLayer().Pool("udp"), req.Source())
	r.s.register(req, reply)
}

// txKey finds in a raw request what names its transaction for the reply
// cache: the branch of the top Via (RFC 3261 §17.2.3; empty from clients
// that make none) and the Call-ID. ok is false when the message has no Via
// or no Call-ID; the parser then judges it.
func txKey(msg []byte) (branch, callID []byte, ok bool) {
	var via []byte
	first := true
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimRight(line, "\r")
		if first { // the request line
			first = false
			continue
		}
		if len(line) == 0 {
			break // end of the headers
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, value := bytes.TrimSpace(line[:colon]), bytes.TrimSpace(line[colon+1:])
		switch {
		case via == nil && (bytes.EqualFold(name, []byte("Via")) || bytes.EqualFold(name, []byte("v"))):
			via = value
		case callID == nil && (bytes.EqualFold(name, []byte("Call-ID")) || bytes.EqualFold(name, []byte("i"))):
			callID = value
		}
	}
	if len(via) == 0 || len(callID) == 0 {
		return nil, nil, false
	}
	if i := bytes.IndexByte(via, ','); i >= 0 {
		via = via[:i] // the top one of several Vias on the line
	}
	for params := via; ; {
		i := bytes.IndexByte(params, ';')
		if i < 0 {
			break
		}
		params = params[i+1:]
		param := params
		if j := bytes.IndexByte(param, ';'); j >= 0 {
			param = param[:j]
		}
		if k := bytes.IndexByte(param, '='); k >= 0 && bytes.EqualFold(bytes.TrimSpace(param[:k]), []byte("branch")) {
			branch = bytes.TrimSpace(param[k+1:])
			break
		}
	}
	return branch, callID, true
}

// replyAddr is where the answer to a request over UDP goes (RFC 3261
// §18.2.2, RFC 3581 §4): the source address, with the source port when the
// client asked for rport, else the port in its Via.
func replyAddr(req *sip.Request, src *net.UDPAddr) *net.UDPAddr {
	via := req.Via()
	if rport, ok := via.Params.Get("rport"); ok && rport == "" {
		return src
	}
	port := via.Port
	if port == 0 {
		port = sip.DefaultUdpPort
	}
	return &net.UDPAddr{IP: src.IP, Port: port, Zone: src.Zone}
}

// udpReply sends the answers to one REGISTER over UDP and remembers them
// for its retransmissions.
type udpReply struct {
	conn  *udpConn
	src   *net.UDPAddr // where the request came from
	dst   *net.UDPAddr // where answers go
	cache *replyCache  // nil: not remembered (503 when overloaded)
	key   replyKey
}

// Respond sends a response built by the caller.
func (u *udpReply) Respond(res *sip.Response) error {
	var b bytes.Buffer
	b.Grow(768)
	res.StringWrite(&b)
	return u.write(b.Bytes())
}

// reply writes the answer to req straight from the request's headers (RFC
// 3261 §8.2.6): its Vias (the top one with received and rport when asked,
// RFC 3581 §4), From, To with a tag of ours, Call-ID, CSeq, then hdrs.
func (u *udpReply) reply(req *sip.Request, code int, reason string, hdrs []sip.Header) error {
	var b bytes.Buffer
	b.Grow(768)
	b.WriteString("SIP/2.0 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(reason)
	for i, h := range req.GetHeaders("Via") {
		if v, ok := h.(*sip.ViaHeader); ok && i == 0 {
			if rport, ok := v.Params.Get("rport"); ok && rport == "" {
				v = v.Clone()
				v.Params.Add("rport", strconv.Itoa(u.src.Port))
				v.Params.Add("received", u.src.IP.String())
				h = v
			}
		}
		b.WriteString("\r\n")
		h.StringWrite(&b)
	}
	// A header may be missing when the answer is a 400.
	if h := req.From(); h != nil {
		b.WriteString("\r\n")
		h.StringWrite(&b)
	}
	if h := req.To(); h != nil {
		b.WriteString("\r\n")
		h.StringWrite(&b)
		if !h.Params.Has("tag") {
			b.WriteString(";tag=")
			b.WriteString(newTag())
		}
	}
	if h := req.CallID(); h != nil {
		b.WriteString("\r\n")
		h.StringWrite(&b)
	}
	if h := req.CSeq(); h != nil {
		b.WriteString("\r\n")
		h.StringWrite(&b)
	}
	for _, h := range hdrs {
		b.WriteString("\r\n")
		h.StringWrite(&b)
	}
	b.WriteString("\r\nContent-Length: 0\r\n\r\n")
	return u.write(b.Bytes())
}

// write sends data and remembers it for retransmissions.
func (u *udpReply) write(data []byte) error {
	if len(data) > sip.UDPMTUSize {
		return sip.ErrUDPMTUCongestion
	}
	if u.cache != nil {
		u.cache.store(u.key, data, u.dst.AddrPort())
	}
	_, err := u.conn.WriteToUDP(data, u.dst)
	return err
}

// newTag returns a To tag (RFC 3261 §19.3): unique, not secret.
func newTag() string {
	return tagPrefix + strconv.FormatUint(tagCount.Add(1), 36)
}

var (
	tagPrefix = rand.Text()[:8] + "-"
	tagCount  atomic.Uint64
)

// replyKey identifies a REGISTER transaction from one source: the branch of
// its Via (RFC 3261 §17.2.3) and, for clients that make no unique branch,
// its Call-ID.
type replyKey struct {
	source         netip.AddrPort
	branch, callID string
	slot           int // its place in the cache
}

// replyCache remembers the last answer to recent REGISTERs in a fixed table,
// so that its memory does not grow with the rate: a retransmission whose slot
// a newer REGISTER has taken is processed again.
type replyCache struct {
	seed  maphash.Seed
	now   func() time.Time
	slots []replySlot
}

type replySlot struct {
	mu   sync.Mutex
	key  replyKey
	at   time.Time
	data []byte         // nil while the REGISTER is being processed
	dst  netip.AddrPort // where data went
}

func newReplyCache() *replyCache {
	return &replyCache{seed: maphash.MakeSeed(), now: time.Now, slots: make([]replySlot, replySlots)}
}

func (c *replyCache) slot(src netip.AddrPort, branch, callID []byte) int {
	var h maphash.Hash
	h.SetSeed(c.seed)
	a := src.Addr().As16()
	h.Write(a[:])
	h.WriteByte(byte(src.Port()))
	h.WriteByte(byte(src.Port() >> 8))
	h.Write(branch)
	h.WriteByte(0)
	h.Write(callID)
	return int(h.Sum64() & (replySlots - 1))
}

func (k *replyKey) is(src netip.AddrPort, branch, callID []byte) bool {
	return k.source == src && k.branch == string(branch) && k.callID == string(callID)
}

// claim returns the remembered answer to a REGISTER and where it went, or
// fresh when the REGISTER is to be processed (it is now marked as being
// processed, under the key returned, which store and release take).
func (c *replyCache) claim(src netip.AddrPort, branch, callID []byte) (data []byte, dst netip.AddrPort, key replyKey, fresh bool) {
	i := c.slot(src, branch, callID)
	sl := &c.slots[i]
	now := c.now()
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.key.is(src, branch, callID) {
		age := now.Sub(sl.at)
		if sl.data != nil && age < replyTTL {
			return sl.data, sl.dst, sl.key, false
		}
		if sl.data == nil && age < claimTTL {
			return nil, dst, sl.key, false
		}
	}
	sl.key = replyKey{src, string(branch), string(callID), i}
	sl.at, sl.data = now, nil
	return nil, dst, sl.key, true
}

// store remembers the answer to k, unless a newer REGISTER has taken its slot.
func (c *replyCache) store(k replyKey, data []byte, dst netip.AddrPort) {
	c.update(k, func(sl *replySlot) { sl.at, sl.data, sl.dst = c.now(), data, dst })
}

// release forgets a claim that will get no answer (the message was
// unreadable), so that its next copy is judged again.
func (c *replyCache) release(k replyKey) {
	c.update(k, func(sl *replySlot) { sl.key, sl.data = replyKey{}, nil })
}

func (c *replyCache) update(k replyKey, f func(*replySlot)) {
	sl := &c.slots[k.slot]
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.key == k {
		f(sl)
	}
}

// sweep forgets the answers older than replyTTL, so that a quiet switch
// holds none.
func (c *replyCache) sweep() {
	now := c.now()
	for i := range c.slots {
		sl := &c.slots[i]
		sl.mu.Lock()
		if sl.key != (replyKey{}) && now.Sub(sl.at) >= replyTTL {
			sl.key, sl.data = replyKey{}, nil
		}
		sl.mu.Unlock()
	}
}

// listenUDP opens a SIP UDP socket with large buffers and logs the sizes
// the kernel granted.
func (s *Switch) listenUDP(network, addr string) (*udpConn, error) {
	laddr, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	rcv, snd := setSocketBuffers(c, udpSocketBuffer)
	log := s.log.Info
	if rcv >= 0 && rcv < udpSocketBuffer {
		log = s.log.Warn // the kernel capped it
	}
	log("SIP UDP socket buffers", "addr", c.LocalAddr().String(), "receive", sizeText(rcv), "send", sizeText(snd), "asked", sizeText(udpSocketBuffer))
	return &udpConn{UDPConn: c, regs: s.regs}, nil
}

func sizeText(n int) string {
	if n < 0 {
		return "unknown"
	}
	return strconv.Itoa(n>>10) + " KiB"
}
