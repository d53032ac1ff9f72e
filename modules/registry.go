// Package modules is the switch's extension point: the events of the life of
// a call and of a phone, the Bus that carries them off the SIP path, and the
// registry of modules (ticketing, pec, faq, survey, sla...) that react to
// them, in the manner of Caddy modules or CoreDNS plugins.
//
// A module lives in its own package and registers itself from init:
//
//	func init() {
//		modules.Register(modules.Info{Name: "ticketing", New: func() modules.Module { return new(Ticketing) }})
//	}
//
// The binary imports the module packages it ships for their side effect, and
// Start provisions those enabled in the configuration. The switch imports
// this package only for the events and the Bus, never a module.
package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Module is an instance of a module. Provision reads the options, subscribes
// and registers routes and metrics through h; it must not block.
type Module interface {
	Provision(h *Host) error
}

// Stopper is implemented by modules with something to flush or stop. Stop
// is called whether or not the module was run.
type Stopper interface {
	Stop(ctx context.Context) error
}

// Runner is implemented by modules with background work (a mailbox to
// poll, an outbox to send, an index to refresh). Run starts it once every
// enabled module is provisioned, subscribed and routed; it must not block.
// Check provisions modules without running them, so Provision itself does
// no I/O beyond its own key space.
type Runner interface {
	Run()
}

// Info describes a module for Register.
type Info struct {
	Name string        // lower case letters, digits and '-'; used in keys, URLs and metrics
	New  func() Module // returns a new, unprovisioned instance
}

// Config enables a module, as read from the configuration file.
type Config struct {
	Name    string         `yaml:"name" json:"name"`
	Options map[string]any `yaml:"options,omitempty" json:"options,omitempty"`
}

// Deps are what Start shares among the modules. Bus, Mux and Store are
// required.
type Deps struct {
	Bus      *Bus
	Mux      *http.ServeMux        // the modules' routes are mounted under /api/<name>/
	Store    Store                 // gives each module its key space
	Logger   *slog.Logger          // nil: slog.Default()
	Metrics  prometheus.Registerer // nil: metrics are not exported
	Agencies Agencies              // nil: modules see no agency
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Info{}
)

// Register makes a module available to Start. It panics if the name is
// invalid or taken, like database/sql.Register.
func Register(info Info) {
	if !validName(info.Name) {
		panic(fmt.Sprintf("modules: invalid module name %q", info.Name))
	}
	if info.New == nil {
		panic(fmt.Sprintf("modules: %s: nil New", info.Name))
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, ok := registry[info.Name]; ok {
		panic(fmt.Sprintf("modules: %s: registered twice", info.Name))
	}
	registry[info.Name] = info
}

// validName keeps names safe in key prefixes, URL paths and metric labels.
func validName(name string) bool {
	if name == "" || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Available returns the names of the registered modules, sorted.
func Available() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Sorted(maps.Keys(registry))
}

// Running is the set of modules started by Start.
type Running struct {
	mods []started // in provisioning order
}

type started struct {
	name string
	m    Module
}

// Start provisions the enabled modules in configuration order, makes their
// subscriptions and routes take effect, and runs them. If a module fails to
// provision, those already provisioned are stopped and none is subscribed or
// routed.
func Start(ctx context.Context, enabled []Config, deps Deps) (*Running, error) {
	r, hosts, err := provision(ctx, enabled, deps)
	if err != nil {
		return nil, err
	}
	for _, h := range hosts {
		if err := h.commit(deps.Mux); err != nil {
			err = fmt.Errorf("modules: %s: %w", h.name, err)
			return nil, errors.Join(err, r.Stop(ctx))
		}
	}
	for _, s := range r.mods {
		if m, ok := s.m.(Runner); ok {
			m.Run()
		}
	}
	return r, nil
}

// Check provisions the enabled modules, as Start would, and stops them
// without subscribing, routing or running them: it reports the first bad
// option (`centralino check-config`, in the manner of `caddy validate`).
func Check(ctx context.Context, enabled []Config, deps Deps) error {
	r, _, err := provision(ctx, enabled, deps)
	if err != nil {
		return err
	}
	return r.Stop(ctx)
}

func provision(ctx context.Context, enabled []Config, deps Deps) (*Running, []*Host, error) {
	if deps.Bus == nil || deps.Mux == nil || deps.Store == nil {
		return nil, nil, errors.New("modules: Deps.Bus, Deps.Mux and Deps.Store are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Metrics == nil {
		deps.Metrics = prometheus.NewRegistry()
	}
	if deps.Agencies == nil {
		deps.Agencies = noAgencies{}
	}

	infos := make([]Info, len(enabled))
	registryMu.RLock()
	for i, c := range enabled {
		infos[i] = registry[c.Name]
	}
	registryMu.RUnlock()
	for i, c := range enabled {
		if infos[i].New == nil {
			return nil, nil, fmt.Errorf("modules: unknown module %q (registered: %s)", c.Name, strings.Join(Available(), ", "))
		}
		if slices.ContainsFunc(enabled[:i], func(o Config) bool { return o.Name == c.Name }) {
			return nil, nil, fmt.Errorf("modules: %s: enabled twice", c.Name)
		}
	}

	r := &Running{}
	hosts := make([]*Host, 0, len(enabled))
	fail := func(name string, err error) (*Running, []*Host, error) {
		err = fmt.Errorf("modules: %s: %w", name, err)
		return nil, nil, errors.Join(err, r.Stop(ctx))
	}
	for i, c := range enabled {
		if err := ctx.Err(); err != nil {
			return fail(c.Name, err)
		}
		h := &Host{
			name:     c.Name,
			bus:      deps.Bus,
			logger:   deps.Logger.With("module", c.Name),
			metrics:  prometheus.WrapRegistererWith(prometheus.Labels{"module": c.Name}, deps.Metrics),
			kv:       deps.Store.KV(c.Name),
			agencies: deps.Agencies,
			options:  c.Options,
			mux:      http.NewServeMux(),
		}
		m := infos[i].New()
		if err := m.Provision(h); err != nil {
			return fail(c.Name, err)
		}
		r.mods = append(r.mods, started{c.Name, m})
		hosts = append(hosts, h)
	}
	return r, hosts, nil
}

// Stop stops the modules that implement Stopper, in reverse order, and
// returns their errors joined. Close the Bus first, so that the modules see
// the last events before they stop.
func (r *Running) Stop(ctx context.Context) error {
	var errs []error
	for i := len(r.mods) - 1; i >= 0; i-- {
		if s, ok := r.mods[i].m.(Stopper); ok {
			if err := s.Stop(ctx); err != nil {
				errs = append(errs, fmt.Errorf("modules: %s: stop: %w", r.mods[i].name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// CallHeaderer is a module that has SIP headers for a call, to be carried on
// the INVITE that continues it elsewhere (a transfer): ticketing gives
// "X-Ticket". It answers from memory, never waiting on a store.
type CallHeaderer interface {
	CallHeaders(callID string) map[string]string
}

// CallHeaders merges the headers the running modules have for a call.
func (r *Running) CallHeaders(callID string) map[string]string {
	var out map[string]string
	for _, s := range r.mods {
		h, ok := s.m.(CallHeaderer)
		if !ok {
			continue
		}
		for k, v := range h.CallHeaders(callID) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// Handoffer is a module that takes a caller on when the call is over: the
// survey gives the number the switch takes a caller of an agency to when
// the operator hangs up first. It answers from memory.
type Handoffer interface {
	AfterHangup(agency string) (number string, ok bool)
}

// AfterHangup asks the running modules where a caller of agency goes when
// the operator hangs up first; the first that answers wins.
func (r *Running) AfterHangup(agency string) (string, bool) {
	for _, s := range r.mods {
		if h, ok := s.m.(Handoffer); ok {
			if n, ok := h.AfterHangup(agency); ok {
				return n, true
			}
		}
	}
	return "", false
}
