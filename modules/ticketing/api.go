package ticketing

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/mail"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

// Request headers set by the front end or the authenticating proxy in front
// of the API; the module trusts them and authenticates nobody.
const (
	AgencyHeader = "X-Agency" // IPA code of the agency the request acts for; required
	UserHeader   = "X-User"   // username of the operator, recorded with notes; optional
)

// Limits of the API.
const (
	defaultPerPage = 20
	maxPerPage     = 100
	maxNote        = 4000 // bytes
	maxBody        = 64 << 10
)

func (m *Ticketing) routes(h *modules.Host) {
	h.Handle("GET /tickets/{code}", m.scoped(m.getTicket))
	h.Handle("PATCH /tickets/{code}", m.scoped(m.patchTicket))
	h.Handle("GET /tickets", m.scoped(m.listTickets))
	h.Handle("GET /calls/{callID}", m.scoped(m.getCall))
}

// scoped passes the requesting agency to f, refusing requests without one.
func (m *Ticketing) scoped(f func(w http.ResponseWriter, r *http.Request, agency string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agency := r.Header.Get(AgencyHeader)
		if agency == "" {
			writeError(w, http.StatusUnauthorized, "missing "+AgencyHeader+" header")
			return
		}
		f(w, r, agency)
	})
}

func (m *Ticketing) networkWide(agency string) bool {
	return slices.Contains(m.opts.NetworkAgencies, agency)
}

// canSee says whether the agency may read and update t. Others are told the
// ticket does not exist.
func (m *Ticketing) canSee(agency string, t *Ticket) bool {
	return m.networkWide(agency) || slices.Contains(t.Agencies, agency)
}

// find returns a copy of the ticket the request names, or writes the
// error. Call with mu held.
func (m *Ticketing) find(w http.ResponseWriter, r *http.Request, agency string) *Ticket {
	code, err := ticketcode.Parse(r.PathValue("code"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil
	}
	t := m.live[code]
	if t != nil {
		t = t.clone()
	} else {
		t, err = m.store.get(r.Context(), code)
	}
	switch {
	case errors.Is(err, modules.ErrNotFound) || (err == nil && !m.canSee(agency, t)):
		writeError(w, http.StatusNotFound, "no ticket "+code)
		return nil
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "ticket store unavailable")
		return nil
	}
	return t
}

func (m *Ticketing) getTicket(w http.ResponseWriter, r *http.Request, agency string) {
	m.mu.Lock()
	t := m.find(w, r, agency)
	m.mu.Unlock()
	if t != nil {
		writeJSON(w, http.StatusOK, t)
	}
}

// patch is the body of PATCH /tickets/{code}; absent fields stay as they are.
type patch struct {
	Status     Status  `json:"status"`      // in_lavorazione, risolto or chiuso
	Note       string  `json:"note"`        // appended to the notes
	CitizenPEC *string `json:"citizen_pec"` // "" removes it
}

func (p *patch) validate() error {
	p.Note = strings.TrimSpace(p.Note)
	switch {
	case p.Status == "" && p.Note == "" && p.CitizenPEC == nil:
		return errors.New("nothing to change: give status, note or citizen_pec")
	case p.Status != "" && !slices.Contains([]Status{StatusInLavorazione, StatusRisolto, StatusChiuso}, p.Status):
		return errors.New("status: must be in_lavorazione, risolto or chiuso")
	case len(p.Note) > maxNote:
		return errors.New("note: longer than " + strconv.Itoa(maxNote) + " bytes")
	case p.CitizenPEC != nil && *p.CitizenPEC != "" && !validAddress(*p.CitizenPEC):
		return errors.New("citizen_pec: not an e-mail address")
	}
	return nil
}

// validAddress accepts a bare address, without a display name.
func validAddress(s string) bool {
	a, err := mail.ParseAddress(s)
	return err == nil && a.Address == s && len(s) <= 254
}

func (m *Ticketing) patchTicket(w http.ResponseWriter, r *http.Request, agency string) {
	var p patch
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	if err := p.validate(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}

	// Under mu, so that no call event changes the ticket meanwhile.
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.find(w, r, agency)
	if t == nil {
		return
	}
	if t.Status == StatusChiuso {
		writeError(w, http.StatusConflict, "ticket "+t.Code+" is closed")
		return
	}
	now := time.Now()
	if p.Status != "" {
		t.Status = p.Status
	}
	if t.Status == StatusChiuso {
		t.ClosedAt = now
	}
	if p.Note != "" {
		t.Notes = append(t.Notes, Note{Time: now, Agency: agency, User: r.Header.Get(UserHeader), Text: p.Note})
	}
	pecSet := p.CitizenPEC != nil && *p.CitizenPEC != t.CitizenPEC
	if pecSet {
		t.CitizenPEC = *p.CitizenPEC
	}
	t.touch(now)
	if err := m.save(t, pecSet, ""); err != nil {
		writeError(w, http.StatusServiceUnavailable, "ticket store unavailable: "+err.Error())
		return
	}
	if m.live[t.Code] != nil {
		m.live[t.Code] = t
	}
	if t.Status == StatusChiuso {
		m.metrics.closed.WithLabelValues(agency).Inc()
		m.metrics.hops.Observe(float64(len(t.Hops)))
	}
	// Never the PEC address nor the note: they are the citizen's.
	m.log.Info("ticket updated", "ticket", t.Code, "agency", agency, "status", t.Status,
		"note_added", p.Note != "", "pec_changed", pecSet)
	writeJSON(w, http.StatusOK, t)
}

// listing is the answer of GET /tickets.
type listing struct {
	Tickets []*Ticket `json:"tickets"`
	Page    int       `json:"page"`
	PerPage int       `json:"per_page"`
	HasMore bool      `json:"has_more"`
}

// listTickets serves GET /tickets?agency=&status=&caller=&page=&per_page=,
// newest first, among the tickets the requesting agency may see.
func (m *Ticketing) listTickets(w http.ResponseWriter, r *http.Request, requester string) {
	q := r.URL.Query()
	agency, status, caller := q.Get("agency"), Status(q.Get("status")), q.Get("caller")
	if status != "" && !slices.Contains(statuses, status) {
		writeError(w, http.StatusBadRequest, "status: unknown status "+strconv.Quote(string(status)))
		return
	}
	page, err1 := intParam(q.Get("page"), 1)
	perPage, err2 := intParam(q.Get("per_page"), defaultPerPage)
	if err := errors.Join(err1, err2); err != nil || page < 1 || perPage < 1 || perPage > maxPerPage {
		writeError(w, http.StatusBadRequest, "page must be at least 1 and per_page between 1 and "+strconv.Itoa(maxPerPage))
		return
	}
	wide := m.networkWide(requester)

	// Read the narrowest index, and filter what it cannot tell.
	var index string
	switch {
	case caller != "":
		index = callerIndex(caller)
	case agency != "":
		index = agencyIndex(agency, status)
	case !wide:
		index = agencyIndex(requester, status)
	case status != "":
		index = statusIndex(status)
	default:
		index = "all"
	}
	var keep func(*Ticket) bool
	if caller != "" || !wide && agency != "" && agency != requester {
		keep = func(t *Ticket) bool {
			return (agency == "" || slices.Contains(t.Agencies, agency)) &&
				(status == "" || t.Status == status) &&
				(caller == "" || t.Caller.Number == caller) &&
				m.canSee(requester, t)
		}
	}
	ts, more, err := m.store.page(r.Context(), index, keep, (page-1)*perPage, perPage)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "ticket store unavailable")
		return
	}
	writeJSON(w, http.StatusOK, listing{Tickets: append([]*Ticket{}, ts...), Page: page, PerPage: perPage, HasMore: more})
}

func intParam(s string, def int) (int, error) {
	if s == "" {
		return def, nil
	}
	return strconv.Atoi(s)
}

// getCall serves GET /calls/{callID}: the ticket of a call in progress on
// this node.
func (m *Ticketing) getCall(w http.ResponseWriter, r *http.Request, agency string) {
	id := r.PathValue("callID")
	code, ok := m.CodeForCall(id)
	if ok {
		m.mu.Lock()
		t := m.live[code]
		ok = t != nil && m.canSee(agency, t)
		m.mu.Unlock()
	}
	if !ok {
		writeError(w, http.StatusNotFound, "no ticket for call "+id+" on this node")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"call_id": id, "ticket": code})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
