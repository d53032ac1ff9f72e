package ticketing

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
)

// changes records the TicketChanged events the module publishes.
func (n *node) changes() <-chan modules.TicketChanged {
	n.t.Helper()
	ch := make(chan modules.TicketChanged, 100)
	err := n.bus.Subscribe("recorder", 0, []string{modules.KindTicketChanged}, func(_ context.Context, ev modules.Event) {
		ch <- ev.(modules.TicketChanged)
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return ch
}

func next(t *testing.T, ch <-chan modules.TicketChanged) modules.TicketChanged {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no TicketChanged")
		return modules.TicketChanged{}
	}
}

func none(t *testing.T, ch <-chan modules.TicketChanged) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("unexpected %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

// The pec module learns of a ticket's openings, status changes and the
// citizen's PEC address; nothing else.
func TestTicketChangesArePublished(t *testing.T) {
	n := startNode(t, kv.NewMemory(), testOptions)
	changes := n.changes()
	c := newCall("c1", citizen("+393331234567"), "r_campan", 0)
	n.publish(c.offered(true))
	ev := next(t, changes)
	if !ev.Opened || ev.Status != "aperto" || ev.Previous != "" || ev.Agency != "r_campan" || ev.CallID != "c1" || ev.Code == "" {
		t.Fatalf("opening: %+v", ev)
	}
	code := ev.Code
	n.publish(c.answered(5*time.Second, "op1"))
	if ev := next(t, changes); ev.Opened || ev.Status != "in_lavorazione" || ev.Previous != "aperto" {
		t.Fatalf("answer: %+v", ev)
	}
	n.publish(c.ended(60*time.Second, 55*time.Second))
	none(t, changes) // the status did not change

	if s := n.do("PATCH", "/tickets/"+code, "r_campan", `{"citizen_pec":"mario.rossi@pec.it","note":"chiede il modulo"}`, nil); s != http.StatusOK {
		t.Fatalf("PATCH: %d", s)
	}
	ev = next(t, changes)
	if !ev.PECSet || ev.CitizenPEC != "mario.rossi@pec.it" || ev.Status != "in_lavorazione" || !slices.Equal(ev.Notes, []string{"chiede il modulo"}) {
		t.Fatalf("PEC set: %+v", ev)
	}
	n.do("PATCH", "/tickets/"+code, "r_campan", `{"citizen_pec":"mario.rossi@pec.it"}`, nil)
	n.do("PATCH", "/tickets/"+code, "r_campan", `{"note":"richiamato"}`, nil)
	none(t, changes) // the same address, a note

	n.do("PATCH", "/tickets/"+code, "r_campan", `{"status":"chiuso"}`, nil)
	if ev := next(t, changes); ev.Status != "chiuso" || ev.Previous != "in_lavorazione" || ev.PECSet || ev.CitizenPEC != "mario.rossi@pec.it" {
		t.Fatalf("closing: %+v", ev)
	}
}

// Receipts are recorded per message and recipient; a late acceptance does
// not undo a delivery, and a receipt read twice is recorded once. They are
// kept on a closed ticket, which stays closed.
func TestPECDeliveryRecorded(t *testing.T) {
	stores(t, func(t *testing.T, store func() modules.Store) {
		n := startNode(t, store(), testOptions)
		c := newCall("c1", citizen("+393331234567"), "r_campan", 0)
		n.publish(c.offered(true))
		code := n.waitCode("c1")
		n.do("PATCH", "/tickets/"+code, "r_campan", `{"status":"chiuso"}`, nil)
		n.publish(c.ended(time.Minute, 0)) // forgets the ticket: later events read the store
		n.flushed()

		msg, to := "<la.1@pec.lineamica.gov.it>", "mario.rossi@pec.it"
		receipt := func(typ string, state modules.PECState, at time.Duration, ev string) modules.PECDelivery {
			return modules.PECDelivery{Time: t0.Add(at), TicketCode: code, MessageID: msg, Recipient: to, State: state, Receipt: typ, Evidence: ev}
		}
		n.publish(
			receipt("accettazione", modules.PECAccepted, time.Hour, "/api/pec/evidence/a"),
			receipt("avvenuta-consegna", modules.PECDelivered, time.Hour+time.Second, "/api/pec/evidence/b"),
			receipt("accettazione", modules.PECAccepted, time.Hour, "/api/pec/evidence/a"),               // read again
			receipt("accettazione", modules.PECAccepted, time.Hour+2*time.Second, "/api/pec/evidence/c"), // late
		)
		tk := n.waitTicket("", func(tk *Ticket) bool { return len(tk.PECMessages) == 1 && len(tk.PECMessages[0].Receipts) == 3 })
		pm := tk.PECMessages[0]
		if pm.MessageID != msg || len(pm.Recipients) != 1 {
			t.Fatalf("message %+v", pm)
		}
		if r := pm.Recipients[0]; r.Address != to || r.State != modules.PECDelivered || r.Receipt != "avvenuta-consegna" || r.Evidence != "/api/pec/evidence/b" {
			t.Errorf("recipient %+v, want delivered by evidence b", r)
		}
		if tk.Status != StatusChiuso {
			t.Errorf("status %s", tk.Status)
		}
	})
}

// A citizen's certified message naming an open ticket is attached to it;
// one naming none, an unknown or a closed ticket opens a PEC ticket, which
// the pec module then acknowledges.
func TestPECReceivedAttachesOrOpens(t *testing.T) {
	n := startNode(t, kv.NewMemory(), testOptions)
	changes := n.changes()
	c := newCall("c1", citizen("+393331234567"), "r_campan", 0)
	n.publish(c.offered(true))
	code := next(t, changes).Code

	in := func(code, agency, id string) modules.PECReceived {
		return modules.PECReceived{Time: t0.Add(time.Hour), TicketCode: code, Agency: agency, From: "mario.rossi@pec.it",
			Subject: "POSTA CERTIFICATA: Re: pratica", Text: "Allego il modulo, perché richiesto.", MessageID: id, Evidence: "/api/pec/evidence/" + id}
	}
	n.publish(in(code, "", "m1"))
	tk := n.waitTicket("", func(tk *Ticket) bool { return len(tk.PECReceived) == 1 })
	if a := tk.PECReceived[0]; tk.Code != code || a.Text != "Allego il modulo, perché richiesto." || a.From != "mario.rossi@pec.it" || a.Evidence != "/api/pec/evidence/m1" {
		t.Fatalf("attached to %s: %+v", tk.Code, a)
	}
	none(t, changes)

	n.publish(in("", "", "m2"))
	ev := next(t, changes)
	if !ev.Opened || ev.CitizenPEC != "mario.rossi@pec.it" || ev.Agency != "lineamica" || ev.Code == code {
		t.Fatalf("opened by PEC: %+v", ev)
	}
	tk = n.ticket(ev.Code)
	if tk.Channel != ChannelPEC || tk.Caller.Number != "mario.rossi@pec.it" || len(tk.Hops) != 1 || tk.Hops[0].Via != ViaPEC ||
		tk.Hops[0].CallID != "m2" || len(tk.PECReceived) != 1 || tk.Region != "NAZ" {
		t.Fatalf("PEC ticket %+v", tk)
	}

	n.do("PATCH", "/tickets/"+code, "r_campan", `{"status":"chiuso"}`, nil)
	next(t, changes)
	n.publish(in(code, "r_campan", "m3"))
	if ev := next(t, changes); !ev.Opened || ev.Code == code || ev.Agency != "r_campan" {
		t.Fatalf("message about a closed ticket: %+v", ev)
	}
	n.publish(in("LA-2026-CAM-999999-0", "", "m4")) // wrong check character
	if ev := next(t, changes); !ev.Opened {
		t.Fatalf("message naming no valid ticket: %+v", ev)
	}
}

// Votes are kept on the ticket, by its code or by the call they were given
// on, without the operator.
func TestRatingStored(t *testing.T) {
	n := startNode(t, kv.NewMemory(), testOptions)
	c := newCall("c1", citizen("+393331234567"), "r_campan", 0)
	n.publish(c.offered(true), c.answered(5*time.Second, "op1"),
		modules.RatingGiven{Time: t0.Add(time.Minute), Agency: "r_campan", CallID: "c1", Rating: modules.RatingNegative, Reason: "waiting", Channel: "phone"})
	code := n.waitCode("c1")
	n.publish(c.ended(2*time.Minute, time.Minute),
		modules.RatingGiven{Time: t0.Add(time.Hour), Agency: "r_campan", TicketCode: code, Rating: modules.RatingPositive, Channel: "web"},
		modules.RatingGiven{Time: t0.Add(time.Hour), Agency: "r_campan", CallID: "unknown", Rating: modules.RatingPositive, Channel: "phone"})
	tk := n.waitTicket("", func(tk *Ticket) bool { return len(tk.Ratings) == 2 })
	want := []Rating{
		{Time: t0.Add(time.Minute), Agency: "r_campan", Rating: modules.RatingNegative, Reason: "waiting", Channel: "phone"},
		{Time: t0.Add(time.Hour), Agency: "r_campan", Rating: modules.RatingPositive, Channel: "web"},
	}
	for i, r := range tk.Ratings {
		if !r.Time.Equal(want[i].Time) {
			t.Errorf("rating %d time %v", i, r.Time)
		}
		r.Time = want[i].Time
		if r != want[i] {
			t.Errorf("rating %d = %+v, want %+v", i, r, want[i])
		}
	}
}
