package sip

import (
	"context"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

// HeaderSource gives the headers a call carries on to its transfers (the
// ticket code); *modules.Running implements it.
type HeaderSource interface {
	CallHeaders(callID string) map[string]string
}

// transfer is a REFER the switch let through, waiting for the INVITE it
// causes: the referee calling the target, a new call that continues the
// original one.
type transfer struct {
	original   *call
	kind       modules.TransferType
	by         string // the referrer, a user of the directory
	fromAgency string
	expires    time.Time
}

// transfers holds the REFERs whose INVITE has not come yet, keyed by
// referee and target; one Timer F is long enough for the referee to act.
type transfers struct {
	mu      sync.Mutex
	pending map[string]transfer
}

func transferKey(referee, target string) string { return referee + "\x00" + target }

func (t *transfers) add(referee, target string, tr transfer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pending == nil {
		t.pending = map[string]transfer{}
	}
	now := time.Now()
	for k, p := range t.pending {
		if now.After(p.expires) {
			delete(t.pending, k)
		}
	}
	tr.expires = now.Add(sip.Timer_F)
	t.pending[transferKey(referee, target)] = tr
}

func (t *transfers) take(referee, target string) (transfer, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := transferKey(referee, target)
	tr, ok := t.pending[k]
	delete(t.pending, k)
	return tr, ok && time.Now().Before(tr.expires)
}

// checkRefer applies the transfer policy to a REFER in an answered call:
// only directory users transfer, and only operators outside their own
// agency (RFC 3515; Kamailio does this in its route script). A refused REFER
// is answered 403 here. An accepted one is remembered for its INVITE.
func (s *Switch) checkRefer(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, c *call) bool {
	rt := req.ReferTo()
	if rt == nil {
		s.respond(req, tx, 400, "Missing Refer-To")
		return false
	}
	target := rt.Address.User
	kind := modules.TransferBlind
	if rt.Address.Headers.Has("Replaces") {
		kind = modules.TransferAttended
	}
	// The sides are known from the call, not from the REFER's From (which,
	// from the callee, is the number dialled, and is not authenticated).
	by, referee := c.info.User, c.info.Caller.Number
	if tag, _ := req.From().Params.Get("tag"); tag == c.callerTag {
		by, referee = c.info.Caller.Number, c.info.User
	}
	user, err := s.dir.User(ctx, by)
	if err != nil {
		s.respond(req, tx, 403, "Forbidden")
		return false
	}
	if kind == modules.TransferBlind {
		dec, err := s.router.Route(ctx, routing.Request{Caller: by, CallerAgency: user.Agency, Dialled: target})
		if err == nil && dec.DestAgency != "" && dec.DestAgency != user.Agency && user.Role != directory.RoleOperator {
			s.respond(req, tx, 403, "Forbidden", reasonHeader(403, "only operators transfer outside their agency"))
			return false
		}
	}
	s.transfers.add(referee, target, transfer{original: c, kind: kind, by: by, fromAgency: user.Agency})
	s.log.Info("transfer", "call_id", c.info.CallID, "type", kind, "by", by, "target", target)
	return true
}

// continueTransfer recognises the INVITE a REFER caused: it publishes the
// transfer and carries the original call's correlation headers (the ticket
// code) onto the new call and the INVITE its answerer will see.
func (s *Switch) continueTransfer(req, fwd *sip.Request, c *call, dec routing.Decision) {
	tr, ok := s.transfers.take(req.From().Address.User, req.Recipient.User)
	if !ok {
		return
	}
	headers := map[string]string{}
	for k, v := range tr.original.info.Headers {
		headers[k] = v
	}
	if s.headers != nil {
		for k, v := range s.headers.CallHeaders(tr.original.info.CallID) {
			headers[k] = v
		}
	}
	for k, v := range headers {
		fwd.RemoveHeader(k)
		fwd.AppendHeader(sip.NewHeader(k, v))
	}
	if len(headers) > 0 {
		c.info.Headers = headers
	}
	c.origin = tr.original.origin
	s.metrics.transfers.WithLabelValues(string(tr.kind), label(tr.fromAgency), label(dec.DestAgency)).Inc()
	s.events.Publish(modules.CallTransferred{
		Call: c.now(), Type: tr.kind, FromAgency: tr.fromAgency, ToAgency: dec.DestAgency, By: tr.by,
		Target: req.Recipient.User, OriginalCallID: c.origin, NewCallID: c.info.CallID,
	})
}
