package ticketing

import (
	"context"
	"slices"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

// The events of a case that other modules publish: the pec module's
// receipts and incoming messages, the survey's votes. They are records on
// the ticket: unlike an operator's change, they are kept on a closed ticket
// too (the receipts of the closing message, the vote that follows it).

// byCode returns the ticket named by code, live or from the store, or nil.
// Call with mu held.
func (m *Ticketing) byCode(ctx context.Context, code, event string) *Ticket {
	code, err := ticketcode.Parse(code)
	if err == nil {
		if t := m.live[code]; t != nil {
			return t
		}
		var t *Ticket
		if t, err = m.store.get(ctx, code); err == nil {
			return t
		}
	}
	m.log.Warn("ticket of "+event+" not found", "ticket", code, "err", err)
	return nil
}

// stateRank orders the states of a recipient: a receipt never moves one
// back (an acceptance that arrives after the delivery, say).
var stateRank = map[modules.PECState]int{
	modules.PECAccepted: 1, modules.PECWarning: 2, modules.PECDelivered: 3, modules.PECNotDelivered: 3,
}

func (m *Ticketing) pecDelivery(ctx context.Context, ev modules.PECDelivery) *Ticket {
	t := m.byCode(ctx, ev.TicketCode, "PEC receipt")
	if t == nil {
		return nil
	}
	i := slices.IndexFunc(t.PECMessages, func(pm PECMessage) bool { return pm.MessageID == ev.MessageID })
	if i < 0 {
		t.PECMessages = append(t.PECMessages, PECMessage{MessageID: ev.MessageID})
		i = len(t.PECMessages) - 1
	}
	pm := &t.PECMessages[i]
	if slices.ContainsFunc(pm.Receipts, func(r PECReceipt) bool {
		return r.Evidence == ev.Evidence && r.Recipient == ev.Recipient
	}) {
		return nil // read again from the mailbox: already recorded
	}
	pm.Receipts = append(pm.Receipts, PECReceipt{Receipt: ev.Receipt, Recipient: ev.Recipient, State: ev.State, Time: ev.Time, Error: ev.Error, Evidence: ev.Evidence})
	state := PECRecipient{Address: ev.Recipient, State: ev.State, Receipt: ev.Receipt, Time: ev.Time, Error: ev.Error, Evidence: ev.Evidence}
	j := slices.IndexFunc(pm.Recipients, func(r PECRecipient) bool { return r.Address == ev.Recipient })
	switch {
	case j < 0:
		pm.Recipients = append(pm.Recipients, state)
	case stateRank[ev.State] >= stateRank[pm.Recipients[j].State]:
		pm.Recipients[j] = state
	}
	m.log.Info("PEC receipt recorded", "ticket", t.Code, "message_id", ev.MessageID, "receipt", ev.Receipt, "state", ev.State)
	return t
}

// pecReceived attaches a citizen's certified message to the ticket its
// subject names, or opens a ticket for it: when it names none, one that
// does not exist, or one closed (read-only).
func (m *Ticketing) pecReceived(ctx context.Context, ev modules.PECReceived) *Ticket {
	att := PECAttachment{Time: ev.Time, From: ev.From, Subject: ev.Subject, MessageID: ev.MessageID, Text: ev.Text, Evidence: ev.Evidence}
	if ev.TicketCode != "" {
		if t := m.byCode(ctx, ev.TicketCode, "PEC message"); t != nil && t.Status != StatusChiuso {
			if slices.ContainsFunc(t.PECReceived, func(a PECAttachment) bool { return a.Evidence == ev.Evidence }) {
				return nil
			}
			t.PECReceived = append(t.PECReceived, att)
			if t.Status == StatusRisolto {
				t.Status = StatusAperto // the citizen wrote again, as a repeat call would
			}
			m.log.Info("PEC message attached to ticket", "ticket", t.Code)
			return t
		}
	}
	agency := ev.Agency
	if agency == "" {
		agency = m.opts.PECAgency
	}
	region, year := m.opts.region(agency), ev.Time.UTC().Year()
	serial, err := m.store.serial(ctx, year, region)
	if err != nil {
		m.metrics.lost.WithLabelValues("no_serial").Inc()
		m.log.Error("ticket for PEC message not opened", "message_id", ev.MessageID, "err", err)
		return nil
	}
	t := &Ticket{
		SchemaVersion: SchemaVersion,
		Code:          ticketcode.New(year, region, serial),
		Channel:       ChannelPEC,
		Status:        StatusAperto,
		Region:        region,
		CreatedAt:     ev.Time,
		Caller:        Caller{Number: ev.From},
		CitizenPEC:    ev.From,
		PECReceived:   []PECAttachment{att},
	}
	t.addHop(Hop{Agency: agency, CallID: ev.MessageID, Via: ViaPEC, ReachedAt: ev.Time})
	m.metrics.opened.WithLabelValues(agency).Inc()
	m.log.Info("ticket opened for PEC message", "ticket", t.Code, "agency", agency)
	return t
}

// rated stores a vote on the ticket it names, or on the ticket of the call
// it was given on.
func (m *Ticketing) rated(ctx context.Context, ev modules.RatingGiven) *Ticket {
	var t *Ticket
	switch lc, ok := m.calls[ev.CallID]; {
	case ev.TicketCode != "":
		t = m.byCode(ctx, ev.TicketCode, "rating")
	case ok:
		t = m.live[lc.code]
	}
	if t == nil {
		m.log.Debug("rating for no ticket", "call", ev.CallID)
		return nil
	}
	t.Ratings = append(t.Ratings, Rating{Time: ev.Time, Agency: ev.Agency, Rating: ev.Rating, Reason: ev.Reason, Channel: ev.Channel})
	return t
}
