package sip

import (
	"bytes"
	"context"
	"crypto/rand"
	"hash/maphash"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
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
	// regQueueLen bounds the REGISTERs waiting for a worker: more than
	// regMaxWait's worth at 20,000 registrations a second (40,000 REGISTERs
	// with their challenges), so that a burst the switch can catch up with
	// waits here; past it the switch answers 503 at once.
	regQueueLen = 16384
	// regMaxWait is how long a REGISTER may wait in the queue before it is
	// answered 503 unprocessed: the answer must reach the client before its
	// first retransmission (T1, 500 ms, RFC 3261 §17.1.2.2), or an
	// overloaded switch would spend its CPU on every REGISTER twice.
	regMaxWait = 300 * time.Millisecond
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
	// retransmissions out: longer than the registrar waits for the
	// directory (dirTimeout). A copy let through while the first waits
	// would reuse its nonce count and get a 401, which the phone takes for
	// a wrong password, where the first would have answered 503 (Redis down).
	claimTTL = dirTimeout + time.Second
)

// udpConn is a SIP UDP socket as sipgo reads it, minus the REGISTERs.
type udpConn struct {
	*net.UDPConn
	regs *udpRegistrar
	gate *inviteGate // nil: calls not capped
	in   *recvBatch
	out  *sendBatch // the registrar's answers

	once sync.Once
	sc   sip.Connection // sipgo's connection for this socket, looked up once
}

func newUDPConn(c *net.UDPConn, regs *udpRegistrar, gate *inviteGate, log *slog.Logger) *udpConn {
	return &udpConn{UDPConn: c, regs: regs, gate: gate, in: newRecvBatch(c, int(sip.TransportBufferReadSize)),
		out: newSendBatch(c, func(dst netip.AddrPort, err error) { log.Debug("response not sent", "to", dst, "error", err) })}
}

// Close stops the sending of answers with the socket.
func (c *udpConn) Close() error {
	c.out.close()
	return c.UDPConn.Close()
}

// ReadFrom gives sipgo every datagram but REGISTERs, which go to the
// registrar's queue, and the INVITEs the call-rate cap refuses. Datagrams
// are read several at a time where the system allows (recvBatch).
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		data, src, err := c.in.read()
		if err != nil {
			return 0, nil, err
		}
		addr := net.UDPAddrFromAddrPort(src)
		switch {
		case bytes.HasPrefix(data, []byte("REGISTER ")):
			c.regs.enqueue(c, data, addr)
		case c.gate.intercept(c, data, addr):
		default:
			return copy(b, data), addr, nil
		}
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
		r.refuse(regJob{c, buf, src, time.Time{}})
	}
}

// refuse answers 503 to a REGISTER the switch has no time for, from its
// raw headers: an overloaded switch spends no parsing on it, and the final
// answer stops the client's retransmissions, which would add to the load.
// A copy of a REGISTER answered already gets that answer again, and one
// being processed gets nothing: under overload most of what waits is
// retransmissions, and a 503 to one would tell a phone it is not
// registered when it is.
func (r *udpRegistrar) refuse(j regJob) {
	defer r.bufs.Put(j.buf)
	var raw rawRequest
	if !raw.scan(*j.buf) {
		r.s.metrics.malformed.WithLabelValues("udp").Inc()
		return
	}
	if data, dst, seen := r.replies.seen(j.src.AddrPort(), raw.transaction(), raw.callID); seen {
		if data != nil {
			j.conn.out.send(data, dst)
		}
		return
	}
	u := &udpReply{conn: j.conn, src: j.src, dst: raw.replyAddr(j.src), raw: &raw}
	if u.reply(503, "Service Unavailable", []sip.Header{sip.NewHeader("Retry-After", "5")}) == nil {
		r.s.metrics.responses.WithLabelValues(string(sip.REGISTER), "503").Inc()
	}
}

func (r *udpRegistrar) handle(j regJob) {
	if !j.queued.IsZero() && time.Since(j.queued) > regMaxWait {
		r.s.metrics.overloaded.WithLabelValues("stale").Inc()
		r.refuse(j)
		return
	}
	defer r.bufs.Put(j.buf)
	var raw rawRequest
	if !raw.scan(*j.buf) {
		r.s.metrics.malformed.WithLabelValues("udp").Inc()
		r.s.log.Debug("malformed REGISTER dropped", "source", j.src)
		return
	}
	// A retransmission is recognised before it is parsed, so that an
	// overloaded switch does not spend its CPU twice on the same REGISTER.
	data, dst, key, fresh := r.replies.claim(j.src.AddrPort(), raw.transaction(), raw.callID)
	switch {
	case data != nil: // already answered
		j.conn.out.send(data, dst)
		return
	case !fresh: // being processed
		return
	}
	reply := &udpReply{conn: j.conn, src: j.src, dst: raw.replyAddr(j.src), raw: &raw, cache: r.replies, key: key}
	req, ok := scanRegister(&raw, *j.buf, j.src.AddrPort())
	if !ok { // an unusual form: sipgo parses it whole
		if req, ok = r.parse(j, reply); !ok {
			return
		}
	} else {
		r.s.metrics.requests.WithLabelValues(string(sip.REGISTER)).Inc()
	}
	j.conn.remember(r.s.ua.TransportLayer().Pool("udp"), req.source)
	r.s.register(req, reply.answerer(r.s, req.callID))
}

// parse reads a REGISTER the scan left to sipgo. False when it is dropped
// (its claim released, so that a retransmission is judged again) or has
// been answered 400.
func (r *udpRegistrar) parse(j regJob, reply *udpReply) (registerRequest, bool) {
	r.s.metrics.fullParses.Inc()
	msg, err := r.parser.ParseSIP(*j.buf)
	req, ok := msg.(*sip.Request)
	if err != nil || !ok || req.Via() == nil {
		r.replies.release(reply.key)
		r.s.metrics.malformed.WithLabelValues("udp").Inc()
		r.s.log.Debug("malformed REGISTER dropped", "source", j.src, "error", err)
		return registerRequest{}, false
	}
	req.SetTransport("UDP")
	// As net.UDPAddr.String writes it, in one allocation rather than three.
	req.SetSource(netip.AddrPortFrom(j.src.AddrPort().Addr().Unmap(), uint16(j.src.Port)).String())
	answer := reply.answerer(r.s, callID(req))
	if err := r.s.accept(req); err != nil {
		answer(400, err.Error())
		return registerRequest{}, false
	}
	return readRegister(req, answer)
}

// rawRequest holds what the answers to a request copy from it (RFC 3261
// §8.2.6.2), found in the datagram without parsing it: its Via header lines,
// From, To, Call-ID and CSeq. It points into the datagram's buffer. The
// registrar and the INVITE gate answer from it.
type rawRequest struct {
	vias                [][]byte // whole header lines, in order
	topVia              []byte   // the value of the top Via
	from, to, cid, cseq []byte   // whole header lines
	fromValue, toValue  []byte
	callID              []byte
	viaLines            [4][]byte // vias' storage for the usual few
}

// scan finds the headers in msg; false when one is missing.
func (m *rawRequest) scan(msg []byte) bool {
	m.vias = m.viaLines[:0]
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
		case headerIs(name, "Via", "v"):
			if len(m.vias) == 0 {
				m.topVia = value
				if i := bytes.IndexByte(value, ','); i >= 0 {
					m.topVia = bytes.TrimSpace(value[:i]) // the top one of several on the line
				}
			}
			m.vias = append(m.vias, line)
		case m.from == nil && headerIs(name, "From", "f"):
			m.from, m.fromValue = line, value
		case m.to == nil && headerIs(name, "To", "t"):
			m.to, m.toValue = line, value
		case m.cid == nil && headerIs(name, "Call-ID", "i"):
			m.cid, m.callID = line, value
		case m.cseq == nil && headerIs(name, "CSeq", ""):
			m.cseq = line
		}
	}
	return len(m.topVia) > 0 && m.from != nil && m.to != nil && len(m.callID) > 0 && m.cseq != nil
}

func headerIs(name []byte, long, compact string) bool {
	return bytes.EqualFold(name, []byte(long)) || (compact != "" && bytes.EqualFold(name, []byte(compact)))
}

// param returns the value of a ;name=value parameter among params (the
// part of a header value after its address), and whether it is there.
func param(params []byte, name string) (value []byte, ok bool) {
	for {
		i := bytes.IndexByte(params, ';')
		if i < 0 {
			return nil, false
		}
		params = params[i+1:]
		p := params
		if j := bytes.IndexByte(p, ';'); j >= 0 {
			p = p[:j]
		}
		k, v, _ := bytes.Cut(p, []byte("="))
		if bytes.EqualFold(bytes.TrimSpace(k), []byte(name)) {
			return bytes.TrimSpace(v), true
		}
	}
}

// branch is the branch of the top Via (RFC 3261 §17.2.3); empty from
// clients that make none.
func (m *rawRequest) branch() []byte {
	b, _ := param(m.topVia, "branch")
	return b
}

// transaction tells an INVITE's or a REGISTER's copies, and an INVITE's ACK
// of a non-2xx answer, from the other INVITEs or REGISTERs of its Call-ID
// (RFC 3261 §17.2.3): the top Via's branch, or, from a client that makes no
// unique one (RFC 2543: no magic cookie), the top Via, the CSeq number and
// the From tag. A request resent with credentials changes the number; the
// ACK keeps all three (so does the CANCEL of an INVITE, which neither the
// gate nor the registrar reads).
func (m *rawRequest) transaction() []byte {
	if b := m.branch(); bytes.HasPrefix(b, []byte("z9hG4bK")) {
		return b
	}
	_, cseq, _ := bytes.Cut(m.cseq, []byte(":"))
	number := bytes.TrimSpace(cseq)
	if i := bytes.IndexAny(number, " \t"); i >= 0 {
		number = number[:i]
	}
	tag, _ := tagOf(m.fromValue)
	return slices.Concat(m.topVia, []byte{0}, number, []byte{0}, tag)
}

// replyAddr is where the answers go (RFC 3261 §18.2.2, RFC 3581 §4): the
// source address, with the source port when the client asked for rport,
// else the port of its Via's sent-by.
func (m *rawRequest) replyAddr(src *net.UDPAddr) *net.UDPAddr {
	if rport, ok := param(m.topVia, "rport"); ok && len(rport) == 0 {
		return src
	}
	port := sentByPort(m.topVia)
	if port == src.Port {
		return src // the usual case: no allocation
	}
	return &net.UDPAddr{IP: src.IP, Port: port, Zone: src.Zone}
}

// sentByPort is the port of a Via value's sent-by ("SIP/2.0/UDP
// host[:port];params"), or 5060 when it names none or cannot be read.
func sentByPort(via []byte) int {
	if i := bytes.IndexByte(via, ';'); i >= 0 {
		via = via[:i]
	}
	via = bytes.TrimSpace(via)
	i := bytes.IndexAny(via, " \t")
	if i < 0 {
		return sip.DefaultUdpPort
	}
	hostport := bytes.TrimSpace(via[i:])
	if bytes.ContainsAny(hostport, " \t") {
		return sip.DefaultUdpPort
	}
	var p []byte
	if hostport[0] == '[' { // an IPv6 reference: [addr] or [addr]:port
		_, p, _ = bytes.Cut(hostport, []byte("]:"))
	} else if bytes.Count(hostport, []byte(":")) == 1 {
		p = hostport[bytes.IndexByte(hostport, ':')+1:]
	}
	if len(p) == 0 || len(p) > 5 {
		return sip.DefaultUdpPort
	}
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return sip.DefaultUdpPort
		}
		n = n*10 + int(c-'0')
	}
	if n == 0 || n > 65535 {
		return sip.DefaultUdpPort
	}
	return n
}

// udpReply sends the answers to one REGISTER over UDP and remembers them
// for its retransmissions.
type udpReply struct {
	conn  *udpConn
	src   *net.UDPAddr // where the request came from
	dst   *net.UDPAddr // where answers go
	raw   *rawRequest  // the request's headers that answers copy
	cache *replyCache  // nil: not remembered (503 when overloaded)
	key   replyKey
}

// answerer answers the REGISTER with callID (for the log) statelessly.
func (u *udpReply) answerer(s *Switch, callID string) answerFunc {
	return func(code int, reason string, hdrs ...sip.Header) {
		s.sent(sip.REGISTER, callID, code, u.reply(code, reason, hdrs))
	}
}

// answerBufs hold answers while they are written. An answer is remembered
// for retransmissions, so what leaves the pool is an exact copy: the
// registrar's remembered answers were 768-byte buffers around ~400 bytes.
var answerBufs = sync.Pool{New: func() any { b := new(bytes.Buffer); b.Grow(1024); return b }}

// reply writes an answer straight from the request's raw headers (RFC 3261
// §8.2.6): its Vias (the top one with received and rport when asked, RFC
// 3581 §4), From, To with a tag of ours, Call-ID, CSeq, then hdrs.
func (u *udpReply) reply(code int, reason string, hdrs []sip.Header) error {
	return u.write(statelessAnswer(u.raw, u.src, code, reason, hdrs))
}

// statelessAnswer is the answer to the request m came from src with.
func statelessAnswer(m *rawRequest, src *net.UDPAddr, code int, reason string, hdrs []sip.Header) []byte {
	b := answerBufs.Get().(*bytes.Buffer)
	defer answerBufs.Put(b)
	b.Reset()
	b.WriteString("SIP/2.0 ")
	b.WriteString(strconv.Itoa(code))
	b.WriteByte(' ')
	b.WriteString(reason)
	for i, line := range m.vias {
		b.WriteString("\r\n")
		if i > 0 {
			b.Write(line)
			continue
		}
		// The top Via is the first value of the first line.
		at := bytes.Index(line, m.topVia)
		b.Write(line[:at])
		writeTopVia(b, m.topVia, src)
		b.Write(line[at+len(m.topVia):])
	}
	for _, line := range [][]byte{m.from, m.to} {
		b.WriteString("\r\n")
		b.Write(line)
	}
	if !hasTag(m.toValue) {
		b.WriteString(";tag=")
		b.WriteString(newTag())
	}
	for _, line := range [][]byte{m.cid, m.cseq} {
		b.WriteString("\r\n")
		b.Write(line)
	}
	for _, h := range hdrs {
		b.WriteString("\r\n")
		h.StringWrite(b)
	}
	b.WriteString("\r\nContent-Length: 0\r\n\r\n")
	return bytes.Clone(b.Bytes())
}

// writeTopVia writes via with the rport the client asked for filled in and
// the address it came from (RFC 3581 §4).
func writeTopVia(b *bytes.Buffer, via []byte, src *net.UDPAddr) {
	if rport, ok := param(via, "rport"); !ok || len(rport) > 0 {
		b.Write(via)
		return
	}
	for i, p := range bytes.Split(via, []byte(";")) {
		if i > 0 {
			b.WriteByte(';')
		}
		if k, _, _ := bytes.Cut(p, []byte("=")); bytes.EqualFold(bytes.TrimSpace(k), []byte("rport")) {
			b.WriteString("rport=")
			b.WriteString(strconv.Itoa(src.Port))
			continue
		}
		b.Write(p)
	}
	b.WriteString(";received=")
	b.WriteString(src.IP.String())
}

// hasTag reports whether a To value carries a tag.
func hasTag(to []byte) bool {
	_, ok := tagOf(to)
	return ok
}

// tagOf returns the tag of a From or To value, and whether it has one: a
// parameter of the header, not of the URI inside its angle brackets.
func tagOf(v []byte) ([]byte, bool) {
	if i := bytes.LastIndexByte(v, '>'); i >= 0 {
		v = v[i+1:]
	} else if i := bytes.IndexByte(v, ';'); i >= 0 {
		v = v[i:]
	}
	return param(v, "tag")
}

// write sends data and remembers it for retransmissions.
func (u *udpReply) write(data []byte) error {
	if len(data) > sip.UDPMTUSize {
		return sip.ErrUDPMTUCongestion
	}
	if u.cache != nil {
		u.cache.store(u.key, data, u.dst.AddrPort())
	}
	u.conn.out.send(data, u.dst.AddrPort())
	return nil
}

// newTag returns a To tag (RFC 3261 §19.3): unique, not secret.
func newTag() string {
	return tagPrefix + strconv.FormatUint(tagCount.Add(1), 36)
}

var (
	tagPrefix = rand.Text()[:8] + "-"
	tagCount  atomic.Uint64
)

// replyKey identifies a REGISTER transaction from one source: its
// rawRequest.transaction (the Via's branch, or what tells an RFC 2543
// client's apart) and its Call-ID.
type replyKey struct {
	source     netip.AddrPort
	tx, callID string
	slot       int // its place in the cache: bucket·replyWays + way
}

// replyCache remembers the last answer to recent REGISTERs in a fixed table,
// so that its memory does not grow with the rate. A REGISTER may take any of
// the replyWays slots of its bucket, the oldest first: with one slot each,
// at 20,000 registrations a second one REGISTER in seven lost its slot to
// another before its first retransmission came, which was then processed
// again (its replayed nonce answered with a new challenge, its repeated CSeq
// with a 500); with four, about one in three hundred.
type replyCache struct {
	seed    maphash.Seed
	now     func() time.Time
	buckets []replyBucket
}

const replyWays = 4

type replyBucket struct {
	mu    sync.Mutex
	slots [replyWays]replySlot
}

type replySlot struct {
	key  replyKey
	at   time.Time      // when claimed or answered; zero: free
	data []byte         // nil while the REGISTER is being processed
	dst  netip.AddrPort // where data went
}

func newReplyCache() *replyCache {
	return &replyCache{seed: maphash.MakeSeed(), now: time.Now, buckets: make([]replyBucket, replySlots/replyWays)}
}

func (c *replyCache) bucket(src netip.AddrPort, tx, callID []byte) int {
	var h maphash.Hash
	h.SetSeed(c.seed)
	a := src.Addr().As16()
	h.Write(a[:])
	h.WriteByte(byte(src.Port()))
	h.WriteByte(byte(src.Port() >> 8))
	h.Write(tx)
	h.WriteByte(0)
	h.Write(callID)
	return int(h.Sum64() % uint64(len(c.buckets)))
}

func (k *replyKey) is(src netip.AddrPort, tx, callID []byte) bool {
	return k.source == src && k.tx == string(tx) && k.callID == string(callID)
}

// claim returns the remembered answer to a REGISTER and where it went, or
// fresh when the REGISTER is to be processed (it is now marked as being
// processed, under the key returned, which store and release take).
func (c *replyCache) claim(src netip.AddrPort, tx, callID []byte) (data []byte, dst netip.AddrPort, key replyKey, fresh bool) {
	b := c.bucket(src, tx, callID)
	bk := &c.buckets[b]
	now := c.now()
	bk.mu.Lock()
	defer bk.mu.Unlock()
	way, live := bk.find(src, tx, callID, now)
	if live {
		sl := &bk.slots[way]
		return sl.data, sl.dst, sl.key, false
	}
	if way < 0 { // the oldest slot, free ones first
		way = 0
		for w := 1; w < replyWays; w++ {
			if bk.slots[w].at.Before(bk.slots[way].at) {
				way = w
			}
		}
	}
	sl := &bk.slots[way]
	sl.key = replyKey{src, string(tx), string(callID), b*replyWays + way}
	sl.at, sl.data = now, nil
	return nil, dst, sl.key, true
}

// seen returns the remembered answer to a REGISTER and where it went, with
// seen true and no answer while the REGISTER is being processed. It claims
// nothing.
func (c *replyCache) seen(src netip.AddrPort, tx, callID []byte) (data []byte, dst netip.AddrPort, seen bool) {
	bk := &c.buckets[c.bucket(src, tx, callID)]
	bk.mu.Lock()
	defer bk.mu.Unlock()
	way, live := bk.find(src, tx, callID, c.now())
	if !live {
		return nil, dst, false
	}
	return bk.slots[way].data, bk.slots[way].dst, true
}

// find returns the slot of a REGISTER (-1: none), and whether it is live:
// answered within replyTTL, or claimed within claimTTL. bk.mu is held.
func (bk *replyBucket) find(src netip.AddrPort, tx, callID []byte, now time.Time) (way int, live bool) {
	for w := range bk.slots {
		sl := &bk.slots[w]
		if !sl.key.is(src, tx, callID) {
			continue
		}
		age := now.Sub(sl.at)
		return w, (sl.data != nil && age < replyTTL) || (sl.data == nil && age < claimTTL)
	}
	return -1, false
}

// store remembers the answer to k, unless a newer REGISTER has taken its slot.
func (c *replyCache) store(k replyKey, data []byte, dst netip.AddrPort) {
	c.update(k, func(sl *replySlot) { sl.at, sl.data, sl.dst = c.now(), data, dst })
}

// release forgets a claim that will get no answer (the message was
// unreadable), so that its next copy is judged again.
func (c *replyCache) release(k replyKey) {
	c.update(k, func(sl *replySlot) { *sl = replySlot{} })
}

func (c *replyCache) update(k replyKey, f func(*replySlot)) {
	bk := &c.buckets[k.slot/replyWays]
	bk.mu.Lock()
	defer bk.mu.Unlock()
	if sl := &bk.slots[k.slot%replyWays]; sl.key == k {
		f(sl)
	}
}

// sweep forgets the answers older than replyTTL, so that a quiet switch
// holds none.
func (c *replyCache) sweep() {
	now := c.now()
	for i := range c.buckets {
		bk := &c.buckets[i]
		bk.mu.Lock()
		for w := range bk.slots {
			if sl := &bk.slots[w]; sl.key != (replyKey{}) && now.Sub(sl.at) >= replyTTL {
				*sl = replySlot{}
			}
		}
		bk.mu.Unlock()
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
	return newUDPConn(c, s.regs, s.gate, s.log), nil
}

func sizeText(n int) string {
	if n < 0 {
		return "unknown"
	}
	return strconv.Itoa(n>>10) + " KiB"
}
