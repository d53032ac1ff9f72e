package ticketing

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
	"github.com/lineamica/centralino/test/redisserver"
)

// The case: a citizen's call through a trunk to agency A, answered,
// transferred to B, answered, ended gives exactly one ticket with two hops.
func TestTransferAppendsHopToSameTicket(t *testing.T) {
	stores(t, func(t *testing.T, store func() modules.Store) {
		n := startNode(t, store(), testOptions)
		n.publish(transferFlow("c1", citizen("+393331234567"), "r_campan", "inps", 0)...)
		n.waitTicket("", func(tk *Ticket) bool { return len(tk.Hops) == 2 && ended(tk) })
		n.stop() // every event seen, outbox written

		n = startNode(t, store(), testOptions)
		l := n.list("lineamica", "")
		if len(l.Tickets) != 1 {
			t.Fatalf("%d tickets, want 1", len(l.Tickets))
		}
		tk := l.Tickets[0]
		if tk.Code != ticketcode.New(2026, "CAM", 1) || tk.Region != "CAM" || tk.Status != StatusInLavorazione {
			t.Errorf("code %s, region %s, status %s; want %s, CAM, in_lavorazione", tk.Code, tk.Region, tk.Status, ticketcode.New(2026, "CAM", 1))
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

// A later call from the same number within link_days joins the ticket; one
// after the window, or after the ticket was closed, opens a new one.
func TestRepeatCallerLinked(t *testing.T) {
	stores(t, func(t *testing.T, store func() modules.Store) {
		n := startNode(t, store(), testOptions)
		number := "+393471234567"
		day := 24 * time.Hour
		ticketOf := func(id string, agency string, at time.Duration) string {
			t.Helper()
			c := newCall(id, citizen(number), agency, at)
			n.publish(c.offered(true))
			code := n.waitCode(id)
			n.publish(c.answered(at+time.Second, "op"), c.ended(at+time.Minute, 59*time.Second))
			eventually(t, id+" to end", func() bool { _, status := n.codeOf(id); return status == 404 })
			return code
		}
		first := ticketOf("c1", "r_campan", 0)
		if again := ticketOf("c2", "r_puglia", 6*day); again != first {
			t.Fatalf("a call 6 days later opened %s, want it linked to %s", again, first)
		}
		tk := n.ticket(first)
		if len(tk.Hops) != 2 || tk.Hops[1].Via != ViaRepeatCall || tk.Hops[1].Agency != "r_puglia" || !slices.Equal(tk.Agencies, []string{"r_campan", "r_puglia"}) {
			t.Errorf("after the repeat call: hops %+v, agencies %v", tk.Hops, tk.Agencies)
		}
		// The window runs from the last change: day 6 + 8 days is too late.
		late := ticketOf("c3", "r_campan", 14*day)
		if late == first {
			t.Fatalf("a call 8 days after the last one joined the ticket")
		}
		if code := n.do("PATCH", "/tickets/"+late, "r_campan", `{"status":"chiuso"}`, nil); code != 200 {
			t.Fatalf("closing: status %d", code)
		}
		if after := ticketOf("c4", "r_campan", 15*day); after == late || after == first {
			t.Fatalf("a call after closing joined a closed ticket")
		}
		if got := n.metric("centralino_tickets_linked_total", "agency", "r_puglia"); got != 1 {
			t.Errorf("linked{r_puglia} = %v, want 1", got)
		}
		if got := n.metric("centralino_tickets_opened_total", "agency", "r_campan"); got != 3 {
			t.Errorf("opened{r_campan} = %v, want 3", got)
		}
	})
}

func TestWhichCallsOpenTickets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		options map[string]any
		caller  modules.Caller
		public  bool
		opens   bool
	}{
		{"defaults: citizen to a public number", nil, modules.Caller{Number: "0812345678"}, true, true},
		{"defaults: to an extension", nil, modules.Caller{Number: "0812345678"}, false, false},
		{"defaults: a user of the network", nil, modules.Caller{Number: "8100101", InDirectory: true}, true, false},
		{"any number", map[string]any{"only_public_numbers": false}, modules.Caller{Number: "0812345678"}, false, true},
		{"users too", map[string]any{"only_outside_directory": false}, modules.Caller{Number: "8100101", InDirectory: true}, true, true},
		{"trunks only: from a phone", map[string]any{"only_trunks": true}, modules.Caller{Number: "0812345678"}, true, false},
		{"trunks only: from a trunk", map[string]any{"only_trunks": true}, citizen("0812345678"), true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			options := maps.Clone(testOptions)
			maps.Copy(options, tc.options)
			n := startNode(t, kv.NewMemory(), options)
			n.publish(newCall("c1", tc.caller, "r_campan", 0).offered(tc.public), newCall("probe", citizen("0"), "age", 0).offered(true))
			n.waitCode("probe") // events are handled in order
			if _, status := n.codeOf("c1"); (status == 200) != tc.opens {
				t.Errorf("ticket opened: %v, want %v", status == 200, tc.opens)
			}
		})
	}
}

func TestBadOptions(t *testing.T) {
	for options, want := range map[string]string{
		"regions":        `option "regions": r_campan: "Campania" is not three upper-case letters`,
		"retention_days": `option "retention_days": must be at least 1, not 0`,
		"link_days":      `option "link_days": -1 is negative`,
		"outbox_size":    `option "outbox_size": must be at least 1, not 0`,
		"colour":         `option "colour": unknown option`,
	} {
		opts := map[string]any{options: map[string]any{"regions": map[string]any{"r_campan": "Campania"},
			"retention_days": 0, "link_days": -1, "outbox_size": 0, "colour": "blue"}[options]}
		_, err := modules.Start(context.Background(), []modules.Config{{Name: "ticketing", Options: opts}},
			modules.Deps{Bus: modules.NewBus(modules.BusOptions{}), Mux: http.NewServeMux(), Store: kv.NewMemory()})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", options, err, want)
		}
	}
}

// A node restarted on the same Redis serves the tickets it had, and its new
// tickets never reuse a code.
func TestRestartOnRedisKeepsTickets(t *testing.T) {
	srv := redisserver.Start(t)
	n := startNode(t, kv.NewRedis(redisClient(t, srv)), testOptions)
	n.publish(transferFlow("c1", citizen("+393331234567"), "r_campan", "inps", 0)...)
	code := n.waitTicket("", ended).Code
	n.stop()

	n = startNode(t, kv.NewRedis(redisClient(t, srv)), testOptions)
	if tk := n.ticket(code); len(tk.Hops) != 2 || tk.Hops[1].TalkSeconds != 130 {
		t.Fatalf("after restart: hops %+v", tk.Hops)
	}
	n.publish(newCall("c2", citizen("+390000000000"), "asl_na1", time.Hour).offered(true))
	if again := n.waitCode("c2"); again == code || !strings.HasPrefix(again, "LA-2026-CAM-") {
		t.Errorf("the next ticket is %s, after %s", again, code)
	}
}

// While Redis is unreachable, tickets are opened and changed in memory and
// written once it is back; nothing is lost.
func TestRedisBlipLosesNothing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		down, up func(*redisserver.Server)
	}{
		{"frozen", (*redisserver.Server).Freeze, (*redisserver.Server).Thaw},
		{"killed", (*redisserver.Server).Stop, (*redisserver.Server).Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redisserver.Start(t)
			n := startNode(t, kv.NewRedis(redisClient(t, srv)), testOptions)
			// A first ticket leases serial numbers.
			n.publish(newCall("c0", citizen("+393330000000"), "r_campan", 0).offered(true))
			n.waitCode("c0")
			n.flushed()

			tc.down(srv)
			n.publish(transferFlow("c1", citizen("+393331234567"), "r_campan", "inps", time.Minute)[:4]...)
			code := n.waitCode("c1-xfer")
			eventually(t, "the outbox to hold the ticket", func() bool { return n.metric("centralino_ticket_outbox_length") >= 1 })
			if tk := n.ticket(code); len(tk.Hops) != 2 {
				t.Errorf("during the outage the API serves %d hops, want 2", len(tk.Hops))
			}
			tc.up(srv)
			n.flushed()
			n.stop()

			n = startNode(t, kv.NewRedis(redisClient(t, srv)), testOptions)
			tk := n.ticket(code)
			if len(tk.Hops) != 2 || tk.Hops[1].Agency != "inps" || tk.Status != StatusTrasferito {
				t.Errorf("after the outage: status %s, hops %+v", tk.Status, tk.Hops)
			}
			if got := n.metric("centralino_tickets_lost_total"); got != 0 {
				t.Errorf("lost = %v", got)
			}
		})
	}
}

// A citizen who calls again while the first call's ticket waits in the
// outbox (Redis unreachable, or merely slow to take the write) joins it.
func TestRepeatCallerLinkedFromOutbox(t *testing.T) {
	srv := redisserver.Start(t)
	n := startNode(t, kv.NewRedis(redisClient(t, srv)), testOptions)
	n.publish(newCall("c0", citizen("+393330000000"), "r_campan", 0).offered(true))
	n.waitCode("c0") // leases serial numbers
	n.flushed()

	srv.Freeze()
	first := newCall("c1", citizen("+393471234567"), "r_campan", time.Hour)
	n.publish(first.offered(true))
	code := n.waitCode("c1")
	n.publish(first.answered(time.Hour+time.Second, "op"), first.ended(time.Hour+time.Minute, 59*time.Second))
	eventually(t, "c1 to end", func() bool { _, status := n.codeOf("c1"); return status == 404 })
	n.publish(newCall("c2", citizen("+393471234567"), "r_puglia", 2*time.Hour).offered(true))
	if again := n.waitCode("c2"); again != code {
		t.Errorf("a call while the first ticket waits in the outbox opened %s, want it linked to %s", again, code)
	}
	srv.Thaw()
	n.flushed()
}

// Caller numbers are masked in the logs; PEC addresses never appear.
func TestLogsKeepPrivacy(t *testing.T) {
	n := startNode(t, kv.NewMemory(), testOptions)
	n.publish(transferFlow("c1", citizen("+393331234567"), "r_campan", "inps", 0)...)
	code := n.waitTicket("", ended).Code
	n.publish(newCall("c2", citizen("+393331234567"), "age", time.Hour).offered(true))
	n.waitCode("c2")
	if status := n.do("PATCH", "/tickets/"+code, "inps", `{"citizen_pec":"mario.rossi@pec.it","note":"chiede la pensione"}`, nil); status != 200 {
		t.Fatalf("PATCH: status %d", status)
	}
	n.stop()
	logs := n.logs.String()
	for _, secret := range []string{"3331234567", "mario.rossi", "pec.it", "pensione"} {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs contain %q:\n%s", secret, logs)
		}
	}
	if !strings.Contains(logs, `caller="+39 333 ***4567"`) {
		t.Errorf("the logs lack the masked number:\n%s", logs)
	}
}

// Overflows give a hop for each agency the call left, whether the offer
// names the agency dialled or, as the switch does for overflows decided
// when routing, the agency where routing ended.
func TestOverflowHops(t *testing.T) {
	overflow := func(c call, from, to string, reason modules.OverflowReason) modules.CallOverflowed {
		return modules.CallOverflowed{Call: c.at(0), FromAgency: from, ToAgency: to, Reason: reason}
	}
	dialled := newCall("dialled", citizen("+393330000001"), "r_campan", 0)
	ended := newCall("ended", citizen("+393330000002"), "lineamica", 0)
	for name, events := range map[string][]modules.Event{
		"offer at the agency dialled": {dialled.offered(true),
			overflow(dialled, "r_campan", "asl_na1", modules.OverflowClosed),
			overflow(dialled, "asl_na1", "lineamica", modules.OverflowUnavailable),
			dialled.answered(10*time.Second, "lineamica.bianchi")},
		"offer where routing ended": {ended.offered(true),
			overflow(ended, "r_campan", "asl_na1", modules.OverflowClosed),
			overflow(ended, "asl_na1", "lineamica", modules.OverflowUnavailable),
			ended.answered(10*time.Second, "lineamica.bianchi")},
	} {
		t.Run(name, func(t *testing.T) {
			n := startNode(t, kv.NewMemory(), testOptions)
			n.publish(events...)
			tk := n.waitTicket("", func(tk *Ticket) bool { return len(tk.Hops) == 3 && tk.Hops[2].Operator != "" })
			if !slices.Equal(tk.Agencies, []string{"r_campan", "asl_na1", "lineamica"}) {
				t.Errorf("agencies = %v", tk.Agencies)
			}
			var got []string
			for _, h := range tk.Hops {
				got = append(got, h.Agency+" "+string(h.Via)+" "+h.Reason)
			}
			want := []string{"r_campan call ", "asl_na1 overflow closed", "lineamica overflow unavailable"}
			if !slices.Equal(got, want) {
				t.Errorf("hops = %q, want %q", got, want)
			}
			if tk.Status != StatusInLavorazione || tk.Hops[0].EndedAt.IsZero() || tk.Hops[1].EndedAt.IsZero() {
				t.Errorf("status %s, hops %+v", tk.Status, tk.Hops)
			}
		})
	}
}
