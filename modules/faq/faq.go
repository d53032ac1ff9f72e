// Package faq is the module of the network's shared questions and answers:
// entries kept in the module's KV (so every node sees every change), an
// Italian full-text index in memory on each node, suggestions pushed to the
// operator who answers a call, and a search page for citizens and
// operators, all under /api/faq/. See docs/faq.md.
package faq

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/lineamica/centralino/modules"
)

func init() {
	modules.Register(modules.Info{Name: "faq", New: func() modules.Module { return new(FAQ) }})
}

// Options are the module's options in the configuration.
type Options struct {
	// NetworkAgencies edit the network-wide entries and every agency's (the
	// national Linea Amica centre's editorial staff); an agency edits only
	// its own.
	NetworkAgencies []string `yaml:"network_agencies"`
	// Starter loads the starter FAQ of the demo network into an empty
	// store, once.
	Starter bool `yaml:"starter"`
	// RefreshInterval is how often a node checks the store for changes made
	// on other nodes.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// MaxHistory bounds the previous versions kept for an entry.
	MaxHistory int `yaml:"max_history"`
	// Suggestions is how many entries are suggested for a call.
	Suggestions int `yaml:"suggestions"`
	// MaxStreams bounds the suggestion streams open at once on a node.
	MaxStreams int `yaml:"max_streams"`
}

var defaults = Options{
	NetworkAgencies: []string{"lineamica"},
	RefreshInterval: 2 * time.Second,
	MaxHistory:      50,
	Suggestions:     5,
	MaxStreams:      500,
}

func (o *Options) validate() error {
	switch {
	case o.RefreshInterval < 100*time.Millisecond || o.RefreshInterval > time.Hour:
		return fmt.Errorf("option \"refresh_interval\": %s is not between 100ms and 1h", o.RefreshInterval)
	case o.MaxHistory < 0:
		return fmt.Errorf("option \"max_history\": %d is negative", o.MaxHistory)
	case o.Suggestions < 1 || o.Suggestions > 50:
		return fmt.Errorf("option \"suggestions\": must be between 1 and 50, not %d", o.Suggestions)
	case o.MaxStreams < 1:
		return fmt.Errorf("option \"max_streams\": must be at least 1, not %d", o.MaxStreams)
	}
	return nil
}

// starterFAQ is the demo network's starter FAQ (see Options.Starter).
//
//go:embed starter.yaml
var starterFAQ []byte

// starterAuthor signs the versions loaded from the starter FAQ.
const starterAuthor = "faq/starter"

// storeTimeout bounds one operation on the store made outside a request.
const storeTimeout = 5 * time.Second

// FAQ is the module.
type FAQ struct {
	opts     Options
	log      *slog.Logger
	store    *store
	index    *index
	metrics  *metrics
	agencies modules.Agencies
	sugg     *suggester

	// mu serializes the changes to the store and the index's reloads, so
	// that a reload never puts back what a change just replaced.
	mu   sync.Mutex
	seen int64 // the store version the index holds

	ctx    context.Context // ends at Stop: ends the refresher and the streams
	cancel context.CancelFunc
	done   chan struct{} // closed when the refresher returns; nil until Run
	// starter is the starter FAQ to load into an empty store, if enabled.
	starter []lineInput
}

// Provision implements modules.Module.
func (m *FAQ) Provision(h *modules.Host) error {
	m.opts = defaults
	if err := h.DecodeOptions(&m.opts); err != nil {
		return err
	}
	if err := m.opts.validate(); err != nil {
		return err
	}
	var starter []lineInput
	if m.opts.Starter {
		var err error
		if starter, err = parseImport(FormatYAML, starterFAQ); err != nil {
			return fmt.Errorf("starter FAQ: %w", err)
		}
	}
	var err error
	if m.index, err = newIndex(); err != nil {
		return err
	}
	m.log = h.Logger()
	m.agencies = h.Agencies()
	m.store = &store{kv: h.KV(), maxHistory: m.opts.MaxHistory}
	m.sugg = newSuggester(m)
	if m.metrics, err = newMetrics(h.Metrics(), m.index.count, m.sugg.streamCount); err != nil {
		return err
	}
	m.routes(h)
	if err := h.Subscribe(0, []string{
		modules.KindCallAnswered, modules.KindCallOverflowed, modules.KindCallTransferred, modules.KindCallEnded,
		modules.KindTicketChanged,
	}, m.sugg.handle); err != nil {
		return err
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.starter = starter
	return nil
}

// Run implements modules.Runner: the refresher that loads the starter FAQ
// and keeps the index in step with the store.
func (m *FAQ) Run() {
	m.done = make(chan struct{})
	go m.refresher(m.starter)
}

// Stop implements modules.Stopper: it stops the refresher and ends the
// suggestion streams, so that the HTTP server can shut down.
func (m *FAQ) Stop(ctx context.Context) error {
	m.cancel()
	if m.done != nil {
		select {
		case <-m.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return m.index.bl.Close()
}

// refresher loads the starter FAQ if asked and the store is empty, then
// keeps the index in step with the store.
func (m *FAQ) refresher(starter []lineInput) {
	defer close(m.done)
	if starter != nil {
		m.loadStarter(starter)
	}
	tick := time.NewTicker(m.opts.RefreshInterval)
	defer tick.Stop()
	failing := false
	for {
		ctx, cancel := context.WithTimeout(m.ctx, storeTimeout)
		err := m.refresh(ctx)
		cancel()
		switch {
		case err != nil && m.ctx.Err() == nil:
			m.metrics.storeErrors.Inc()
			if !failing {
				m.log.Warn("FAQ store unreachable: searching what this node has", "err", err)
			}
			failing = true
		case err == nil && failing:
			m.log.Info("FAQ store reachable again")
			failing = false
		}
		select {
		case <-tick.C:
		case <-m.ctx.Done():
			return
		}
	}
}

// refresh reloads the index if the store changed since it was loaded.
func (m *FAQ) refresh(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, err := m.store.version(ctx)
	if err != nil || v == m.seen {
		return err
	}
	all, err := m.store.all(ctx)
	if err != nil {
		return err
	}
	indexed, removed, err := m.index.sync(all)
	if err != nil {
		return err
	}
	m.seen = v
	m.log.Debug("FAQ index refreshed", "version", v, "indexed", indexed, "removed", removed, "entries", m.index.count())
	return nil
}

// changed applies a change this node made to its index: the store is at
// version v. Call with mu held.
func (m *FAQ) changed(v int64, e *Entry, removedID string) {
	var err error
	if e != nil {
		err = m.index.put(e)
	} else {
		err = m.index.remove(removedID)
	}
	if err != nil {
		m.log.Error("FAQ index not updated: it will be reloaded", "err", err)
		return
	}
	// Only if nobody else changed the store meanwhile: otherwise the
	// refresher reloads what they did.
	if v == m.seen+1 {
		m.seen = v
	}
}

func (m *FAQ) loadStarter(starter []lineInput) {
	ctx, cancel := context.WithTimeout(m.ctx, time.Minute)
	defer cancel()
	loaded, err := m.store.starterLoaded(ctx)
	if err == nil && !loaded {
		var res importResult
		if res, err = m.importAll(ctx, starter, starterAuthor); err == nil {
			err = m.store.markStarterLoaded(ctx)
			m.log.Info("starter FAQ loaded", "created", res.Created, "updated", res.Updated)
		}
	}
	if err != nil {
		m.log.Error("starter FAQ not loaded", "err", err)
	}
}

// Errors of the changes, told apart by the API.
var (
	errNotFound  = errors.New("no such entry")
	errForbidden = errors.New("forbidden")
	errExists    = errors.New("an entry with this id exists")
)

// canEdit says whether the requesting agency may write an entry owned by
// owner ("" for network-wide).
func (m *FAQ) canEdit(requester, owner string) bool {
	return slices.Contains(m.opts.NetworkAgencies, requester) || owner != "" && owner == requester
}

// save creates the entry in, or updates it if it exists and upsert is
// set, unless it holds that already. in is normalized and valid. It
// returns the entry and whether it changed.
func (m *FAQ) save(ctx context.Context, in Input, author string, upsert bool) (*Entry, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now().UTC()
	var prev *Entry
	if in.ID == "" {
		id, err := m.store.newID(ctx)
		if err != nil {
			return nil, false, err
		}
		in.ID = id
	} else {
		var err error
		prev, err = m.store.get(ctx, in.ID)
		switch {
		case errors.Is(err, modules.ErrNotFound):
			prev = nil
		case err != nil:
			return nil, false, err
		case !upsert:
			return nil, false, errExists
		case prev.same(&in):
			return prev, false, nil
		}
	}
	e := &Entry{
		ID: in.ID, Question: in.Question, Answer: in.Answer, Agency: in.Agency, Sector: in.Sector,
		Tags: in.Tags, Version: 1, CreatedAt: now, UpdatedAt: now, UpdatedBy: author,
	}
	if prev != nil {
		e.Version, e.CreatedAt = prev.Version+1, prev.CreatedAt
	}
	v, err := m.store.put(ctx, e, prev)
	if err != nil {
		return nil, false, err
	}
	m.changed(v, e, "")
	return e, true, nil
}

// update replaces the entry id with in, if the requester may edit it as it
// is and as it will be.
func (m *FAQ) update(ctx context.Context, id string, in Input, requester, author string) (*Entry, error) {
	old, err := m.store.get(ctx, id)
	if errors.Is(err, modules.ErrNotFound) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	if !m.canEdit(requester, old.Agency) || !m.canEdit(requester, in.Agency) {
		return nil, errForbidden
	}
	in.ID = id
	e, _, err := m.save(ctx, in, author, true)
	return e, err
}

func (m *FAQ) delete(ctx context.Context, id, requester string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, err := m.store.get(ctx, id)
	if errors.Is(err, modules.ErrNotFound) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	if !m.canEdit(requester, old.Agency) {
		return errForbidden
	}
	v, err := m.store.delete(ctx, id)
	if err != nil {
		return err
	}
	m.changed(v, nil, id)
	return nil
}

// importResult counts what an import did.
type importResult struct {
	Created   int `json:"created"`
	Updated   int `json:"updated"`
	Unchanged int `json:"unchanged"`
}

// importAll saves every entry of a parsed file, creating or updating by id.
func (m *FAQ) importAll(ctx context.Context, ins []lineInput, author string) (importResult, error) {
	var res importResult
	for _, in := range ins {
		e, changed, err := m.save(ctx, in.Input, author, true)
		if err != nil {
			return res, fmt.Errorf("line %d: %w", in.Line, err)
		}
		switch {
		case !changed:
			res.Unchanged++
		case e.Version == 1:
			res.Created++
		default:
			res.Updated++
		}
	}
	return res, nil
}
