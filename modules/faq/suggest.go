package faq

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/search/query"

	"github.com/lineamica/centralino/modules"
)

// ticketHeader is the call header that names a call's ticket (set by the
// ticketing module on a transferred call).
const ticketHeader = "X-Ticket"

// Suggestions are the entries suggested to the operator who answered a
// call.
type Suggestions struct {
	CallID string    `json:"call_id"`
	Time   time.Time `json:"time"`
	Agency string    `json:"agency"`           // the agency that answered
	User   string    `json:"user"`             // the operator who answered
	Ticket string    `json:"ticket,omitempty"` // the call's ticket, if known
	Sector string    `json:"sector,omitempty"` // the agency's sector
	// Agencies are the agencies the call (by its overflows and transfers)
	// and its ticket reached before, whose entries are suggested too.
	Agencies []string `json:"agencies,omitempty"`
	Entries  []Hit    `json:"entries"`
}

// Limits of what the suggester remembers.
const (
	suggestionsTTL = 4 * time.Hour // in the store, for any node to serve
	ticketsKept    = 10000         // tickets whose last change is remembered
	callsKept      = 10000         // calls in progress on this node, answered or with a ticket
	notesText      = 2000          // bytes of the latest notes searched
	streamQueue    = 16
)

// suggester computes suggestions as calls are answered and tickets change,
// and pushes them to the operators' streams.
type suggester struct {
	m *FAQ

	mu      sync.Mutex
	tickets map[string]ticketInfo // by code: what the last TicketChanged said
	callTkt map[string]callTicket // by call id: its ticket, from TicketChanged
	hops    map[string]callHops   // by call id: the agencies it left, from overflows and transfers
	calls   map[string]*Suggestions
	streams map[*stream]bool
}

type ticketInfo struct {
	agencies []string
	notes    []string
	seen     time.Time
}

type callTicket struct {
	code string
	seen time.Time
}

type callHops struct {
	agencies []string
	seen     time.Time
}

// stream is an open suggestion stream, for one operator or one agency;
// scope, when set (the X-Agency of the request), keeps it to that agency's
// calls.
type stream struct {
	user, agency, scope string
	ch                  chan *Suggestions
}

func (s *stream) wants(sg *Suggestions) bool {
	if s.scope != "" && s.scope != sg.Agency {
		return false
	}
	return s.user != "" && s.user == sg.User || s.agency != "" && s.agency == sg.Agency
}

func newSuggester(m *FAQ) *suggester {
	return &suggester{m: m, tickets: map[string]ticketInfo{}, callTkt: map[string]callTicket{}, hops: map[string]callHops{},
		calls: map[string]*Suggestions{}, streams: map[*stream]bool{}}
}

func (s *suggester) handle(ctx context.Context, ev modules.Event) {
	switch ev := ev.(type) {
	case modules.CallAnswered:
		s.answered(ctx, ev)
	case modules.TicketChanged:
		s.ticketChanged(ctx, ev)
	case modules.CallOverflowed:
		s.left(ev.CallID, ev.CallID, ev.FromAgency)
	case modules.CallTransferred:
		s.left(ev.CallID, cmp.Or(ev.NewCallID, ev.CallID), ev.FromAgency)
	case modules.CallEnded:
		s.mu.Lock()
		delete(s.calls, ev.CallID)
		delete(s.callTkt, ev.CallID)
		delete(s.hops, ev.CallID)
		s.mu.Unlock()
	}
}

// left records that the call from left agency, and that the call to (the
// same call, or the leg a transfer made) has left every agency it had.
// Calls whose ticket is unknown (no ticketing) still have their history.
func (s *suggester) left(from, to, agency string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hops[from]
	if agency != "" && !slices.Contains(h.agencies, agency) {
		h.agencies = append(slices.Clip(h.agencies), agency)
	}
	h.seen = time.Now()
	forgetOldest(s.hops, callsKept, func(h callHops) time.Time { return h.seen })
	s.hops[to] = h
}

func (s *suggester) answered(ctx context.Context, ev modules.CallAnswered) {
	if ev.DestAgency == "" {
		return
	}
	sg := &Suggestions{CallID: ev.CallID, Time: ev.Time, Agency: ev.DestAgency, User: ev.User}
	s.mu.Lock()
	sg.Agencies = s.hops[ev.CallID].agencies
	sg.Ticket = ev.Headers[ticketHeader]
	if sg.Ticket == "" {
		sg.Ticket = s.callTkt[ev.CallID].code
	}
	// Calls whose end was lost go first.
	forgetOldest(s.calls, callsKept, func(sg *Suggestions) time.Time { return sg.Time })
	s.calls[ev.CallID] = sg
	s.mu.Unlock()
	s.suggest(ctx, sg)
}

// ticketChanged remembers the ticket's agencies and notes, and suggests
// again for the calls of the ticket answered here.
func (s *suggester) ticketChanged(ctx context.Context, ev modules.TicketChanged) {
	now := time.Now()
	s.mu.Lock()
	forgetOldest(s.tickets, ticketsKept, func(t ticketInfo) time.Time { return t.seen })
	s.tickets[ev.Code] = ticketInfo{agencies: ev.Agencies, notes: ev.Notes, seen: now}
	if ev.CallID != "" {
		forgetOldest(s.callTkt, callsKept, func(c callTicket) time.Time { return c.seen })
		s.callTkt[ev.CallID] = callTicket{code: ev.Code, seen: now}
	}
	var again []*Suggestions
	for id, sg := range s.calls {
		if sg.Ticket == "" && id == ev.CallID {
			sg.Ticket = ev.Code
		}
		if sg.Ticket == ev.Code {
			again = append(again, sg)
		}
	}
	s.mu.Unlock()
	for _, sg := range again {
		s.suggest(ctx, sg)
	}
}

// forgetOldest makes room in a map of at most limit values by dropping
// the tenth seen longest ago.
func forgetOldest[V any](m map[string]V, limit int, seen func(V) time.Time) {
	if len(m) < limit {
		return
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return seen(m[a]).Compare(seen(m[b])) })
	for _, k := range keys[:len(keys)/10+1] {
		delete(m, k)
	}
}

// suggest computes the suggestions for an answered call, keeps them in the
// store and pushes them to the streams that want them.
func (s *suggester) suggest(ctx context.Context, base *Suggestions) {
	s.mu.Lock()
	sg := *base
	t := s.tickets[sg.Ticket]
	s.mu.Unlock()

	// The agencies the call left, then those of its ticket.
	earlier := sg.Agencies
	sg.Agencies = nil
	for _, a := range slices.Concat(earlier, t.agencies) {
		if a != sg.Agency && !slices.Contains(sg.Agencies, a) {
			sg.Agencies = append(sg.Agencies, a)
		}
	}
	if a, ok := s.m.agencies.Agency(sg.Agency); ok {
		sg.Sector, _ = Sector(a.Sector)
	}
	q := s.query(&sg, t.notes)
	hits, _, err := s.m.index.search(q, 0, s.m.opts.Suggestions, true)
	if err != nil {
		s.m.log.Error("suggestions not computed", "call", sg.CallID, "err", err)
		return
	}
	sg.Entries = hits
	s.m.metrics.suggestions.Inc()

	// Stored before they are pushed: what an operator's screen shows, any
	// node serves.
	if b, err := json.Marshal(&sg); err == nil {
		if err := s.m.store.kv.Put(ctx, suggestionsKey(sg.CallID), b, suggestionsTTL); err != nil {
			s.m.log.Warn("suggestions not stored: only this node serves them", "call", sg.CallID, "err", err)
		}
	}

	s.mu.Lock()
	if cur := s.calls[sg.CallID]; cur != nil {
		*cur = sg
	}
	for st := range s.streams {
		if st.wants(&sg) {
			select {
			case st.ch <- &sg:
			default: // a stream that does not read gets the next ones
			}
		}
	}
	s.mu.Unlock()

	s.m.log.Debug("suggestions", "call", sg.CallID, "agency", sg.Agency, "user", sg.User, "ticket", sg.Ticket,
		"sector", sg.Sector, "entries", len(hits))
}

func suggestionsKey(callID string) string { return "suggestions:" + callID }

// query finds, among the entries the answering agency and the ticket's
// earlier agencies own and the network-wide ones, those that match the
// ticket's latest notes, the agency's sector, the earlier agencies'
// sectors, or are the agency's own; in that order of weight.
func (s *suggester) query(sg *Suggestions, notes []string) query.Query {
	var should []query.Query
	if text := latestNotes(notes); text != "" {
		should = append(should, boosted(textQuery(text), 4))
	}
	if sg.Sector != "" {
		should = append(should, boosted(terms("sector", []string{sg.Sector}), 2))
	}
	var earlier []string
	for _, code := range sg.Agencies {
		if a, ok := s.m.agencies.Agency(code); ok {
			if sec, ok := Sector(a.Sector); ok && sec != sg.Sector && !slices.Contains(earlier, sec) {
				earlier = append(earlier, sec)
			}
		}
	}
	if len(earlier) > 0 {
		should = append(should, terms("sector", earlier))
	}
	should = append(should, terms("owner", []string{sg.Agency}))

	visible := filter{Agencies: append([]string{sg.Agency}, sg.Agencies...)}
	q := bleve.NewBooleanQuery()
	q.AddMust(visible.query(bleve.NewMatchAllQuery()))
	q.AddShould(should...)
	q.SetMinShould(1)
	return q
}

func boosted(q query.Query, b float64) query.Query {
	if bq, ok := q.(query.BoostableQuery); ok {
		bq.SetBoost(b)
	}
	return q
}

// latestNotes joins the newest notes, up to notesText bytes.
func latestNotes(notes []string) string {
	var b []string
	n := 0
	for i := len(notes) - 1; i >= 0 && n < notesText; i-- {
		b = append(b, notes[i])
		n += len(notes[i])
	}
	text := strings.Join(b, "\n")
	if len(text) > notesText {
		text = strings.ToValidUTF8(text[:notesText], "")
	}
	return text
}

// forCall returns the suggestions of a call: those computed here, else
// those another node stored.
func (s *suggester) forCall(ctx context.Context, callID string) (*Suggestions, error) {
	s.mu.Lock()
	sg := s.calls[callID]
	if sg != nil && sg.Entries != nil {
		cp := *sg
		s.mu.Unlock()
		return &cp, nil
	}
	s.mu.Unlock()
	b, err := s.m.store.kv.Get(ctx, suggestionsKey(callID))
	if err != nil {
		return nil, err
	}
	var out Suggestions
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// open registers a stream and returns the suggestions it wants for the
// calls in progress, or nil if too many streams are open.
func (s *suggester) open(st *stream) ([]*Suggestions, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.streams) >= s.m.opts.MaxStreams {
		return nil, false
	}
	s.streams[st] = true
	var now []*Suggestions
	for _, sg := range s.calls {
		if sg.Entries != nil && st.wants(sg) {
			cp := *sg
			now = append(now, &cp)
		}
	}
	slices.SortFunc(now, func(a, b *Suggestions) int { return cmp.Or(a.Time.Compare(b.Time), cmp.Compare(a.CallID, b.CallID)) })
	return now, true
}

func (s *suggester) close(st *stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
}

func (s *suggester) streamCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}
