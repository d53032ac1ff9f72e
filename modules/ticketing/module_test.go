package ticketing

import (
	"slices"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
)

// The case: a citizen's call through a trunk to agency A, answered,
// transferred to B, answered, ended gives exactly one ticket with two hops.
func TestTransferAppendsHopToSameTicket(t *testing.T) {
	stores(t, func(t *testing.T, store func() modules.Store) {
		n := startNode(t, store(), testOptions)
		n.publish(transferFlow("c1", citizen("+393331234567"), "r_campan", "inps", 0)...)
		eventually(t, "the second leg to end", func() bool {
			l := n.list("lineamica", "")
			return len(l.Tickets) == 1 && len(l.Tickets[0].Hops) == 2 && !l.Tickets[0].Hops[1].EndedAt.IsZero()
		})
		n.stop() // every event seen, outbox written

		n = startNode(t, store(), testOptions)
		l := n.list("lineamica", "")
		if len(l.Tickets) != 1 {
			t.Fatalf("%d tickets, want 1", len(l.Tickets))
		}
		tk := l.Tickets[0]
		if tk.Code != NewCode(2026, "CAM", 1) || tk.Region != "CAM" || tk.Status != StatusInLavorazione {
			t.Errorf("code %s, region %s, status %s; want %s, CAM, in_lavorazione", tk.Code, tk.Region, tk.Status, NewCode(2026, "CAM", 1))
		}
		if !slices.Equal(tk.Agencies, []string{"r_campan", "inps"}) {
			t.Errorf("agencies = %v", tk.Agencies)
		}
		want := []Hop{{
			Agency: "r_campan", CallID: "c1", Via: ViaCall, ReachedAt: t0,
			Operator: "r_campan.operator", AnsweredAt: t0.Add(5 * time.Second), WaitSeconds: 5,
			EndedAt: t0.Add(62 * time.Second), TalkSeconds: 57, Disposition: "answered",
		}, {
			Agency: "inps", CallID: "c1-xfer", Via: ViaTransfer, Reason: "blind", TransferredBy: "r_campan.operator",
			ReachedAt: t0.Add(60 * time.Second), Operator: "inps.operator", AnsweredAt: t0.Add(70 * time.Second), WaitSeconds: 9,
			EndedAt: t0.Add(200 * time.Second), TalkSeconds: 130, Disposition: "answered",
		}}
		for i := range want {
			if got := tk.Hops[i]; !got.ReachedAt.Equal(want[i].ReachedAt) || !got.AnsweredAt.Equal(want[i].AnsweredAt) || !got.EndedAt.Equal(want[i].EndedAt) {
				t.Errorf("hop %d times = %v %v %v, want %v %v %v", i, got.ReachedAt, got.AnsweredAt, got.EndedAt, want[i].ReachedAt, want[i].AnsweredAt, want[i].EndedAt)
			}
			got, w := tk.Hops[i], want[i]
			got.ReachedAt, got.AnsweredAt, got.EndedAt = w.ReachedAt, w.AnsweredAt, w.EndedAt
			if got != w {
				t.Errorf("hop %d =\n%+v, want\n%+v", i, got, w)
			}
		}
		if tk.Caller.Number != "+393331234567" || tk.Caller.Trunk != "pstn-napoli" || !tk.UpdatedAt.Equal(t0.Add(200*time.Second)) {
			t.Errorf("caller %+v, updated %v", tk.Caller, tk.UpdatedAt)
		}
	})
}

// The switch may publish the new leg's CallOffered before the transfer,
// or carry the code in the Header only (the new leg on another node).
func TestTransferOrderAndHeader(t *testing.T) {
	n := startNode(t, kv.NewMemory(), testOptions)
	first := newCall("c1", citizen("+393331111111"), "r_campan", 0)
	second := newCall("c2", citizen("+393331111111"), "inps", 61*time.Second)
	n.publish(first.offered(true), first.answered(5*time.Second, "op1"), second.offered(true), first.transferred(60*time.Second, "op1", "inps", "c2"))
	code := n.waitCode("c2")
	if c, _ := n.codeOf("c1"); c != code {
		t.Fatalf("the new leg joined %s, the first leg is on %s", code, c)
	}

	// Another node sees only the new leg, with the code in its header.
	other := startNode(t, n.store, testOptions)
	n.stop()
	third := newCall("c3", modules.Caller{Number: "+393339999999"}, "age", 90*time.Second)
	third.Headers = map[string]string{Header: code}
	other.publish(third.offered(false), third.answered(95*time.Second, "age.greco"), third.ended(100*time.Second, 5*time.Second))
	eventually(t, "the third hop", func() bool { return len(other.ticket(code).Hops) == 3 })
	tk := other.ticket(code)
	if len(other.list("lineamica", "").Tickets) != 1 {
		t.Errorf("more than one ticket")
	}
	if h := tk.Hops[1]; h.Agency != "inps" || h.Via != ViaTransfer || h.TransferredBy != "op1" {
		t.Errorf("hop 1 = %+v, want the transfer to inps by op1", h)
	}
	if h := tk.Hops[2]; h.Agency != "age" || h.Via != ViaTransfer || h.Operator != "age.greco" {
		t.Errorf("hop 2 = %+v, want age answered by age.greco", h)
	}
}
