package sip

import (
	"net/textproto"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
)

// Publisher receives the switch's events; *modules.Bus implements it.
type Publisher interface {
	Publish(modules.Event)
}

type noEvents struct{}

func (noEvents) Publish(modules.Event) {}

// correlationHeaders are copied from a call's INVITE onto its events, so that
// modules can follow a call across transfers.
var correlationHeaders = []string{"X-Ticket"}

// call is one INVITE through the switch, from its routing to its end.
type call struct {
	info      modules.Call
	origin    string // Call-ID of the first call of a chain of transfers
	callerTag string
	offered   time.Time
	rang      time.Time
	answered  time.Time
	queue     string        // agency whose queue the call waits in, "" when not waiting
	queuedAt  time.Time     // when it started waiting there
	occupied  chan struct{} // closed once its operators are marked busy in their queues
	busyUsers []string      // the operators marked busy, to mark idle again

	anchored  bool // its media goes through the relay
	lateOffer bool // the INVITE had no SDP: the 2xx offers, the ACK answers
	// The dialog as set up, for BYEs of the switch's own (media timeout).
	inv    *sip.Request  // the caller's INVITE
	answer *sip.Response // the callee's 2xx
	branch *sip.Request  // the INVITE the callee answered
	// Highest CSeq each side used in the dialog.
	callerCSeq, calleeCSeq atomic.Uint32
}

// newCall describes a routed INVITE for the events. Correlation headers are
// believed only when the request's source is (auth.trusted): a phone or a
// carrier's caller could otherwise attach a stranger's ticket to its call.
func (s *Switch) newCall(req *sip.Request, caller routing.Request, trunk string, dec routing.Decision, believed bool) *call {
	from := req.From()
	tag, _ := from.Params.Get("tag")
	c := &call{callerTag: tag, offered: time.Now(), inv: req, origin: callID(req)}
	c.info = modules.Call{
		CallID: callID(req),
		Caller: modules.Caller{
			Number:      from.Address.User,
			DisplayName: from.DisplayName,
			InDirectory: caller.CallerAgency != "",
			Trunk:       trunk,
		},
		Callee:       caller.Dialled,
		SourceAgency: caller.CallerAgency,
		DestAgency:   dec.DestAgency,
		Node:         s.cfg.NodeID,
	}
	for _, name := range correlationHeaders {
		if h := firstHeader(req, name); h != nil && believed {
			if c.info.Headers == nil {
				c.info.Headers = map[string]string{}
			}
			c.info.Headers[textproto.CanonicalMIMEHeaderKey(name)] = h.Value()
		}
	}
	return c
}

// now returns the call's common event fields stamped with the current time.
func (c *call) now() modules.Call {
	info := c.info
	info.Time = time.Now()
	return info
}

// publishOffered tells the call was offered to the agency dialled, then
// each hop of its overflow chain to the agency that takes it.
func (s *Switch) publishOffered(c *call, dec routing.Decision) {
	offered := c.now()
	if len(dec.Overflowed) > 0 {
		offered.DestAgency = dec.Overflowed[0].From
	}
	s.events.Publish(modules.CallOffered{Call: offered, Public: dec.Public})
	s.publishHops(c, dec.Overflowed)
}

// ringing records the first 18x of a call.
func (s *Switch) ringing(c *call, code int) {
	if !c.rang.IsZero() {
		return
	}
	c.rang = time.Now()
	s.events.Publish(modules.CallRinging{Call: c.now(), Code: code})
}

// answered records the call's 2xx, before it is relayed: from then on the
// ACK and in-dialog requests of the call find it.
func (s *Switch) answered(c *call, b *branch, res *sip.Response) {
	if !c.answered.IsZero() {
		// Another forked branch answered too: the call is the first one's;
		// the caller ends the extra dialog itself (ACK, then BYE).
		return
	}
	c.answered = time.Now()
	c.info.User = b.user
	c.branch, c.answer = b.req, res
	c.callerCSeq.Store(c.inv.CSeq().SeqNo)
	if _, loaded := s.calls.LoadOrStore(c.info.CallID, c); !loaded {
		s.active.Add(1)
	}
	s.queueLeft(c, "answered")
	s.occupy(c)
	s.events.Publish(modules.CallAnswered{Call: c.now(), Wait: c.answered.Sub(c.offered)})
}

// unanswered ends a call that got a final answer other than 2xx.
func (s *Switch) unanswered(c *call, code int, cancelled bool) {
	d := disposition(code)
	by := modules.SideSwitch
	if cancelled {
		d, by = modules.DispositionAbandoned, modules.SideCaller
	} else if code >= 400 && code < 700 && code != 408 {
		by = modules.SideCallee
	}
	ev := s.endedEvent(c, d, code, by)
	ev.Media = s.releaseMedia(c)
	s.events.Publish(ev)
}

// endCall forgets a call once its BYE has been answered.
func (s *Switch) endCall(bye *sip.Request, code int) {
	// The session ends when a BYE is sent (RFC 3261 §15.1.1), whatever the
	// other side answers (gone, unreachable, an error), except a challenge:
	// that BYE comes again with credentials.
	if code < 200 || code == 401 || code == 407 {
		return
	}
	v, ok := s.calls.LoadAndDelete(callID(bye))
	if !ok {
		return
	}
	s.active.Add(-1)
	c := v.(*call)
	s.vacate(c)
	by := modules.SideCallee
	if tag, _ := bye.From().Params.Get("tag"); tag == c.callerTag {
		by = modules.SideCaller
	}
	ev := s.endedEvent(c, modules.DispositionAnswered, 200, by)
	ev.Media = s.releaseMedia(c)
	s.events.Publish(ev)
}

// inDialogRequest notes a request of an answered call: which side sent it, for the
// CSeq of the switch's own BYEs.
func (s *Switch) inDialogRequest(req *sip.Request) *call {
	v, ok := s.calls.Load(callID(req))
	if !ok {
		return nil
	}
	c := v.(*call)
	seq := req.CSeq().SeqNo
	counter := &c.calleeCSeq
	if tag, _ := req.From().Params.Get("tag"); tag == c.callerTag {
		counter = &c.callerCSeq
	}
	for old := counter.Load(); seq > old && !counter.CompareAndSwap(old, seq); old = counter.Load() {
	}
	return c
}

func (s *Switch) endedEvent(c *call, d modules.Disposition, code int, by modules.Side) modules.CallEnded {
	now := time.Now()
	ev := modules.CallEnded{Call: c.now(), Disposition: d, Code: code, HangupBy: by, Ring: now.Sub(c.offered)}
	if !c.rang.IsZero() {
		ev.Setup = c.rang.Sub(c.offered)
	}
	if !c.answered.IsZero() {
		ev.Ring = c.answered.Sub(c.offered)
		ev.Talk = now.Sub(c.answered)
	}
	return ev
}

func disposition(code int) modules.Disposition {
	switch {
	case code >= 200 && code < 300:
		return modules.DispositionAnswered
	case code == 486 || code == 600:
		return modules.DispositionBusy
	case code == 408 || code == 480:
		return modules.DispositionNoAnswer
	case code >= 500:
		return modules.DispositionFailed
	default:
		return modules.DispositionRejected
	}
}
