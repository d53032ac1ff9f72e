package sip

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing/directory"
)

// authenticate checks the digest credentials of req (RFC 3261 §22). It answers
// the request itself (401/407 challenge, 403, 503) and returns false when the
// caller is not authenticated. Unknown users and wrong passwords get the same
// fresh challenge, so the answers tell nothing about which users exist.
func (s *Switch) authenticate(ctx context.Context, req authRequest, answer answerFunc, proxy bool) (directory.User, bool) {
	code, reason, authn := 401, "Unauthorized", "WWW-Authenticate"
	if proxy {
		code, reason, authn = 407, "Proxy Authentication Required", "Proxy-Authenticate"
	}
	ip := req.ip
	// Which algorithms to offer is decided only when a challenge is due: a
	// request that authenticates never pays for it.
	challenge := func(stale bool) {
		algorithms := s.cfg.Algorithms
		if len(algorithms) > 1 && s.md5Only(ctx, req) {
			algorithms = []string{"MD5"}
		}
		var hdrs []sip.Header
		for _, c := range s.nonces.challenges(s.cfg.Realm, algorithms, ip, stale) {
			hdrs = append(hdrs, sip.NewHeader(authn, c))
		}
		if len(algorithms) > 1 {
			s.legacy.challengedWithSeveral(ip, req.callID)
		}
		answer(code, reason, hdrs...)
	}
	fail := func(why string) {
		s.metrics.authFailures.WithLabelValues(why).Inc()
		if s.throttle.fail(ip) {
			s.log.Warn("source blocked after repeated authentication failures", "source", ip, "for", s.cfg.BlockFor)
		}
	}

	if s.throttle.blocked(ip) {
		s.metrics.authFailures.WithLabelValues("blocked").Inc()
		answer(403, "Forbidden")
		return directory.User{}, false
	}
	var creds credentials
	found := false
	for _, v := range req.credentials {
		if creds, found = parseCredentials(v); found && creds.realm == s.cfg.Realm {
			break
		}
		found = false
	}
	if !found {
		challenge(false)
		return directory.User{}, false
	}
	switch s.nonces.check(creds.nonce, creds.nc, ip) {
	case nonceStale:
		challenge(true)
		return directory.User{}, false
	case nonceBad:
		fail("nonce")
		challenge(false)
		return directory.User{}, false
	}
	user, err := s.credentials(ctx, creds.username)
	if err != nil && !errors.Is(err, directory.ErrNotFound) {
		s.log.Error("directory unavailable for authentication", "call_id", req.callID, "error", err)
		answer(503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return directory.User{}, false
	}
	ha1 := user.HA1MD5
	if strings.EqualFold(creds.algorithm, "SHA-256") {
		ha1 = user.HA1SHA256
	}
	if ha1 == "" {
		// Unknown user: spend the same work as for a known one before answering.
		ha1 = "00000000000000000000000000000000"
	}
	if !creds.matches(string(req.method), ha1) || user.Username == "" {
		fail("credentials")
		challenge(false)
		return directory.User{}, false
	}
	s.throttle.succeed(ip)
	return user, true
}

// md5Only reports whether the client of req must be challenged with MD5
// alone: learnt from this request, remembered for its address, or, for a
// call, recorded on a binding of the user it claims to be from that address
// (which survives a restart of the node and is seen by every node).
func (s *Switch) md5Only(ctx context.Context, req authRequest) bool {
	ip := req.ip
	if s.legacy.isLegacy(ip, req.callID, len(req.credentials) > 0) {
		return true
	}
	if req.method == sip.REGISTER {
		return false // a REGISTER is learnt from its own retry; an INVITE gets no second try
	}
	bindings, err := s.dir.Bindings(ctx, req.fromUser)
	if err != nil {
		return false
	}
	for _, b := range bindings {
		if b.MD5Only && sourceIPOf(b.Source) == ip {
			s.legacy.remember(ip)
			return true
		}
	}
	return false
}

func (s *Switch) handleRegister(req *sip.Request, tx sip.ServerTransaction) {
	answer := s.answerer(req, tx)
	if r, ok := readRegister(req, answer); ok {
		s.register(r, answer)
	}
}

// readRegister is registerOf, answering 400 to a Contact it cannot read.
func readRegister(req *sip.Request, answer answerFunc) (registerRequest, bool) {
	r, ok := registerOf(req)
	if !ok {
		answer(400, "Bad Contact")
	}
	return r, ok
}

// register answers a REGISTER (RFC 3261 §10.3): through a sipgo server
// transaction (TCP, TLS, WS) or the stateless UDP registrar.
func (s *Switch) register(req registerRequest, answer answerFunc) {
	ctx := s.dirContext()
	if req.aor == "" {
		answer(400, "Missing user in To")
		return
	}
	user, ok := s.authenticate(ctx, req.authRequest, answer, false)
	if !ok {
		return
	}
	if user.Username != req.aor || user.Role == roleTrunk {
		s.metrics.authFailures.WithLabelValues("aor_mismatch").Inc()
		answer(403, "Forbidden")
		return
	}
	reg, code, reason := s.registration(req, user)
	if code == 423 {
		answer(code, reason, sip.NewHeader("Min-Expires", strconv.Itoa(int(s.cfg.MinExpires/time.Second))))
		return
	}
	if code != 0 {
		answer(code, reason)
		return
	}
	before, after, err := s.dir.Register(ctx, reg)
	if errors.Is(err, directory.ErrOutOfOrder) {
		answer(500, "Out of order REGISTER")
		return
	}
	if err != nil {
		s.log.Error("directory unavailable for registration", "call_id", req.callID, "error", err)
		answer(503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return
	}
	s.announce(user, before, after)
	now := time.Now()
	hdrs := make([]sip.Header, 0, len(after)+1)
	for _, b := range after {
		secs := int(b.Expires.Sub(now).Round(time.Second) / time.Second)
		hdrs = append(hdrs, sip.NewHeader("Contact", "<"+b.Contact+">;expires="+strconv.Itoa(max(secs, 1))))
	}
	hdrs = append(hdrs, sip.NewHeader("Date", httpDate(now)))
	answer(200, "OK", hdrs...)
}

// dirContext bounds a directory call when the directory can block (Redis);
// the memory directory answers at once.
func (s *Switch) dirContext() context.Context {
	if _, local := s.dir.(*directory.Memory); local {
		return context.Background()
	}
	return s.dirDeadline.context(time.Now())
}

// dirTimeout bounds a directory call that can block.
const dirTimeout = 5 * time.Second

// sharedDeadline hands out contexts that end dirTimeout after they were
// first handed out, give or take dirTimeout/64: one serves every REGISTER
// of that window. context.WithTimeout, one a REGISTER, made the Redis
// registrar's most frequent allocation (16 % of them at 10,000 REGISTER/s),
// and started and stopped a runtime timer each time.
type sharedDeadline struct {
	cur atomic.Pointer[deadlineContext]
}

type deadlineContext struct {
	context.Context
	cancel context.CancelFunc // never called: the context ends, and is released, at its deadline
	renew  time.Time          // from then on, callers get a new one
}

func (d *sharedDeadline) context(now time.Time) context.Context {
	if c := d.cur.Load(); c != nil && now.Before(c.renew) {
		return c.Context
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(dirTimeout))
	d.cur.Store(&deadlineContext{ctx, cancel, now.Add(dirTimeout / 64)})
	return ctx
}

// httpDate is now in the form of the Date header (RFC 3261 §20.17),
// formatted once per second.
func httpDate(now time.Time) string {
	sec := now.Unix()
	if d := lastDate.Load(); d != nil && d.sec == sec {
		return d.text
	}
	d := &dateText{sec: sec, text: now.UTC().Format(dateFormat)}
	lastDate.Store(d)
	return d.text
}

const dateFormat = "Mon, 02 Jan 2006 15:04:05 GMT" // RFC 1123 in GMT

type dateText struct {
	sec  int64
	text string
}

var lastDate atomic.Pointer[dateText]

// announce publishes the contacts a REGISTER added and those it removed.
func (s *Switch) announce(user directory.User, before, after []directory.Binding) {
	has := func(bs []directory.Binding, contact string) bool {
		return slices.ContainsFunc(bs, func(b directory.Binding) bool { return b.Contact == contact })
	}
	for _, b := range after {
		if !has(before, b.Contact) {
			s.onRegistered(user, b)
		}
	}
	for _, b := range before {
		if !has(after, b.Contact) {
			s.onUnregistered(user, b)
		}
	}
}

// registration reads the Contacts and expiries of a REGISTER (RFC 3261
// §10.3 steps 6–7) into the changes it asks of the directory. A non-zero code
// is the error answer.
func (s *Switch) registration(req registerRequest, user directory.User) (directory.Registration, int, string) {
	reg := directory.Registration{AOR: user.Username, CallID: req.callID, CSeq: req.cseq}
	headerExpires := -1
	if req.hasExpires {
		n, err := strconv.Atoi(req.expires)
		if err != nil || n < 0 {
			return reg, 400, "Bad Expires"
		}
		headerExpires = n
	}
	now := time.Now()
	for _, c := range req.contacts {
		if c.wildcard {
			if len(req.contacts) != 1 || headerExpires != 0 {
				return reg, 400, "Wildcard Contact needs Expires: 0 and no other Contact"
			}
			reg.RemoveAll = true
			continue
		}
		secs := headerExpires
		if c.hasExpires {
			n, err := strconv.Atoi(c.expires)
			if err != nil || n < 0 {
				return reg, 400, "Bad Contact expires"
			}
			secs = n
		}
		exp := s.cfg.DefaultExpires
		if secs >= 0 {
			exp = time.Duration(secs) * time.Second
		}
		if exp > 0 && exp < s.cfg.MinExpires {
			return reg, 423, "Interval Too Brief"
		}
		contact := c.uri
		if exp == 0 {
			reg.Remove = append(reg.Remove, contact)
			continue
		}
		reg.Put = append(reg.Put, directory.Binding{
			AOR:       user.Username,
			Contact:   contact,
			Source:    req.source,
			Transport: transportName(req.transport),
			Flow:      reliable(req.transport) || req.natted,
			MD5Only:   s.legacy.known(req.ip),
			Node:      s.cfg.NodeID,
			CallID:    reg.CallID,
			CSeq:      reg.CSeq,
			UserAgent: req.userAgent,
			Expires:   now.Add(min(exp, s.cfg.MaxExpires)),
		})
	}
	return reg, 0, ""
}

// transportName is the lower-case name of a transport, without allocating
// for the usual ones.
func transportName(tp string) string {
	for _, n := range [...]string{"udp", "tcp", "tls", "ws", "wss"} {
		if strings.EqualFold(tp, n) {
			return n
		}
	}
	return strings.ToLower(tp)
}

func (s *Switch) onRegistered(u directory.User, b directory.Binding) {
	s.log.Info("registered", "aor", b.AOR, "transport", b.Transport, "source", b.Source, "expires", time.Until(b.Expires).Round(time.Second))
	s.events.Publish(modules.Registered{Phone: phoneOf(u, b), Expires: time.Until(b.Expires).Round(time.Second), UserAgent: b.UserAgent})
}

func (s *Switch) onUnregistered(u directory.User, b directory.Binding) {
	s.log.Info("unregistered", "aor", b.AOR, "transport", b.Transport)
	s.events.Publish(modules.Unregistered{Phone: phoneOf(u, b), Reason: "unregistered"})
}

func phoneOf(u directory.User, b directory.Binding) modules.Phone {
	return modules.Phone{Time: time.Now(), User: u.Username, Agency: u.Agency, Contact: b.Contact, Source: b.Source, Transport: b.Transport, Node: b.Node}
}
