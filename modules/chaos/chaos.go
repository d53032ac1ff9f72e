// Package chaos is a module that misbehaves on purpose, to show that a broken
// module cannot hurt calls: it panics on every call event, or blocks its
// handler so that its queue fills. It is compiled into the binary only with
// the build tag "chaos" (the end-to-end tests use it); never in production.
package chaos

import (
	"context"
	"time"

	"github.com/lineamica/centralino/modules"
)

func init() {
	modules.Register(modules.Info{Name: "chaos", New: func() modules.Module { return &Chaos{} }})
}

// Chaos is the misbehaving module.
type Chaos struct {
	Panic bool          `yaml:"panic"` // panic on every event
	Stall time.Duration `yaml:"stall"` // block this long on every event
	Queue int           `yaml:"queue"` // queue length (default: the bus's)
}

// Provision subscribes to every event.
func (c *Chaos) Provision(h *modules.Host) error {
	if err := h.DecodeOptions(c); err != nil {
		return err
	}
	return h.Subscribe(c.Queue, nil, func(ctx context.Context, ev modules.Event) {
		if c.Stall > 0 {
			select {
			case <-time.After(c.Stall):
			case <-ctx.Done():
			}
		}
		if c.Panic {
			panic("chaos: " + ev.Kind())
		}
	})
}
