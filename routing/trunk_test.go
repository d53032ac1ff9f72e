package routing

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// pstn is a trunk to two PSTN gateways of priority 1 sharing calls 3:1 and a
// backup of priority 2.
var pstn = Trunk{
	Name:     "pstn",
	Prefixes: []string{"0", "3"},
	Numbers:  []string{"112"},
	Peers: []Peer{
		{Name: "backup", Host: "10.0.0.3", Priority: 2},
		{Name: "gw-a", Host: "10.0.0.1", Priority: 1, Weight: 3},
		{Name: "gw-b", Host: "10.0.0.2", Port: 5070, Transport: "TCP", Priority: 1, Weight: 1},
	},
	Probe: Probe{Failures: 2, Successes: 2},
}

// inpsTrunk takes a longer prefix than pstn's.
var inpsTrunk = Trunk{Name: "inps", Prefixes: []string{"0803164"}, Peers: []Peer{{Host: "inps.example", Transport: "tls"}}}

func newTrunks(t *testing.T, list ...Trunk) *Trunks {
	t.Helper()
	ts := NewTrunks(list)
	ts.rand = rand.New(rand.NewPCG(1, 2))
	return ts
}

func names(peers []Peer) []string {
	var out []string
	for _, p := range peers {
		out = append(out, p.Name)
	}
	return out
}

func TestTrunkDefaults(t *testing.T) {
	tr := inpsTrunk.WithDefaults()
	p := tr.Peers[0]
	if p.Name != "inps.example:5061" || p.Port != 5061 || p.Weight != 1 || p.Transport != "tls" {
		t.Errorf("peer defaults: %+v", p)
	}
	if tr.Inbound.Trust != TrustAddress || tr.Probe != (Probe{Interval: DefaultProbeInterval, Failures: 3, Successes: 2}) ||
		tr.ReplyTimeout != DefaultReplyTimeout || tr.Outbound.Expires != DefaultRegisterExpiry {
		t.Errorf("trunk defaults: %+v", tr)
	}
	if inpsTrunk.Peers[0].Port != 0 {
		t.Error("WithDefaults changed the trunk it was given")
	}
	if got := pstn.WithDefaults().Peers[2]; got.Port != 5070 || got.Transport != "tcp" {
		t.Errorf("given port and transport not kept: %+v", got)
	}
}

func TestTrunkMatch(t *testing.T) {
	ts := newTrunks(t, pstn, inpsTrunk)
	for _, c := range []struct{ dialled, want string }{
		{"0811234567", "pstn"},
		{"3331234567", "pstn"},
		{"112", "pstn"},
		{"08031640000", "inps"}, // longest prefix wins
		{"8100101", ""},
		{"11", ""},
	} {
		tr, ok := ts.Match(c.dialled)
		if ok != (c.want != "") || tr.Name != c.want {
			t.Errorf("Match(%s) = %q, %v; want %q", c.dialled, tr.Name, ok, c.want)
		}
	}
}

func TestTrunkSelectOrder(t *testing.T) {
	ts := newTrunks(t, pstn)
	tr := ts.List()[0]
	first := map[string]int{}
	const draws = 4000
	for range draws {
		got := names(ts.Select(tr))
		if len(got) != 3 || got[2] != "backup" {
			t.Fatalf("Select = %v: the priority-2 peer must come last", got)
		}
		first[got[0]]++
	}
	// gw-a weighs 3, gw-b 1: gw-a comes first about three times in four.
	if share := float64(first["gw-a"]) / draws; share < 0.70 || share > 0.80 {
		t.Errorf("gw-a first in %.2f of the calls, want about 0.75 (%v)", share, first)
	}
}

func TestTrunkProbeState(t *testing.T) {
	ts := newTrunks(t, pstn)
	tr := ts.List()[0]
	now := time.Unix(1_800_000_000, 0)
	probe := func(peer string, ok bool) (bool, bool) {
		return ts.Probed("pstn", peer, ok, 20*time.Millisecond, "timeout", now)
	}
	if up, changed := probe("gw-a", false); !up || changed {
		t.Fatalf("one failure of two: up=%v changed=%v", up, changed)
	}
	if up, changed := probe("gw-a", false); up || !changed {
		t.Fatalf("second failure: up=%v changed=%v, want down", up, changed)
	}
	if h := ts.Health("pstn", "gw-a"); h.Up || h.Failures != 2 || h.LastError != "timeout" || !h.LastProbe.Equal(now) {
		t.Errorf("health of a peer down: %+v", h)
	}
	for range 20 {
		if got := names(ts.Select(tr)); !reflect.DeepEqual(got, []string{"gw-b", "backup"}) {
			t.Fatalf("Select with gw-a down = %v", got)
		}
	}
	if up, changed := probe("gw-a", true); up || changed {
		t.Fatalf("one success of two: up=%v changed=%v", up, changed)
	}
	probe("gw-a", false) // a failure in between starts the count again
	probe("gw-a", true)
	if up, changed := probe("gw-a", true); !up || !changed {
		t.Fatalf("two successes in a row: up=%v changed=%v, want up", up, changed)
	}
	if h := ts.Health("pstn", "gw-a"); !h.Up || h.Latency != 20*time.Millisecond || h.Failures != 0 {
		t.Errorf("health of a peer back up: %+v", h)
	}
	if up, changed := ts.Probed("pstn", "nobody", true, 0, "", now); up || changed {
		t.Error("an unknown peer has a state")
	}
}

func TestRouteToTrunk(t *testing.T) {
	ctx := context.Background()
	r, _ := newRouter(t)
	r.Trunks = newTrunks(t, pstn)
	tr := r.Trunks.List()[0]

	// The directory comes first: a user's full number never leaves.
	dec, err := r.Route(ctx, Request{Dialled: "8100101"})
	if err != nil || len(dec.Targets) != 1 || dec.Targets[0].Username != "campania.rossi" {
		t.Fatalf("full number of a user: %+v, %v", dec, err)
	}
	dec, err = r.Route(ctx, Request{CallerAgency: "r_campan", Dialled: "0811234567"})
	if err != nil {
		t.Fatal(err)
	}
	if dec.Status != 0 || dec.Parallel || dec.RingTimeout != time.Minute || dec.DestAgency != "" || len(dec.Targets) != 3 {
		t.Fatalf("call to the PSTN: %+v", dec)
	}
	for _, tg := range dec.Targets {
		if tg.Trunk != "pstn" || tg.Username != "" {
			t.Errorf("target %+v is not a peer of pstn", tg)
		}
	}
	for _, p := range tr.Peers {
		ts := r.Trunks
		ts.Probed("pstn", p.Name, false, 0, "503", time.Now())
		ts.Probed("pstn", p.Name, false, 0, "503", time.Now())
	}
	dec, err = r.Route(ctx, Request{Dialled: "0811234567"})
	if err != nil || dec.Status != 503 || len(dec.Targets) != 0 {
		t.Fatalf("every peer down: %+v, %v; want 503", dec, err)
	}
	// Unknown numbers outside every prefix still get 404.
	if dec, _ := r.Route(ctx, Request{Dialled: "999"}); dec.Status != 404 {
		t.Errorf("number of no trunk: %+v", dec)
	}
}
