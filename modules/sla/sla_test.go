package sla

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
	"github.com/lineamica/centralino/test/redisserver"
)

// directory is the agencies the tests know.
type directory []modules.Agency

func (d directory) Agency(code string) (modules.Agency, bool) {
	for _, a := range d {
		if a.Code == code {
			return a, true
		}
	}
	return modules.Agency{}, false
}

func (d directory) List() []modules.Agency { return d }

var agencies = directory{
	{Code: "lineamica", Name: "Linea Amica", Sector: "general"},
	{Code: "r_campan", Name: "URP Regione Campania", Region: "Campania", Sector: "general"},
	{Code: "asl_na1", Name: "ASL Napoli 1 Centro", Region: "Campania", Sector: "health"},
	{Code: "inps", Name: "INPS", Sector: "pensions"},
}

// node is the module on a bus of its own, as on one switch node.
type node struct {
	t       *testing.T
	bus     *modules.Bus
	mux     *http.ServeMux
	reg     *prometheus.Registry
	running *modules.Running
	stopped bool
}

func startNode(t *testing.T, store modules.Store, options map[string]any) *node {
	t.Helper()
	n := &node{t: t, bus: modules.NewBus(modules.BusOptions{}), mux: http.NewServeMux(), reg: prometheus.NewRegistry()}
	var err error
	n.running, err = modules.Start(context.Background(), []modules.Config{{Name: "sla", Options: options}},
		modules.Deps{Bus: n.bus, Mux: n.mux, Store: store, Metrics: n.reg, Agencies: agencies})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.stop)
	return n
}

// drain closes the bus, so that the module has seen every event published.
func (n *node) drain() {
	n.t.Helper()
	if err := n.bus.Close(context.Background()); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) stop() {
	if n.stopped {
		return
	}
	n.stopped = true
	n.bus.Close(context.Background())
	if err := n.running.Stop(context.Background()); err != nil {
		n.t.Error(err)
	}
}

func (n *node) publish(evs ...modules.Event) {
	for _, ev := range evs {
		n.bus.Publish(ev)
	}
}

// get asks the API and decodes the report; the status if not 200.
func (n *node) get(query string) (Report, int) {
	n.t.Helper()
	rec := httptest.NewRecorder()
	n.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/sla/?"+query, nil))
	var rep Report
	if rec.Code == http.StatusOK {
		if err := json.Unmarshal(rec.Body.Bytes(), &rep); err != nil {
			n.t.Fatalf("GET ?%s: %v: %s", query, err, rec.Body)
		}
	}
	return rep, rec.Code
}

func (n *node) report(query string) Report {
	n.t.Helper()
	rep, code := n.get(query)
	if code != http.StatusOK {
		n.t.Fatalf("GET /api/sla/?%s: status %d", query, code)
	}
	return rep
}

// t0 is a Tuesday morning in November (CET, UTC+1).
var t0 = time.Date(2026, 11, 10, 10, 0, 0, 0, Rome)

// calls builds the events of citizens' calls.
type calls struct{ at time.Time }

func (c calls) call(id, agency string, after time.Duration) modules.Call {
	return modules.Call{CallID: id, Time: c.at.Add(after), Caller: modules.Caller{Number: "3331234567", Trunk: "127.0.0.1"},
		Callee: "8100000", DestAgency: agency, Node: "n1"}
}

func (c calls) offered(id, agency string) modules.CallOffered {
	return modules.CallOffered{Call: c.call(id, agency, 0), Public: true}
}

// answered is a call offered, answered after wait and hung up after talk.
func (c calls) answered(id, agency string, wait, talk time.Duration) []modules.Event {
	return []modules.Event{
		c.offered(id, agency),
		modules.CallAnswered{Call: c.call(id, agency, wait), Wait: wait},
		modules.CallEnded{Call: c.call(id, agency, wait+talk), Disposition: modules.DispositionAnswered, Code: 200,
			Ring: wait, Talk: talk, HangupBy: modules.SideCallee},
	}
}

// abandoned is a call the caller hung up on after ringing for ring.
func (c calls) abandoned(id, agency string, ring time.Duration) []modules.Event {
	return []modules.Event{
		c.offered(id, agency),
		modules.CallEnded{Call: c.call(id, agency, ring), Disposition: modules.DispositionAbandoned, Code: 487,
			Ring: ring, HangupBy: modules.SideCaller},
	}
}

func (n *node) publishAll(groups ...[]modules.Event) {
	for _, g := range groups {
		n.publish(g...)
	}
}

func near(got *float64, want float64) bool {
	return got != nil && math.Abs(*got-want) < 1e-9
}

func show(p *float64) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

// The sequence of the issue: answered at 5 s and at 25 s, one abandon. The
// service level is answered within 20 s over offered less short abandons.
func TestServiceLevelArithmetic(t *testing.T) {
	for _, c := range []struct {
		name                                         string
		abandonAfter                                 time.Duration
		serviceLevel, abandonment                    float64
		abandoned, shortAbandoned, offered, answered int64
	}{
		// A short abandon (under 5 s) leaves the base: 1 of 2.
		{"short abandon", 2 * time.Second, 0.5, 0, 0, 1, 3, 2},
		// A real abandon stays in it: 1 of 3, and 1 of 3 abandoned.
		{"abandon after 30 s", 30 * time.Second, 1.0 / 3, 1.0 / 3, 1, 0, 3, 2},
		// The threshold itself is still "short": under 5 s, not at 5 s.
		{"abandon at 5 s", 5 * time.Second, 1.0 / 3, 1.0 / 3, 1, 0, 3, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := startNode(t, kv.NewMemory(), nil)
			at := calls{t0}
			n.publishAll(
				at.answered("c1", "r_campan", 5*time.Second, time.Minute),
				at.answered("c2", "r_campan", 25*time.Second, 2*time.Minute),
				at.abandoned("c3", "r_campan", c.abandonAfter),
			)
			n.drain()
			rep := n.report("agency=r_campan&bucket=day&from=2026-11-10&to=2026-11-10")
			if len(rep.Periods) != 1 {
				t.Fatalf("%d periods, want 1: %+v", len(rep.Periods), rep)
			}
			f := rep.Total
			if f.Offered != c.offered || f.Answered != c.answered || f.Abandoned != c.abandoned || f.ShortAbandoned != c.shortAbandoned {
				t.Errorf("offered %d answered %d abandoned %d short %d; want %d %d %d %d", f.Offered, f.Answered,
					f.Abandoned, f.ShortAbandoned, c.offered, c.answered, c.abandoned, c.shortAbandoned)
			}
			if !near(f.AverageSpeedAnswer, 15) {
				t.Errorf("ASA = %s s, want 15", show(f.AverageSpeedAnswer))
			}
			if !near(f.ServiceLevel, c.serviceLevel) {
				t.Errorf("service level = %s, want %v", show(f.ServiceLevel), c.serviceLevel)
			}
			if !near(f.AbandonmentRate, c.abandonment) {
				t.Errorf("abandonment = %s, want %v", show(f.AbandonmentRate), c.abandonment)
			}
			if !near(f.AverageHandleTime, 90) {
				t.Errorf("AHT = %s s, want 90", show(f.AverageHandleTime))
			}
			if rep.Periods[0].Figures.Offered != c.offered {
				t.Errorf("the day's bucket has %d offered", rep.Periods[0].Figures.Offered)
			}
			// The region and the network hold the same calls.
			for _, q := range []string{"region=Campania", ""} {
				if got := n.report(q + "&from=2026-11-10&to=2026-11-10").Total; got.Offered != c.offered || !near(got.ServiceLevel, c.serviceLevel) {
					t.Errorf("%q: offered %d, service level %s", q, got.Offered, show(got.ServiceLevel))
				}
			}
			if got := n.counter("centralino_sla_calls_answered_within_threshold_total", "r_campan"); got != 1 {
				t.Errorf("answered within threshold metric = %v, want 1", got)
			}
		})
	}
}

// counter returns the value of a counter of the agency; 0 if absent.
func (n *node) counter(name, agency string) float64 {
	n.t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		n.t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if mf.GetName() == name && l.GetName() == "agency" && l.GetValue() == agency {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Which calls count: citizens' calls to public numbers, by default.
func TestOnlyCitizensCallsToPublicNumbersCount(t *testing.T) {
	at := calls{t0}
	internal := at.answered("i1", "r_campan", time.Second, time.Minute)
	internal[0] = modules.CallOffered{Call: at.call("i1", "r_campan", 0), Public: true}
	c := internal[0].(modules.CallOffered)
	c.Caller.InDirectory = true
	internal[0] = c
	extension := at.answered("e1", "r_campan", time.Second, time.Minute)
	extension[0] = modules.CallOffered{Call: at.call("e1", "r_campan", 0), Public: false}

	n := startNode(t, kv.NewMemory(), nil)
	n.publishAll(internal, extension, at.answered("ok", "r_campan", time.Second, time.Minute))
	n.drain()
	if got := n.report("agency=r_campan&from=2026-11-10&to=2026-11-10").Total.Offered; got != 1 {
		t.Errorf("offered = %d, want 1 (a user's call and a call to an extension do not count)", got)
	}

	all := startNode(t, kv.NewMemory(), map[string]any{"only_public_numbers": false, "only_outside_directory": false})
	all.publishAll(internal, extension)
	all.drain()
	if got := all.report("agency=r_campan&from=2026-11-10&to=2026-11-10").Total.Offered; got != 2 {
		t.Errorf("with every call counted, offered = %d, want 2", got)
	}
}

// An overflow counts at both agencies; a transfer counts out of the first
// and in at the second, even to an extension.
func TestOverflowAndTransfer(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	at := calls{t0}
	over := at.call("o1", "lineamica", 0)
	n.publish(
		at.offered("o1", "r_campan"),
		modules.CallOverflowed{Call: over, FromAgency: "r_campan", ToAgency: "lineamica", Reason: modules.OverflowClosed},
		modules.CallAnswered{Call: at.call("o1", "lineamica", 12*time.Second), Wait: 12 * time.Second},
		modules.CallEnded{Call: at.call("o1", "lineamica", time.Minute), Disposition: modules.DispositionAnswered, Talk: 48 * time.Second},
	)
	n.publishAll(at.answered("t1", "r_campan", 3*time.Second, 30*time.Second)[:2])
	leg := at.call("t2", "inps", 40*time.Second)
	n.publish(
		modules.CallTransferred{Call: leg, Type: modules.TransferBlind, FromAgency: "r_campan", ToAgency: "inps",
			By: "campania.deluca", Target: "8300201", OriginalCallID: "t1", NewCallID: "t2"},
		modules.CallOffered{Call: leg, Public: false},
		modules.CallEnded{Call: at.call("t1", "r_campan", 41*time.Second), Disposition: modules.DispositionAnswered, Talk: 38 * time.Second},
		modules.CallAnswered{Call: at.call("t2", "inps", 45*time.Second), Wait: 5 * time.Second},
	)
	n.drain()
	day := "&from=2026-11-10&to=2026-11-10"
	campania := n.report("agency=r_campan" + day).Total
	if campania.Offered != 2 || campania.Overflowed != 1 || campania.TransferredOut != 1 || campania.Answered != 1 {
		t.Errorf("r_campan: %+v; want 2 offered, 1 overflowed, 1 transferred out, 1 answered", campania)
	}
	la := n.report("agency=lineamica" + day).Total
	if la.Offered != 1 || la.Answered != 1 || !near(la.AverageSpeedAnswer, 12) || !near(la.ServiceLevel, 1) {
		t.Errorf("lineamica: %+v; want the overflowed call answered in 12 s", la)
	}
	if inps := n.report("agency=inps" + day).Total; inps.Offered != 1 || inps.Answered != 1 || !near(inps.AverageSpeedAnswer, 5) {
		t.Errorf("inps: %+v; want the transferred call answered in 5 s", inps)
	}
	if net := n.report(day[1:]).Total; net.Offered != 4 || net.Answered != 3 {
		t.Errorf("network: %d offered, %d answered; want the sums of its agencies, 4 and 3", net.Offered, net.Answered)
	}
}

// Votes by phone and on the web, and surveys offered without a vote.
func TestRatings(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	at := calls{t0}
	for i := range 3 {
		n.publish(modules.RatingOffered{Call: at.call(fmt.Sprint("r", i), "r_campan", time.Minute), Agency: "r_campan"})
	}
	n.publish(
		modules.RatingGiven{Time: t0.Add(2 * time.Minute), Agency: "r_campan", CallID: "r0", Rating: modules.RatingPositive, Channel: "phone"},
		modules.RatingGiven{Time: t0.Add(2 * time.Minute), Agency: "r_campan", CallID: "r1", Rating: modules.RatingNegative, Reason: "waiting", Channel: "phone"},
		modules.RatingGiven{Time: t0.Add(time.Hour), Agency: "r_campan", TicketCode: "LA-2026-CAM-000001-X", Rating: modules.RatingPositive, Channel: "web"},
		modules.RatingGiven{Time: t0.Add(time.Hour), Agency: "r_campan", Rating: 7, Channel: "web"}, // ignored
	)
	n.drain()
	r := n.report("agency=r_campan&from=2026-11-10&to=2026-11-10").Total.Ratings
	if want := (Ratings{Offered: 3, Positive: 2, Sufficient: 0, Negative: 1, NotGiven: 1}); r != want {
		t.Errorf("ratings %+v, want %+v", r, want)
	}
}

// Days are days in Rome: a call a second before midnight and one at
// midnight fall on two days; the day daylight saving time ends has 25
// hours and the day it starts 23.
func TestBucketsFollowRomeTime(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	midnight := time.Date(2026, 11, 11, 0, 0, 0, 0, Rome)
	n.publishAll(
		calls{midnight.Add(-time.Second)}.answered("late", "inps", time.Second, time.Minute),
		calls{midnight}.answered("early", "inps", time.Second, time.Minute),
	)
	// 2026-10-25: 02:30 CEST, then an hour later 02:30 CET.
	first := time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC)
	n.publishAll(
		calls{first}.answered("dst1", "inps", time.Second, time.Minute),
		calls{first.Add(time.Hour)}.answered("dst2", "inps", time.Second, time.Minute),
	)
	n.drain()

	days := n.report("agency=inps&bucket=day&from=2026-11-10&to=2026-11-11").Periods
	if len(days) != 2 || days[0].Offered != 1 || days[1].Offered != 1 {
		t.Fatalf("days around midnight: %+v; want one call on each", days)
	}
	if days[1].Start != "2026-11-11T00:00:00+01:00" {
		t.Errorf("second day starts %s", days[1].Start)
	}

	hours := n.report("agency=inps&bucket=hour&from=2026-10-25&to=2026-10-25").Periods
	if len(hours) != 25 {
		t.Fatalf("25 October 2026 has %d hours, want 25", len(hours))
	}
	if hours[2].Start != "2026-10-25T02:00:00+02:00" || hours[3].Start != "2026-10-25T02:00:00+01:00" ||
		hours[2].Offered != 1 || hours[3].Offered != 1 {
		t.Errorf("the two 02:00 hours: %+v / %+v", hours[2], hours[3])
	}
	if d := n.report("agency=inps&bucket=day&from=2026-10-25&to=2026-10-25").Periods; len(d) != 1 || d[0].Offered != 2 {
		t.Errorf("25 October: %+v; want both calls in one day", d)
	}
	if got := len(n.report("agency=inps&bucket=hour&from=2026-03-29&to=2026-03-29").Periods); got != 23 {
		t.Errorf("29 March 2026 has %d hours, want 23", got)
	}
	weeks := n.report("agency=inps&bucket=week&from=2026-11-10&to=2026-11-15").Periods
	if len(weeks) != 1 || weeks[0].Start != "2026-11-09T00:00:00+01:00" || weeks[0].End != "2026-11-16T00:00:00+01:00" || weeks[0].Offered != 2 {
		t.Errorf("week of 10 November: %+v; want Monday 9 to Monday 16 with both calls of the 10th and 11th", weeks)
	}
	months := n.report("agency=inps&bucket=month&from=2026-10-01&to=2026-11-30").Periods
	if len(months) != 2 || months[0].Offered != 2 || months[1].Offered != 2 {
		t.Errorf("months: %+v; want two calls in October and two in November", months)
	}
}

// Counters outlive a restart, and two nodes on one Redis add up.
func TestTwoNodesOnRedisAddUpAndSurviveARestart(t *testing.T) {
	srv := redisserver.Start(t)
	opts, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { client.Close() })
	store := kv.NewRedis(client)
	at := calls{t0}

	a, b := startNode(t, store, nil), startNode(t, store, nil)
	a.publishAll(at.answered("a1", "asl_na1", 4*time.Second, time.Minute))
	b.publishAll(at.answered("b1", "asl_na1", 30*time.Second, time.Minute), at.abandoned("b2", "asl_na1", time.Minute))
	a.stop()
	b.stop()

	again := startNode(t, store, nil)
	f := again.report("agency=asl_na1&from=2026-11-10&to=2026-11-10").Total
	if f.Offered != 3 || f.Answered != 2 || f.Abandoned != 1 || !near(f.AverageSpeedAnswer, 17) || !near(f.ServiceLevel, 1.0/3) {
		t.Errorf("after a restart: %+v; want both nodes' three calls", f)
	}
	ttl, err := client.TTL(context.Background(), "cen:mod:sla:kv:"+counterKey(agencyScope("asl_na1"), Hour, Hour.Start(t0), fOffered)).Result()
	if err != nil || ttl < 61*24*time.Hour || ttl > 62*24*time.Hour {
		t.Errorf("an hourly counter's ttl is %v (%v), want 62 days", ttl, err)
	}
}

func TestBadRequests(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	for q, want := range map[string]int{
		"bucket=minute":                              400,
		"agency=inps&region=Campania":                400,
		"agency=nessuna":                             404,
		"region=Atlantide":                           404,
		"from=ieri":                                  400,
		"from=2026-11-10&to=2026-11-01":              400,
		"bucket=hour&from=2020-01-01&to=2026-01-01":  400,
		"bucket=month&from=2026-01-01&to=2026-12-31": 200,
		"from=2026-11-10T10:00:00Z&to=2026-11-10T12:00:00%2B01:00": 200,
	} {
		if _, code := n.get(q); code != want {
			t.Errorf("?%s: status %d, want %d", q, code, want)
		}
	}
	for q, want := range map[string]int{"mese=novembre": 400, "agency=nessuna": 404, "": 200} {
		rec := httptest.NewRecorder()
		n.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/sla/trasparenza?"+q, nil))
		if rec.Code != want {
			t.Errorf("trasparenza?%s: status %d, want %d", q, rec.Code, want)
		}
	}
}

func TestBadOptions(t *testing.T) {
	for opt, val := range map[string]any{"service_level_seconds": 0, "short_abandon_seconds": -1, "hourly_retention_days": 0, "nonsense": 1} {
		_, err := modules.Start(context.Background(), []modules.Config{{Name: "sla", Options: map[string]any{opt: val}}},
			modules.Deps{Bus: modules.NewBus(modules.BusOptions{}), Mux: http.NewServeMux(), Store: kv.NewMemory()})
		if err == nil || !strings.Contains(err.Error(), opt) {
			t.Errorf("option %s: %v: want an error naming it", opt, val)
		}
	}
}

// The page shows a month's figures in Italian, with no caller's number.
func TestTransparencyPage(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	at := calls{t0}
	n.publishAll(at.answered("c1", "r_campan", 5*time.Second, time.Minute), at.answered("c2", "r_campan", 25*time.Second, 2*time.Minute))
	n.drain()
	rec := httptest.NewRecorder()
	n.mux.ServeHTTP(rec, httptest.NewRequest("GET", "/api/sla/trasparenza?mese=2026-11", nil))
	body := rec.Body.String()
	for _, want := range []string{"novembre 2026", "URP Regione Campania", "50,0 %", "15 s", "1 min 30 s", "<svg", "Regione Campania"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "3331234567") {
		t.Error("the page shows a caller's number")
	}
}

func TestFormats(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1.000", 1234567: "1.234.567", -4500: "-4.500"} {
		if got := num(n); got != want {
			t.Errorf("num(%d) = %q, want %q", n, got, want)
		}
	}
}

// A transfer to the survey, by an operator or by the switch when the
// operator hangs up first, is neither a transfer out nor a call offered.
func TestTransfersToTheSurveyDoNotCount(t *testing.T) {
	n := startNode(t, kv.NewMemory(), map[string]any{"exclude_numbers": []any{"8000999", "999"}})
	at := calls{t0}
	for i, by := range []string{"campania.deluca", ""} {
		id := fmt.Sprint("c", i)
		n.publishAll(at.answered(id, "r_campan", 3*time.Second, 30*time.Second)[:2])
		ivr := at.call(id+"-ivr", "lineamica", 40*time.Second)
		ivr.Callee = "8000999"
		n.publish(
			modules.CallTransferred{Call: ivr, Type: modules.TransferBlind, FromAgency: "r_campan", ToAgency: "lineamica",
				By: by, Target: "8000999", OriginalCallID: id, NewCallID: ivr.CallID},
			modules.CallOffered{Call: ivr, Public: false},
			modules.CallAnswered{Call: ivr, Wait: 0},
			modules.RatingOffered{Call: ivr, Agency: "r_campan"},
			modules.RatingGiven{Time: ivr.Time, Agency: "r_campan", CallID: ivr.CallID, Rating: modules.RatingSufficient, Channel: "phone"},
			modules.CallEnded{Call: at.call(id, "r_campan", 41*time.Second), Disposition: modules.DispositionAnswered, Talk: 38 * time.Second},
		)
	}
	n.drain()
	day := "&from=2026-11-10&to=2026-11-10"
	if f := n.report("agency=r_campan" + day).Total; f.Offered != 2 || f.TransferredOut != 0 || f.Ratings.Sufficient != 2 || f.Ratings.NotGiven != 0 {
		t.Errorf("r_campan: %+v; want 2 calls, no transfer out, 2 votes", f)
	}
	if f := n.report("agency=lineamica" + day).Total; f.Offered != 0 {
		t.Errorf("the survey's agency was offered %d calls", f.Offered)
	}
}
