package survey

import (
	"context"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strconv"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/ticketing/ticketcode"
)

func (m *Survey) routes(h *modules.Host) {
	h.Handle("GET /rate/{code}", http.HandlerFunc(m.ratePage))
	h.Handle("POST /rate/{code}", http.HandlerFunc(m.rate))
	h.Handle("GET /ratings", http.HandlerFunc(m.ratings))
}

// page is what the rating page shows.
type page struct {
	Code    string
	Title   string
	Message string
	Form    bool
	Action  string
}

// The page is in Italian, readable without CSS or JavaScript: one form, the
// three faces as buttons with their words (the emoji are decoration for
// screen readers), an optional reason for a negative vote.
var pageTmpl = template.Must(template.New("rate").Parse(`<!doctype html>
<html lang="it">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} – Linea Amica</title>
<style>
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.5}
fieldset{border:0;padding:0;margin:0 0 1.5rem}
legend{font-size:1.2rem;font-weight:bold;margin-bottom:1rem}
.faces{display:flex;gap:1rem;flex-wrap:wrap}
button{font-size:1.1rem;padding:1rem;min-width:10rem;border:2px solid #06c;border-radius:.5rem;background:#fff;color:#003d7a;cursor:pointer}
button:hover,button:focus{background:#e6f0fa;outline:3px solid #003d7a;outline-offset:2px}
.face{display:block;font-size:2.5rem}
label{display:block;margin:.3rem 0}
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
{{if .Message}}<p role="status">{{.Message}}</p>{{end}}
{{if .Form}}
<p>Pratica <strong>{{.Code}}</strong>. Il giudizio è anonimo: non viene associato all'operatore che ti ha risposto.</p>
<form method="post" action="{{.Action}}">
<fieldset>
<legend>Se non sei soddisfatto, dicci perché (facoltativo)</legend>
<label><input type="radio" name="reason" value="waiting"> Tempi di attesa</label>
<label><input type="radio" name="reason" value="service"> Il servizio ricevuto</label>
<label><input type="radio" name="reason" value="come-back"> Ho dovuto richiamare o tornare</label>
<label><input type="radio" name="reason" value="other"> Altro</label>
</fieldset>
<fieldset>
<legend>Come valuti il servizio ricevuto?</legend>
<div class="faces">
<button type="submit" name="rating" value="1"><span class="face" aria-hidden="true">😊</span>Soddisfatto</button>
<button type="submit" name="rating" value="2"><span class="face" aria-hidden="true">😐</span>Abbastanza soddisfatto</button>
<button type="submit" name="rating" value="3"><span class="face" aria-hidden="true">☹️</span>Non soddisfatto</button>
</div>
</fieldset>
</form>
{{end}}
</main>
</body>
</html>
`))

func (m *Survey) show(w http.ResponseWriter, status int, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := pageTmpl.Execute(w, p); err != nil {
		m.log.Debug("rating page not written", "err", err)
	}
}

// ticket checks the code of the URL: its form, that the ticket was not
// rated yet, and that it is known. On failure it has answered.
func (m *Survey) ticket(w http.ResponseWriter, r *http.Request) (code, agency string, ok bool) {
	code, err := ticketcode.Parse(r.PathValue("code"))
	if err != nil {
		msg := "Il codice della pratica non è scritto correttamente. Controlla il link ricevuto nella ricevuta PEC (esempio: LA-2026-CAM-000123-2)."
		if errors.Is(err, ticketcode.ErrCheck) {
			msg = "Il codice della pratica contiene un errore di battitura. Controlla il link ricevuto nella ricevuta PEC."
		}
		m.show(w, http.StatusBadRequest, page{Title: "Codice non valido", Message: msg})
		return "", "", false
	}
	if m.alreadyRated(r.Context(), code) {
		m.show(w, http.StatusConflict, page{Title: "Valutazione già ricevuta",
			Message: "Questa pratica è già stata valutata: si può esprimere un solo giudizio per pratica. Grazie!"})
		return "", "", false
	}
	a, err := m.kv.Get(r.Context(), ticketKey(code))
	if errors.Is(err, modules.ErrNotFound) {
		m.show(w, http.StatusNotFound, page{Title: "Pratica non trovata",
			Message: "Non troviamo la pratica " + code + ", oppure il tempo per valutarla è scaduto."})
		return "", "", false
	}
	if err != nil {
		m.log.Warn("reading a ticket for the web rating", "ticket", code, "err", err)
		m.show(w, http.StatusServiceUnavailable, page{Title: "Servizio non disponibile", Message: "Riprova tra qualche minuto."})
		return "", "", false
	}
	return code, string(a), true
}

func (m *Survey) alreadyRated(ctx context.Context, code string) bool {
	_, err := m.kv.Get(ctx, votedKey(code))
	return err == nil
}

func (m *Survey) ratePage(w http.ResponseWriter, r *http.Request) {
	code, _, ok := m.ticket(w, r)
	if !ok {
		return
	}
	m.show(w, http.StatusOK, page{Code: code, Title: "Valuta il servizio", Form: true, Action: r.URL.Path})
}

func (m *Survey) rate(w http.ResponseWriter, r *http.Request) {
	code, agency, ok := m.ticket(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	rating, err := strconv.Atoi(r.PostFormValue("rating"))
	reason := r.PostFormValue("reason")
	validReason := reason == ""
	for _, v := range reasons {
		validReason = validReason || reason == v
	}
	if err != nil || rating < 1 || rating > 3 || !validReason {
		m.show(w, http.StatusBadRequest, page{Code: code, Title: "Valuta il servizio", Form: true, Action: r.URL.Path,
			Message: "Scegli una delle tre faccine per esprimere il tuo giudizio."})
		return
	}
	if modules.Rating(rating) != modules.RatingNegative {
		reason = ""
	}
	// Incr is atomic: of two votes at once, one gets 1.
	n, err := m.kv.Incr(r.Context(), votedKey(code))
	if err != nil {
		m.log.Warn("recording a web rating", "ticket", code, "err", err)
		m.show(w, http.StatusServiceUnavailable, page{Title: "Servizio non disponibile", Message: "Riprova tra qualche minuto."})
		return
	}
	if n > 1 {
		m.show(w, http.StatusConflict, page{Title: "Valutazione già ricevuta",
			Message: "Questa pratica è già stata valutata: si può esprimere un solo giudizio per pratica. Grazie!"})
		return
	}
	m.record(r.Context(), modules.RatingGiven{Time: time.Now(), Agency: agency, TicketCode: code,
		Rating: modules.Rating(rating), Reason: reason, Channel: "web"})
	m.show(w, http.StatusOK, page{Title: "Grazie!", Message: "Abbiamo registrato la tua valutazione. Ci aiuta a migliorare il servizio."})
}

// agencyRatings is one agency's survey results, as GET /ratings gives them.
type agencyRatings struct {
	Agency  string           `json:"agency"`
	Offered int64            `json:"offered"` // phone surveys offered
	NoVote  int64            `json:"no_vote"` // ... that ended without a vote
	Ratings map[string]int64 `json:"ratings"` // positive, sufficient, negative
	Reasons map[string]int64 `json:"reasons"` // of negative votes
	Channel map[string]int64 `json:"channel"` // phone, web
}

// ratings serves the counts per agency (?agency= for one): never per
// operator, never a single vote.
func (m *Survey) ratings(w http.ResponseWriter, r *http.Request) {
	agencies := []string{r.URL.Query().Get("agency")}
	if agencies[0] == "" {
		var err error
		if agencies, err = m.kv.IndexRange(r.Context(), "agencies", 0, 0, false); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	out := struct {
		Agencies []agencyRatings `json:"agencies"`
	}{Agencies: []agencyRatings{}}
	for _, a := range agencies {
		ar := agencyRatings{Agency: a, Ratings: map[string]int64{}, Reasons: map[string]int64{}, Channel: map[string]int64{}}
		get := func(name string) int64 {
			b, err := m.kv.Get(r.Context(), countKey(a, name))
			if err != nil {
				return 0
			}
			n, _ := strconv.ParseInt(string(b), 10, 64)
			return n
		}
		ar.Offered, ar.NoVote = get("offered"), get("novote")
		for _, k := range []modules.Rating{modules.RatingPositive, modules.RatingSufficient, modules.RatingNegative} {
			ar.Ratings[ratingName(k)] = get("r" + ratingName(k))
		}
		for _, why := range reasons {
			ar.Reasons[why] = get("why" + why)
		}
		for _, ch := range []string{"phone", "web"} {
			ar.Channel[ch] = get("c" + ch)
		}
		out.Agencies = append(out.Agencies, ar)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
