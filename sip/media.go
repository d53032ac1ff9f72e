package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/media"
	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing/directory"
)

// Relay is what the proxy needs of the media relay; *media.Relay implements it.
type Relay interface {
	Offer(callID, tag string, body []byte, opts media.LegOptions) ([]byte, error)
	Answer(callID, tag string, body []byte, opts media.LegOptions) ([]byte, error)
	Release(callID string) (media.Quality, bool)
	OnTimeout(func(callID string, q media.Quality))
	OnDTMF(func(callID, leg string, digit rune, d time.Duration))
}

// Anchoring policies, globally (Config.Anchor) and per agency (Agency.Media).
const (
	AnchorAlways = "always" // every call's media goes through the relay
	AnchorNAT    = "nat"    // only when a side is behind NAT
	AnchorNever  = "never"
)

// anchors decides whether a call's media goes through the relay: each side
// follows its agency's policy (or the switch's), and one side asking is enough.
func (s *Switch) anchors(ctx context.Context, req *sip.Request, srcAgency, dstAgency string, callees []directory.Binding) bool {
	if s.relay == nil {
		return false
	}
	callerNAT := viaNATed(req)
	calleeNAT := false
	for _, b := range callees {
		calleeNAT = calleeNAT || b.Flow && b.Transport == "udp"
	}
	return s.sideAnchors(ctx, srcAgency, callerNAT) || s.sideAnchors(ctx, dstAgency, calleeNAT)
}

func (s *Switch) sideAnchors(ctx context.Context, agency string, nat bool) bool {
	policy := s.cfg.Anchor
	if agency != "" {
		if a, err := s.dir.Agency(ctx, agency); err == nil && a.Media != "" {
			policy = a.Media
		}
	}
	switch policy {
	case AnchorAlways:
		return true
	case AnchorNAT:
		return nat
	}
	return false
}

// offerSDP puts the relay in the SDP offer of req (written by the side with
// tag) and returns the body to forward, with the transport and address
// family the peer takes.
func (s *Switch) offerSDP(cid, tag string, req *sip.Request, peer media.Transport, fam media.Family) ([]byte, error) {
	return s.relay.Offer(cid, tag, req.Body(), media.LegOptions{Source: sourceIP(req), PeerTransport: peer, PeerFamily: fam})
}

// peerFamily is the address family of the relay as the side receiving an
// offer sees it: the family of that side's addresses ("host:port": the
// contacts or flows rung, the caller's source), when they all agree and are
// addresses; else the offerer's.
func peerFamily(addrs ...string) media.Family {
	fam := media.FamilyAsOffered
	for i, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		ip, perr := netip.ParseAddr(host)
		if err != nil || perr != nil {
			return media.FamilyAsOffered // a host name: its family is the resolver's
		}
		f := media.FamilyIPv4
		if ip.Unmap().Is6() {
			f = media.FamilyIPv6
		}
		if i > 0 && f != fam {
			return media.FamilyAsOffered
		}
		fam = f
	}
	return fam
}

// peerTransport is what the users rung take: RTP or SRTP when they all agree
// (a desk phone, a softphone), else what the caller offered.
func (s *Switch) peerTransport(ctx context.Context, users []string) media.Transport {
	want := ""
	for i, name := range users {
		u, err := s.dir.User(ctx, name)
		if err != nil || i > 0 && u.Media != want {
			return media.TransportAsOffered
		}
		want = u.Media
	}
	switch want {
	case "rtp":
		return media.TransportRTP
	case "srtp":
		return media.TransportSRTP
	}
	return media.TransportAsOffered
}

// responseSDP returns the hook that anchors the SDP of each response to req
// (its To tag names the side that wrote it): the answer to req's offer, or,
// when req is an INVITE without SDP (a late offer), the offer itself, which
// the caller answers in its ACK (ackSDP).
func (s *Switch) responseSDP(c *call, req *sip.Request) func(*sip.Response) ([]byte, error) {
	late := req.IsInvite() && len(req.Body()) == 0
	return func(res *sip.Response) ([]byte, error) {
		tag, _ := res.To().Params.Get("tag")
		opts := media.LegOptions{Source: sourceIPOf(res.Source())}
		if late {
			opts.PeerFamily = peerFamily(req.Source())
			return s.relay.Offer(c.info.CallID, tag, res.Body(), opts)
		}
		return s.relay.Answer(c.info.CallID, tag, res.Body(), opts)
	}
}

// ackSDP anchors the answer an ACK carries to a late offer. An ACK cannot be
// refused: on error it goes on unanchored.
func (s *Switch) ackSDP(c *call, req, fwd *sip.Request) {
	if !c.anchored || len(req.Body()) == 0 {
		return
	}
	tag, _ := req.From().Params.Get("tag")
	body, err := s.relay.Answer(c.info.CallID, tag, req.Body(), media.LegOptions{Source: sourceIP(req)})
	if err != nil {
		s.log.Warn("late answer not anchored", "call_id", c.info.CallID, "error", err)
		return
	}
	fwd.SetBody(body)
}

// callerLeg is the relay's name for the caller's side: leg "a" made the
// first offer, which for a late offer is the callee.
func (c *call) callerLeg() string {
	if c.lateOffer {
		return "b"
	}
	return "a"
}

// releaseMedia frees the relay ports of a call and returns its quality for
// the call-ended event (nil when it was not anchored).
func (s *Switch) releaseMedia(c *call) *modules.MediaQuality {
	if !c.anchored {
		return nil
	}
	q, ok := s.relay.Release(c.info.CallID)
	if !ok {
		return nil
	}
	return mediaQuality(c, q)
}

func mediaQuality(c *call, q media.Quality) *modules.MediaQuality {
	leg := func(l media.LegQuality) modules.LegQuality {
		return modules.LegQuality{Packets: l.Packets, Loss: l.LossRatio, Jitter: l.Jitter.Seconds(), MOS: q.MOS}
	}
	if c.lateOffer {
		q.A, q.B = q.B, q.A
	}
	return &modules.MediaQuality{Caller: leg(q.A), Callee: leg(q.B)}
}

// mediaTimeout ends a call whose media stopped: the relay has released it
// already; both sides get a BYE saying why (RFC 3326).
func (s *Switch) mediaTimeout(cid string, q media.Quality) {
	v, ok := s.calls.LoadAndDelete(cid)
	if !ok {
		return
	}
	s.active.Add(-1)
	c := v.(*call)
	s.vacate(c)
	s.log.Warn("media timeout: ending the call", "call_id", cid)
	reason := sip.NewHeader("Reason", `Q.850;cause=102;text="media timeout"`)
	s.sendBye(c, true, reason)
	s.sendBye(c, false, reason)
	ev := s.endedEvent(c, modules.DispositionAnswered, 200, modules.SideSwitch)
	ev.Media = mediaQuality(c, q)
	s.events.Publish(ev)
}

// sendBye ends one side of an answered call on the switch's initiative.
func (s *Switch) sendBye(c *call, toCallee bool, hdrs ...sip.Header) {
	inv, ans := c.inv, c.answer
	var bye *sip.Request
	if toCallee {
		// A 2xx should name the callee's Contact; without one, the contact rung.
		target := c.branch.Recipient
		if ct := ans.Contact(); ct != nil {
			target = ct.Address
		}
		bye = sip.NewRequest(sip.BYE, target)
		bye.AppendHeader(sip.HeaderClone(inv.From()))
		bye.AppendHeader(sip.HeaderClone(ans.To()))
		bye.AppendHeader(&sip.CSeqHeader{SeqNo: c.callerCSeq.Load() + 1, MethodName: sip.BYE})
		bye.SetTransport(c.branch.Transport())
		bye.SetDestination(c.branch.Destination())
	} else {
		bye = sip.NewRequest(sip.BYE, inv.Contact().Address)
		from := &sip.FromHeader{DisplayName: ans.To().DisplayName, Address: ans.To().Address, Params: ans.To().Params.Clone()}
		to := &sip.ToHeader{DisplayName: inv.From().DisplayName, Address: inv.From().Address, Params: inv.From().Params.Clone()}
		bye.AppendHeader(from)
		bye.AppendHeader(to)
		bye.AppendHeader(&sip.CSeqHeader{SeqNo: c.calleeCSeq.Load() + 1, MethodName: sip.BYE})
		bye.SetTransport(inv.Transport())
		bye.SetDestination(inv.Source())
	}
	bye.AppendHeader(sip.HeaderClone(inv.CallID()))
	mf := sip.MaxForwardsHeader(70)
	bye.AppendHeader(&mf)
	for _, h := range hdrs {
		bye.AppendHeader(h)
	}
	s.addVia(bye, nil, bye.Transport())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
		defer cancel()
		res, err := s.client.Do(ctx, bye, asIs)
		if err != nil {
			s.log.Debug("BYE not answered", "call_id", c.info.CallID, "error", err)
			return
		}
		s.log.Debug("BYE answered", "call_id", c.info.CallID, "code", res.StatusCode)
	}()
}

// dtmf publishes a digit the relay saw on a call.
func (s *Switch) dtmf(cid, leg string, digit rune, _ time.Duration) {
	v, ok := s.calls.Load(cid)
	if !ok {
		return
	}
	c := v.(*call)
	side := modules.SideCaller
	if leg != c.callerLeg() {
		side = modules.SideCallee
	}
	s.events.Publish(modules.DigitsCollected{Call: c.now(), Leg: side, Digits: string(digit)})
}

// mediaError answers a request whose SDP the relay refused.
func (s *Switch) mediaError(req *sip.Request, tx sip.ServerTransaction, err error) {
	s.log.Warn("media not anchored", "call_id", callID(req), "error", err)
	if errors.Is(err, media.ErrUnsupported) || errors.Is(err, media.ErrBadSDP) {
		s.respond(req, tx, 488, "Not Acceptable Here", sip.NewHeader("Warning", fmt.Sprintf("399 %s %q", s.host, err.Error())))
		return
	}
	s.respond(req, tx, 500, "Server Internal Error")
}
