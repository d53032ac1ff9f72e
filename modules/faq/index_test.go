package faq

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/blevesearch/bleve/v2"
)

func testIndex(t *testing.T, entries ...*Entry) *index {
	t.Helper()
	x, err := newIndex()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		e.Version, e.UpdatedAt = 1, time.Now()
	}
	if _, _, err := x.sync(entries); err != nil {
		t.Fatal(err)
	}
	return x
}

var sample = []*Entry{
	{ID: "vecchiaia", Question: "Quando si matura la pensione di vecchiaia?", Answer: "Con 67 anni di età e almeno 20 anni di contributi versati all'INPS.", Agency: "inps", Sector: "pensioni", Tags: []string{"pensione"}},
	{ID: "estratto", Question: "Come si consulta l'estratto conto contributivo dell'INPS?", Answer: "Nell'area riservata del sito dell'Istituto, con SPID, CIE o CNS.", Agency: "inps", Sector: "pensioni"},
	{ID: "tessera", Question: "Come si rinnova la tessera sanitaria?", Answer: "La nuova tessera arriva per posta prima della scadenza; la sanità regionale non chiede nulla.", Sector: "sanità"},
	{ID: "medico", Question: "Come si cambia il medico di base?", Answer: "Presso lo sportello della ASL o online sul portale regionale.", Agency: "asl_na1", Sector: "sanità"},
	{ID: "730", Question: "Chi può usare il 730 precompilato?", Answer: "I lavoratori dipendenti e i pensionati, dal sito dell'Agenzia delle Entrate.", Agency: "age", Sector: "tributi"},
}

func ids(hits []Hit) []string {
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = h.ID
	}
	return out
}

// The Italian analyzer: a query finds an entry whatever the number, the
// elided article and the accents, and stop words alone find nothing.
func TestItalianSearch(t *testing.T) {
	x := testIndex(t, sample...)
	for _, tc := range []struct {
		name, q string
		first   string // "" for no hit at all
	}{
		{"singular finds plural", "pensione", "vecchiaia"},
		{"plural finds singular", "pensioni vecchiaia", "vecchiaia"},
		{"plural of a question word", "tessere sanitarie", "tessera"},
		{"elided article in the query", "dell'estratto", "estratto"},
		{"elided article in the text", "INPS estratto", "estratto"},
		{"curly apostrophe", "l’estratto contributivo", "estratto"},
		{"accent in the query, none in the text", "può", "730"},
		{"no accent in the query", "puo usare", "730"},
		{"accent folded in the text", "sanita", "tessera"},
		{"accent kept in the query", "sanità", "tessera"},
		{"capitals", "MEDICO DI BASE", "medico"},
		{"stop words alone", "il della di che", ""},
		{"stop words do not count", "il medico della", "medico"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits, _, err := x.search(textQuery(tc.q), 0, 10, false)
			if err != nil {
				t.Fatal(err)
			}
			if tc.first == "" {
				if len(hits) != 0 {
					t.Fatalf("%q found %v, want nothing", tc.q, ids(hits))
				}
				return
			}
			if len(hits) == 0 || hits[0].ID != tc.first {
				t.Fatalf("%q found %v, want %s first", tc.q, ids(hits), tc.first)
			}
		})
	}
}

// Singular and plural, accented and not, rank the same entries the same way.
func TestVariantsRankAlike(t *testing.T) {
	x := testIndex(t, sample...)
	for _, pair := range [][2]string{{"pensione", "pensioni"}, {"sanità", "sanita"}, {"dell'INPS", "inps"}} {
		a, _, _ := x.search(textQuery(pair[0]), 0, 10, false)
		b, _, _ := x.search(textQuery(pair[1]), 0, 10, false)
		if len(a) == 0 || !slices.Equal(ids(a), ids(b)) {
			t.Errorf("%q found %v, %q found %v", pair[0], ids(a), pair[1], ids(b))
		}
	}
}

func TestFiltersAndHighlights(t *testing.T) {
	x := testIndex(t, sample...)
	// ASL Napoli 1 sees its own entries and the network-wide ones, not INPS's.
	f := filter{Agencies: []string{"asl_na1"}}
	hits, total, err := x.search(f.query(textQuery("tessera medico pensione")), 0, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(hits); total != 2 || !slices.Contains(got, "tessera") || !slices.Contains(got, "medico") {
		t.Fatalf("asl_na1 found %v (total %d), want tessera and medico", got, total)
	}
	f = filter{Sectors: []string{"pensioni"}}
	hits, _, _ = x.search(f.query(textQuery("INPS")), 0, 10, true)
	if got := ids(hits); len(got) != 2 || slices.Contains(got, "730") {
		t.Fatalf("sector pensioni found %v", got)
	}
	for _, h := range hits {
		if h.ID == "estratto" && !strings.Contains(h.Highlights["question"], "INPS</mark>") {
			t.Errorf("highlight %q: want INPS marked", h.Highlights["question"])
		}
	}
	// The highlights are HTML: the entry's own text is escaped.
	y := testIndex(t, &Entry{ID: "x", Question: "Orari <b>sportello</b>", Answer: "a", Sector: "generale"})
	hits, _, _ = y.search(textQuery("sportello"), 0, 10, true)
	if h := hits[0].Highlights["question"]; !strings.Contains(h, "&lt;b&gt;<mark>sportello</mark>") {
		t.Errorf("highlight %q: want the text escaped", h)
	}
}

func TestSyncReindexesOnlyChanges(t *testing.T) {
	x := testIndex(t, sample...)
	changed := *sample[0]
	changed.Version, changed.Answer = 2, "Dal 2027 con 67 anni e 3 mesi."
	idx, rm, err := x.sync([]*Entry{&changed, sample[1], sample[2], sample[3]})
	if err != nil || idx != 1 || rm != 1 {
		t.Fatalf("sync: indexed %d removed %d err %v; want 1 and 1", idx, rm, err)
	}
	if n, _ := x.bl.DocCount(); n != 4 || x.count() != 4 {
		t.Fatalf("%d documents, %d entries; want 4", n, x.count())
	}
	hits, _, _ := x.search(textQuery("mesi"), 0, 10, false)
	if len(hits) != 1 || hits[0].ID != "vecchiaia" {
		t.Fatalf("new answer not found: %v", ids(hits))
	}
	hits, _, _ = x.search(bleve.NewMatchAllQuery(), 0, 10, false)
	if slices.Contains(ids(hits), "730") {
		t.Fatal("removed entry still found")
	}
}
