package faq

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/modules/kv"
)

const pensione = `{"id": "vecchiaia", "question": "Quando si matura la pensione di vecchiaia?",
	"answer": "Con 67 anni di età e 20 anni di contributi.", "agency": "inps", "sector": "pensioni", "tags": ["pensione"]}`

// An agency edits its own entries, the centre the network-wide ones; every
// edit keeps the previous version.
func TestEditingAndHistory(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	var e Entry
	n.mustDo(http.StatusUnauthorized, "POST", "/entries", "", pensione, nil)
	n.mustDo(http.StatusForbidden, "POST", "/entries", "age", pensione, nil)
	n.mustDo(http.StatusCreated, "POST", "/entries", "inps", pensione, &e)
	if e.ID != "vecchiaia" || e.Version != 1 || e.UpdatedBy != "inps/inps.redazione" {
		t.Fatalf("created %+v", e)
	}
	n.mustDo(http.StatusConflict, "POST", "/entries", "inps", pensione, nil)

	// No agency given: the requester's; no id given: one is made.
	n.mustDo(http.StatusCreated, "POST", "/entries", "age",
		`{"question": "Come si paga l'IMU?", "answer": "Con il modello F24.", "sector": "tax"}`, &e)
	if e.Agency != "age" || e.Sector != "tributi" || !strings.HasPrefix(e.ID, "faq-") {
		t.Fatalf("created %+v", e)
	}
	// Only the centre writes network-wide entries, and may write any.
	n.mustDo(http.StatusCreated, "POST", "/entries", "lineamica",
		`{"id": "orari", "question": "Quando risponde Linea Amica?", "answer": "Dal lunedì al venerdì.", "agency": "", "sector": "generale"}`, &e)
	if e.Agency != "" {
		t.Fatalf("network-wide entry owned by %q", e.Agency)
	}
	n.mustDo(http.StatusForbidden, "PUT", "/entries/orari", "inps",
		`{"question": "Quando risponde Linea Amica?", "answer": "Sempre.", "sector": "generale"}`, nil)
	n.mustDo(http.StatusForbidden, "DELETE", "/entries/vecchiaia", "age", "", nil)

	// Bad input is told what is wrong.
	if code, body := n.do("POST", "/entries", "inps", "application/json", `{"question": "", "answer": "x", "sector": "astronomia"}`, nil); code != 400 ||
		!strings.Contains(body, "question: required") || !strings.Contains(body, `sector: \"astronomia\" is not one of`) {
		t.Fatalf("bad entry: %d %s", code, body)
	}

	changed := strings.Replace(pensione, "20 anni di contributi", "almeno 20 anni di contributi", 1)
	n.mustDo(http.StatusOK, "PUT", "/entries/vecchiaia", "inps", changed, &e)
	n.mustDo(http.StatusOK, "PUT", "/entries/vecchiaia", "lineamica", strings.Replace(changed, `"pensione"`, `"pensione", "età"`, 1), &e)
	if e.Version != 3 || e.UpdatedBy != "lineamica/lineamica.redazione" {
		t.Fatalf("updated %+v", e)
	}
	var h struct{ Versions []Entry }
	n.mustDo(http.StatusOK, "GET", "/entries/vecchiaia/history", "", "", &h)
	if len(h.Versions) != 3 || h.Versions[0].Version != 3 || h.Versions[2].Version != 1 ||
		!strings.HasPrefix(h.Versions[2].Answer, "Con 67 anni di età e 20") || h.Versions[2].UpdatedBy != "inps/inps.redazione" ||
		!h.Versions[2].CreatedAt.Equal(h.Versions[0].CreatedAt) {
		t.Fatalf("history %+v", h.Versions)
	}

	if got := hitIDs(n.search("q=almeno")); !slices.Equal(got, []string{"vecchiaia"}) {
		t.Fatalf("search of the new text: %v", got)
	}
	n.mustDo(http.StatusNoContent, "DELETE", "/entries/vecchiaia", "inps", "", nil)
	n.mustDo(http.StatusNotFound, "GET", "/entries/vecchiaia", "", "", nil)
	if got := hitIDs(n.search("q=pensione")); len(got) != 0 {
		t.Fatalf("deleted entry found: %v", got)
	}
	var l results
	n.mustDo(http.StatusOK, "GET", "/entries?agency=age", "", "", &l)
	if got := hitIDs(l); !slices.Equal(got, []string{"orari", e.ID}) && len(got) != 2 {
		t.Fatalf("entries agency=age: %v", got)
	}
}

func TestSearchAPI(t *testing.T) {
	n := startNode(t, kv.NewMemory(), map[string]any{"starter": true})
	eventually(t, "the starter FAQ", func() bool { return n.metric("centralino_faq_entries") >= 40 })

	r := n.search("q=" + escape("pensioni di vecchiaia"))
	if len(r.Results) == 0 || r.Results[0].Sector != "pensioni" || !strings.Contains(r.Results[0].Highlights["question"], "<mark>") {
		t.Fatalf("pensioni di vecchiaia: %+v", r.Results)
	}
	// Filters: an agency sees its own and network-wide entries; a sector.
	for _, h := range n.search("q=certificato&agency=asl_na1&limit=50").Results {
		if h.Agency != "" && h.Agency != "asl_na1" {
			t.Errorf("agency=asl_na1 found %s of %s", h.ID, h.Agency)
		}
	}
	for _, h := range n.search("q=certificato&sector=sanita&limit=50").Results {
		if h.Sector != "sanità" {
			t.Errorf("sector=sanita found %s of %s", h.ID, h.Sector)
		}
	}
	if r := n.search("limit=5&sector=tributi"); r.Total < 5 || len(r.Results) != 5 {
		t.Errorf("every entry of a sector: total %d, %d results", r.Total, len(r.Results))
	}
	for _, bad := range []string{"q=x&limit=0", "q=x&limit=1000", "q=x&sector=astronomia", "q=" + strings.Repeat("a", 600)} {
		if code, body := n.do("GET", "/search?"+bad, "", "", "", nil); code != 400 || !strings.Contains(body, "error") {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}
	if n.metric("centralino_faq_searches_total") < 4 || n.metric("centralino_faq_search_duration_seconds") < 4 {
		t.Error("searches not counted")
	}

	// The page, and the way to it.
	code, body := n.do("GET", "/ui/", "", "", "", nil)
	if code != 200 || !strings.Contains(body, `<html lang="it">`) || !strings.Contains(body, `<label for="q">`) {
		t.Fatalf("page: %d %.200s", code, body)
	}
	resp, err := http.Get(n.srv.URL + "/api/faq/")
	if err != nil || resp.Request.URL.Path != "/api/faq/ui/" {
		t.Fatalf("/api/faq/ leads to %v (%v)", resp.Request.URL, err)
	}
	resp.Body.Close()
}

func escape(s string) string { return strings.ReplaceAll(s, " ", "+") }

// Imports: all or nothing, errors that name the line, entries created then
// updated by id, and an agency limited to its own.
func TestImportAPI(t *testing.T) {
	n := startNode(t, kv.NewMemory(), nil)
	csv := "id,question,answer,sector,agency,tags\n" +
		"isee,Come si ottiene l'ISEE?,Con la DSU sul sito dell'INPS.,pensioni,inps,isee;dsu\n" +
		"naspi,Come si chiede la NASpI?,Entro 68 giorni dalla fine del lavoro.,lavoro,inps,disoccupazione\n"
	var res importResult
	code, body := n.do("POST", "/import", "inps", "text/csv", csv, &res)
	if code != 200 || res.Created != 2 {
		t.Fatalf("import: %d %s", code, body)
	}
	code, _ = n.do("POST", "/import", "inps", "text/csv", csv, &res)
	if code != 200 || res.Unchanged != 2 || res.Created+res.Updated != 0 {
		t.Fatalf("import again: %+v", res)
	}
	yaml := "- id: naspi\n  question: Come si chiede la NASpI?\n  answer: Online, entro 68 giorni.\n  sector: lavoro\n  agency: inps\n"
	if code, body := n.do("POST", "/import?format=yaml", "inps", "", yaml, &res); code != 200 || res.Updated != 1 {
		t.Fatalf("import update: %d %s", code, body)
	}

	// Errors: nothing is imported, every line is named.
	bad := `[
  {"id": "nuova", "question": "Nuova?", "answer": "Sì.", "sector": "lavoro"},
  {"id": "isee", "question": "ISEE?", "answer": "No.", "sector": "pensioni", "agency": "inps"},
  {"question": "Altra?", "answer": "", "sector": "lavoro"}
]`
	var errs struct{ Errors []string }
	code, body = n.do("POST", "/import", "age", "application/json", bad, nil)
	json.Unmarshal([]byte(body), &errs)
	if code != 400 || len(errs.Errors) != 2 || !strings.HasPrefix(errs.Errors[0], `line 3: agency: age may not write entries of "inps"`) ||
		!strings.HasPrefix(errs.Errors[1], "line 4: answer: required") {
		t.Fatalf("bad import: %d %s", code, body)
	}
	n.mustDo(http.StatusNotFound, "GET", "/entries/nuova", "", "", nil)
	if code, body := n.do("POST", "/import", "age", "text/plain", "x", nil); code != http.StatusUnsupportedMediaType {
		t.Fatalf("unknown format: %d %s", code, body)
	}
	// Entries without an agency are the importer's.
	n.do("POST", "/import", "age", "application/json", `[{"id": "nuova", "question": "Nuova?", "answer": "Sì.", "sector": "tributi"}]`, &res)
	var e Entry
	n.mustDo(http.StatusOK, "GET", "/entries/nuova", "", "", &e)
	if e.Agency != "age" {
		t.Fatalf("imported entry owned by %q", e.Agency)
	}
}

// An entry added, changed or deleted on one node is found so on another
// sharing the store.
func TestNodesShareEntries(t *testing.T) {
	stores(t, func(t *testing.T, newStore func() modules.Store) {
		a := startNode(t, newStore(), fast)
		// Node b keeps its index in its own memory: only the store joins them.
		b := startNode(t, newStore(), fast)
		a.mustDo(http.StatusCreated, "POST", "/entries", "inps", pensione, nil)
		eventually(t, "node b to find the entry", func() bool {
			return slices.Equal(hitIDs(b.search("q=pensioni")), []string{"vecchiaia"})
		})
		b.mustDo(http.StatusOK, "PUT", "/entries/vecchiaia", "inps", strings.Replace(pensione, "67 anni", "sessantasette anni", 1), nil)
		eventually(t, "node a to find the change", func() bool {
			return slices.Equal(hitIDs(a.search("q=sessantasette")), []string{"vecchiaia"})
		})
		a.mustDo(http.StatusNoContent, "DELETE", "/entries/vecchiaia", "inps", "", nil)
		eventually(t, "node b to forget the entry", func() bool { return b.search("q=pensioni").Total == 0 })
		if b.metric("centralino_faq_entries") != 0 {
			t.Error("centralino_faq_entries on b is not 0")
		}
	})
}

// The starter FAQ is loaded once, into an empty store, by one node or
// several.
func TestStarterLoadedOnce(t *testing.T) {
	stores(t, func(t *testing.T, newStore func() modules.Store) {
		opts := map[string]any{"starter": true, "refresh_interval": "100ms"}
		a, b := startNode(t, newStore(), opts), startNode(t, newStore(), opts)
		want := float64(len(mustStarter(t)))
		for _, n := range []*node{a, b} {
			eventually(t, "the starter FAQ", func() bool { return n.metric("centralino_faq_entries") == want })
		}
		var h struct{ Versions []Entry }
		a.mustDo(http.StatusOK, "GET", "/entries/inps-pensione-vecchiaia/history", "", "", &h)
		if len(h.Versions) != 1 || h.Versions[0].UpdatedBy != starterAuthor {
			t.Fatalf("starter entry loaded twice: %+v", h.Versions)
		}
		a.mustDo(http.StatusNoContent, "DELETE", "/entries/inps-pensione-vecchiaia", "lineamica", "", nil)
		a.stop()
		c := startNode(t, newStore(), opts)
		eventually(t, "the FAQ on a new node", func() bool { return c.metric("centralino_faq_entries") == want-1 })
		time.Sleep(200 * time.Millisecond)
		c.mustDo(http.StatusNotFound, "GET", "/entries/inps-pensione-vecchiaia", "", "", nil)
	})
}

func mustStarter(t *testing.T) []lineInput {
	t.Helper()
	ins, err := parseImport(FormatYAML, starterFAQ)
	if err != nil {
		t.Fatal(err)
	}
	return ins
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]any
		want string
	}{
		{map[string]any{"refresh_interval": "1ms"}, `option "refresh_interval": 1ms is not between`},
		{map[string]any{"suggestions": 0}, `option "suggestions": must be between 1 and 50`},
		{map[string]any{"colour": "blue"}, `option "colour": unknown option`},
	} {
		_, err := modules.Start(t.Context(), []modules.Config{{Name: "faq", Options: tc.opts}},
			modules.Deps{Bus: modules.NewBus(modules.BusOptions{}), Mux: http.NewServeMux(), Store: kv.NewMemory()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// The starter FAQ covers every sector, and its owners are the demo
// network's agencies.
func TestStarterFAQ(t *testing.T) {
	ins := mustStarter(t)
	if len(ins) < 45 {
		t.Errorf("%d entries, want about 50", len(ins))
	}
	perSector := map[string]int{}
	for _, in := range ins {
		perSector[in.Sector]++
		if _, ok := (demoAgencies{}).Agency(in.Agency); in.Agency != "" && !ok {
			t.Errorf("line %d: agency %q is not in the demo network", in.Line, in.Agency)
		}
		if in.ID == "" {
			t.Errorf("line %d: no id: loading it twice would make two entries", in.Line)
		}
	}
	for _, s := range sectors {
		if perSector[s] < 4 {
			t.Errorf("sector %s has %d entries", s, perSector[s])
		}
	}
}
