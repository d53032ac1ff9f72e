package e2e

import (
	"testing"
	"time"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/modules"
)

// A module that panics on every event, and one that blocks, do not disturb
// calls: panics are recovered and counted, a full queue drops and counts.
func TestMisbehavingModulesDoNotDisturbCalls(t *testing.T) {
	n := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		c.Modules = []modules.Config{
			{Name: "chaos", Options: map[string]any{"panic": true}},
		}
	}})
	stalled := startNode(t, nodeOptions{edit: func(c *configs.Config) {
		c.Modules = []modules.Config{{Name: "chaos", Options: map[string]any{"stall": "1m", "queue": 2}}}
	}})
	for _, node := range []*node{n, stalled} {
		callee := phone(t, node, "inps.ricci", "udp")
		mustRegister(t, callee)
		caller := phone(t, node, "inps.colombo", "udp")
		for i := range 3 {
			start := time.Now()
			res, inv := caller.Invite("201")
			if res.StatusCode != 200 {
				t.Fatalf("call %d: %d", i, res.StatusCode)
			}
			caller.Ack(inv, res)
			if bye := caller.Bye(inv, res); bye.StatusCode != 200 {
				t.Fatalf("BYE %d: %d", i, bye.StatusCode)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("call %d took %v with a misbehaving module", i, d)
			}
		}
	}
	if v := n.metric(t, `centralino_module_panics_total{module="chaos"}`); v < 3 {
		t.Errorf("panics counted: %v", v)
	}
	if v := stalled.metric(t, `centralino_module_events_dropped_total{module="chaos"}`); v < 1 {
		t.Errorf("events dropped by the stuck module: %v", v)
	}
}
