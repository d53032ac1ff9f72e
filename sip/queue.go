package sip

import (
	"context"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

// Feature codes an operator dials to change its queue state. The switch
// acts and answers at once with a final response whose reason phrase tells
// the phone's display what happened: there is no media to play a prompt on.
var featureCodes = map[string]struct {
	do   func(ctx context.Context, q routing.QueueState, u directory.User) error
	done string
}{
	"*11": {func(ctx context.Context, q routing.QueueState, u directory.User) error {
		return q.Login(ctx, u.Agency, u.Username)
	}, "Accesso alla coda effettuato"},
	"*12": {func(ctx context.Context, q routing.QueueState, u directory.User) error {
		return q.Logout(ctx, u.Username)
	}, "Uscita dalla coda effettuata"},
	"*13": {func(ctx context.Context, q routing.QueueState, u directory.User) error {
		return q.Pause(ctx, u.Username, true)
	}, "Pausa attivata"},
	"*14": {func(ctx context.Context, q routing.QueueState, u directory.User) error {
		return q.Pause(ctx, u.Username, false)
	}, "Pausa terminata"},
}

// featureCode handles an INVITE to a feature code and reports whether it
// was one. Success is a 603 (the call is declined, its purpose served) with
// the outcome in the reason phrase and a Reason header, as a 2xx would need
// an SDP answer the switch does not have.
func (s *Switch) featureCode(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, u directory.User) bool {
	fc, ok := featureCodes[req.Recipient.User]
	if !ok || !req.IsInvite() {
		return false
	}
	if s.queues == nil {
		s.respond(req, tx, 404, "Not Found")
		return true
	}
	if u.Role != directory.RoleOperator {
		s.respond(req, tx, 403, "Forbidden", reasonHeader(403, "solo gli operatori entrano nelle code"))
		return true
	}
	if err := fc.do(ctx, s.queues, u); err != nil {
		s.log.Warn("feature code failed", "call_id", callID(req), "user", u.Username, "code", req.Recipient.User, "error", err)
		s.respond(req, tx, 480, "Temporarily Unavailable", reasonHeader(480, "non in coda"))
		return true
	}
	s.log.Info("queue state changed", "call_id", callID(req), "user", u.Username, "agency", u.Agency, "code", req.Recipient.User)
	s.respond(req, tx, 603, fc.done, reasonHeader(200, fc.done))
	return true
}

// overflow moves a call to an agency's public number that nobody took
// along the agency's overflow chain, as many times as the chain allows,
// before the caller gets an answer. offer is the anchored SDP, if any.
func (s *Switch) overflow(f *forker, c *call, req, fwd *sip.Request, caller routing.Request, dec routing.Decision, offer []byte) {
	for c != nil && dec.Public && dec.DestAgency != "" {
		code, open := f.unanswered()
		why, ok := overflowReason(code)
		if !open || !ok {
			return
		}
		caller.Tried = append(caller.Tried, dec.DestAgency)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		next, err := s.router.Overflow(ctx, caller, dec.DestAgency, why)
		if err == nil && len(next.Overflowed) > 0 {
			s.queueLeft(c, "overflowed")
			s.publishHops(c, next.Overflowed)
		}
		var groups [][]branchTarget
		if err == nil && next.Status == 0 {
			groups, _, err = s.branches(ctx, req, fwd, next)
		}
		cancel()
		if err != nil {
			s.log.Error("overflow failed", "call_id", c.info.CallID, "from", dec.DestAgency, "error", err)
			f.considerLocal(503, "Service Unavailable")
			return
		}
		if next.Status != 0 {
			f.considerLocal(next.Status, next.Reason)
			return
		}
		dec = next
		if len(groups) == 0 {
			// Nobody registered there: the caller's answer if the chain ends
			// here, "unavailable" for the next hop.
			f.considerLocal(480, "Temporarily Unavailable")
			f.newHop()
			continue
		}
		if offer != nil {
			setBodies(groups, offer)
		}
		s.queueEntered(c, dec)
		f.ring(groups, cmpDuration(dec.RingTimeout, s.cfg.RingTimeout))
	}
}

// overflowReason maps the best answer of an agency's targets to the reason
// the call leaves it; ok is false when the answer ends the call (the caller
// must act: authentication, a redirect, a bad request).
func overflowReason(code int) (routing.OverflowReason, bool) {
	switch {
	case code == 0: // nobody could be rung
		return routing.OverflowUnavailable, true
	case code == 408 || code == 480 || code == 487:
		return routing.OverflowNoAnswer, true
	case code == 486 || code == 600 || code == 603:
		return routing.OverflowBusy, true
	case code >= 500 && code < 600:
		return routing.OverflowFailed, true
	}
	return "", false
}

func cmpDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// publishHops tells each hop of an overflow chain and moves the call to the
// agency at its end.
func (s *Switch) publishHops(c *call, hops []routing.Hop) {
	for _, hop := range hops {
		s.metrics.overflows.WithLabelValues(hop.From, hop.To, string(hop.Reason)).Inc()
		info := c.now()
		info.DestAgency = hop.To
		s.events.Publish(modules.CallOverflowed{Call: info, FromAgency: hop.From, ToAgency: hop.To, Reason: modules.OverflowReason(hop.Reason)})
	}
	if len(hops) > 0 {
		c.info.DestAgency = hops[len(hops)-1].To
	}
}

// queueEntered starts the wait of a call to an agency's public number that
// rings its operators.
func (s *Switch) queueEntered(c *call, dec routing.Decision) {
	if c == nil || !dec.Public || dec.DestAgency == "" || len(dec.Targets) == 0 {
		return
	}
	c.queue, c.queuedAt = dec.DestAgency, time.Now()
	s.metrics.queueWaiting.WithLabelValues(c.queue).Inc()
}

// queueLeft ends the wait of a call in a queue, if it waits in one:
// outcome is answered, abandoned, overflowed or failed.
func (s *Switch) queueLeft(c *call, outcome string) {
	if c == nil || c.queue == "" {
		return
	}
	s.metrics.queueWaiting.WithLabelValues(c.queue).Dec()
	s.metrics.queueWait.WithLabelValues(c.queue, outcome).Observe(time.Since(c.queuedAt).Seconds())
	c.queue = ""
}

// occupy marks the operators of an answered call busy in their queues, and
// vacate idle again; a busy operator is skipped by the next pick. The
// queue state may be remote (Redis), so the updates run off the SIP path, in
// order for each call. Only operators log in to queues, so the other users
// (read from the directory's cache) cost the queue state nothing.
func (s *Switch) occupy(c *call) {
	if s.queues == nil {
		return
	}
	users := c.users()
	done := make(chan struct{})
	c.occupied = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, u := range users {
			if user, err := s.dir.User(ctx, u); err == nil && user.Role != directory.RoleOperator {
				continue
			}
			c.busyUsers = append(c.busyUsers, u) // read by vacate once done is closed
			if err := s.queues.CallStarted(ctx, u); err != nil {
				s.log.Warn("queue state not updated", "call_id", c.info.CallID, "user", u, "error", err)
			}
		}
	}()
}

func (s *Switch) vacate(c *call) {
	if s.queues == nil || c.occupied == nil {
		return
	}
	occupied := c.occupied
	go func() {
		<-occupied
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, u := range c.busyUsers {
			if err := s.queues.CallEnded(ctx, u); err != nil {
				s.log.Warn("queue state not updated", "call_id", c.info.CallID, "user", u, "error", err)
			}
		}
	}()
}

// users are the directory users on the call: the answering user and a
// caller of the network.
func (c *call) users() []string {
	var us []string
	if c.info.User != "" {
		us = append(us, c.info.User)
	}
	if c.info.Caller.InDirectory && c.info.Caller.Number != c.info.User {
		us = append(us, c.info.Caller.Number)
	}
	return us
}

func newQueueMetrics() (waiting *prometheus.GaugeVec, wait *prometheus.HistogramVec, overflows *prometheus.CounterVec) {
	waiting = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "centralino", Subsystem: "queue", Name: "calls_waiting",
		Help: "Calls to an agency's public number ringing its operators now, by agency.",
	}, []string{"agency"})
	wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "centralino", Subsystem: "queue", Name: "wait_seconds",
		Help:    "Time calls waited in an agency's queue, by agency and how the wait ended (answered, abandoned, overflowed, failed); its _count counts the calls.",
		Buckets: []float64{1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300},
	}, []string{"agency", "outcome"})
	overflows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "centralino", Name: "overflows_total",
		Help: "Calls moved along an overflow chain, by the agency left, the agency reached and why (closed, busy, unavailable, no-answer, failed).",
	}, []string{"source_agency", "destination_agency", "reason"})
	return waiting, wait, overflows
}
