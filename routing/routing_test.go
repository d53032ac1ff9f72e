package routing

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/routing/directory"
	"github.com/lineamica/centralino/test/redisserver"
)

// network is a small directory: the national centre, a regional URP with
// office hours and a round-robin queue, an office without operators, a
// ring-all queue without overflow, and two agencies overflowing to each other.
var network = struct {
	agencies []directory.Agency
	users    []directory.User
}{
	agencies: []directory.Agency{
		{Code: "lineamica", Prefix: "8000", Numbers: []string{"803001"}, Closures: []string{"12-25"}},
		{Code: "r_campan", Prefix: "8100", Numbers: []string{"8100000"}, Overflow: "lineamica",
			Hours: "mon-fri 08:30-13:30, tue,thu 14:30-17:00", Closures: []string{"09-19"},
			Queue: directory.QueueConfig{Strategy: "round-robin", RingTimeout: 15 * time.Second, MaxWait: 40 * time.Second}},
		{Code: "asl_na1", Prefix: "8110", Numbers: []string{"8110000"}, Overflow: "lineamica"},
		{Code: "inps", Prefix: "8300", Numbers: []string{"8300000"},
			Queue: directory.QueueConfig{Strategy: "ring-all", MaxWait: 20 * time.Second}},
		{Code: "loop_a", Prefix: "8500", Numbers: []string{"8500000"}, Overflow: "loop_b", Hours: "sat 09:00-10:00"},
		{Code: "loop_b", Prefix: "8600", Numbers: []string{"8600000"}, Overflow: "loop_a", Hours: "sat 09:00-10:00"},
		{Code: "broken", Prefix: "8700", Numbers: []string{"8700000"}, Hours: "mon 8-12"},
	},
	users: []directory.User{
		{Username: "la.op", Agency: "lineamica", Role: directory.RoleOperator, Extension: "201"},
		{Username: "campania.rossi", Agency: "r_campan", Role: directory.RolePhone, Extension: "101"},
		{Username: "campania.op1", Agency: "r_campan", Role: directory.RoleOperator, Extension: "201"},
		{Username: "campania.op2", Agency: "r_campan", Role: directory.RoleOperator, Extension: "202"},
		{Username: "campania.op3", Agency: "r_campan", Role: directory.RoleOperator, Extension: "203"},
		{Username: "inps.op1", Agency: "inps", Role: directory.RoleOperator, Extension: "201"},
		{Username: "inps.op2", Agency: "inps", Role: directory.RoleOperator, Extension: "202"},
	},
}

// newRouter returns a router over network whose queue operators are all
// logged in.
func newRouter(t *testing.T) (*Router, *Queues) {
	t.Helper()
	ctx := context.Background()
	dir := directory.NewMemory()
	must(t, directory.Load(ctx, dir, network.agencies, network.users))
	q := &Queues{}
	for _, u := range network.users {
		if u.Role == directory.RoleOperator && u.Agency != "lineamica" {
			must(t, q.Login(ctx, u.Agency, u.Username))
		}
	}
	return &Router{Dir: dir, RingTimeout: time.Minute, Queues: q}, q
}

func TestRoute(t *testing.T) {
	ctx := context.Background()
	var (
		tuesday   = at(t, "2026-03-03 10:00")
		sunday    = at(t, "2026-03-08 10:00")
		easterMon = at(t, "2026-04-06 10:00")
		christmas = at(t, "2026-12-25 10:00")
		patron    = at(t, "2025-09-19 10:00") // a Friday
	)
	target := func(agency string, users ...string) []Target {
		var ts []Target
		for _, u := range users {
			ts = append(ts, Target{Username: u, Agency: agency})
		}
		return ts
	}
	rossi := Decision{Targets: target("r_campan", "campania.rossi"), Parallel: true, RingTimeout: time.Minute, DestAgency: "r_campan"}
	overflowed := func(reason OverflowReason) Decision {
		return Decision{Public: true, Targets: target("lineamica", "la.op"), Parallel: true, RingTimeout: time.Minute, DestAgency: "lineamica",
			Overflowed: []Hop{{From: "r_campan", To: "lineamica", Reason: reason}}}
	}
	busy := func(users ...string) func(*Queues) {
		return func(q *Queues) {
			for _, u := range users {
				must(t, q.CallStarted(ctx, u))
			}
		}
	}
	tests := []struct {
		name    string
		req     Request
		setup   func(*Queues)
		noQueue bool // route without operator states
		want    Decision
	}{
		{"username, hours do not apply", Request{Dialled: "campania.rossi", Time: sunday}, nil, false, rossi},
		{"extension in the caller's agency, on a holiday", Request{CallerAgency: "r_campan", Dialled: "101", Time: easterMon}, nil, false, rossi},
		{"full number, on a Sunday", Request{Dialled: "8100101", Time: sunday}, nil, false, rossi},
		{"unknown number", Request{Dialled: "8100999", Time: tuesday}, nil, false, Decision{Status: 404, Reason: "Not Found"}},

		{"public number without hours or queue rings all operators", Request{Dialled: "803001", Time: sunday}, nil, false,
			Decision{Public: true, Targets: target("lineamica", "la.op"), Parallel: true, RingTimeout: time.Minute, DestAgency: "lineamica"}},
		{"round-robin queue, as many operators as fit in the maximum wait", Request{Dialled: "8100000", Time: tuesday}, nil, false,
			Decision{Public: true, Targets: target("r_campan", "campania.op1", "campania.op2"), RingTimeout: 15 * time.Second, DestAgency: "r_campan"}},
		{"round-robin queue skips a busy operator", Request{Dialled: "8100000", Time: tuesday}, busy("campania.op1"), false,
			Decision{Public: true, Targets: target("r_campan", "campania.op2", "campania.op3"), RingTimeout: 15 * time.Second, DestAgency: "r_campan"}},
		{"ring-all queue rings for the maximum wait", Request{Dialled: "8300000", Time: tuesday}, nil, false,
			Decision{Public: true, Targets: target("inps", "inps.op1", "inps.op2"), Parallel: true, RingTimeout: 20 * time.Second, DestAgency: "inps"}},
		{"without operator states a queue rings all operators", Request{Dialled: "8100000", Time: tuesday}, nil, true,
			Decision{Public: true, Targets: target("r_campan", "campania.op1", "campania.op2", "campania.op3"), Parallel: true, RingTimeout: time.Minute, DestAgency: "r_campan"}},

		{"closed on Sunday: overflow to the national centre", Request{Dialled: "8100000", Time: sunday}, nil, false, overflowed(OverflowClosed)},
		{"closed on Easter Monday", Request{Dialled: "8100000", Time: easterMon}, nil, false, overflowed(OverflowClosed)},
		{"closed for the patron saint", Request{Dialled: "8100000", Time: patron}, nil, false, overflowed(OverflowClosed)},
		{"all operators busy", Request{Dialled: "8100000", Time: tuesday},
			busy("campania.op1", "campania.op2", "campania.op3"), false, overflowed(OverflowBusy)},
		{"all operators logged out", Request{Dialled: "8100000", Time: tuesday},
			func(q *Queues) {
				for _, u := range []string{"campania.op1", "campania.op2", "campania.op3"} {
					must(t, q.Logout(ctx, u))
				}
			}, false, overflowed(OverflowUnavailable)},
		{"no operators at all", Request{Dialled: "8110000", Time: tuesday}, nil, false,
			Decision{Public: true, Targets: target("lineamica", "la.op"), Parallel: true, RingTimeout: time.Minute, DestAgency: "lineamica",
				Overflowed: []Hop{{From: "asl_na1", To: "lineamica", Reason: OverflowUnavailable}}}},

		{"the overflow target is closed too: the dialled agency's answer", Request{Dialled: "8100000", Time: christmas}, nil, false,
			Decision{Public: true, Status: 480, Reason: "Ufficio chiuso, riapre il 28/12 alle 08:30", DestAgency: "r_campan",
				Overflowed: []Hop{{From: "r_campan", To: "lineamica", Reason: OverflowClosed}}}},
		{"all busy, no overflow", Request{Dialled: "8300000", Time: tuesday}, busy("inps.op1", "inps.op2"), false,
			Decision{Public: true, Status: 486, Reason: "Operatori tutti occupati", DestAgency: "inps"}},
		{"overflow cycle is followed once", Request{Dialled: "8500000", Time: sunday}, nil, false,
			Decision{Public: true, Status: 480, Reason: "Ufficio chiuso, riapre il 14/03 alle 09:00", DestAgency: "loop_a",
				Overflowed: []Hop{{From: "loop_a", To: "loop_b", Reason: OverflowClosed}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, q := newRouter(t)
			if tt.setup != nil {
				tt.setup(q)
			}
			if tt.noQueue {
				r.Queues = nil
			}
			got, err := r.Route(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Route(%+v)\n got %+v\nwant %+v", tt.req, got, tt.want)
			}
		})
	}
}

func TestRouteBadConfig(t *testing.T) {
	r, _ := newRouter(t)
	_, err := r.Route(context.Background(), Request{Dialled: "8700000", Time: at(t, "2026-03-02 10:00")})
	if want := `routing: agency broken: hours: "8-12": want HH:MM-HH:MM`; err == nil || err.Error() != want {
		t.Errorf("Route to an agency with bad hours: %v, want %s", err, want)
	}
}

func TestValidateAgency(t *testing.T) {
	tests := []struct {
		a    directory.Agency
		want string // "" for valid
	}{
		{directory.Agency{Code: "a"}, ""},
		{directory.Agency{Code: "a", Hours: "mon-fri 08:00-14:00", Closures: []string{"09-19"},
			Queue: directory.QueueConfig{Strategy: "fewest-calls", RingTimeout: time.Second, MaxWait: time.Minute}}, ""},
		{directory.Agency{Code: "a", Hours: "mon-fri"}, `hours: "mon-fri": days without intervals`},
		{directory.Agency{Code: "a", Closures: []string{"19 Sep"}}, `closures[0]: "19 Sep": want YYYY-MM-DD, or MM-DD for every year`},
		{directory.Agency{Code: "a", Queue: directory.QueueConfig{MaxWait: time.Minute}},
			`queue.strategy: "": want ring-all, round-robin, longest-idle or fewest-calls`},
		{directory.Agency{Code: "a", Queue: directory.QueueConfig{Strategy: "ring-all", RingTimeout: -time.Second}},
			`queue.ring_timeout: -1s is negative`},
		{directory.Agency{Code: "a", Queue: directory.QueueConfig{Strategy: "ring-all", MaxWait: -time.Second}},
			`queue.max_wait: -1s is negative`},
	}
	for _, tt := range tests {
		err := ValidateAgency(tt.a)
		if got := errString(err); got != tt.want {
			t.Errorf("ValidateAgency(%+v) = %q, want %q", tt.a, got, tt.want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// docsExample is the agency of the example in docs/routing.md.
const docsExample = `
- code: r_campan
  name: URP Regione Campania
  region: Campania
  sector: general
  prefix: "8100"
  numbers: ["8100000"]
  overflow: lineamica
  hours: mon-fri 08:30-13:30, tue,thu 14:30-17:00
  closures: ["09-19", "2026-12-24"]
  queue:
    strategy: round-robin
    ring_timeout: 15s
    max_wait: 45s
`

// TestAgencyConfig checks the syntax of the documentation as the configs
// package reads it, and that the Redis store's JSON keeps every field.
func TestAgencyConfig(t *testing.T) {
	dec := yaml.NewDecoder(strings.NewReader(docsExample))
	dec.KnownFields(true)
	var as []directory.Agency
	must(t, dec.Decode(&as))
	a := as[0]
	must(t, ValidateAgency(a))
	if want := (directory.QueueConfig{Strategy: "round-robin", RingTimeout: 15 * time.Second, MaxWait: 45 * time.Second}); a.Queue != want {
		t.Errorf("queue = %+v, want %+v", a.Queue, want)
	}
	if a.Hours != "mon-fri 08:30-13:30, tue,thu 14:30-17:00" || len(a.Closures) != 2 {
		t.Errorf("hours %q, closures %q", a.Hours, a.Closures)
	}

	for _, in := range []directory.Agency{a, {Code: "plain"}} {
		b, err := json.Marshal(in)
		must(t, err)
		var out directory.Agency
		must(t, json.Unmarshal(b, &out))
		if !reflect.DeepEqual(out, in) {
			t.Errorf("JSON round trip of %s: %+v", b, out)
		}
		if in.Code == "plain" && strings.Contains(string(b), "queue") {
			t.Errorf("an agency without a queue is written with one: %s", b)
		}
	}
}

func TestOverflow(t *testing.T) {
	ctx := context.Background()
	tuesday, christmas := at(t, "2026-03-03 10:00"), at(t, "2026-12-25 10:00")
	la := []Target{{Username: "la.op", Agency: "lineamica"}}
	tests := []struct {
		name string
		req  Request
		from string
		why  OverflowReason
		want Decision
	}{
		{"no answer at the URP: the national centre", Request{Dialled: "8100000", Time: tuesday}, "r_campan", OverflowNoAnswer,
			Decision{Public: true, Targets: la, Parallel: true, RingTimeout: time.Minute, DestAgency: "lineamica",
				Overflowed: []Hop{{From: "r_campan", To: "lineamica", Reason: OverflowNoAnswer}}}},
		{"the centre closed too: refused with its reason", Request{Dialled: "8100000", Time: christmas}, "r_campan", OverflowBusy,
			Decision{Public: true, Status: 480, Reason: "Ufficio chiuso, riapre il 26/12 alle 00:00", DestAgency: "lineamica",
				Overflowed: []Hop{{From: "r_campan", To: "lineamica", Reason: OverflowBusy}}}},
		{"no overflow target", Request{Dialled: "8300000", Time: tuesday}, "inps", OverflowNoAnswer,
			Decision{Status: 480, Reason: "Nessun operatore disponibile"}},
		{"never back to an agency already tried", Request{Dialled: "8500000", Time: at(t, "2026-03-07 09:30"), Tried: []string{"loop_a"}}, "loop_b", OverflowNoAnswer,
			Decision{Status: 480, Reason: "Nessun operatore disponibile"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := newRouter(t)
			got, err := r.Overflow(ctx, tt.req, tt.from, tt.why)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Overflow(%s, %s)\n got %+v\nwant %+v", tt.from, tt.why, got, tt.want)
			}
		})
	}
}

// With the operators' states out of reach (Redis stopped), a queue's
// public number degrades to ringing every operator at once.
func TestRouteQueueStateDown(t *testing.T) {
	r, _ := newRouter(t)
	srv := redisserver.Start(t)
	client := redisClient(t, srv.URL())
	r.Queues = &RedisQueues{Client: client}
	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := r.Route(ctx, Request{Dialled: "8100000", Time: at(t, "2026-03-03 10:00")})
	if err != nil {
		t.Fatal(err)
	}
	want := Decision{Public: true, Parallel: true, RingTimeout: time.Minute, DestAgency: "r_campan", Targets: []Target{
		{Username: "campania.op1", Agency: "r_campan"}, {Username: "campania.op2", Agency: "r_campan"}, {Username: "campania.op3", Agency: "r_campan"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Route with the queue state down\n got %+v\nwant %+v", got, want)
	}
}
