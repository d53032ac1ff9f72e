package sla

import (
	"bytes"
	"net/http"
	"sync"
	"time"
)

// The API and the page are public and each answer reads many counters from
// the store: answers are kept a few seconds (the figures of other nodes are
// that late anyway) so that a crowd or a crawler costs the store little.
const (
	cacheFor     = 5 * time.Second
	cacheEntries = 512
)

type answerCache struct {
	mu      sync.Mutex
	answers map[string]cachedAnswer // by request URI
}

type cachedAnswer struct {
	contentType string
	body        []byte
	until       time.Time
}

// serve answers from the cache, or runs render and keeps its answer if it
// succeeded (status 200).
func (c *answerCache) serve(w http.ResponseWriter, r *http.Request, render func(http.ResponseWriter, *http.Request)) {
	key, now := r.URL.RequestURI(), time.Now()
	c.mu.Lock()
	a, ok := c.answers[key]
	c.mu.Unlock()
	if !ok || now.After(a.until) {
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		render(rec, r)
		if rec.status != http.StatusOK {
			copyHeader(w.Header(), rec.header)
			w.WriteHeader(rec.status)
			w.Write(rec.body.Bytes())
			return
		}
		a = cachedAnswer{contentType: rec.header.Get("Content-Type"), body: rec.body.Bytes(), until: now.Add(cacheFor)}
		c.mu.Lock()
		if c.answers == nil || len(c.answers) >= cacheEntries {
			c.answers = map[string]cachedAnswer{} // crude, but bounded
		}
		c.answers[key] = a
		c.mu.Unlock()
	}
	w.Header().Set("Content-Type", a.contentType)
	w.Header().Set("Cache-Control", "public, max-age=5")
	w.Write(a.body)
}

// recorder is the ResponseWriter render writes to.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}
