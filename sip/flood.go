package sip

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// floodLimit caps what one source IP may send, before any parsing (as
// Kamailio's pike module does): a token bucket of Rate reads per second with
// a burst of twice that. A UDP datagram over the limit is dropped; a stream
// (TCP, TLS, WS) over the limit is closed. Trusted sources are exempt.
type floodLimit struct {
	rate    float64
	trusted func(netip.Addr) bool
	dropped prometheus.Counter
	now     func() time.Time

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

var errFlood = errors.New("sip: source over its flood limit")

func newFloodLimit(rate float64, trusted func(netip.Addr) bool, dropped prometheus.Counter) *floodLimit {
	return &floodLimit{rate: rate, trusted: trusted, dropped: dropped, now: time.Now, buckets: make(map[netip.Addr]*bucket)}
}

// filter is a sipgo read filter: nil data drops a datagram, an error closes a stream.
func (f *floodLimit) filter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	ip := addrIP(props.RemoteAddr)
	if !ip.IsValid() || f.trusted(ip) || f.allow(ip) {
		return data, nil
	}
	f.dropped.Inc()
	if _, udp := props.RemoteAddr.(*net.UDPAddr); udp {
		return nil, nil
	}
	return nil, errFlood
}

func (f *floodLimit) allow(ip netip.Addr) bool {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if now.Sub(f.swept) > time.Minute {
		// Forget sources idle long enough to have refilled their bucket.
		for k, b := range f.buckets {
			if now.Sub(b.last) > 10*time.Second {
				delete(f.buckets, k)
			}
		}
		f.swept = now
	}
	b, ok := f.buckets[ip]
	if !ok {
		b = &bucket{tokens: 2 * f.rate, last: now}
		f.buckets[ip] = b
	}
	return b.take(now, f.rate, 2*f.rate)
}

// take refills b at rate tokens a second, up to burst, and takes one if
// there is one.
func (b *bucket) take(now time.Time, rate, burst float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// callRate caps the new calls (initial INVITEs) the node takes a second,
// with a burst of one second's worth, as FreeSWITCH's sessions-per-second
// does: past it an INVITE is answered 503 at once, so that a switch offered
// more than it can carry keeps completing the calls it took instead of
// falling behind on all of them (retransmissions then multiply the load).
// A nil *callRate takes every call.
type callRate struct {
	rate, burst float64
	mu          sync.Mutex
	b           bucket
}

func newCallRate(rate float64) *callRate {
	if rate <= 0 {
		return nil
	}
	burst := max(rate, 1) // a cap under 1/s still takes a call now and then
	return &callRate{rate: rate, burst: burst, b: bucket{tokens: burst, last: time.Now()}}
}

func (c *callRate) allow() bool {
	if c == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.take(time.Now(), c.rate, c.burst)
}

func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
