package pec

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"time"

	"github.com/lineamica/centralino/modules"
)

// Keys in the module's KV:
//
//	out:<message-id>     a message waiting to be sent (index "outbox", by next attempt)
//	                     or refused by the provider (index "failed", by queueing time)
//	msg:<message-id>     the ticket and recipients of a message, for its receipts
//	ev:<sha-256>         a signed message received, as evidence
//	q:<sha-256>          a message quarantined, with the reason
//	imap:<mailbox>       how far the mailbox has been read
const (
	outboxIndex = "outbox"
	failedIndex = "failed"
	quarantined = 90 * 24 * time.Hour // how long quarantined mail stays in the store
	kvTimeout   = 5 * time.Second
)

// outbox is the persisted queue of messages: a message is in the store
// before the event that caused it is done with, and leaves it only once the
// provider took it, so a restart or a provider's outage loses nothing.
type outbox struct {
	kv   modules.KV
	wake chan struct{} // pokes the sender; capacity 1
	size atomic.Int64  // messages waiting, as last counted
}

func (o *outbox) length() int { return int(o.size.Load()) }

// add queues msg, and records whose it is before it can have a receipt.
func (o *outbox) add(ctx context.Context, msg *message) error {
	b, _ := json.Marshal(messageRecord{Ticket: msg.Ticket, To: msg.To})
	if err := o.kv.Put(ctx, "msg:"+msg.ID, b, 0); err != nil {
		return err
	}
	if err := o.put(ctx, msg); err != nil {
		return err
	}
	if err := o.kv.IndexAdd(ctx, outboxIndex, msg.ID, score(msg.NextAt)); err != nil {
		return err
	}
	o.size.Add(1)
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return nil
}

func (o *outbox) put(ctx context.Context, msg *message) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	return o.kv.Put(ctx, "out:"+msg.ID, b, 0)
}

// score orders the queue by time, to the microsecond: messages queued one
// after the other go out in that order (a float64 holds microseconds since
// 1970 exactly).
func score(t time.Time) float64 { return float64(t.UnixMicro()) }

// next returns the message due first, or nil if none is queued.
func (o *outbox) next(ctx context.Context) (*message, error) {
	n, err := o.kv.IndexCount(ctx, outboxIndex)
	if err != nil {
		return nil, err
	}
	o.size.Store(int64(n))
	ids, err := o.kv.IndexRange(ctx, outboxIndex, 0, 1, false)
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	b, err := o.kv.Get(ctx, "out:"+ids[0])
	if errors.Is(err, modules.ErrNotFound) {
		// Left in the index by a write that failed halfway.
		return nil, o.kv.IndexRemove(ctx, outboxIndex, ids[0])
	}
	if err != nil {
		return nil, err
	}
	var msg message
	if err := json.Unmarshal(b, &msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

// messageRecord is what receipts are matched with.
type messageRecord struct {
	Ticket string   `json:"ticket"`
	To     []string `json:"to"`
}

// done takes a message the provider took out of the queue.
func (o *outbox) done(ctx context.Context, msg *message) error {
	if err := o.kv.IndexRemove(ctx, outboxIndex, msg.ID); err != nil {
		return err
	}
	return o.kv.Delete(ctx, "out:"+msg.ID)
}

// retry puts msg back for its next attempt.
func (o *outbox) retry(ctx context.Context, msg *message) error {
	if err := o.put(ctx, msg); err != nil {
		return err
	}
	return o.kv.IndexAdd(ctx, outboxIndex, msg.ID, score(msg.NextAt))
}

// fail moves a message the provider refused out of the queue, keeping it
// for an operator to see.
func (o *outbox) fail(ctx context.Context, msg *message) error {
	if err := o.put(ctx, msg); err != nil {
		return err
	}
	if err := o.kv.IndexAdd(ctx, failedIndex, msg.ID, score(msg.Queued)); err != nil {
		return err
	}
	return o.kv.IndexRemove(ctx, outboxIndex, msg.ID)
}

// idle is how long the sender waits with nothing due before looking at the
// store again (another node may have queued, a wake may have been lost).
const idle = 5 * time.Second

// sender sends the queued messages, each when due, until ctx ends.
func (m *PEC) sender(ctx context.Context) {
	defer m.wg.Done()
	storeBackoff := time.Second
	for ctx.Err() == nil {
		wait, err := m.sendNext(ctx)
		if err != nil {
			m.log.Warn("PEC outbox: store unreachable", "err", err)
			wait, storeBackoff = storeBackoff, min(2*storeBackoff, time.Minute)
		} else {
			storeBackoff = time.Second
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-m.outbox.wake:
		case <-ctx.Done():
		}
		t.Stop()
	}
}

// sendNext sends the message due first, if any, and says how long to wait
// before the next.
func (m *PEC) sendNext(ctx context.Context) (time.Duration, error) {
	kctx, cancel := context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	msg, err := m.outbox.next(kctx)
	if err != nil || msg == nil {
		return idle, err
	}
	if wait := time.Until(msg.NextAt); wait > 0 {
		return min(wait, idle), nil
	}
	sendErr := m.submit(ctx, msg)
	if ctx.Err() != nil {
		return 0, nil // stopping: the message stays queued as it was
	}
	kctx, cancel = context.WithTimeout(ctx, kvTimeout)
	defer cancel()
	var rejected *rejectedError
	switch {
	case sendErr == nil:
		m.metrics.sent.Inc()
		m.log.Info("PEC message sent", "ticket", msg.Ticket, "message_id", msg.ID, "attempts", msg.Attempts+1)
		return 0, m.outbox.done(kctx, msg)
	case errors.As(sendErr, &rejected):
		m.metrics.failures.WithLabelValues("rejected").Inc()
		msg.Attempts++
		msg.LastError = sendErr.Error()
		m.log.Error("PEC message refused by the provider", "ticket", msg.Ticket, "message_id", msg.ID, "err", sendErr)
		return 0, m.outbox.fail(kctx, msg)
	default:
		m.metrics.failures.WithLabelValues("unavailable").Inc()
		msg.Attempts++
		msg.LastError = sendErr.Error()
		backoff := m.opts.RetryMin << min(msg.Attempts-1, 20)
		msg.NextAt = time.Now().Add(min(backoff, m.opts.RetryMax))
		m.log.Warn("PEC message not sent; will retry", "ticket", msg.Ticket, "message_id", msg.ID,
			"attempts", msg.Attempts, "retry_at", msg.NextAt, "err", sendErr)
		return 0, m.outbox.retry(kctx, msg)
	}
}
