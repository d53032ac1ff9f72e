package sla

import (
	"cmp"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct": pct, "secs": secs, "num": num,
}).Parse(pageHTML))

var mesi = [...]string{"gennaio", "febbraio", "marzo", "aprile", "maggio", "giugno", "luglio", "agosto",
	"settembre", "ottobre", "novembre", "dicembre"}

// pageData is what the transparency page shows: one month of one scope.
type pageData struct {
	Scope     string // "Rete Linea Amica", a region or an agency's name
	Month     string // "novembre 2026"
	Prev      string // links to the month before and after (Next "" for the current month)
	Next      string
	JSON      string // the same figures from the API
	Threshold int
	Short     int
	Total     Figures
	Days      []dayRow
	Chart     chart
	Agencies  []agencyRow // for the network and regions
	Regions   []link
	Updated   string
}

type dayRow struct {
	Day string
	Figures
}

type agencyRow struct {
	Name, Link string
	Figures
}

type link struct{ Name, URL string }

// chart is the two bar charts of the month, drawn as inline SVG.
type chart struct {
	Width, Height int
	Calls, Level  []bar
	MaxCalls      int64
}

// bar is a bar of a chart: of the calls chart, three stacked parts from
// the bottom (answered, abandoned, other), each a top and a height.
type bar struct {
	X, W  float64
	Parts [3]part
	Y, H  float64 // the level chart's bar
	Title string
}

type part struct {
	Class string
	Y, H  float64
}

const chartW, chartH = 720, 160

func (m *SLA) getPage(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	v := r.URL.Query()
	q, err := m.parseScope(v.Get("agency"), v.Get("region"))
	if err == nil {
		q.from, err = parseMonth(v.Get("mese"), now)
	}
	if err != nil {
		status := http.StatusBadRequest
		if he, ok := err.(*httpError); ok {
			status = he.status
		}
		http.Error(w, "Richiesta non valida: "+err.Error(), status)
		return
	}
	// The month so far: days to come have nothing to show.
	q.bucket, q.to = Day, Month.Next(q.from)
	if tomorrow := Day.Next(Day.Start(now)); tomorrow.Before(q.to) {
		q.to = tomorrow
	}
	if !q.from.Before(q.to) {
		http.Error(w, "Richiesta non valida: il mese non è ancora iniziato.", http.StatusBadRequest)
		return
	}
	rep, _, err := m.report(r.Context(), q)
	if err != nil {
		m.log.Error("transparency page", "err", err)
		http.Error(w, "Dati temporaneamente non disponibili, riprovare più tardi.", http.StatusServiceUnavailable)
		return
	}
	d := pageData{
		Scope: "Rete Linea Amica", Month: mesi[q.from.Month()-1] + " " + fmt.Sprint(q.from.Year()),
		Threshold: m.opts.ServiceLevelSeconds, Short: m.opts.ShortAbandonSeconds, Total: rep.Total,
		Updated: now.In(Rome).Format("02/01/2006 15:04"),
	}
	switch {
	case q.agency != "":
		d.Scope = cmp.Or(rep.AgencyName, q.agency)
	case q.region != "":
		d.Scope = "Regione " + q.region
	}
	link := func(u url.Values) string {
		if q.agency != "" {
			u.Set("agency", q.agency)
		}
		if q.region != "" {
			u.Set("region", q.region)
		}
		return "?" + u.Encode()
	}
	d.Prev = link(url.Values{"mese": {q.from.AddDate(0, -1, 0).Format("2006-01")}})
	if next := Month.Next(q.from); next.Before(now) {
		d.Next = link(url.Values{"mese": {next.Format("2006-01")}})
	}
	lastDay := q.to.AddDate(0, 0, -1)
	d.JSON = "./" + link(url.Values{"bucket": {"day"}, "from": {q.from.Format(time.DateOnly)}, "to": {lastDay.Format(time.DateOnly)}})
	for _, p := range rep.Periods {
		start, _ := time.Parse(time.RFC3339, p.Start)
		d.Days = append(d.Days, dayRow{Day: start.In(Rome).Format("02/01"), Figures: p.Figures})
	}
	d.Chart = drawChart(d.Days)
	if q.agency == "" {
		if d.Agencies, err = m.agencyRows(r, q); err != nil {
			m.log.Error("transparency page", "err", err)
			http.Error(w, "Dati temporaneamente non disponibili, riprovare più tardi.", http.StatusServiceUnavailable)
			return
		}
	}
	d.Regions = m.regionLinks(q.from)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := page.Execute(w, d); err != nil {
		m.log.Warn("transparency page not written", "err", err)
	}
}

// parseMonth reads mese=2026-11; the current month when empty.
func parseMonth(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return Month.Start(now), nil
	}
	t, err := time.ParseInLocation("2006-01", s, Rome)
	if err != nil {
		return t, badRequest("mese: %q non è un mese nella forma 2026-11", s)
	}
	return t, nil
}

// agencyRows reads the month of every agency in the page's scope.
func (m *SLA) agencyRows(r *http.Request, q query) ([]agencyRow, error) {
	var rows []agencyRow
	for _, a := range m.agencies.List() {
		if q.region != "" && a.Region != q.region {
			continue
		}
		c, err := m.read(r.Context(), agencyScope(a.Code), Month, q.from)
		if err != nil {
			return nil, err
		}
		u := url.Values{"agency": {a.Code}, "mese": {q.from.Format("2006-01")}}
		rows = append(rows, agencyRow{Name: a.Name, Link: "?" + u.Encode(), Figures: c.Figures()})
	}
	slices.SortFunc(rows, func(a, b agencyRow) int { return strings.Compare(a.Name, b.Name) })
	return rows, nil
}

func (m *SLA) regionLinks(month time.Time) []link {
	mese := month.Format("2006-01")
	links := []link{{"Tutta la rete", "?mese=" + mese}}
	var names []string
	for _, a := range m.agencies.List() {
		if a.Region != "" && !slices.Contains(names, a.Region) {
			names = append(names, a.Region)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		links = append(links, link{"Regione " + n, "?" + url.Values{"region": {n}, "mese": {mese}}.Encode()})
	}
	return links
}

func drawChart(days []dayRow) chart {
	c := chart{Width: chartW, Height: chartH}
	for _, d := range days {
		c.MaxCalls = max(c.MaxCalls, d.Offered)
	}
	scale := float64(chartH-10) / float64(max(c.MaxCalls, 1))
	w := float64(chartW) / float64(max(len(days), 1))
	for i, d := range days {
		x := float64(i)*w + 1
		b := bar{X: x, W: math.Max(w-2, 1)}
		y := float64(chartH)
		for i, p := range []struct {
			class string
			n     int64
		}{
			{"answered", d.Answered},
			{"abandoned", d.Abandoned + d.ShortAbandoned},
			{"other", max(d.Offered-d.Answered-d.Abandoned-d.ShortAbandoned, 0)},
		} {
			h := float64(p.n) * scale
			y -= h
			b.Parts[i] = part{Class: p.class, Y: y, H: h}
		}
		b.Title = fmt.Sprintf("%s: %d chiamate, %d con risposta, %d abbandonate", d.Day, d.Offered, d.Answered, d.Abandoned+d.ShortAbandoned)
		c.Calls = append(c.Calls, b)
		l := bar{X: x, W: b.W, Title: d.Day + ": nessuna chiamata"}
		if d.ServiceLevel != nil {
			l.H = math.Min(*d.ServiceLevel, 1) * (chartH - 10)
			l.Title = d.Day + ": " + pct(d.ServiceLevel) + " entro la soglia"
		}
		l.Y = chartH - l.H
		c.Level = append(c.Level, l)
	}
	return c
}

// pct formats a ratio the Italian way: "87,5 %"; "—" when undefined.
func pct(r *float64) string {
	if r == nil {
		return "—"
	}
	return strings.Replace(fmt.Sprintf("%.1f %%", *r*100), ".", ",", 1)
}

// secs formats an average duration: "15 s", "3 min 20 s"; "—" when undefined.
func secs(s *float64) string {
	if s == nil {
		return "—"
	}
	d := time.Duration(math.Round(*s)) * time.Second
	if d < time.Minute {
		return fmt.Sprintf("%d s", int(d.Seconds()))
	}
	return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
}

// num formats a count with the Italian thousands separator: "12.345".
func num(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "." + s[i:]
	}
	return s
}
