package faq

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/blevesearch/bleve/v2"

	"github.com/lineamica/centralino/modules"
)

// Request headers set by the front end or the authenticating proxy in front
// of the API, as for ticketing; the module authenticates nobody.
const (
	AgencyHeader = "X-Agency" // IPA code of the agency a change is made for; required to change
	UserHeader   = "X-User"   // username of the editor, recorded with the version; optional
)

// Limits of the API.
const (
	defaultLimit  = 10
	maxLimit      = 100
	maxQuery      = 500 // bytes of a search
	maxBody       = 64 << 10
	maxImport     = 8 << 20
	heartbeatTime = 25 * time.Second
)

//go:embed ui
var uiFiles embed.FS

func (m *FAQ) routes(h *modules.Host) {
	h.Handle("GET /entries", http.HandlerFunc(m.listEntries))
	h.Handle("POST /entries", m.editor(m.createEntry))
	h.Handle("GET /entries/{id}", http.HandlerFunc(m.getEntry))
	h.Handle("PUT /entries/{id}", m.editor(m.updateEntry))
	h.Handle("DELETE /entries/{id}", m.editor(m.deleteEntry))
	h.Handle("GET /entries/{id}/history", http.HandlerFunc(m.entryHistory))
	h.Handle("POST /import", m.editor(m.importEntries))
	h.Handle("GET /search", http.HandlerFunc(m.search))
	h.Handle("GET /filters", http.HandlerFunc(m.filters))
	h.Handle("GET /suggestions", http.HandlerFunc(m.suggestions))
	h.Handle("GET /suggestions/stream", http.HandlerFunc(m.suggestionStream))

	ui, _ := fs.Sub(uiFiles, "ui")
	h.Handle("GET /ui/", http.StripPrefix(h.Prefix()+"/ui/", http.FileServerFS(ui)))
	h.Handle("GET /{$}", http.RedirectHandler(h.Prefix()+"/ui/", http.StatusFound))
}

// editor passes the requesting agency, and the author of the change
// (agency/user), to f, refusing requests without an agency.
func (m *FAQ) editor(f func(w http.ResponseWriter, r *http.Request, agency, author string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		agency := r.Header.Get(AgencyHeader)
		if agency == "" {
			writeError(w, http.StatusUnauthorized, "missing "+AgencyHeader+" header")
			return
		}
		author := agency
		if u := r.Header.Get(UserHeader); u != "" {
			author += "/" + u
		}
		f(w, r, agency, author)
	})
}

// readFilter reads agency= and sector= from the query.
func readFilter(r *http.Request) (filter, error) {
	var f filter
	q := r.URL.Query()
	if a := strings.TrimSpace(q.Get("agency")); a != "" {
		f.Agencies = []string{a}
	}
	if s := strings.TrimSpace(q.Get("sector")); s != "" {
		sec, ok := Sector(s)
		if !ok {
			return f, fmt.Errorf("sector: %q is not one of %s", s, strings.Join(sectors, ", "))
		}
		f.Sectors = []string{sec}
	}
	return f, nil
}

// readRange reads limit= and offset= from the query.
func readRange(r *http.Request) (offset, limit int, err error) {
	q := r.URL.Query()
	limit, offset = defaultLimit, 0
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxLimit {
			return 0, 0, fmt.Errorf("limit: must be between 1 and %d", maxLimit)
		}
	}
	if s := q.Get("offset"); s != "" {
		if offset, err = strconv.Atoi(s); err != nil || offset < 0 || offset > 10000 {
			return 0, 0, errors.New("offset: must be between 0 and 10000")
		}
	}
	return offset, limit, nil
}

// results is the answer of GET /search and GET /entries.
type results struct {
	Query   string `json:"query,omitempty"`
	Total   int    `json:"total"`
	Offset  int    `json:"offset"`
	Limit   int    `json:"limit"`
	Results []Hit  `json:"results"`
}

// search serves GET /search?q=&agency=&sector=&limit=&offset=: entries
// ranked by relevance; with no q, every entry the filter lets through.
func (m *FAQ) search(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	text := strings.TrimSpace(r.URL.Query().Get("q"))
	f, err := readFilter(r)
	offset, limit, err2 := readRange(r)
	if err = errors.Join(err, err2); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(text) > maxQuery {
		writeError(w, http.StatusBadRequest, "q: longer than "+strconv.Itoa(maxQuery)+" bytes")
		return
	}
	q := textQuery(text)
	if text == "" {
		q = bleve.NewMatchAllQuery()
	}
	hits, total, err := m.index.search(f.query(q), offset, limit, text != "")
	if err != nil {
		m.log.Error("search failed", "err", err)
		writeError(w, http.StatusInternalServerError, "search failed")
		return
	}
	m.metrics.searches.Inc()
	m.metrics.searchDuration.Observe(time.Since(start).Seconds())
	writeJSON(w, http.StatusOK, results{Query: text, Total: total, Offset: offset, Limit: limit, Results: hits})
}

// listEntries serves GET /entries?agency=&sector=&limit=&offset=, newest
// change first.
func (m *FAQ) listEntries(w http.ResponseWriter, r *http.Request) {
	f, err := readFilter(r)
	offset, limit, err2 := readRange(r)
	if err = errors.Join(err, err2); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	all := m.index.list(f)
	page := all[min(offset, len(all)):min(offset+limit, len(all))]
	hits := make([]Hit, len(page))
	for i, e := range page {
		hits[i] = Hit{Entry: e}
	}
	writeJSON(w, http.StatusOK, results{Total: len(all), Offset: offset, Limit: limit, Results: hits})
}

// getEntry serves GET /entries/{id} from the store, so that a change made
// on another node shows at once.
func (m *FAQ) getEntry(w http.ResponseWriter, r *http.Request) {
	e, err := m.store.get(r.Context(), r.PathValue("id"))
	if m.storeError(w, err, r.PathValue("id")) {
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// entryHistory serves GET /entries/{id}/history: the entry's versions,
// newest first.
func (m *FAQ) entryHistory(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	e, err := m.store.get(r.Context(), id)
	if m.storeError(w, err, id) {
		return
	}
	h, err := m.store.history(r.Context(), id)
	if m.storeError(w, err, id) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "versions": append([]Entry{*e}, h...)})
}

// storeError writes the answer to a failed read or change, if err is one.
func (m *FAQ) storeError(w http.ResponseWriter, err error, id string) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, modules.ErrNotFound) || errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "no entry "+strconv.Quote(id))
	case errors.Is(err, errForbidden):
		writeError(w, http.StatusForbidden, "the entry belongs to another agency")
	case errors.Is(err, errExists):
		writeError(w, http.StatusConflict, "entry "+strconv.Quote(id)+" exists: update it with PUT")
	default:
		m.log.Warn("FAQ store operation failed", "entry", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, "FAQ store unavailable")
	}
	return true
}

// readInput decodes and checks the body of a POST or PUT.
func readInput(w http.ResponseWriter, r *http.Request) (Input, bool) {
	var in Input
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return in, false
	}
	in.normalize()
	if err := in.validate(); err != nil {
		writeError(w, http.StatusBadRequest, strings.ReplaceAll(err.Error(), "\n", "; "))
		return in, false
	}
	return in, true
}

// createEntry serves POST /entries. The agency is the requester's unless
// given; only the network centre writes another's or network-wide ("")
// entries, so an agency that means network-wide must be the centre.
func (m *FAQ) createEntry(w http.ResponseWriter, r *http.Request, agency, author string) {
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	if !m.canEdit(agency, in.Agency) {
		if in.Agency != "" {
			writeError(w, http.StatusForbidden, "an agency writes only its own entries")
			return
		}
		in.Agency = agency
	}
	e, _, err := m.save(r.Context(), in, author, false)
	if m.storeError(w, err, in.ID) {
		return
	}
	m.log.Info("FAQ entry created", "entry", e.ID, "owner", e.Agency, "by", author)
	writeJSON(w, http.StatusCreated, e)
}

// updateEntry serves PUT /entries/{id}: the body replaces the entry, whose
// previous version goes to its history.
func (m *FAQ) updateEntry(w http.ResponseWriter, r *http.Request, agency, author string) {
	in, ok := readInput(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if in.ID != "" && in.ID != id {
		writeError(w, http.StatusBadRequest, "id: the body names "+strconv.Quote(in.ID)+", the path "+strconv.Quote(id))
		return
	}
	e, err := m.update(r.Context(), id, in, agency, author)
	if m.storeError(w, err, id) {
		return
	}
	m.log.Info("FAQ entry updated", "entry", e.ID, "version", e.Version, "owner", e.Agency, "by", author)
	writeJSON(w, http.StatusOK, e)
}

func (m *FAQ) deleteEntry(w http.ResponseWriter, r *http.Request, agency, author string) {
	id := r.PathValue("id")
	if m.storeError(w, m.delete(r.Context(), id, agency), id) {
		return
	}
	m.log.Info("FAQ entry deleted", "entry", id, "by", author)
	w.WriteHeader(http.StatusNoContent)
}

// importFormat tells the format of an import from ?format= or the
// Content-Type.
func importFormat(r *http.Request) (string, error) {
	if f := r.URL.Query().Get("format"); f != "" {
		return strings.ToLower(f), nil
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "application/json":
		return FormatJSON, nil
	case "text/csv":
		return FormatCSV, nil
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		return FormatYAML, nil
	}
	return "", errors.New("format: give ?format=yaml|json|csv or a Content-Type of application/yaml, application/json or text/csv")
}

// importEntries serves POST /import: a file of entries, created or updated
// by id, all or none. Errors name the file's lines.
func (m *FAQ) importEntries(w http.ResponseWriter, r *http.Request, agency, author string) {
	format, err := importFormat(r)
	if err != nil {
		writeError(w, http.StatusUnsupportedMediaType, err.Error())
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxImport))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "body: larger than "+strconv.Itoa(maxImport>>20)+" MiB")
		return
	}
	ins, err := parseImport(format, data)
	var errs importErrors
	if err != nil && !errors.As(err, &errs) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if errs = append(errs, m.importRights(r, ins, agency)...); len(errs) > 0 {
		errs = errs.sorted()
		lines := make([]string, len(errs))
		for i, e := range errs {
			lines[i] = e.Error()
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "the file was not imported", "errors": lines})
		return
	}
	res, err := m.importAll(r.Context(), ins, author)
	if err != nil {
		m.log.Warn("FAQ import stopped", "by", author, "err", err, "created", res.Created, "updated", res.Updated)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "FAQ store unavailable: " + err.Error(), "done": res})
		return
	}
	m.log.Info("FAQ imported", "format", format, "by", author, "created", res.Created, "updated", res.Updated, "unchanged", res.Unchanged)
	writeJSON(w, http.StatusOK, res)
}

// importRights gives the entries of an import the requester's agency where
// none is given (unless it is the network centre), and names the lines of
// those it may not write.
func (m *FAQ) importRights(r *http.Request, ins []lineInput, agency string) importErrors {
	var errs importErrors
	for i := range ins {
		in := &ins[i]
		if in.Agency == "" && !m.canEdit(agency, "") {
			in.Agency = agency
		}
		if !m.canEdit(agency, in.Agency) {
			errs = append(errs, lineError{in.lineOf("agency"), fmt.Errorf("agency: %s may not write entries of %q", agency, in.Agency)})
			continue
		}
		if in.ID == "" {
			continue
		}
		old, err := m.store.get(r.Context(), in.ID)
		if err == nil && !m.canEdit(agency, old.Agency) {
			errs = append(errs, lineError{in.lineOf("id"), fmt.Errorf("id: %q belongs to another agency", in.ID)})
		}
	}
	return errs
}

// filters serves GET /filters: the sectors and the agencies, for the web
// page's choices.
func (m *FAQ) filters(w http.ResponseWriter, _ *http.Request) {
	type agency struct {
		Code   string `json:"code"`
		Name   string `json:"name"`
		Sector string `json:"sector,omitempty"`
	}
	var list []agency
	for _, a := range m.agencies.List() {
		sec, _ := Sector(a.Sector)
		list = append(list, agency{Code: a.Code, Name: a.Name, Sector: sec})
	}
	writeJSON(w, http.StatusOK, map[string]any{"sectors": sectors, "agencies": list})
}

// suggestions serves GET /suggestions?call=<Call-ID>.
func (m *FAQ) suggestions(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("call")
	if id == "" {
		writeError(w, http.StatusBadRequest, "call: give the Call-ID of an answered call")
		return
	}
	sg, err := m.sugg.forCall(r.Context(), id)
	if scope := r.Header.Get(AgencyHeader); err == nil && scope != "" && scope != sg.Agency {
		err = modules.ErrNotFound // another agency's call
	}
	switch {
	case errors.Is(err, modules.ErrNotFound):
		writeError(w, http.StatusNotFound, "no suggestions for call "+strconv.Quote(id))
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "FAQ store unavailable")
	default:
		writeJSON(w, http.StatusOK, sg)
	}
}

// suggestionStream serves GET /suggestions/stream?user=|agency=: server-sent
// events, a "suggestions" event each time suggestions are computed for a
// call the operator (or the agency) answered on this node. A "ready" event
// comes first, after the suggestions of the calls in progress. With an
// X-Agency header (a front end that authenticated the operator) only that
// agency's calls are sent.
func (m *FAQ) suggestionStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	st := &stream{user: q.Get("user"), agency: q.Get("agency"), scope: r.Header.Get(AgencyHeader), ch: make(chan *Suggestions, streamQueue)}
	if (st.user == "") == (st.agency == "") {
		writeError(w, http.StatusBadRequest, "give user= (an operator's username) or agency= (an IPA code)")
		return
	}
	rc := http.NewResponseController(w)
	now, ok := m.sugg.open(st)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "too many suggestion streams open")
		return
	}
	defer m.sugg.close(st)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no") // proxies must not hold events back
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	for _, sg := range now {
		if !send("suggestions", sg) {
			return
		}
	}
	if !send("ready", map[string]string{"user": st.user, "agency": st.agency}) {
		return
	}
	heartbeat := time.NewTicker(heartbeatTime)
	defer heartbeat.Stop()
	for {
		select {
		case sg := <-st.ch:
			if !send("suggestions", sg) {
				return
			}
		case <-heartbeat.C:
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-m.ctx.Done():
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
