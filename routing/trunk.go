package routing

import (
	"cmp"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Trunk is a link to a switch outside the directory: a central body's PBX or
// a PSTN gateway, reached at one or more peers, as Kamailio's dispatcher
// sets are. Numbers the directory does not know that match its Prefixes or
// Numbers leave through it.
type Trunk struct {
	Name string `yaml:"name" json:"name"`
	// Prefixes are the dialled prefixes it takes (the longest prefix of all
	// trunks wins); Numbers are whole numbers it takes, before any prefix.
	Prefixes []string `yaml:"prefixes,omitempty" json:"prefixes,omitempty"`
	Numbers  []string `yaml:"numbers,omitempty" json:"numbers,omitempty"`
	Peers    []Peer   `yaml:"peers" json:"peers"`
	Inbound  Inbound  `yaml:"inbound,omitempty" json:"inbound"`
	Outbound Outbound `yaml:"outbound,omitempty" json:"-"`
	Probe    Probe    `yaml:"probe,omitempty" json:"probe"`
	// ReplyTimeout gives up a peer that has not answered an INVITE at all,
	// not even with 100 Trying, and tries the next one (Kamailio's
	// fr_timer). Default DefaultReplyTimeout.
	ReplyTimeout time.Duration `yaml:"reply_timeout,omitempty" json:"reply_timeout,omitempty"`
}

// Peer is one address of a trunk.
type Peer struct {
	Name      string `yaml:"name,omitempty" json:"name"`           // default host:port
	Host      string `yaml:"host" json:"host"`                     // IP address or host name
	Port      int    `yaml:"port,omitempty" json:"port"`           // default 5060, 5061 for tls
	Transport string `yaml:"transport,omitempty" json:"transport"` // udp (default), tcp, tls
	// Priority orders the peers: all peers of the lowest priority are tried
	// before any of the next. Weight shares calls within a priority.
	Priority int `yaml:"priority,omitempty" json:"priority"`
	Weight   int `yaml:"weight,omitempty" json:"weight"` // default 1
	// Register makes the switch register with the peer, with the trunk's
	// outbound credentials, for a peer that only sends calls to a
	// registered contact.
	Register bool `yaml:"register,omitempty" json:"register,omitempty"`
}

// Trust values of Inbound.
const (
	TrustAddress = "address" // requests from Sources are not challenged
	TrustDigest  = "digest"  // requests are challenged; the peer answers with Username and Password
)

// Inbound says how calls from a trunk are let in.
type Inbound struct {
	Trust string `yaml:"trust,omitempty" json:"trust"` // address (default) or digest
	// Sources are the CIDRs (or IPs) trusted calls come from; default the
	// peers' addresses.
	Sources  []string `yaml:"sources,omitempty" json:"sources,omitempty"`
	Username string   `yaml:"username,omitempty" json:"username,omitempty"`
	Password string   `yaml:"password,omitempty" json:"-"`
}

// Outbound are the credentials the switch gives a peer that challenges it:
// when registering, and when the peer challenges a call.
type Outbound struct {
	Username string `yaml:"username,omitempty"`
	Password string `yaml:"password,omitempty"`
	// Expires is the registration lifetime asked for; default 600s.
	Expires time.Duration `yaml:"expires,omitempty"`
}

// Probe is how peers are watched with OPTIONS (Kamailio's ds_ping_interval,
// ds_probing_threshold and ds_inactive_threshold).
type Probe struct {
	Interval  time.Duration `yaml:"interval,omitempty" json:"interval"`   // default 10s
	Failures  int           `yaml:"failures,omitempty" json:"failures"`   // failed probes in a row to mark a peer down; default 3
	Successes int           `yaml:"successes,omitempty" json:"successes"` // answered probes in a row to mark it up again; default 2
}

// Defaults of a trunk's optional fields.
const (
	DefaultReplyTimeout   = 5 * time.Second
	DefaultProbeInterval  = 10 * time.Second
	DefaultProbeFailures  = 3
	DefaultProbeSuccesses = 2
	DefaultRegisterExpiry = 600 * time.Second
)

// WithDefaults returns the trunk with every optional field filled in.
func (t Trunk) WithDefaults() Trunk {
	t.Peers = slices.Clone(t.Peers)
	for i := range t.Peers {
		p := &t.Peers[i]
		p.Transport = cmp.Or(strings.ToLower(p.Transport), "udp")
		if p.Port == 0 {
			p.Port = 5060
			if p.Transport == "tls" {
				p.Port = 5061
			}
		}
		if p.Weight <= 0 { // unset; negative ones are refused by the config
			p.Weight = 1
		}
		p.Name = cmp.Or(p.Name, net.JoinHostPort(p.Host, strconv.Itoa(p.Port)))
	}
	t.Inbound.Trust = cmp.Or(t.Inbound.Trust, TrustAddress)
	t.Outbound.Expires = cmp.Or(t.Outbound.Expires, DefaultRegisterExpiry)
	t.Probe.Interval = cmp.Or(t.Probe.Interval, DefaultProbeInterval)
	t.Probe.Failures = cmp.Or(t.Probe.Failures, DefaultProbeFailures)
	t.Probe.Successes = cmp.Or(t.Probe.Successes, DefaultProbeSuccesses)
	t.ReplyTimeout = cmp.Or(t.ReplyTimeout, DefaultReplyTimeout)
	return t
}

// PeerHealth is what probing knows of a peer.
type PeerHealth struct {
	Up        bool          `json:"up"`
	Latency   time.Duration `json:"latency"`              // round trip of the last answered probe
	LastProbe time.Time     `json:"last_probe,omitzero"`  // when the last probe ended
	Failures  int           `json:"failures,omitempty"`   // failed probes in a row
	LastError string        `json:"last_error,omitempty"` // why the last probe failed
}

type peerState struct {
	PeerHealth
	successes int // answered probes in a row while down
}

// Trunks holds the trunks and the up/down state of their peers. It is safe
// for concurrent use.
type Trunks struct {
	list []Trunk

	mu    sync.Mutex
	state map[[2]string]*peerState // (trunk, peer) -> state
	rand  *rand.Rand
}

// NewTrunks holds list, with defaults filled in. Every peer starts up, so
// that calls flow before the first probes; a peer that does not answer them
// goes down after Probe.Failures intervals.
func NewTrunks(list []Trunk) *Trunks {
	t := &Trunks{state: map[[2]string]*peerState{}, rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	for _, tr := range list {
		tr = tr.WithDefaults()
		t.list = append(t.list, tr)
		for _, p := range tr.Peers {
			t.state[[2]string{tr.Name, p.Name}] = &peerState{PeerHealth: PeerHealth{Up: true}}
		}
	}
	return t
}

// List returns the trunks, with defaults filled in.
func (t *Trunks) List() []Trunk { return t.list }

// Match returns the trunk a dialled number leaves through: one listing the
// number, else the one with the longest matching prefix.
func (t *Trunks) Match(dialled string) (Trunk, bool) {
	best, bestLen := -1, 0
	for i, tr := range t.list {
		if slices.Contains(tr.Numbers, dialled) {
			return tr, true
		}
		for _, p := range tr.Prefixes {
			if len(p) > bestLen && strings.HasPrefix(dialled, p) {
				best, bestLen = i, len(p)
			}
		}
	}
	if best < 0 {
		return Trunk{}, false
	}
	return t.list[best], true
}

// Select returns the peers of tr that are up, in the order to try them:
// by priority, lowest first, and within a priority in a weighted random
// order, so that each peer comes first in proportion to its weight
// (Kamailio's dispatcher algorithm 8 over priorities, weights as in 9).
func (t *Trunks) Select(tr Trunk) []Peer {
	var up []Peer
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range tr.Peers {
		if s := t.state[[2]string{tr.Name, p.Name}]; s != nil && s.Up {
			up = append(up, p)
		}
	}
	slices.SortStableFunc(up, func(a, b Peer) int { return cmp.Compare(a.Priority, b.Priority) })
	for start := 0; start < len(up); {
		end := start + 1
		for end < len(up) && up[end].Priority == up[start].Priority {
			end++
		}
		t.shuffleByWeight(up[start:end])
		start = end
	}
	return up
}

// shuffleByWeight orders peers by drawing, without replacement, each next
// one with a probability proportional to its weight.
func (t *Trunks) shuffleByWeight(peers []Peer) {
	for i := range len(peers) - 1 {
		total := 0
		for _, p := range peers[i:] {
			total += p.Weight
		}
		n := t.rand.IntN(total)
		for j := i; j < len(peers); j++ {
			if n -= peers[j].Weight; n < 0 {
				peers[i], peers[j] = peers[j], peers[i]
				break
			}
		}
	}
}

// Probed records the outcome of a probe of a peer: ok with its round trip,
// or the reason it failed. It returns the peer's state and whether the
// probe changed it. Unknown peers are ignored.
func (t *Trunks) Probed(trunk, peer string, ok bool, latency time.Duration, why string, at time.Time) (up, changed bool) {
	tr := t.trunk(trunk)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.state[[2]string{trunk, peer}]
	if s == nil {
		return false, false
	}
	s.LastProbe = at
	if ok {
		s.Latency, s.Failures, s.LastError = latency, 0, ""
		s.successes++
		if !s.Up && s.successes >= tr.Probe.Successes {
			s.Up, changed = true, true
		}
		return s.Up, changed
	}
	s.successes = 0
	s.Failures++
	s.LastError = why
	if s.Up && s.Failures >= tr.Probe.Failures {
		s.Up, changed = false, true
	}
	return s.Up, changed
}

// Health returns what probing knows of a peer.
func (t *Trunks) Health(trunk, peer string) PeerHealth {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.state[[2]string{trunk, peer}]; s != nil {
		return s.PeerHealth
	}
	return PeerHealth{}
}

func (t *Trunks) trunk(name string) Trunk {
	for _, tr := range t.list {
		if tr.Name == name {
			return tr
		}
	}
	return Trunk{}
}

// viaTrunk sends a call out through tr: its peers that are up, one after
// another, each for the ring timeout; the proxy goes on to the next peer
// only when one fails (408, 5xx, no answer at all).
func (r *Router) viaTrunk(tr Trunk) Decision {
	peers := r.Trunks.Select(tr)
	if len(peers) == 0 {
		return reject(503, "No trunk peer available")
	}
	dec := Decision{RingTimeout: r.RingTimeout}
	for _, p := range peers {
		dec.Targets = append(dec.Targets, Target{Trunk: tr.Name, Peer: p})
	}
	return dec
}
