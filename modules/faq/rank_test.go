package faq

import (
	"testing"
	"time"
)

// What citizens and operators type finds the entry they mean, first, in
// the starter FAQ.
func TestStarterRanking(t *testing.T) {
	var entries []*Entry
	for _, in := range mustStarter(t) {
		entries = append(entries, &Entry{ID: in.ID, Question: in.Question, Answer: in.Answer, Agency: in.Agency,
			Sector: in.Sector, Tags: in.Tags, Version: 1, UpdatedAt: time.Now()})
	}
	x := testIndex(t, entries...)
	for q, want := range map[string]string{
		"dell'INPS estratto":          "inps-estratto-conto",
		"estratto conto contributivo": "inps-estratto-conto",
		"pensioni di vecchiaia":       "inps-pensione-vecchiaia",
		"cambio del medico":           "asl-cambio-medico",
		"carta d'identità":            "anagrafe-carta-identita",
		"tessera sanitaria scaduta":   "sanita-tessera-sanitaria",
		"indennità di disoccupazione": "inps-naspi",
		"affittare casa ai turisti":   "turismo-locazioni-brevi",
		"rimborso del 730":            "age-rimborso-irpef",
		"cambio di residenza":         "anagrafe-cambio-residenza",
		"numero di telefono INPS":     "inps-contact-center",
		"esenzione ticket":            "asl-esenzione-reddito",
		"come ottengo lo spid":        "anagrafe-spid",
		"imu sulla prima casa":        "tributi-imu",
		"bollo dell'auto":             "tributi-bollo-auto",
		"dimissioni":                  "lavoro-dimissioni-online",
		"codice di pratica":           "linea-amica-codice-pratica",
		"assegno per i figli":         "inps-assegno-unico",
		"aprire un b&b":               "campania-aprire-bb",
		"pagare un avviso pagopa":     "generale-pagopa",
	} {
		hits, _, err := x.search(textQuery(q), 0, 3, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) == 0 || hits[0].ID != want {
			t.Errorf("%q: found %v, want %s first", q, ids(hits), want)
		}
	}
}
