package sip

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// branchTarget is one forwarded copy of a request. direct means it goes
// straight to a phone, whose answers then get their Contact fixed.
type branchTarget struct {
	req    *sip.Request
	direct bool
	user   string // the user rung, for events
	trunk  *trunkBranch
}

// forker runs the client side of a stateful proxy transaction (RFC 3261
// §16.6–16.7): it sends branches in groups (a group rings in parallel, groups
// ring one after another), relays provisional answers, forwards every 2xx at
// once and cancels the rest, and otherwise answers with the best final
// response once every branch has ended.
type forker struct {
	s       *Switch
	req     *sip.Request
	tx      sip.ServerTransaction
	started time.Time
	hooks   forkHooks

	mu        sync.Mutex
	best      *sip.Response
	bestLocal bool // best is the switch's own answer, not a branch's
	final     int  // code of the final answer given upstream
	cancelled bool
	firstSeen bool
	hopBest   int // best final status of the current ring (hop)
	live      []*branch
	challenge []sip.Header // WWW/Proxy-Authenticate of 401/407 branches, aggregated
}

type branch struct {
	branchTarget
	tx          sip.ClientTransaction
	provisional bool // CANCEL may be sent only after a provisional response
	cancelAsked bool
	dropped     bool // given up at the ring timeout: its end says nothing
	done        bool
	code        int // its final status; 0 if none
}

// forkHooks are called, with the forker locked, as the call progresses.
type forkHooks struct {
	first  func(code int)                          // first 18x or 2xx relayed: the caller hears something
	answer func(b *branch, res *sip.Response)      // a 2xx is about to be relayed: the dialog exists from now
	sdp    func(res *sip.Response) ([]byte, error) // the SDP to relay instead of res's (media anchoring)
}

func newForker(s *Switch, req *sip.Request, tx sip.ServerTransaction, hooks forkHooks) *forker {
	f := &forker{s: s, req: req, tx: tx, started: time.Now(), hooks: hooks}
	if req.IsInvite() {
		tx.OnCancel(func(*sip.Request) {
			// sipgo has answered the CANCEL (200) and the INVITE (487) upstream.
			f.mu.Lock()
			f.cancelled = true
			f.final = 487
			f.cancelAllLocked()
			f.mu.Unlock()
		})
	}
	return f
}

// run rings the groups and answers upstream if no branch did.
func (f *forker) run(groups [][]branchTarget, timeout time.Duration) {
	f.ring(groups, timeout)
	f.answer()
}

// ring sends the groups one after another, each for at most timeout, until
// one answers, the caller cancels, or a branch declines everywhere (6xx).
// Each ring is a hop of the call (the targets of one routing decision).
func (f *forker) ring(groups [][]branchTarget, timeout time.Duration) {
	f.newHop()
	for _, g := range groups {
		f.runGroup(g, timeout)
		f.mu.Lock()
		more := f.trunkGroupEnded()
		stop := f.final != 0 || f.cancelled || f.hopBest >= 600
		f.mu.Unlock()
		if stop || !more {
			return
		}
	}
}

// unanswered returns the best final status of the last ring (0 if none)
// and whether the call is still open to another decision: no final answer
// relayed and not cancelled.
func (f *forker) unanswered() (hopBest int, open bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hopBest, f.final == 0 && !f.cancelled
}

// newHop starts a ring (a hop) with no answer yet.
func (f *forker) newHop() {
	f.mu.Lock()
	f.hopBest = 0
	f.mu.Unlock()
}

// noteHop keeps the best final status of the current ring.
func (f *forker) noteHop(code int) {
	if f.hopBest == 0 || rank(code) < rank(f.hopBest) {
		f.hopBest = code
	}
}

// answer relays the best final response, unless a final answer went
// upstream already.
func (f *forker) answer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.final != 0 {
		return
	}
	res := f.best
	switch {
	case res == nil:
		res = sip.NewResponseFromRequest(f.req, 408, "Request Timeout", nil)
	case f.bestLocal:
		res = sip.NewResponseFromRequest(f.req, res.StatusCode, res.Reason, nil)
	default:
		res = f.relay(res, false)
		if res.StatusCode == 401 || res.StatusCode == 407 {
			name := "WWW-Authenticate"
			if res.StatusCode == 407 {
				name = "Proxy-Authenticate"
			}
			res.RemoveHeader(name)
			for _, h := range f.challenge {
				res.AppendHeader(h)
			}
		}
		if res.StatusCode == 503 {
			// A 503 from downstream means that hop is overloaded, not us (§16.7 step 6).
			res.StatusCode, res.Reason = 500, "Server Internal Error"
		}
	}
	f.final = res.StatusCode
	f.s.send(f.req, f.tx, res)
	f.s.metrics.txSeconds.WithLabelValues(string(f.req.Method)).Observe(time.Since(f.started).Seconds())
}

// wasCancelled reports whether the caller cancelled the INVITE.
func (f *forker) wasCancelled() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cancelled
}

// finalCode is the final status the caller got (0 if none).
func (f *forker) finalCode() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.final
}

func (f *forker) runGroup(targets []branchTarget, timeout time.Duration) {
	var wg sync.WaitGroup
	f.mu.Lock()
	f.live = f.live[:0]
	for _, t := range targets {
		tx, err := f.s.client.TransactionRequest(context.Background(), t.req, asIs)
		if err != nil {
			f.s.log.Warn("branch not sent", "call_id", callID(f.req), "dest", t.req.Destination(), "error", err)
			f.considerLocal(480, "Temporarily Unavailable")
			continue
		}
		b := &branch{branchTarget: t, tx: tx}
		f.live = append(f.live, b)
		f.watchTrunkReply(b)
		if t.req.IsInvite() {
			tx.OnRetransmission(func(res *sip.Response) {
				// A retransmitted 2xx from a phone whose ACK got lost.
				if res.IsSuccess() {
					f.s.forwardStrayResponse(res)
				}
			})
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.follow(b)
		}()
	}
	if f.cancelled {
		f.cancelAllLocked()
	}
	f.mu.Unlock()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
		return
	case <-timer.C:
	}
	// No answer in time: cancel what still rings and say so if nobody answers.
	// A branch that never answered at all cannot be cancelled (RFC 3261
	// §9.1); it is dropped, as Kamailio's fr_timer does.
	f.mu.Lock()
	if f.final == 0 {
		f.considerLocal(408, "Request Timeout")
		f.cancelAllLocked()
		for _, b := range f.live {
			if !b.done && !b.provisional {
				b.dropped = true
				b.tx.Terminate()
			}
		}
	}
	f.mu.Unlock()
	// A cancelled branch owes a 487; one that never sends it (a phone that
	// lost the CANCEL, or hung) is given up after a grace period rather than
	// holding the caller until its INVITE transaction times out.
	grace := time.NewTimer(cancelGrace)
	defer grace.Stop()
	select {
	case <-done:
		return
	case <-grace.C:
	}
	f.mu.Lock()
	for _, b := range f.live {
		if !b.done {
			b.dropped = true
			b.tx.Terminate()
		}
	}
	f.mu.Unlock()
	<-done
}

// cancelGrace is how long a branch cancelled at the ring timeout may take
// to answer 487.
const cancelGrace = 4 * time.Second

// follow reads the responses of one branch until its transaction ends.
func (f *forker) follow(b *branch) {
	defer b.tx.Terminate()
	for {
		select {
		case res := <-b.tx.Responses():
			if f.onResponse(b, res) {
				return
			}
		case <-b.tx.Done():
			f.mu.Lock()
			b.done = true
			err := b.tx.Err()
			if b.dropped {
				err = nil
			}
			if errors.Is(err, sip.ErrTransactionTimeout) {
				f.considerLocal(408, "Request Timeout")
			} else if err != nil && !errors.Is(err, sip.ErrTransactionTerminated) {
				f.considerLocal(480, "Temporarily Unavailable")
			}
			f.mu.Unlock()
			return
		}
	}
}

// onResponse handles one response of a branch; it returns true when the
// branch has its final response.
func (f *forker) onResponse(b *branch, res *sip.Response) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case res.StatusCode == 100:
		b.provisional = true
		f.sendCancelIfAsked(b)
		return false
	case res.IsProvisional():
		b.provisional = true
		if f.sendCancelIfAsked(b) || f.final != 0 || f.cancelled {
			return false
		}
		f.forwardLocked(f.relay(res, b.direct))
		return false
	case res.IsSuccess():
		b.done, b.code = true, res.StatusCode
		if !f.req.IsInvite() && f.final != 0 {
			return true
		}
		// Every 2xx to an INVITE goes upstream: the caller must ACK each dialog.
		f.final = res.StatusCode
		if f.hooks.answer != nil {
			f.hooks.answer(b, res)
		}
		f.forwardLocked(f.relay(res, b.direct))
		f.s.metrics.txSeconds.WithLabelValues(string(f.req.Method)).Observe(time.Since(f.started).Seconds())
		f.cancelAllLocked()
		return true
	default:
		if f.trunkChallenged(b, res) {
			return false
		}
		b.done, b.code = true, res.StatusCode
		f.consider(res)
		return true
	}
}

func (f *forker) forwardLocked(res *sip.Response) {
	if !f.firstSeen && f.hooks.first != nil {
		f.firstSeen = true
		f.hooks.first(res.StatusCode)
	}
	f.s.send(f.req, f.tx, res)
}

// relay makes the upstream copy of a downstream response: our Via removed,
// addressed to where the request came from.
func (f *forker) relay(res *sip.Response, direct bool) *sip.Response {
	up := res.Clone()
	up.RemoveHeader("Via")
	if direct && contactNATed(res) {
		fixContact(up, res.Source(), res.Transport())
	}
	if f.hooks.sdp != nil && len(res.Body()) > 0 && res.StatusCode > 100 && res.StatusCode < 300 {
		// On error the answer goes on unanchored: better media that may not
		// cross a NAT than a call with none.
		if body, err := f.hooks.sdp(res); err == nil {
			up.SetBody(body)
		} else {
			f.s.log.Warn("answer not anchored", "call_id", callID(res), "error", err)
		}
	}
	up.SetTransport(f.req.Transport())
	up.SetDestination(f.req.Source())
	return up
}

// contactNATed reports whether a phone's answer must have its Contact fixed:
// it came over a connection, or from an address other than its Contact.
func contactNATed(res *sip.Response) bool {
	c := res.Contact()
	if c == nil {
		return false
	}
	if reliable(res.Transport()) {
		return true
	}
	host, port, err := sip.ParseAddr(res.Source())
	if err != nil {
		return false
	}
	cport := c.Address.Port
	if cport == 0 {
		cport = 5060
	}
	return strings.Trim(c.Address.Host, "[]") != host || cport != port
}

// consider keeps the best final response so far (RFC 3261 §16.7 step 6):
// a 6xx beats everything; otherwise the lowest class wins, and within 4xx the
// answers a caller can act on beat timeouts and our own cancellations.
func (f *forker) consider(res *sip.Response) {
	if res.StatusCode == 401 || res.StatusCode == 407 {
		for _, name := range []string{"WWW-Authenticate", "Proxy-Authenticate"} {
			for _, h := range allHeaders(res, name) {
				f.challenge = append(f.challenge, sip.HeaderClone(h))
			}
		}
	}
	f.noteHop(res.StatusCode)
	if f.best == nil || rank(res.StatusCode) < rank(f.best.StatusCode) {
		f.best, f.bestLocal = res, false
	}
}

// considerLocal weighs an answer of the switch's own (a branch that timed
// out or could not be sent): it is answered from the caller's request, not
// relayed from a branch.
func (f *forker) considerLocal(code int, reason string) {
	f.noteHop(code)
	if f.best == nil || rank(code) < rank(f.best.StatusCode) {
		f.best, f.bestLocal = sip.NewResponse(code, reason), true
	}
}

func rank(code int) int {
	switch {
	case code >= 600:
		return 0
	case code == 401 || code == 407 || code == 415 || code == 420 || code == 484:
		return 1
	case code >= 300 && code < 400:
		return 2
	case code == 486:
		return 3
	case code == 408:
		return 5
	case code == 487:
		return 6
	case code >= 400 && code < 500:
		return 4
	default: // 5xx
		return 7
	}
}

// cancelAllLocked cancels every INVITE branch still ringing (RFC 3261 §9.1: a
// CANCEL waits until the branch has had a provisional response).
func (f *forker) cancelAllLocked() {
	for _, b := range f.live {
		if b.done || b.cancelAsked || !b.req.IsInvite() {
			continue
		}
		b.cancelAsked = true
		if b.provisional {
			f.sendCancel(b)
		}
	}
}

func (f *forker) sendCancelIfAsked(b *branch) bool {
	if b.cancelAsked && !b.done {
		f.sendCancel(b)
		return true
	}
	return false
}

func (f *forker) sendCancel(b *branch) {
	inv := b.req
	c := sip.NewRequest(sip.CANCEL, inv.Recipient)
	c.AppendHeader(sip.HeaderClone(inv.Via()))
	sip.CopyHeaders("Route", inv, c)
	c.AppendHeader(sip.HeaderClone(inv.From()))
	c.AppendHeader(sip.HeaderClone(inv.To()))
	c.AppendHeader(sip.HeaderClone(inv.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	if h := firstHeader(f.req, "Reason"); h != nil {
		c.AppendHeader(sip.HeaderClone(h))
	} else if f.final >= 200 && f.final < 300 {
		c.AppendHeader(sip.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`))
	}
	c.SetTransport(inv.Transport())
	c.SetDestination(inv.Destination())
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
		defer cancel()
		tx, err := f.s.client.TransactionRequest(ctx, c, asIs)
		if err != nil {
			f.s.log.Debug("CANCEL not sent", "call_id", callID(inv), "error", err)
			return
		}
		defer tx.Terminate()
		select {
		case <-tx.Responses():
		case <-tx.Done():
		case <-ctx.Done():
		}
	}()
}
