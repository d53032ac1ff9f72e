package faq

import (
	"cmp"
	"fmt"
	"slices"
	"sync"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/analysis"
	"github.com/blevesearch/bleve/v2/analysis/analyzer/custom"
	"github.com/blevesearch/bleve/v2/analysis/char/asciifolding"
	"github.com/blevesearch/bleve/v2/analysis/lang/it"
	"github.com/blevesearch/bleve/v2/analysis/token/lowercase"
	"github.com/blevesearch/bleve/v2/analysis/tokenizer/unicode"
	"github.com/blevesearch/bleve/v2/mapping"
	"github.com/blevesearch/bleve/v2/registry"
	"github.com/blevesearch/bleve/v2/search/highlight/highlighter/html"
	"github.com/blevesearch/bleve/v2/search/query"
)

// analyzerName is bleve's Italian analyzer (lower case, elided articles,
// stop words, light stemmer) with accents folded after the stop words
// (the list is accented: "più", "perché") and before the stemmer, so that
// "sanità" and "sanita" meet, and short words too ("può", "puo").
const (
	analyzerName = "faq_it"
	foldName     = "faq_fold"
)

func init() {
	err := registry.RegisterTokenFilter(foldName, func(map[string]any, *registry.Cache) (analysis.TokenFilter, error) {
		return foldFilter{asciifolding.New()}, nil
	})
	if err != nil {
		panic(err)
	}
}

// foldFilter folds each token to ASCII.
type foldFilter struct {
	f *asciifolding.AsciiFoldingFilter
}

func (f foldFilter) Filter(in analysis.TokenStream) analysis.TokenStream {
	for _, t := range in {
		t.Term = f.f.Filter(t.Term)
	}
	return in
}

func newMapping() (mapping.IndexMapping, error) {
	m := bleve.NewIndexMapping()
	err := m.AddCustomAnalyzer(analyzerName, map[string]any{
		"type":          custom.Name,
		"tokenizer":     unicode.Name,
		"token_filters": []any{lowercase.Name, it.ElisionName, it.StopName, foldName, it.LightStemmerName},
	})
	if err != nil {
		return nil, err
	}
	m.DefaultAnalyzer = analyzerName

	text := bleve.NewTextFieldMapping()
	text.Analyzer = analyzerName
	text.IncludeTermVectors = true // for highlights
	keyword := bleve.NewKeywordFieldMapping()
	keyword.Store = false

	doc := bleve.NewDocumentStaticMapping()
	doc.AddFieldMappingsAt("question", text)
	doc.AddFieldMappingsAt("answer", text)
	doc.AddFieldMappingsAt("tags", text)
	doc.AddFieldMappingsAt("owner", keyword)
	doc.AddFieldMappingsAt("sector", keyword)
	m.DefaultMapping = doc
	return m, nil
}

// index is a node's copy of the entries: a bleve index in memory for
// search, and the entries themselves for listing and for search results.
type index struct {
	bl bleve.Index

	mu      sync.RWMutex
	entries map[string]*Entry
}

func newIndex() (*index, error) {
	m, err := newMapping()
	if err != nil {
		return nil, err
	}
	bl, err := bleve.NewMemOnly(m)
	if err != nil {
		return nil, err
	}
	return &index{bl: bl, entries: map[string]*Entry{}}, nil
}

func document(e *Entry) map[string]any {
	return map[string]any{
		"question": e.Question, "answer": e.Answer, "tags": e.Tags,
		"owner": ownerKey(e.Agency), "sector": e.Sector,
	}
}

// put indexes e, replacing any entry with its id.
func (x *index) put(e *Entry) error {
	if err := x.bl.Index(e.ID, document(e)); err != nil {
		return fmt.Errorf("indexing %s: %w", e.ID, err)
	}
	x.mu.Lock()
	x.entries[e.ID] = e
	x.mu.Unlock()
	return nil
}

func (x *index) remove(id string) error {
	x.mu.Lock()
	delete(x.entries, id)
	x.mu.Unlock()
	return x.bl.Delete(id)
}

// sync makes the index hold exactly all, re-indexing only what changed,
// and returns how many entries it indexed and removed.
func (x *index) sync(all []*Entry) (indexed, removed int, err error) {
	x.mu.RLock()
	stale := make(map[string]bool, len(x.entries))
	for id := range x.entries {
		stale[id] = true
	}
	var changed []*Entry
	for _, e := range all {
		delete(stale, e.ID)
		if old := x.entries[e.ID]; old == nil || old.Version != e.Version || !old.UpdatedAt.Equal(e.UpdatedAt) {
			changed = append(changed, e)
		}
	}
	x.mu.RUnlock()

	b := x.bl.NewBatch()
	for _, e := range changed {
		if err := b.Index(e.ID, document(e)); err != nil {
			return 0, 0, fmt.Errorf("indexing %s: %w", e.ID, err)
		}
	}
	for id := range stale {
		b.Delete(id)
	}
	if err := x.bl.Batch(b); err != nil {
		return 0, 0, err
	}
	x.mu.Lock()
	for _, e := range changed {
		x.entries[e.ID] = e
	}
	for id := range stale {
		delete(x.entries, id)
	}
	x.mu.Unlock()
	return len(changed), len(stale), nil
}

func (x *index) get(id string) *Entry {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.entries[id]
}

func (x *index) count() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.entries)
}

// list returns the entries a filter lets through, newest first.
func (x *index) list(f filter) []*Entry {
	x.mu.RLock()
	var out []*Entry
	for _, e := range x.entries {
		if f.keeps(e) {
			out = append(out, e)
		}
	}
	x.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Entry) int {
		return cmp.Or(b.UpdatedAt.Compare(a.UpdatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// filter narrows a search or a listing. Agencies: entries of those
// agencies and the network-wide ones (none: every entry); Sectors: of those
// sectors (none: any).
type filter struct {
	Agencies []string
	Sectors  []string
}

func (f filter) keeps(e *Entry) bool {
	return (len(f.Agencies) == 0 || e.Agency == "" || slices.Contains(f.Agencies, e.Agency)) &&
		(len(f.Sectors) == 0 || slices.Contains(f.Sectors, e.Sector))
}

// query adds the filter's conditions to q.
func (f filter) query(q query.Query) query.Query {
	conj := []query.Query{q}
	if len(f.Agencies) > 0 {
		conj = append(conj, terms("owner", append([]string{networkKey}, f.Agencies...)))
	}
	if len(f.Sectors) > 0 {
		conj = append(conj, terms("sector", f.Sectors))
	}
	if len(conj) == 1 {
		return q
	}
	return bleve.NewConjunctionQuery(conj...)
}

// terms matches a keyword field holding any of values.
func terms(field string, values []string) query.Query {
	qs := make([]query.Query, len(values))
	for i, v := range values {
		t := bleve.NewTermQuery(v)
		t.SetField(field)
		qs[i] = t
	}
	return bleve.NewDisjunctionQuery(qs...)
}

// textQuery matches text in the question, the tags and the answer, a
// match in the question weighing twice (more favours entries that repeat a
// common word such as "INPS" over those with the rarer word asked).
func textQuery(text string) query.Query {
	field := func(name string, boost float64) query.Query {
		q := bleve.NewMatchQuery(text)
		q.SetField(name)
		q.Analyzer = analyzerName
		q.SetBoost(boost)
		return q
	}
	return bleve.NewDisjunctionQuery(field("question", 2), field("tags", 1), field("answer", 1))
}

// Hit is an entry found by a search, with its score and, per field, the
// matched text as HTML: escaped, with the matched words in <mark>.
type Hit struct {
	*Entry
	Score      float64           `json:"score"`
	Highlights map[string]string `json:"highlights,omitempty"`
}

// search runs q and returns the hits in the order of their score, and the
// number of entries that match.
func (x *index) search(q query.Query, offset, limit int, highlight bool) ([]Hit, int, error) {
	req := bleve.NewSearchRequestOptions(q, limit, offset, false)
	if highlight {
		req.Highlight = bleve.NewHighlightWithStyle(html.Name)
		req.Highlight.Fields = []string{"question", "answer"}
	}
	res, err := x.bl.Search(req)
	if err != nil {
		return nil, 0, err
	}
	hits := make([]Hit, 0, len(res.Hits))
	for _, h := range res.Hits {
		e := x.get(h.ID)
		if e == nil {
			continue // removed meanwhile
		}
		hit := Hit{Entry: e, Score: h.Score}
		for field, frags := range h.Fragments {
			if len(frags) > 0 {
				if hit.Highlights == nil {
					hit.Highlights = map[string]string{}
				}
				hit.Highlights[field] = frags[0]
			}
		}
		hits = append(hits, hit)
	}
	return hits, int(res.Total), nil
}
