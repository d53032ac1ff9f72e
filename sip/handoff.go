package sip

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/media"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

// Handoffs says where a caller goes when the operator hangs up first (the
// satisfaction survey); *modules.Running implements it.
type Handoffs interface {
	AfterHangup(agency string) (number string, ok bool)
}

// A hand-off keeps the caller's leg of an anchored call when the operator
// hangs up first, and connects it to the number Handoffs gives (the survey
// IVR). The switch answers the operator's BYE itself, calls the IVR as a
// user agent with the SDP the operator was offered (the relay's ports), and
// points the relay's operator side at the IVR's answer. The caller's phone
// sees no SIP at all until the end: its dialog, its media address and its
// codec stay; only the voice changes. The switch then stands between two
// dialogs: the caller's BYE and INFO go to the IVR, the IVR's BYE to the
// caller. See docs/survey.md.
type handoff struct {
	c       *call
	number  string
	headers map[string]string // correlation headers of the call (ticket code)

	mu    sync.Mutex
	ivrID string        // Call-ID of the switch's call to the IVR
	inv   *sip.Request  // the switch's INVITE to the IVR
	ans   *sip.Response // the IVR's 2xx
	ended bool
	cseq  atomic.Uint32 // the switch's last CSeq towards the IVR
}

// handOff takes the operator's BYE of an answered call as the start of a
// hand-off, when the call's agency wants one; false leaves the BYE to the
// proxy.
func (s *Switch) handOff(c *call, bye *sip.Request, tx sip.ServerTransaction) bool {
	// Citizens only: a user of the directory calling a colleague is not surveyed.
	if s.handoff == nil || !c.anchored || c.info.DestAgency == "" || c.info.Caller.InDirectory || s.draining.Load() {
		return false
	}
	if tag, _ := bye.From().Params.Get("tag"); tag == c.callerTag {
		return false
	}
	number, ok := s.handoff.AfterHangup(c.info.DestAgency)
	// A late offer's relay sides are named the other way round and its
	// INVITE has no SDP to offer the IVR: no hand-off.
	if !ok || c.info.Callee == number || c.answer == nil || c.branch == nil || c.lateOffer {
		return false
	}
	if _, loaded := s.calls.LoadAndDelete(c.info.CallID); !loaded {
		return false
	}
	s.vacate(c) // the operator is free; the caller stays, with the survey
	// The ticket code, asked before the call's end lets modules forget it.
	headers := maps.Clone(c.info.Headers)
	if s.headers != nil {
		if headers == nil {
			headers = map[string]string{}
		}
		maps.Copy(headers, s.headers.CallHeaders(c.info.CallID))
	}
	h := &handoff{c: c, number: number, headers: headers}
	s.handoffs.Store(c.info.CallID, h)
	s.respond(bye, tx, 200, "OK")
	s.events.Publish(s.endedEvent(c, modules.DispositionAnswered, 200, modules.SideCallee))
	s.log.Info("operator hung up: caller handed off", "call_id", c.info.CallID, "target", number)
	go s.runHandoff(h)
	return true
}

// runHandoff calls the IVR and moves the caller's media to it; on failure
// the caller gets the BYE the operator sent.
func (s *Switch) runHandoff(h *handoff) {
	c := h.c
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	defer cancel()
	inv, dec, err := s.handoffInvite(ctx, h)
	if err != nil {
		s.log.Warn("hand-off failed", "call_id", c.info.CallID, "target", h.number, "error", err)
		s.endHandoff(h, true)
		return
	}
	h.cseq.Store(inv.CSeq().SeqNo)
	h.mu.Lock()
	h.ivrID, h.inv = callID(inv), inv
	if !h.ended { // else the caller hung up already: nothing to find the IVR's requests for
		s.handoffs.Store(h.ivrID, h)
	}
	h.mu.Unlock()
	info := c.now()
	info.Headers = h.headers
	s.events.Publish(modules.CallTransferred{
		Call: info, Type: modules.TransferBlind, FromAgency: c.info.DestAgency, ToAgency: dec.DestAgency,
		Target: h.number, OriginalCallID: c.origin, NewCallID: h.ivrID,
	})
	res, err := s.do(ctx, inv)
	if err == nil && !res.IsSuccess() {
		err = fmt.Errorf("%d %s", res.StatusCode, res.Reason)
	}
	if err == nil {
		calleeTag, _ := c.answer.To().Params.Get("tag")
		_, err = s.relay.Answer(c.info.CallID, calleeTag, res.Body(), media.LegOptions{Source: sourceIPOf(res.Source())})
		h.mu.Lock()
		h.ans = res
		ended := h.ended
		h.mu.Unlock()
		if werr := s.client.WriteRequest(h.request(s, sip.ACK, inv.CSeq().SeqNo), asIs); werr != nil {
			s.log.Debug("ACK to the hand-off target not sent", "call_id", h.ivrID, "error", werr)
		}
		if ended || err != nil {
			s.byeIVR(h) // the caller hung up meanwhile, or the media did not move
		}
	}
	if err != nil {
		s.log.Warn("hand-off refused", "call_id", c.info.CallID, "target", h.number, "error", err)
		s.endHandoff(h, true)
	}
}

// handoffInvite routes the hand-off's number and builds the INVITE to its
// first registered contact, offering the relay's side the operator had.
func (s *Switch) handoffInvite(ctx context.Context, h *handoff) (*sip.Request, routing.Decision, error) {
	c := h.c
	dec, err := s.router.Route(ctx, routing.Request{Caller: c.info.Caller.Number, Dialled: h.number, Time: time.Now()})
	if err != nil {
		return nil, dec, err
	}
	if dec.Status != 0 || len(dec.Targets) == 0 {
		return nil, dec, fmt.Errorf("not routed: %d %s", dec.Status, dec.Reason)
	}
	bindings, err := s.dir.Bindings(ctx, dec.Targets[0].Username)
	if err != nil {
		return nil, dec, err
	}
	// This node's own IVR: another node's registered at its own loopback.
	i := slices.IndexFunc(bindings, func(b directory.Binding) bool { return b.Node == "" || b.Node == s.cfg.NodeID })
	if i < 0 {
		return nil, dec, errors.New("not registered on this node")
	}
	b := bindings[i]
	var uri sip.Uri
	if err := sip.ParseUri(b.Contact, &uri); err != nil {
		return nil, dec, err
	}
	tp := strings.ToLower(b.Transport)
	inv := sip.NewRequest(sip.INVITE, uri)
	from := &sip.FromHeader{DisplayName: c.inv.From().DisplayName, Address: c.inv.From().Address, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	inv.AppendHeader(from)
	inv.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: h.number, Host: s.cfg.Realm}})
	cid := sip.CallIDHeader(sip.GenerateTagN(20) + "@" + s.host)
	inv.AppendHeader(&cid)
	inv.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	mf := sip.MaxForwardsHeader(70)
	inv.AppendHeader(&mf)
	inv.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	for k, v := range h.headers {
		inv.AppendHeader(sip.NewHeader(k, v))
	}
	inv.SetBody(c.branch.Body())
	inv.SetTransport(strings.ToUpper(tp))
	if b.Flow {
		inv.SetDestination(b.Source)
	} else {
		nextHop(inv)
	}
	l := s.local(tp, inv.Destination())
	inv.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: l.host, Port: l.port}})
	s.addVia(inv, nil, tp)
	return inv, dec, nil
}

// request builds a request of the switch in its dialog with the IVR.
func (h *handoff) request(s *Switch, method sip.RequestMethod, seq uint32) *sip.Request {
	h.mu.Lock()
	inv, ans := h.inv, h.ans
	h.mu.Unlock()
	target := inv.Recipient // the IVR answers with a Contact; without one, where it was called
	if ct := ans.Contact(); ct != nil {
		target = ct.Address
	}
	req := sip.NewRequest(method, target)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(ans.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetTransport(inv.Transport())
	req.SetDestination(inv.Destination())
	s.addVia(req, nil, inv.Transport())
	return req
}

// byeIVR ends the switch's call to the IVR.
func (s *Switch) byeIVR(h *handoff) {
	bye := h.request(s, sip.BYE, h.cseq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	defer cancel()
	if _, err := s.client.Do(ctx, bye, asIs); err != nil {
		s.log.Debug("BYE to the hand-off target not answered", "call_id", h.ivrID, "error", err)
	}
}

// handoffRequest takes an in-dialog request of a handed-off call: from the
// caller (its original Call-ID) or from the IVR. False if it is neither.
func (s *Switch) handoffRequest(req *sip.Request, tx sip.ServerTransaction) bool {
	v, ok := s.handoffs.Load(callID(req))
	if !ok {
		return false
	}
	h := v.(*handoff)
	h.mu.Lock()
	fromIVR, answered := callID(req) == h.ivrID, h.ans != nil
	h.mu.Unlock()
	switch {
	case req.Method == sip.BYE:
		s.respond(req, tx, 200, "OK")
		if !fromIVR && answered {
			go s.byeIVR(h)
		}
		s.endHandoff(h, fromIVR)
	case req.Method == sip.INFO && !fromIVR && answered:
		// DTMF as SIP INFO goes on to the IVR, in its dialog.
		fwd := h.request(s, sip.INFO, h.cseq.Add(1))
		if ct := req.ContentType(); ct != nil {
			fwd.AppendHeader(sip.HeaderClone(ct))
		}
		fwd.SetBody(req.Body())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := s.client.Do(ctx, fwd, asIs)
		if err != nil {
			s.respond(req, tx, 408, "Request Timeout")
			return true
		}
		s.respond(req, tx, res.StatusCode, res.Reason)
	case req.Method == sip.INVITE || req.Method == sip.UPDATE:
		// The session stays as it is (RFC 3261 §14.2).
		s.respond(req, tx, 488, "Not Acceptable Here")
	default:
		s.respond(req, tx, 200, "OK")
	}
	return true
}

// endHandoff forgets a hand-off, frees its media and, when the IVR ended it
// or it failed, hangs up on the caller.
func (s *Switch) endHandoff(h *handoff, byeCaller bool) {
	h.mu.Lock()
	if h.ended {
		h.mu.Unlock()
		return
	}
	h.ended = true
	ivrID := h.ivrID
	h.mu.Unlock()
	s.handoffs.Delete(h.c.info.CallID)
	if ivrID != "" {
		s.handoffs.Delete(ivrID)
	}
	if byeCaller {
		s.sendBye(h.c, false)
	}
	s.relay.Release(h.c.info.CallID)
	s.active.Add(-1)
}
