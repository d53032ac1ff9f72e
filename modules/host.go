package modules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"
)

// Host is what a module is given at Provision: its name, logger, metrics,
// options, key space, and a way to subscribe to events and serve HTTP.
//
// Subscriptions and routes take effect only once every enabled module has
// been provisioned, so a failed Start leaves nothing behind on the bus or the
// HTTP mux.
type Host struct {
	name     string
	bus      *Bus
	logger   *slog.Logger
	metrics  prometheus.Registerer
	kv       KV
	agencies Agencies
	options  map[string]any

	mux *http.ServeMux // the module's own, mounted under prefix
	sub *subscription
}

type subscription struct {
	queueLen int
	kinds    []string
	handler  func(context.Context, Event)
}

// Name is the module's registered name.
func (h *Host) Name() string { return h.name }

// Logger logs with the attribute module=<name>.
func (h *Host) Logger() *slog.Logger { return h.logger }

// Metrics registers the module's metrics with a const label module=<name>.
func (h *Host) Metrics() prometheus.Registerer { return h.metrics }

// KV is the module's own key space.
func (h *Host) KV() KV { return h.kv }

// Agencies looks up the directory's agencies.
func (h *Host) Agencies() Agencies { return h.agencies }

// Prefix is the path under which the module's routes are served:
// "/api/<name>".
func (h *Host) Prefix() string { return "/api/" + h.name }

// DecodeOptions decodes the module's options into v, typically a pointer to
// a struct with yaml tags already holding the defaults. Options that v has no
// field for are errors.
func (h *Host) DecodeOptions(v any) error {
	// One option at a time, so that an error names the option.
	for _, k := range slices.Sorted(maps.Keys(h.options)) {
		doc, err := yaml.Marshal(map[string]any{k: h.options[k]})
		if err == nil {
			dec := yaml.NewDecoder(bytes.NewReader(doc))
			dec.KnownFields(true)
			err = dec.Decode(v)
		}
		if err != nil {
			return fmt.Errorf("option %q: %s", k, yamlMessage(err))
		}
	}
	return nil
}

// yamlMessage drops the "yaml: unmarshal errors: line 1:" noise (the
// document decoded is a single line made by DecodeOptions) and the Go type
// of the options from "field x not found in type ...".
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		m = strings.TrimPrefix(m, "line 1: ")
		if strings.HasPrefix(m, "field ") && strings.Contains(m, " not found in type ") {
			m = "unknown option"
		}
		msgs[i] = m
	}
	return strings.Join(msgs, "; ")
}

// Subscribe asks for the events of the given kinds (nil: all); see
// Bus.Subscribe. A module subscribes at most once.
func (h *Host) Subscribe(queueLen int, kinds []string, handler func(context.Context, Event)) error {
	if h.sub != nil {
		return errors.New("already subscribed")
	}
	if handler == nil {
		return errors.New("subscribe: nil handler")
	}
	h.sub = &subscription{queueLen: queueLen, kinds: slices.Clone(kinds), handler: handler}
	return nil
}

// Publish puts an event of the module's own on the bus (e.g. a survey result
// for the sla module).
func (h *Host) Publish(ev Event) { h.bus.Publish(ev) }

// Handle registers handler for pattern under Prefix: "GET /tickets/{code}"
// serves GET /api/<name>/tickets/{code}. Pattern is a net/http.ServeMux
// pattern without a host; like ServeMux.Handle, Handle panics on a bad or
// conflicting pattern.
func (h *Host) Handle(pattern string, handler http.Handler) {
	method, path := "", pattern
	if i := strings.IndexAny(pattern, " \t"); i >= 0 {
		method, path = pattern[:i+1], strings.TrimLeft(pattern[i:], " \t")
	}
	if !strings.HasPrefix(path, "/") {
		panic(fmt.Sprintf("modules: %s: pattern %q: path must start with /", h.name, pattern))
	}
	h.mux.Handle(method+h.Prefix()+path, handler)
}

// commit makes the module's subscription and routes take effect.
func (h *Host) commit(mux *http.ServeMux) error {
	if h.sub != nil {
		if err := h.bus.Subscribe(h.name, h.sub.queueLen, h.sub.kinds, h.sub.handler); err != nil {
			return err
		}
	}
	mux.Handle(h.Prefix()+"/", h.mux)
	return nil
}
