package sip

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/media"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

const branchMagic = "z9hG4bK"

// asIs is a client request option that leaves a forwarded request exactly as
// the proxy prepared it (sipgo would otherwise rebuild headers).
func asIs(*sipgo.Client, *sip.Request) error { return nil }

func (s *Switch) handleInvite(req *sip.Request, tx sip.ServerTransaction) {
	if inDialog(req) {
		s.handleInDialog(req, tx)
		return
	}
	if s.draining.Load() {
		s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "60"))
		return
	}
	// Over UDP the gate has applied the cap already (udpgate.go).
	if req.Transport() != "UDP" && !s.callRate.allow() {
		// Capacity returns within the second: a peer that honours
		// Retry-After (RFC 3261 §21.5.4) keeps away no longer.
		s.metrics.overloaded.WithLabelValues("call_rate").Inc()
		s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "1"))
		return
	}
	s.handleInitial(req, tx)
}

// handleRequest proxies every method but INVITE, ACK, CANCEL and REGISTER.
func (s *Switch) handleRequest(req *sip.Request, tx sip.ServerTransaction) {
	if inDialog(req) {
		s.handleInDialog(req, tx)
		return
	}
	switch req.Method {
	case sip.BYE, sip.PRACK, sip.UPDATE, sip.NOTIFY, sip.INFO:
		s.respond(req, tx, 481, "Call/Transaction Does Not Exist")
		return
	}
	s.handleInitial(req, tx)
}

func inDialog(req *sip.Request) bool {
	return req.To().Params.Has("tag")
}

// prepare applies RFC 3261 §16.3–16.4 to a request to forward: Max-Forwards,
// loop detection, Proxy-Require, and removal of our own Route entries. It
// returns the request to forward (a copy), whether a Route of ours was on it,
// and a non-zero code when the request must be answered instead.
func (s *Switch) prepare(req *sip.Request) (fwd *sip.Request, routed bool, code int, reason string) {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return nil, false, 483, "Too Many Hops"
	}
	if s.looped(req) {
		return nil, false, 482, "Loop Detected"
	}
	if h := firstHeader(req, "Proxy-Require"); h != nil {
		return nil, false, 420, "Bad Extension"
	}
	fwd = req.Clone()
	if mf := fwd.MaxForwards(); mf != nil {
		mf.Dec()
	} else {
		m := sip.MaxForwardsHeader(70)
		fwd.AppendHeader(&m)
	}
	for r := fwd.Route(); r != nil && s.isUs(r.Address); r = fwd.Route() {
		fwd.RemoveHeader("Route")
		routed = true
	}
	return fwd, routed, 0, ""
}

// loopKey identifies a request for loop detection (RFC 3261 §16.6 step 8):
// the same key on one of our own Via entries means the request came back.
func loopKey(req *sip.Request, ruri string) string {
	h := sha256.New()
	h.Write([]byte(ruri))
	h.Write([]byte{0})
	h.Write([]byte(callID(req)))
	h.Write([]byte{0})
	tag, _ := req.From().Params.Get("tag")
	h.Write([]byte(tag))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)))
	return hex.EncodeToString(h.Sum(nil)[:6])
}

func (s *Switch) looped(req *sip.Request) bool {
	vias := allHeaders(req, "Via")
	if len(vias) < 2 {
		return false
	}
	prefix := branchMagic + "-" + loopKey(req, req.Recipient.String()) + "-"
	for _, h := range vias {
		v, ok := h.(*sip.ViaHeader)
		if !ok || !s.isOurHost(v.Host) || !s.isUs(sip.Uri{Host: v.Host, Port: v.Port}) {
			continue // another's, maybe another node on this host
		}
		if b, _ := v.Params.Get("branch"); strings.HasPrefix(b, prefix) {
			return true
		}
	}
	return false
}

// addVia puts our Via on a request about to leave on transport tp to its
// destination (set before), naming the switch in the destination's address
// family, and marks the previous hop's Via with received/rport (RFC 3261
// §18.2.1, RFC 3581; received holds a bare IPv6 address, RFC 5118 §4.5).
func (s *Switch) addVia(fwd *sip.Request, src *sip.Request, tp string) {
	if v := fwd.Via(); v != nil && src != nil {
		host, port, _ := sip.ParseAddr(src.Source())
		if v.Params.Has("rport") {
			v.Params.Add("rport", strconv.Itoa(port))
		}
		if v.Host != host {
			v.Params.Add("received", host)
		}
	}
	l := s.local(tp, fwd.Destination())
	via := &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       strings.ToUpper(tp),
		Host:            l.host,
		Port:            l.port,
		Params:          sip.NewParams(),
	}
	via.Params.Add("branch", branchMagic+"-"+loopKey(fwd, fwd.Recipient.String())+"-"+sip.GenerateBranchN(10)[len(branchMagic):])
	fwd.PrependHeader(via)
}

// addRecordRoute keeps the switch on the path of in-dialog requests. src is
// the request being forwarded, fwd its copy leaving over transport outTp to
// its destination (set before). When the two sides reach the switch at
// different addresses (another transport or address family), two entries
// are written (RFC 5658, Kamailio's enable_double_rr): the top one for the
// side fwd goes to, the other for src's side, so that each side's in-dialog
// requests come to the switch where that side can reach it.
func (s *Switch) addRecordRoute(fwd, src *sip.Request, outTp string) {
	in, out := strings.ToLower(src.Transport()), strings.ToLower(outTp)
	inRR := s.recordRoute(in, s.local(in, src.Source()))
	fwd.PrependHeader(inRR)
	if outRR := s.recordRoute(out, s.local(out, fwd.Destination())); outRR.Address.String() != inRR.Address.String() {
		fwd.PrependHeader(outRR)
	}
}

func (s *Switch) recordRoute(tp string, l local) *sip.RecordRouteHeader {
	params := sip.NewParams()
	if tp != "udp" {
		params.Add("transport", tp)
	}
	params.Add("lr", "")
	return &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: l.host, Port: l.port, UriParams: params}}
}

// fixContact points the Contact of a message that came straight from a phone
// at the address it really came from, so that in-dialog requests reach a
// phone behind NAT or on a connection-oriented transport (Kamailio's
// fix_nated_contact).
func fixContact(m interface{ Contact() *sip.ContactHeader }, source, transport string) {
	c := m.Contact()
	if c == nil || c.Address.Wildcard {
		return
	}
	host, port, err := sip.ParseAddr(source)
	if err != nil {
		return
	}
	c.Address.Host, c.Address.Port = host, port
	tp := strings.ToLower(transport)
	c.Address.UriParams = c.Address.UriParams.Clone()
	c.Address.UriParams.Remove("transport")
	if tp != "udp" {
		c.Address.UriParams.Add("transport", tp)
	}
}

// fromPhone reports whether a request came straight from a phone that must be
// reached back at its source address: behind NAT or over a connection.
func fromPhone(req *sip.Request) bool {
	return len(allHeaders(req, "Via")) == 1 && (reliable(req.Transport()) || viaNATed(req))
}

// viaNATed reports whether a request's sent-by differs from where it came
// from (Kamailio's nat_uac_test 2 and 16).
func viaNATed(req *sip.Request) bool {
	v := req.Via()
	host, port, err := sip.ParseAddr(req.Source())
	if v == nil || err != nil {
		return false
	}
	vport := v.Port
	if vport == 0 {
		vport = sip.DefaultPort(v.Transport)
	}
	return strings.Trim(v.Host, "[]") != host || vport != port
}

func reliable(transport string) bool {
	return !strings.EqualFold(transport, "udp")
}

// nextHop sets where a request leaves to: its top Route, else its
// Request-URI. It returns the transport.
func nextHop(fwd *sip.Request) string {
	u := fwd.Recipient
	if r := fwd.Route(); r != nil {
		u = r.Address
	}
	tp := "udp"
	if u.IsEncrypted() {
		tp = "tls"
	}
	if t, ok := u.UriParams.Get("transport"); ok && t != "" {
		tp = strings.ToLower(t)
	}
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(tp)
	}
	fwd.SetTransport(strings.ToUpper(tp))
	fwd.SetDestination(joinHostPort(u.Host, port))
	return tp
}

func joinHostPort(host string, port int) string {
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	return host + ":" + strconv.Itoa(port)
}

// handleInDialog forwards a request of an established dialog along its route set.
func (s *Switch) handleInDialog(req *sip.Request, tx sip.ServerTransaction) {
	if s.handoffRequest(req, tx) {
		return
	}
	fwd, routed, code, reason := s.prepare(req)
	if code != 0 {
		s.respond(req, tx, code, reason)
		return
	}
	if !routed || fwd.Route() == nil && s.isUs(fwd.Recipient) {
		// Not on a route set we recorded (we are not an open relay), or
		// addressed to the switch itself, which holds no dialogs.
		s.respond(req, tx, 404, "Not Here")
		return
	}
	if fromPhone(req) {
		fixContact(fwd, req.Source(), req.Transport())
	}
	c := s.inDialogRequest(req)
	if c != nil && req.Method == sip.BYE && s.handOff(c, req, tx) {
		return
	}
	if c != nil && req.Method == sip.REFER {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ok := s.checkRefer(ctx, req, tx, c)
		cancel()
		if !ok {
			return
		}
	}
	direct := fwd.Route() == nil
	tp := nextHop(fwd)
	var hooks forkHooks
	if c != nil && c.anchored && (req.IsInvite() || req.Method == sip.UPDATE) {
		if len(req.Body()) > 0 {
			tag, _ := req.From().Params.Get("tag")
			body, err := s.offerSDP(c.info.CallID, tag, req, media.TransportAsOffered, peerFamily(fwd.Destination()))
			if err != nil {
				s.mediaError(req, tx, err)
				return
			}
			fwd.SetBody(body)
		}
		hooks.sdp = s.responseSDP(c, req)
	}
	s.addVia(fwd, req, tp)
	if fwd.IsInvite() {
		s.addRecordRoute(fwd, req, tp)
	}
	f := newForker(s, req, tx, hooks)
	f.run([][]branchTarget{{{req: fwd, direct: direct}}}, s.cfg.RingTimeout)
	if req.Method == sip.BYE {
		s.endCall(req, f.finalCode())
		s.endRelayForNode(callID(req))
	}
}

// handleAck forwards the ACK of a 2xx statelessly (it is its own
// transaction). Other ACKs are for a non-2xx answer of ours whose
// transaction has ended (at once on TCP): they stop here.
func (s *Switch) handleAck(req *sip.Request, tx sip.ServerTransaction) {
	s.metrics.requests.WithLabelValues(string(sip.ACK)).Inc()
	v, ok := s.calls.Load(callID(req))
	if !ok && !s.relayingForNode(callID(req)) {
		return
	}
	fwd, routed, code, _ := s.prepare(req)
	if code != 0 || !routed || fwd.Route() == nil && s.isUs(fwd.Recipient) {
		return
	}
	if ok {
		s.ackSDP(v.(*call), req, fwd)
	}
	tp := nextHop(fwd)
	s.addVia(fwd, req, tp)
	if err := s.client.WriteRequest(fwd, asIs); err != nil {
		s.log.Debug("ACK not forwarded", "call_id", callID(req), "error", err)
	}
}

// handleInitial authenticates, routes and forwards a dialog-creating or
// out-of-dialog request.
func (s *Switch) handleInitial(req *sip.Request, tx sip.ServerTransaction) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fwd, _, code, reason := s.prepare(req)
	if code != 0 {
		s.respond(req, tx, code, reason)
		return
	}
	if s.fromNode(ctx, req, tx, fwd) {
		return
	}
	caller := routing.Request{Caller: req.From().Address.User, Time: start}
	trunk := s.trunks.byAddress(sourceIP(req))
	if trunk == "" && !s.trusted(sourceIP(req)) && req.Method != sip.OPTIONS {
		user, ok := s.authenticate(ctx, authOf(req, "Proxy-Authorization"), s.answerer(req, tx), true)
		if !ok {
			return
		}
		if trunk = s.trunks.byUser(user.Username); trunk == "" && req.From().Address.User != user.Username {
			s.metrics.authFailures.WithLabelValues("from_mismatch").Inc()
			s.respond(req, tx, 403, "Forbidden")
			return
		}
		caller.CallerAgency = user.Agency
		if s.featureCode(ctx, req, tx, user) {
			return
		}
	}
	caller.Dialled, caller.Trunk = s.trunks.dialled(req, trunk), trunk
	fwd.RemoveHeader("Proxy-Authorization")
	// Only the switch and the peers of auth.trusted set correlation headers
	// (the ticket code): not phones, and not trunks, whose callers are the
	// public's.
	believed := s.trusted(sourceIP(req))
	if !believed {
		for _, name := range correlationHeaders {
			for fwd.RemoveHeader(name) {
			}
		}
	}

	dec, err := s.router.Route(ctx, caller)
	if err != nil {
		s.log.Error("routing failed", "call_id", callID(req), "error", err)
		s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return
	}
	var c *call
	if req.IsInvite() {
		if trunk == "" && caller.CallerAgency == "" {
			trunk = sourceIP(req).String()
		}
		c = s.newCall(req, caller, trunk, dec, believed)
		s.metrics.callAttempts.WithLabelValues(label(c.info.SourceAgency), label(c.info.DestAgency)).Inc()
		s.continueTransfer(req, fwd, c, dec)
		s.publishOffered(c, dec)
	}
	// final records the end of a call that was not answered.
	final := func(code int, cancelled bool) {
		if c != nil {
			s.metrics.callOutcomes.WithLabelValues(label(c.info.SourceAgency), label(c.info.DestAgency), outcomeOf(code)).Inc()
			if code >= 300 || code < 200 {
				s.queueLeft(c, map[bool]string{true: "abandoned", false: "failed"}[cancelled])
				s.unanswered(c, code, cancelled)
			}
		}
	}
	if dec.Status != 0 {
		s.respond(req, tx, dec.Status, dec.Reason, reasonHeader(dec.Status, dec.Reason))
		final(dec.Status, false)
		return
	}
	groups, callees, err := s.branches(ctx, req, fwd, dec)
	if err != nil {
		s.log.Error("location lookup failed", "call_id", callID(req), "error", err)
		s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		final(503, false)
		return
	}
	// Nobody reachable: a public number's call still follows the overflow chain.
	if len(groups) == 0 && (c == nil || !dec.Public) {
		s.respond(req, tx, 480, "Temporarily Unavailable")
		final(480, false)
		return
	}
	var offer []byte // the anchored SDP offer
	// A late offer (no SDP in the INVITE) is anchored only when a single
	// contact rings: the relay names its sides after the first SDPs it sees,
	// and the 18x and 2xx of several forked or overflowing branches would
	// take both.
	late := len(req.Body()) == 0
	if c != nil && !(late && (dec.Public || branchCount(groups) != 1)) && s.anchors(ctx, req, c.info.SourceAgency, c.info.DestAgency, callees) {
		c.anchored = true
		var users []string
		for _, t := range dec.Targets {
			users = append(users, t.Username)
		}
		c.lateOffer = late
		if !c.lateOffer {
			body, err := s.offerSDP(c.info.CallID, c.callerTag, req, s.peerTransport(ctx, users), peerFamily(destinations(groups)...))
			if err != nil {
				s.mediaError(req, tx, err)
				final(488, false)
				return
			}
			setBodies(groups, body)
			offer = body
		}
	}
	var hooks forkHooks
	if c != nil {
		// At once, as Kamailio's t_relay does: a caller that hears nothing
		// retransmits its INVITE, and a retransmission racing the answers makes
		// sipgo resend a stale 180 after the 200.
		s.respond(req, tx, 100, "Trying")
		hooks.first = func(code int) {
			s.metrics.setupSeconds.Observe(time.Since(start).Seconds())
			if code < 200 {
				s.ringing(c, code)
			}
		}
		hooks.answer = func(b *branch, res *sip.Response) { s.answered(c, b, res) }
		if c.anchored {
			hooks.sdp = s.responseSDP(c, req)
		}
	}
	s.queueEntered(c, dec)
	f := newForker(s, req, tx, hooks)
	f.ring(groups, cmpDuration(dec.RingTimeout, s.cfg.RingTimeout))
	s.overflow(f, c, req, fwd, caller, dec, offer)
	f.answer()
	final(f.finalCode(), f.wasCancelled())
}

func branchCount(groups [][]branchTarget) int {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	return n
}

func destinations(groups [][]branchTarget) []string {
	var dests []string
	for _, g := range groups {
		for _, b := range g {
			dests = append(dests, b.req.Destination())
		}
	}
	return dests
}

func setBodies(groups [][]branchTarget, body []byte) {
	for _, g := range groups {
		for _, b := range g {
			b.req.SetBody(body)
		}
	}
}

// reasonHeader explains a refusal of the switch's own (RFC 3326), e.g. an
// office closed until a given day.
func reasonHeader(code int, text string) sip.Header {
	return sip.NewHeader("Reason", fmt.Sprintf("SIP;cause=%d;text=%q", code, text))
}

// branches turns a routing decision into the requests to send: one group per
// ring step, one request per registered contact.
// It also returns the bindings rung.
func (s *Switch) branches(ctx context.Context, req, fwd *sip.Request, dec routing.Decision) ([][]branchTarget, []directory.Binding, error) {
	if len(dec.Targets) > 0 && dec.Targets[0].Trunk != "" {
		return s.trunks.branches(req, fwd, dec), nil, nil
	}
	var groups [][]branchTarget
	var group []branchTarget
	var all []directory.Binding
	for _, t := range dec.Targets {
		bindings, err := s.dir.Bindings(ctx, t.Username)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, bindings...)
		bindings, remote := s.viaNodes(ctx, req, fwd, t.Username, bindings)
		for _, br := range remote {
			group = append(group, branchTarget{req: br, user: t.Username})
		}
		for _, b := range bindings {
			if br := s.branchFor(req, fwd, b); br != nil {
				group = append(group, branchTarget{req: br, direct: true, user: t.Username})
			}
		}
		if !dec.Parallel && len(group) > 0 {
			groups, group = append(groups, group), nil
		}
	}
	if len(group) > 0 {
		groups = append(groups, group)
	}
	return groups, all, nil
}

// branchFor builds the request for one registered contact: Request-URI set to
// the contact, sent to the address and transport the phone registered from.
func (s *Switch) branchFor(req, fwd *sip.Request, b directory.Binding) *sip.Request {
	var uri sip.Uri
	if err := sip.ParseUri(b.Contact, &uri); err != nil {
		s.log.Warn("unusable binding", "aor", b.AOR, "contact", b.Contact, "error", err)
		return nil
	}
	br := fwd.Clone()
	br.Recipient = uri
	if fromPhone(req) {
		fixContact(br, req.Source(), req.Transport())
	}
	br.SetTransport(strings.ToUpper(b.Transport))
	if b.Flow {
		br.SetDestination(b.Source)
	} else {
		nextHop(br)
	}
	s.addVia(br, req, b.Transport)
	if req.IsInvite() || req.Method == sip.SUBSCRIBE || req.Method == sip.REFER {
		s.addRecordRoute(br, req, b.Transport)
	}
	return br
}

func label(agency string) string {
	if agency == "" {
		return "external"
	}
	return agency
}

func outcomeOf(code int) string {
	switch {
	case code >= 200 && code < 300:
		return "answered"
	case code == 486 || code == 600:
		return "busy"
	case code == 487:
		return "cancelled"
	case code == 408 || code == 480:
		return "no_answer"
	case code == 404 || code == 484 || code == 604:
		return "not_found"
	case code >= 500:
		return "failed"
	default:
		return "rejected"
	}
}

// forwardStrayResponse forwards a response no client transaction matched,
// such as a retransmitted 2xx to INVITE, statelessly along its Via.
func (s *Switch) forwardStrayResponse(res *sip.Response) {
	// Only a 2xx to INVITE outlives its transaction legitimately; anything
	// else comes from a branch already given up.
	v := res.Via()
	if v == nil || !s.isOurHost(v.Host) || !res.IsSuccess() || res.CSeq() == nil || res.CSeq().MethodName != sip.INVITE {
		return
	}
	fwd := res.Clone()
	fwd.RemoveHeader("Via")
	next := fwd.Via()
	if next == nil {
		return
	}
	host, port := next.Host, next.Port
	if r, ok := next.Params.Get("received"); ok && r != "" {
		host = r
	}
	if p, ok := next.Params.Get("rport"); ok && p != "" {
		port, _ = strconv.Atoi(p)
	}
	if port == 0 {
		port = sip.DefaultPort(next.Transport)
	}
	fwd.SetTransport(next.Transport)
	fwd.SetDestination(joinHostPort(host, port))
	if err := s.ua.TransportLayer().WriteMsg(fwd); err != nil {
		s.log.Debug("stray response not forwarded", "call_id", callID(res), "error", err)
	}
}
