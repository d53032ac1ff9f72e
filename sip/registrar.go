package sip

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing/directory"
)

// authenticate checks the digest credentials of req (RFC 3261 §22). It answers
// the request itself (401/407 challenge, 403, 503) and returns false when the
// caller is not authenticated. Unknown users and wrong passwords get the same
// fresh challenge, so the answers tell nothing about which users exist.
func (s *Switch) authenticate(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, proxy bool) (directory.User, bool) {
	code, reason, authz, authn := 401, "Unauthorized", "Authorization", "WWW-Authenticate"
	if proxy {
		code, reason, authz, authn = 407, "Proxy Authentication Required", "Proxy-Authorization", "Proxy-Authenticate"
	}
	ip := sourceIP(req)
	// Which algorithms to offer is decided only when a challenge is due: a
	// request that authenticates never pays for it.
	challenge := func(stale bool) {
		algorithms := s.cfg.Algorithms
		if len(algorithms) > 1 && s.md5Only(ctx, req, ip, req.GetHeader(authz) != nil) {
			algorithms = []string{"MD5"}
		}
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		for _, c := range s.nonces.challenges(s.cfg.Realm, algorithms, ip, stale) {
			res.AppendHeader(sip.NewHeader(authn, c))
		}
		if len(algorithms) > 1 {
			s.legacy.challengedWithSeveral(ip.String(), callID(req))
		}
		s.send(req, tx, res)
	}
	fail := func(why string) {
		s.metrics.authFailures.WithLabelValues(why).Inc()
		if s.throttle.fail(ip) {
			s.log.Warn("source blocked after repeated authentication failures", "source", ip, "for", s.cfg.BlockFor)
		}
	}

	if s.throttle.blocked(ip) {
		s.metrics.authFailures.WithLabelValues("blocked").Inc()
		s.respond(req, tx, 403, "Forbidden")
		return directory.User{}, false
	}
	var creds *digest.Credentials
	for _, h := range req.GetHeaders(authz) {
		c, err := digest.ParseCredentials(h.Value())
		if err == nil && c.Realm == s.cfg.Realm {
			creds = c
			break
		}
	}
	if creds == nil {
		challenge(false)
		return directory.User{}, false
	}
	switch s.nonces.check(creds.Nonce, creds.Nc, ip) {
	case nonceStale:
		challenge(true)
		return directory.User{}, false
	case nonceBad:
		fail("nonce")
		challenge(false)
		return directory.User{}, false
	}
	user, err := s.credentials(ctx, creds.Username)
	if err != nil && !errors.Is(err, directory.ErrNotFound) {
		s.log.Error("directory unavailable for authentication", "call_id", callID(req), "error", err)
		s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return directory.User{}, false
	}
	ha1 := user.HA1MD5
	if strings.EqualFold(creds.Algorithm, "SHA-256") {
		ha1 = user.HA1SHA256
	}
	if ha1 == "" {
		// Unknown user: spend the same work as for a known one before answering.
		ha1 = "00000000000000000000000000000000"
	}
	if !constantTimeEqual(digestResponse(creds, string(req.Method), ha1), creds.Response) || user.Username == "" {
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
func (s *Switch) md5Only(ctx context.Context, req *sip.Request, ip netip.Addr, hasCredentials bool) bool {
	if s.legacy.isLegacy(ip.String(), callID(req), hasCredentials) {
		return true
	}
	if req.Method == sip.REGISTER {
		return false // a REGISTER is learnt from its own retry; an INVITE gets no second try
	}
	bindings, err := s.dir.Bindings(ctx, req.From().Address.User)
	if err != nil {
		return false
	}
	for _, b := range bindings {
		if b.MD5Only && sourceIPOf(b.Source) == ip {
			s.legacy.remember(ip.String())
			return true
		}
	}
	return false
}

func (s *Switch) handleRegister(req *sip.Request, tx sip.ServerTransaction) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	aor := req.To().Address.User
	if aor == "" {
		s.respond(req, tx, 400, "Missing user in To")
		return
	}
	user, ok := s.authenticate(ctx, req, tx, false)
	if !ok {
		return
	}
	if user.Username != aor || user.Role == roleTrunk {
		s.metrics.authFailures.WithLabelValues("aor_mismatch").Inc()
		s.respond(req, tx, 403, "Forbidden")
		return
	}

	updates, code, reason := s.bindingUpdates(req)
	if code == 423 {
		s.respond(req, tx, code, reason, sip.NewHeader("Min-Expires", strconv.Itoa(int(s.cfg.MinExpires/time.Second))))
		return
	}
	if code != 0 {
		s.respond(req, tx, code, reason)
		return
	}
	existing, err := s.dir.Bindings(ctx, aor)
	if err != nil {
		s.registrarUnavailable(req, tx, err)
		return
	}
	if code, reason := s.applyBindings(ctx, user, existing, updates, req); code != 0 {
		if code >= 500 {
			s.log.Error("registration not stored", "call_id", callID(req), "aor", aor, "reason", reason)
		}
		s.respond(req, tx, code, reason)
		return
	}
	current, err := s.dir.Bindings(ctx, aor)
	if err != nil {
		s.registrarUnavailable(req, tx, err)
		return
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	now := time.Now()
	for _, b := range current {
		secs := int(b.Expires.Sub(now).Round(time.Second) / time.Second)
		res.AppendHeader(sip.NewHeader("Contact", "<"+b.Contact+">;expires="+strconv.Itoa(max(secs, 1))))
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	s.send(req, tx, res)
}

func (s *Switch) registrarUnavailable(req *sip.Request, tx sip.ServerTransaction, err error) {
	s.log.Error("directory unavailable for registration", "call_id", callID(req), "error", err)
	s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
}

// bindingUpdate is one Contact of a REGISTER with its granted expiry
// (0 removes the binding; wildcard removes them all).
type bindingUpdate struct {
	contact  string
	expires  time.Duration
	wildcard bool
}

// bindingUpdates reads the Contacts and expiries of a REGISTER (RFC 3261
// §10.3 steps 6–7). A non-zero code is the error answer.
func (s *Switch) bindingUpdates(req *sip.Request) ([]bindingUpdate, int, string) {
	headerExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
		if err != nil || n < 0 {
			return nil, 400, "Bad Expires"
		}
		headerExpires = n
	}
	var out []bindingUpdate
	for _, h := range req.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			return nil, 400, "Bad Contact"
		}
		if c.Address.Wildcard {
			out = append(out, bindingUpdate{wildcard: true})
			continue
		}
		secs := headerExpires
		if v, ok := c.Params.Get("expires"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, 400, "Bad Contact expires"
			}
			secs = n
		}
		exp := s.cfg.DefaultExpires
		if secs >= 0 {
			exp = time.Duration(secs) * time.Second
		}
		if exp > 0 && exp < s.cfg.MinExpires {
			return nil, 423, "Interval Too Brief"
		}
		exp = min(exp, s.cfg.MaxExpires)
		out = append(out, bindingUpdate{contact: c.Address.String(), expires: exp})
	}
	for _, u := range out {
		if u.wildcard && (len(out) != 1 || headerExpires != 0) {
			return nil, 400, "Wildcard Contact needs Expires: 0 and no other Contact"
		}
	}
	return out, 0, ""
}

// applyBindings stores the updates of one REGISTER, refusing out-of-order
// requests of the same Call-ID (RFC 3261 §10.3 step 7).
func (s *Switch) applyBindings(ctx context.Context, user directory.User, existing []directory.Binding, updates []bindingUpdate, req *sip.Request) (int, string) {
	aor := user.Username
	cid, seq := callID(req), req.CSeq().SeqNo
	byContact := make(map[string]directory.Binding, len(existing))
	for _, b := range existing {
		byContact[b.Contact] = b
	}
	stale := func(b directory.Binding) bool { return b.CallID == cid && seq <= b.CSeq }
	for _, u := range updates {
		if u.wildcard {
			for _, b := range existing {
				if stale(b) {
					continue
				}
				if err := s.dir.DeleteBinding(ctx, aor, b.Contact); err != nil {
					return 500, "Binding not removed"
				}
				s.onUnregistered(user, b)
			}
			continue
		}
		old, had := byContact[u.contact]
		if had && stale(old) {
			return 500, "Out of order REGISTER"
		}
		if u.expires == 0 {
			if had {
				if err := s.dir.DeleteBinding(ctx, aor, u.contact); err != nil {
					return 500, "Binding not removed"
				}
				s.onUnregistered(user, old)
			}
			continue
		}
		b := directory.Binding{
			AOR:       aor,
			Contact:   u.contact,
			Source:    req.Source(),
			Transport: strings.ToLower(req.Transport()),
			Flow:      reliable(req.Transport()) || viaNATed(req),
			MD5Only:   s.legacy.known(sourceIP(req).String()),
			Node:      s.cfg.NodeID,
			CallID:    cid,
			CSeq:      seq,
			Expires:   time.Now().Add(u.expires),
		}
		if h := req.GetHeader("User-Agent"); h != nil {
			b.UserAgent = h.Value()
		}
		if err := s.dir.PutBinding(ctx, b); err != nil {
			return 500, "Binding not stored"
		}
		if !had {
			s.onRegistered(user, b)
		}
	}
	return 0, ""
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
