package sip

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"hash/fnv"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAlgorithms are the digest algorithms offered in every challenge, in
// order of preference (RFC 8760 §2.4: one challenge header per algorithm).
// MD5 comes first by default because many deployed user agents (baresip 1.0,
// sipp 3.6, older desk phones) read only the first challenge and give up on
// one they do not know; a network of RFC 8760 phones lists SHA-256 first.
var DefaultAlgorithms = []string{"MD5", "SHA-256"}

// nonceAuthority issues and checks digest nonces. A nonce is self-contained:
// issue time, a sequence number, randomness and an HMAC over them plus the
// client's IP, so it is bound to the address it was given to and expires
// without per-nonce allocation. Replays are stopped as Kamailio's auth module
// does: the sequence number indexes a fixed ring of "highest nonce-count
// seen"; a nonce whose slot has been reused by a newer one is treated as stale,
// so memory stays bounded whatever the registration rate.
type nonceAuthority struct {
	key  [32]byte
	ttl  time.Duration
	now  func() time.Time
	next atomic.Uint32
	ncs  []atomic.Uint32 // highest nc seen per slot
	macs sync.Pool       // of HMAC-SHA-256 keyed with key: building one costs more than using it
}

const (
	nonceRawLen = 8 + 4 + 4 + 16 // issued (unix ns) | index | random | mac
	nonceSlots  = 1 << 20
)

func newNonceAuthority(ttl time.Duration) *nonceAuthority {
	n := &nonceAuthority{ttl: ttl, now: time.Now, ncs: make([]atomic.Uint32, nonceSlots)}
	if _, err := rand.Read(n.key[:]); err != nil {
		panic("sip: no randomness for nonce key: " + err.Error())
	}
	n.macs.New = func() any { return hmac.New(sha256.New, n.key[:]) }
	return n
}

func (n *nonceAuthority) mac(body []byte, ip netip.Addr) []byte {
	m := n.macs.Get().(hash.Hash)
	defer n.macs.Put(m)
	m.Reset()
	m.Write(body)
	m.Write(ip.Unmap().AsSlice())
	return m.Sum(nil)[:16]
}

// issue returns a fresh nonce for a client at ip.
func (n *nonceAuthority) issue(ip netip.Addr) string {
	var raw [nonceRawLen]byte
	idx := n.next.Add(1)
	n.ncs[idx%nonceSlots].Store(0)
	binary.BigEndian.PutUint64(raw[:8], uint64(n.now().UnixNano()))
	binary.BigEndian.PutUint32(raw[8:12], idx)
	_, _ = rand.Read(raw[12:16])
	copy(raw[16:], n.mac(raw[:16], ip))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

type nonceVerdict int

const (
	nonceValid nonceVerdict = iota
	nonceStale              // genuine but expired: the client may retry with stale=true
	nonceBad                // forged, bound to another address, or replayed
)

// check verifies a nonce presented with nonce-count nc and records the use.
func (n *nonceAuthority) check(nonce string, nc int, ip netip.Addr) nonceVerdict {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != nonceRawLen {
		return nonceBad
	}
	if !hmac.Equal(raw[16:], n.mac(raw[:16], ip)) {
		return nonceBad
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	now := n.now()
	idx := binary.BigEndian.Uint32(raw[8:12])
	if now.Sub(issued) > n.ttl || issued.After(now.Add(time.Minute)) || n.next.Load()-idx >= nonceSlots {
		return nonceStale
	}
	if nc <= 0 {
		nc = 1 // RFC 2069 clients send no nc: one use only
	}
	slot := &n.ncs[idx%nonceSlots]
	for {
		last := slot.Load()
		if uint32(nc) <= last {
			return nonceBad
		}
		if slot.CompareAndSwap(last, uint32(nc)) {
			return nonceValid
		}
	}
}

// challenges returns one challenge header value per algorithm, in the form
// of RFC 8760 §2.4 (the order of fields as icholy/digest writes them). They
// share one nonce: the client answers one of them, once.
func (n *nonceAuthority) challenges(realm string, algorithms []string, ip netip.Addr, stale bool) []string {
	out := make([]string, 0, len(algorithms))
	nonce := n.issue(ip)
	for _, alg := range algorithms {
		var b strings.Builder
		b.Grow(96 + len(realm))
		b.WriteString(`Digest realm="`)
		b.WriteString(realm)
		b.WriteString(`", nonce="`)
		b.WriteString(nonce)
		b.WriteString(`"`)
		if stale {
			b.WriteString(", stale=true")
		}
		b.WriteString(", algorithm=")
		b.WriteString(alg)
		b.WriteString(`, qop="auth"`)
		out = append(out, b.String())
	}
	return out
}

// credentials are the fields of a digest Authorization or
// Proxy-Authorization header that the switch checks.
type credentials struct {
	username, realm, nonce, uri, response, algorithm, cnonce, qop string
	nc                                                            int
}

// parseCredentials reads a digest credentials header value (RFC 3261
// §25.1, RFC 7616 §3.4) in one pass, without allocating unless a quoted
// value has escapes. It reports false for anything else or when a field the
// check needs is missing.
func parseCredentials(v string) (credentials, bool) {
	var c credentials
	scheme, rest, ok := strings.Cut(strings.TrimLeft(v, " \t"), " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return c, false
	}
	for {
		rest = strings.TrimLeft(rest, " \t\r\n,")
		if rest == "" {
			break
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return c, false
		}
		name := strings.TrimRight(rest[:eq], " \t")
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			if val, rest, ok = quoted(rest); !ok {
				return c, false
			}
		} else {
			end := strings.IndexAny(rest, ", \t")
			if end < 0 {
				end = len(rest)
			}
			val, rest = rest[:end], rest[end:]
		}
		switch {
		case strings.EqualFold(name, "username"):
			c.username = val
		case strings.EqualFold(name, "realm"):
			c.realm = val
		case strings.EqualFold(name, "nonce"):
			c.nonce = val
		case strings.EqualFold(name, "uri"):
			c.uri = val
		case strings.EqualFold(name, "response"):
			c.response = val
		case strings.EqualFold(name, "algorithm"):
			c.algorithm = val
		case strings.EqualFold(name, "cnonce"):
			c.cnonce = val
		case strings.EqualFold(name, "qop"):
			c.qop = val
		case strings.EqualFold(name, "nc"):
			nc, err := strconv.ParseUint(val, 16, 32)
			if err != nil {
				return c, false
			}
			c.nc = int(nc)
		}
	}
	ok = c.username != "" && c.nonce != "" && c.uri != "" && c.response != "" &&
		(c.qop == "" || c.cnonce != "" && c.nc > 0)
	return c, ok
}

// quoted splits a quoted-string (RFC 3261 §25.1) off the front of s.
func quoted(s string) (val, rest string, ok bool) {
	escaped := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			escaped = true
			i++
		case '"':
			val = s[1:i]
			if escaped {
				var b strings.Builder
				for j := 0; j < len(val); j++ {
					if val[j] == '\\' && j+1 < len(val) {
						j++
					}
					b.WriteByte(val[j])
				}
				val = b.String()
			}
			return val, s[i+1:], true
		}
	}
	return "", "", false
}

// matches reports whether the credentials answer the challenge for a
// request with the given method, given the stored HA1 of their algorithm
// (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).
func (c *credentials) matches(method, ha1 string) bool {
	sha := strings.EqualFold(c.algorithm, "SHA-256")
	var buf [512]byte
	var ha2 [64]byte
	b := append(append(append(buf[:0], method...), ':'), c.uri...)
	h2 := hexSum(ha2[:0], b, sha)
	b = append(append(append(append(buf[:0], ha1...), ':'), c.nonce...), ':')
	if c.qop != "" {
		b = appendCount(b, c.nc)
		b = append(append(append(append(append(b, ':'), c.cnonce...), ':'), c.qop...), ':')
	}
	b = append(b, h2...)
	var want [64]byte
	return subtle.ConstantTimeCompare(hexSum(want[:0], b, sha), []byte(c.response)) == 1
}

// hexSum appends the hex digest of data (SHA-256 or MD5) to dst.
func hexSum(dst, data []byte, sha bool) []byte {
	if sha {
		sum := sha256.Sum256(data)
		return hex.AppendEncode(dst, sum[:])
	}
	sum := md5.Sum(data)
	return hex.AppendEncode(dst, sum[:])
}

// appendCount appends a nonce-count as 8 hex digits (RFC 7616 §3.4).
func appendCount(dst []byte, nc int) []byte {
	const digits = "0123456789abcdef"
	for shift := 28; shift >= 0; shift -= 4 {
		dst = append(dst, digits[(nc>>shift)&0xf])
	}
	return dst
}

// failureThrottle counts authentication failures per source IP and blocks a
// source that fails too often, as Kamailio's pike and htable recipes do.
type failureThrottle struct {
	max      int
	window   time.Duration
	blockFor time.Duration
	now      func() time.Time

	mu      sync.Mutex
	sources map[netip.Addr]*failures
}

type failures struct {
	count        int
	windowStart  time.Time
	blockedUntil time.Time
}

func newFailureThrottle(max int, window, blockFor time.Duration) *failureThrottle {
	return &failureThrottle{max: max, window: window, blockFor: blockFor, now: time.Now, sources: make(map[netip.Addr]*failures)}
}

// blocked reports whether ip is currently blocked.
func (t *failureThrottle) blocked(ip netip.Addr) bool {
	if t.max <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.sources[ip]
	return ok && t.now().Before(f.blockedUntil)
}

// fail records a failure from ip and reports whether ip is now blocked.
func (t *failureThrottle) fail(ip netip.Addr) bool {
	if t.max <= 0 {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.sources) > 65536 {
		for k, f := range t.sources {
			if now.Sub(f.windowStart) > t.window && now.After(f.blockedUntil) {
				delete(t.sources, k)
			}
		}
	}
	f, ok := t.sources[ip]
	if !ok || now.Sub(f.windowStart) > t.window {
		f = &failures{windowStart: now}
		t.sources[ip] = f
	}
	f.count++
	if f.count >= t.max {
		f.blockedUntil = now.Add(t.blockFor)
		f.count = 0
		f.windowStart = now
		return true
	}
	return false
}

// succeed forgets the failures of ip.
func (t *failureThrottle) succeed(ip netip.Addr) {
	t.mu.Lock()
	delete(t.sources, ip)
	t.mu.Unlock()
}

// legacyClients remembers user agents that cannot answer a challenge listing
// several algorithms (libre-based phones such as Debian's baresip 1.0 give up
// on the whole response when one challenge names an algorithm they do not
// know). Such a client sends its request again without credentials; from
// then on its IP address gets challenges with MD5 alone, as a per-endpoint
// "supported algorithms" setting would in Asterisk, but learnt.
type legacyClients struct {
	now func() time.Time
	// challenged holds, per hash of (source, Call-ID), when a multi-algorithm
	// challenge was sent: a fixed table, so memory does not grow with load.
	challenged []atomic.Int64

	mu     sync.Mutex
	legacy map[netip.Addr]time.Time // source -> until
}

const (
	legacySlots    = 1 << 16
	legacyMemory   = 24 * time.Hour
	legacyMaxHosts = 65536
)

func newLegacyClients() *legacyClients {
	return &legacyClients{now: time.Now, challenged: make([]atomic.Int64, legacySlots), legacy: make(map[netip.Addr]time.Time)}
}

func legacySlot(source netip.Addr, callID string) uint32 {
	h := fnv.New32a()
	a := source.As16()
	h.Write(a[:])
	h.Write([]byte{0})
	h.Write([]byte(callID))
	return h.Sum32() % legacySlots
}

// isLegacy reports whether source must be challenged with MD5 alone. A
// request without credentials that follows a multi-algorithm challenge of
// the same call marks the source.
func (l *legacyClients) isLegacy(source netip.Addr, callID string, hasCredentials bool) bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if until, ok := l.legacy[source]; ok {
		if now.Before(until) {
			return true
		}
		delete(l.legacy, source)
	}
	if hasCredentials {
		return false
	}
	sent := l.challenged[legacySlot(source, callID)].Load()
	if sent == 0 || now.Sub(time.Unix(0, sent)) > time.Minute {
		return false
	}
	l.rememberLocked(source, now)
	return true
}

// known reports whether source is remembered as a legacy client.
func (l *legacyClients) known(source netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.legacy[source]
	return ok && l.now().Before(until)
}

// remember marks source as a legacy client.
func (l *legacyClients) remember(source netip.Addr) {
	l.mu.Lock()
	l.rememberLocked(source, l.now())
	l.mu.Unlock()
}

func (l *legacyClients) rememberLocked(source netip.Addr, now time.Time) {
	if len(l.legacy) >= legacyMaxHosts {
		for k, until := range l.legacy {
			if now.After(until) {
				delete(l.legacy, k)
			}
		}
		if len(l.legacy) >= legacyMaxHosts {
			return
		}
	}
	l.legacy[source] = now.Add(legacyMemory)
}

// challengedWithSeveral records a multi-algorithm challenge to (source, Call-ID).
func (l *legacyClients) challengedWithSeveral(source netip.Addr, callID string) {
	l.challenged[legacySlot(source, callID)].Store(l.now().UnixNano())
}
