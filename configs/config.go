// Package configs reads and validates Centralino's configuration file and
// embeds the demo network (demo.yaml).
//
// A config is YAML. Every field has a default (see Default), unknown fields are
// errors, and every error is one line naming the field path, for example
//
//	config: listen[1].transport: "sctp" is not one of udp, tcp, tls, ws, wss
package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing"
	"github.com/lineamica/centralino/routing/directory"
)

// Config is the whole configuration of one node.
type Config struct {
	NodeID string     `yaml:"node_id"` // default: the host name
	Realm  string     `yaml:"realm"`   // SIP domain and digest realm
	Log    Log        `yaml:"log"`
	Listen []Listener `yaml:"listen"` // IPv6 addresses in brackets: "[::1]:5060"
	// Advertise is the host put in Via/Record-Route for IPv4 peers (a host
	// name: for both families); needed when listening on 0.0.0.0.
	// AdvertiseIPv6 is the same for IPv6 peers; needed when listening on [::]
	// for IPv6 phones. Default: each listener's own address.
	Advertise     string    `yaml:"advertise,omitempty"`
	AdvertiseIPv6 string    `yaml:"advertise_ipv6,omitempty"`
	HTTP          HTTP      `yaml:"http"`
	Directory     Directory `yaml:"directory"`
	Registrar     Registrar `yaml:"registrar"`
	Auth          Auth      `yaml:"auth"`
	Proxy         Proxy     `yaml:"proxy"`
	Media         Media     `yaml:"media"`
	Cluster       Cluster   `yaml:"cluster"`
	Network       Network   `yaml:"network"`
	// Trunks are links to central bodies' switches and PSTN gateways (docs/trunks.md).
	Trunks []routing.Trunk `yaml:"trunks,omitempty"`
	// Modules are the in-process modules to start, in order, with their
	// options (see docs/ for each module's).
	Modules []modules.Config `yaml:"modules,omitempty"`
}

// Log selects the slog handler.
type Log struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// Listener is one SIP transport socket.
type Listener struct {
	Transport string `yaml:"transport"`           // udp | tcp | tls | ws | wss
	Addr      string `yaml:"addr"`                // host:port; default 127.0.0.1 and the transport's port
	CertFile  string `yaml:"cert_file,omitempty"` // tls and wss only
	KeyFile   string `yaml:"key_file,omitempty"`
}

// HTTP is the listener shared by /metrics, /healthz, /readyz and the modules' APIs.
type HTTP struct {
	Addr string `yaml:"addr"`
	// Pprof serves Go's profiler under /debug/pprof/ (for load tests; keep
	// it off where the listener is reachable from outside).
	Pprof bool `yaml:"pprof,omitempty"`
}

// Directory selects the store of agencies, users and registrations.
type Directory struct {
	Backend  string `yaml:"backend"`             // memory | redis
	RedisURL string `yaml:"redis_url,omitempty"` // redis://, rediss:// or unix://
	// WriteBack: with Redis, a REGISTER that only refreshes bindings the node
	// holds is answered at once and written within this delay, together
	// with the others (Kamailio's usrloc db_mode 2); 0 writes each one
	// before answering. A crash loses the refreshes of the last interval.
	WriteBack Duration `yaml:"write_back"`
}

// Registrar bounds the Expires a phone may ask for, in seconds.
type Registrar struct {
	MinExpires     int `yaml:"min_expires"`
	MaxExpires     int `yaml:"max_expires"`
	DefaultExpires int `yaml:"default_expires"`
}

// Auth configures digest authentication and brute-force blocking.
type Auth struct {
	// Algorithms are the digest algorithms offered in each challenge, in
	// order of preference: MD5, SHA-256. MD5 first suits phones that read
	// only the first challenge (see docs/architecture.md).
	Algorithms []string `yaml:"algorithms"`
	NonceTTL   Duration `yaml:"nonce_ttl"`
	// Trusted lists CIDRs (or single IPs) whose requests are not challenged:
	// trunks, load generators.
	Trusted []string `yaml:"trusted,omitempty"`
	// MaxFailures failed authentications from one source within FailureWindow
	// block it for BlockFor. 0 disables blocking.
	MaxFailures   int      `yaml:"max_failures"`
	FailureWindow Duration `yaml:"failure_window"`
	BlockFor      Duration `yaml:"block_for"`
	// FloodRate caps the SIP messages per second one untrusted IP may send
	// (burst: twice as many); past it datagrams are dropped and connections
	// closed, before parsing. 0 disables the limit.
	FloodRate float64 `yaml:"flood_rate"`
}

// Proxy configures call forwarding.
type Proxy struct {
	RingTimeout Duration `yaml:"ring_timeout"` // per call, like Timer C
	DrainPeriod Duration `yaml:"drain_period"` // on shutdown, time given to calls in progress
	// MaxCallRate caps the new calls (initial INVITEs, a challenged one and
	// its authenticated retry counting twice) the node takes a second; past
	// it they are answered 503 with Retry-After. 0: no cap.
	MaxCallRate float64 `yaml:"max_call_rate,omitempty"`
}

// Media configures the RTP relay that anchors calls' media.
type Media struct {
	// Anchor is when a call's media goes through the relay: always, nat
	// (only when a side is behind NAT) or never. An agency's media setting
	// overrides it for its side of a call.
	Anchor  string `yaml:"anchor"`
	PortMin int    `yaml:"port_min"` // RTP ports: even for RTP, the odd one above for RTCP
	PortMax int    `yaml:"port_max"`
	// Advertise is the IPv4 address the relay binds and writes in SDP for
	// IPv4 phones; AdvertiseIPv6 the same for IPv6 phones. Default: the SIP
	// advertise address of the family, else the first listener's address of
	// the family. The relay serves a family only with an address for it, and
	// bridges the two: each phone sees the relay in its own family.
	Advertise     string   `yaml:"advertise,omitempty"`
	AdvertiseIPv6 string   `yaml:"advertise_ipv6,omitempty"`
	Timeout       Duration `yaml:"timeout"`      // no packet either way: the call is ended
	HoldTimeout   Duration `yaml:"hold_timeout"` // the same while a side is on hold
	// Kernel forwards latched plain-RTP IPv4 streams in the kernel (eBPF):
	// auto (when it loads), on (startup fails without it) or off.
	Kernel string `yaml:"kernel"`
}

// Cluster is what a node of several sharing one Redis directory needs to
// reach the others and be trusted by them (docs/multinode.md).
type Cluster struct {
	// Secret is shared by every node: a request one node forwards to
	// another, for a phone registered there, is signed with it. Without it
	// the node reaches every phone itself, as a single node does. At least
	// 16 characters; SecretFile reads it from a file instead.
	Secret     string `yaml:"secret,omitempty"`
	SecretFile string `yaml:"secret_file,omitempty"`
	// Address is the host:port the other nodes send to; default: the
	// advertise host (else the first listener's) and the port of the
	// listener of Transport.
	Address   string   `yaml:"address,omitempty"`
	Transport string   `yaml:"transport"` // udp, tcp or tls
	Heartbeat Duration `yaml:"heartbeat"` // a node silent for three heartbeats is given up
}

// Network seeds the directory with agencies and users.
type Network struct {
	Agencies []directory.Agency `yaml:"agencies,omitempty"`
	Users    []User             `yaml:"users,omitempty"`
}

// User is a directory user as written in the config: either a plaintext
// Password (demo only) or both HA1s. Parse replaces the password by the HA1s
// and gives a user without a role the role phone.
type User struct {
	directory.User `yaml:",inline"`
	Password       string `yaml:"password,omitempty"`
}

// Duration is a time.Duration written as a Go duration string ("30s", "5m").
type Duration time.Duration

// UnmarshalYAML parses a duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("line %d: invalid duration %q, want e.g. 30s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string, so a marshalled config parses back.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }

// Default ports of each transport, used when a listener gives no addr.
var defaultAddr = map[string]string{
	"udp": "127.0.0.1:5060",
	"tcp": "127.0.0.1:5060",
	"tls": "127.0.0.1:5061",
	"ws":  "127.0.0.1:5066",
	"wss": "127.0.0.1:5067",
}

// Default returns the configuration used for every field a file leaves out.
// It listens on loopback only, so an unconfigured node is not exposed: SIP on
// udp and tcp 127.0.0.1:5060 and ws 127.0.0.1:5066, HTTP on 127.0.0.1:8080.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "centralino"
	}
	return &Config{
		NodeID: host,
		Realm:  "lineamica.gov.it",
		Log:    Log{Format: "text", Level: "info"},
		Listen: []Listener{
			{Transport: "udp", Addr: defaultAddr["udp"]},
			{Transport: "tcp", Addr: defaultAddr["tcp"]},
			{Transport: "ws", Addr: defaultAddr["ws"]},
		},
		HTTP:      HTTP{Addr: "127.0.0.1:8080"},
		Directory: Directory{Backend: "memory", WriteBack: Duration(100 * time.Millisecond)},
		Registrar: Registrar{MinExpires: 60, MaxExpires: 3600, DefaultExpires: 600},
		Auth: Auth{
			Algorithms:    []string{"MD5", "SHA-256"},
			NonceTTL:      Duration(5 * time.Minute),
			MaxFailures:   10,
			FailureWindow: Duration(time.Minute),
			BlockFor:      Duration(5 * time.Minute),
			FloodRate:     200,
		},
		Proxy: Proxy{RingTimeout: Duration(60 * time.Second), DrainPeriod: Duration(10 * time.Second)},
		Media: Media{Kernel: "auto", Anchor: "always", PortMin: 30000, PortMax: 39999,
			Timeout: Duration(60 * time.Second), HoldTimeout: Duration(time.Hour)},
		Cluster: Cluster{Transport: "udp", Heartbeat: Duration(5 * time.Second)},
	}
}

//go:embed demo.yaml
var demoYAML []byte

// Demo returns the embedded demo network (demo.yaml), a fresh copy each call.
func Demo() *Config {
	c, err := Parse(demoYAML)
	if err != nil {
		panic("configs: embedded demo.yaml: " + err.Error()) // caught by the tests
	}
	return c
}

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data)
}

// Parse decodes a config over the defaults, validates it and replaces the
// users' plaintext passwords by their HA1s. An empty document is all defaults.
func Parse(data []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && err != io.EOF {
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, errors.New("config: more than one YAML document")
	}
	// A listener that names only its transport gets the transport's port.
	for i, l := range c.Listen {
		if l.Addr == "" {
			c.Listen[i].Addr = defaultAddr[l.Transport]
		}
	}
	for i := range c.Network.Users {
		if c.Network.Users[i].Role == "" {
			c.Network.Users[i].Role = directory.RolePhone
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	for i := range c.Network.Users {
		u := &c.Network.Users[i]
		if u.Password != "" {
			u.SetPassword(c.Realm, u.Password)
			u.Password = ""
		}
	}
	return c, nil
}

var unknownField = regexp.MustCompile(`^(line \d+): field (.+) not found in type \S+$`)

// yamlError turns a yaml.v3 error, possibly several lines, into one line.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			msg = fmt.Sprintf("%s: unknown field %q", m[1], m[2])
		}
	}
	// Messages may quote values that span lines.
	return errors.New("config: " + strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(msg))
}

// Users returns the directory users of the network, with their HA1s.
func (c *Config) Users() []directory.User {
	out := make([]directory.User, 0, len(c.Network.Users))
	for _, u := range c.Network.Users {
		du := u.User
		if u.Password != "" { // a config built in code rather than parsed
			du.SetPassword(c.Realm, u.Password)
		}
		out = append(out, du)
	}
	return out
}

// Agencies returns a copy of the network's agencies.
func (c *Config) Agencies() []directory.Agency {
	out := make([]directory.Agency, len(c.Network.Agencies))
	for i, a := range c.Network.Agencies {
		a.Numbers = slices.Clone(a.Numbers)
		out[i] = a
	}
	return out
}

// TrustedPrefixes returns Auth.Trusted parsed; a single IP is a one-address
// prefix. Entries that do not parse are skipped (Validate reports them).
func (a Auth) TrustedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range a.Trusted {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func parsePrefix(s string) (netip.Prefix, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(ip, ip.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

var (
	transports = []string{"udp", "tcp", "tls", "ws", "wss"}
	sectors    = []string{"general", "health", "tourism", "labour", "pensions", "tax"}
	roles      = []directory.Role{directory.RolePhone, directory.RoleOperator, directory.RoleAdmin}

	nodeIDRe   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	hostRe     = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)
	codeRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_]{0,63}$`)
	usernameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	digitsRe   = regexp.MustCompile(`^[0-9]{1,20}$`)
	hexRe      = regexp.MustCompile(`^[0-9a-f]*$`)
)

// fieldError builds the one-line error of a field path.
func fieldError(path, format string, args ...any) error {
	return fmt.Errorf("config: %s: %s", path, fmt.Sprintf(format, args...))
}

// Validate checks the whole config and returns the first problem found.
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.validateNode, c.validateListen, c.validateServices, c.validateCluster, c.validateAuth,
		c.validateAgencies, c.validateUsers, c.validateTrunks, c.validateModules,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validateModules checks the list's shape; whether each module exists is
// known only to the binary that links them (check-config asks it).
func (c *Config) validateModules() error {
	seen := map[string]bool{}
	for i, m := range c.Modules {
		path := fmt.Sprintf("modules[%d].name", i)
		if m.Name == "" {
			return fieldError(path, "missing")
		}
		if seen[m.Name] {
			return fieldError(path, "%q is enabled twice", m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

func (c *Config) validateNode() error {
	if !nodeIDRe.MatchString(c.NodeID) {
		return fieldError("node_id", "%q must be 1-63 letters, digits, '.', '_' or '-'", c.NodeID)
	}
	if !isHost(c.Realm) {
		return fieldError("realm", "%q is not a domain name", c.Realm)
	}
	if !slices.Contains([]string{"text", "json"}, c.Log.Format) {
		return fieldError("log.format", "%q is not one of text, json", c.Log.Format)
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		return fieldError("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	if c.Advertise != "" && !isHost(c.Advertise) {
		return fieldError("advertise", "%q is not a host name or IP address (no port)", c.Advertise)
	}
	if c.AdvertiseIPv6 != "" {
		if ip, err := netip.ParseAddr(c.AdvertiseIPv6); !isHost(c.AdvertiseIPv6) || err == nil && !ip.Is6() {
			return fieldError("advertise_ipv6", "%q is not an IPv6 address (no brackets, no port) or host name", c.AdvertiseIPv6)
		}
		if ip, err := netip.ParseAddr(c.Advertise); err == nil && ip.Is6() {
			return fieldError("advertise", "%q is IPv6 while advertise_ipv6 is set: give the IPv4 address or a host name", c.Advertise)
		}
	}
	return nil
}

func (c *Config) validateListen() error {
	if len(c.Listen) == 0 {
		return fieldError("listen", "at least one listener is required")
	}
	seen := map[string]int{}
	for i, l := range c.Listen {
		path := fmt.Sprintf("listen[%d]", i)
		if !slices.Contains(transports, l.Transport) {
			return fieldError(path+".transport", "%q is not one of %s", l.Transport, strings.Join(transports, ", "))
		}
		if err := checkAddr(path+".addr", l.Addr); err != nil {
			return err
		}
		key := l.Transport + " " + l.Addr
		if j, dup := seen[key]; dup {
			return fieldError(path, "%s duplicates listen[%d]", key, j)
		}
		seen[key] = i
		for j, o := range c.Listen[:i] {
			if socketKind(o.Transport) == socketKind(l.Transport) && o.Addr != l.Addr && sharesPort(o.Addr, l.Addr) {
				return fieldError(path+".addr", "%q collides with listen[%d] %q: 0.0.0.0, [::] and an empty host listen on every address of both families", l.Addr, j, o.Addr)
			}
		}
		secure := l.Transport == "tls" || l.Transport == "wss"
		for _, f := range []struct{ name, file string }{{"cert_file", l.CertFile}, {"key_file", l.KeyFile}} {
			switch {
			case !secure && f.file != "":
				return fieldError(path+"."+f.name, "only tls and wss listeners use a certificate")
			case secure && f.file == "":
				return fieldError(path+"."+f.name, "required for %s", l.Transport)
			case secure:
				if _, err := os.Stat(f.file); err != nil {
					return fieldError(path+"."+f.name, "%q: %v", f.file, unwrapPathError(err))
				}
			}
		}
	}
	return nil
}

// socketKind is the kind of socket a transport listens on: tcp, tls, ws and
// wss all take a TCP port.
func socketKind(transport string) string {
	if transport == "udp" {
		return "udp"
	}
	return "tcp"
}

// sharesPort reports whether two different listening addresses take the same
// port where one is a wildcard, which Go opens dual-stack on every address.
func sharesPort(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	return pa == pb && (isWildcard(ha) || isWildcard(hb))
}

func isWildcard(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "" || err == nil && ip.IsUnspecified()
}

func (c *Config) validateServices() error {
	if err := checkAddr("http.addr", c.HTTP.Addr); err != nil {
		return err
	}
	switch c.Directory.Backend {
	case "memory":
	case "redis":
		if c.Directory.RedisURL == "" {
			return fieldError("directory.redis_url", "required by the redis backend")
		}
	default:
		return fieldError("directory.backend", "%q is not one of memory, redis", c.Directory.Backend)
	}
	if c.Directory.RedisURL != "" {
		if err := checkRedisURL(c.Directory.RedisURL); err != nil {
			return fieldError("directory.redis_url", "%v", err)
		}
	}
	if w := time.Duration(c.Directory.WriteBack); w < 0 || w > 10*time.Second {
		return fieldError("directory.write_back", "must be from 0 to 10s, got %v", w)
	}
	r := c.Registrar
	if r.MinExpires <= 0 {
		return fieldError("registrar.min_expires", "must be positive, got %d", r.MinExpires)
	}
	if r.DefaultExpires < r.MinExpires {
		return fieldError("registrar.default_expires", "%d is below min_expires %d", r.DefaultExpires, r.MinExpires)
	}
	if r.MaxExpires < r.DefaultExpires {
		return fieldError("registrar.max_expires", "%d is below default_expires %d", r.MaxExpires, r.DefaultExpires)
	}
	if c.Proxy.RingTimeout <= 0 {
		return fieldError("proxy.ring_timeout", "must be positive, got %s", c.Proxy.RingTimeout)
	}
	if c.Proxy.DrainPeriod < 0 {
		return fieldError("proxy.drain_period", "must not be negative, got %s", c.Proxy.DrainPeriod)
	}
	if c.Proxy.MaxCallRate < 0 {
		return fieldError("proxy.max_call_rate", "must not be negative (0 disables the cap), got %v", c.Proxy.MaxCallRate)
	}
	return c.validateMedia()
}

var (
	anchorPolicies = []string{"always", "nat", "never"}
	kernelModes    = []string{"auto", "on", "off"}
)

func (c *Config) validateMedia() error {
	m := c.Media
	if !slices.Contains(anchorPolicies, m.Anchor) {
		return fieldError("media.anchor", "%q is not one of %s", m.Anchor, strings.Join(anchorPolicies, ", "))
	}
	if m.PortMin < 1024 || m.PortMin%2 != 0 {
		return fieldError("media.port_min", "must be an even port from 1024, got %d", m.PortMin)
	}
	if m.PortMax > 65535 || m.PortMax <= m.PortMin {
		return fieldError("media.port_max", "must be above port_min and at most 65535, got %d", m.PortMax)
	}
	if m.Advertise != "" {
		if _, err := netip.ParseAddr(m.Advertise); err != nil {
			return fieldError("media.advertise", "%q is not an IP address", m.Advertise)
		}
	}
	if m.AdvertiseIPv6 != "" {
		if ip, err := netip.ParseAddr(m.AdvertiseIPv6); err != nil || !ip.Is6() || ip.Is4In6() {
			return fieldError("media.advertise_ipv6", "%q is not an IPv6 address (no brackets)", m.AdvertiseIPv6)
		}
		if ip, _ := netip.ParseAddr(m.Advertise); ip.Is6() {
			return fieldError("media.advertise", "%q is IPv6 while advertise_ipv6 is set: give the IPv4 address", m.Advertise)
		}
	}
	if !slices.Contains(kernelModes, m.Kernel) {
		return fieldError("media.kernel", "%q is not one of %s", m.Kernel, strings.Join(kernelModes, ", "))
	}
	if m.Timeout <= 0 {
		return fieldError("media.timeout", "must be positive, got %s", m.Timeout)
	}
	if m.HoldTimeout < m.Timeout {
		return fieldError("media.hold_timeout", "%s is below timeout %s", m.HoldTimeout, m.Timeout)
	}
	for i, a := range c.Network.Agencies {
		if a.Media != "" && !slices.Contains(anchorPolicies, a.Media) {
			return fieldError(fmt.Sprintf("network.agencies[%d].media", i), "%q is not one of %s", a.Media, strings.Join(anchorPolicies, ", "))
		}
	}
	if c.RelayUsed() {
		_, _, err := c.MediaAddresses()
		return err
	}
	return nil
}

// RelayUsed reports whether any call may be anchored: the switch's policy
// or an agency's is not never.
func (c *Config) RelayUsed() bool {
	used := c.Media.Anchor != "never"
	for _, a := range c.Network.Agencies {
		used = used || a.Media == "always" || a.Media == "nat"
	}
	return used
}

// MediaAddresses are the IPv4 and IPv6 addresses the relay binds and
// writes in SDP (invalid: the family is not relayed). For each family:
// media's advertise, else the SIP advertise address, else the first
// listener's specific address of the family. An IPv6 listener (even [::])
// makes the relay serve IPv6 too.
func (c *Config) MediaAddresses() (v4, v6 netip.Addr, err error) {
	wantV6 := false
	for _, host := range []string{c.Media.Advertise, c.Media.AdvertiseIPv6, c.Advertise, c.AdvertiseIPv6} {
		if ip, err := netip.ParseAddr(host); err == nil {
			v4, v6 = firstOfFamily(v4, v6, ip)
		}
	}
	for _, l := range c.Listen {
		host, _, _ := net.SplitHostPort(l.Addr)
		ip, err := netip.ParseAddr(host)
		if err != nil {
			continue
		}
		wantV6 = wantV6 || ip.Is6()
		if !ip.IsUnspecified() {
			v4, v6 = firstOfFamily(v4, v6, ip)
		}
	}
	switch {
	case !v4.IsValid() && !v6.IsValid():
		return v4, v6, fieldError("media.advertise", "required when SIP listens on 0.0.0.0, [::] or a host name")
	case wantV6 && !v6.IsValid():
		return v4, v6, fieldError("media.advertise_ipv6", "required when SIP listens on [::]")
	}
	return v4, v6, nil
}

func firstOfFamily(v4, v6, ip netip.Addr) (netip.Addr, netip.Addr) {
	ip = ip.Unmap()
	switch {
	case ip.Is4() && !v4.IsValid():
		v4 = ip
	case ip.Is6() && !v6.IsValid():
		v6 = ip
	}
	return v4, v6
}

func (c *Config) validateAuth() error {
	a := c.Auth
	if len(a.Algorithms) == 0 {
		return fieldError("auth.algorithms", "must list at least one of MD5, SHA-256")
	}
	seen := map[string]bool{}
	for i, alg := range a.Algorithms {
		if alg != "MD5" && alg != "SHA-256" || seen[alg] {
			return fieldError(fmt.Sprintf("auth.algorithms[%d]", i), "%q is not one of MD5, SHA-256, or is repeated", alg)
		}
		seen[alg] = true
	}
	if a.NonceTTL <= 0 {
		return fieldError("auth.nonce_ttl", "must be positive, got %s", a.NonceTTL)
	}
	for i, s := range a.Trusted {
		if _, err := parsePrefix(s); err != nil {
			return fieldError(fmt.Sprintf("auth.trusted[%d]", i), "invalid CIDR %q", s)
		}
	}
	if a.FloodRate < 0 {
		return fieldError("auth.flood_rate", "must not be negative (0 disables the limit), got %v", a.FloodRate)
	}
	if a.MaxFailures < 0 {
		return fieldError("auth.max_failures", "must not be negative (0 disables blocking), got %d", a.MaxFailures)
	}
	if a.MaxFailures > 0 {
		if a.FailureWindow <= 0 {
			return fieldError("auth.failure_window", "must be positive, got %s", a.FailureWindow)
		}
		if a.BlockFor <= 0 {
			return fieldError("auth.block_for", "must be positive, got %s", a.BlockFor)
		}
	}
	return nil
}

func (c *Config) validateAgencies() error {
	codes := map[string]int{}   // code -> index
	numbers := map[string]int{} // public number -> agency index
	for i, a := range c.Network.Agencies {
		path := fmt.Sprintf("network.agencies[%d]", i)
		if !codeRe.MatchString(a.Code) {
			return fieldError(path+".code", "%q is not an IPA code (letters, digits and '_')", a.Code)
		}
		if j, dup := codes[a.Code]; dup {
			return fieldError(path+".code", "%q duplicates network.agencies[%d]", a.Code, j)
		}
		codes[a.Code] = i
		if strings.TrimSpace(a.Name) == "" {
			return fieldError(path+".name", "required")
		}
		if !slices.Contains(sectors, a.Sector) {
			return fieldError(path+".sector", "%q is not one of %s", a.Sector, strings.Join(sectors, ", "))
		}
		if !digitsRe.MatchString(a.Prefix) {
			return fieldError(path+".prefix", "%q must be digits only", a.Prefix)
		}
		// Prefixes must be prefix-free, so a dialled number has one agency.
		for _, b := range c.Network.Agencies[:i] {
			if strings.HasPrefix(b.Prefix, a.Prefix) || strings.HasPrefix(a.Prefix, b.Prefix) {
				return fieldError(path+".prefix", "%q overlaps prefix %q of agency %q", a.Prefix, b.Prefix, b.Code)
			}
		}
		for k, n := range a.Numbers {
			npath := fmt.Sprintf("%s.numbers[%d]", path, k)
			if !digitsRe.MatchString(n) {
				return fieldError(npath, "%q must be digits only", n)
			}
			if j, dup := numbers[n]; dup {
				return fieldError(npath, "%q is already a number of agency %q", n, c.Network.Agencies[j].Code)
			}
			numbers[n] = i
		}
	}
	for i, a := range c.Network.Agencies {
		if _, ok := codes[a.Overflow]; a.Overflow != "" && !ok {
			return fieldError(fmt.Sprintf("network.agencies[%d].overflow", i), "unknown agency %q", a.Overflow)
		}
	}
	for i, a := range c.Network.Agencies {
		chain := []string{a.Code}
		for next := a.Overflow; next != ""; next = c.Network.Agencies[codes[next]].Overflow {
			if k := slices.Index(chain, next); k >= 0 {
				chain = append(chain[k:], next)
				return fieldError(fmt.Sprintf("network.agencies[%d].overflow", i), "overflow cycle %s", strings.Join(chain, " -> "))
			}
			chain = append(chain, next)
		}
	}
	return nil
}

func (c *Config) validateUsers() error {
	agencies := map[string]directory.Agency{}
	public := map[string]string{} // public number -> agency code
	for _, a := range c.Network.Agencies {
		agencies[a.Code] = a
		for _, n := range a.Numbers {
			public[n] = a.Code
		}
	}
	usernames := map[string]int{}
	full := map[string]int{} // prefix+extension -> user index
	for i, u := range c.Network.Users {
		path := fmt.Sprintf("network.users[%d]", i)
		if u.Media != "" && u.Media != "rtp" && u.Media != "srtp" {
			return fieldError(path+".media", "%q is not one of rtp, srtp", u.Media)
		}
		if !usernameRe.MatchString(u.Username) {
			return fieldError(path+".username", "%q must be 1-64 letters, digits, '.', '_' or '-'", u.Username)
		}
		if j, dup := usernames[u.Username]; dup {
			return fieldError(path+".username", "%q duplicates network.users[%d]", u.Username, j)
		}
		usernames[u.Username] = i
		// The display name is quoted into From headers.
		if strings.ContainsFunc(u.DisplayName, func(r rune) bool { return r < ' ' || r == '"' || r == '\\' || r == 0x7f }) {
			return fieldError(path+".display_name", "%q must not contain quotes, backslashes or control characters", u.DisplayName)
		}
		a, ok := agencies[u.Agency]
		if !ok {
			return fieldError(path+".agency", "unknown agency %q", u.Agency)
		}
		if !slices.Contains(roles, u.Role) {
			return fieldError(path+".role", "%q is not one of phone, operator, admin", u.Role)
		}
		if !digitsRe.MatchString(u.Extension) {
			return fieldError(path+".extension", "%q must be digits only", u.Extension)
		}
		number := a.Prefix + u.Extension
		if j, dup := full[number]; dup {
			return fieldError(path+".extension", "%q duplicates network.users[%d] in agency %q", u.Extension, j, u.Agency)
		}
		if code, dup := public[number]; dup {
			return fieldError(path+".extension", "full number %s is a public number of agency %q", number, code)
		}
		full[number] = i
		if err := checkSecret(path, u); err != nil {
			return err
		}
	}
	return nil
}

// checkSecret wants a password or both HA1s, never both kinds.
func checkSecret(path string, u User) error {
	hasHA1 := u.HA1MD5 != "" || u.HA1SHA256 != ""
	switch {
	case u.Password != "" && hasHA1:
		return fieldError(path+".password", "set either password or ha1_md5 and ha1_sha256, not both")
	case u.Password != "":
		return nil
	case !hasHA1:
		return fieldError(path, "needs a password or both ha1_md5 and ha1_sha256")
	}
	for _, h := range []struct {
		name, value string
		size        int
	}{{"ha1_md5", u.HA1MD5, 32}, {"ha1_sha256", u.HA1SHA256, 64}} {
		if len(h.value) != h.size || !hexRe.MatchString(h.value) {
			return fieldError(path+"."+h.name, "want %d lowercase hex digits", h.size)
		}
	}
	return nil
}

// checkAddr wants host:port with a numeric port; an empty host means all interfaces.
func (c *Config) validateCluster() error {
	cl := c.Cluster
	if cl.Secret != "" || cl.SecretFile != "" {
		if c.Directory.Backend != "redis" {
			return fieldError("cluster", "several nodes share a redis directory: set directory.backend to redis")
		}
		if _, err := cl.SecretBytes(); err != nil {
			return err
		}
	}
	if !slices.Contains([]string{"udp", "tcp", "tls"}, cl.Transport) {
		return fieldError("cluster.transport", "%q is not one of udp, tcp, tls", cl.Transport)
	}
	if cl.Heartbeat < Duration(100*time.Millisecond) {
		return fieldError("cluster.heartbeat", "must be at least 100ms, got %s", cl.Heartbeat)
	}
	if cl.Address != "" {
		return checkAddr("cluster.address", cl.Address)
	}
	if cl.Secret == "" && cl.SecretFile == "" {
		return nil
	}
	_, err := c.NodeAddress()
	return err
}

// SecretBytes returns the cluster secret, read from SecretFile if need be;
// nil when none is set.
func (cl Cluster) SecretBytes() ([]byte, error) {
	secret := cl.Secret
	switch {
	case cl.Secret != "" && cl.SecretFile != "":
		return nil, fieldError("cluster.secret_file", "give secret or secret_file, not both")
	case cl.SecretFile != "":
		data, err := os.ReadFile(cl.SecretFile)
		if err != nil {
			return nil, fieldError("cluster.secret_file", "%q: %v", cl.SecretFile, unwrapPathError(err))
		}
		secret = strings.TrimSpace(string(data))
	case secret == "":
		return nil, nil
	}
	// The message never quotes the secret.
	if len(secret) < 16 {
		return nil, fieldError("cluster.secret", "must be at least 16 characters, got %d", len(secret))
	}
	return []byte(secret), nil
}

// NodeAddress is the host:port the other nodes reach this one at, over
// Cluster.Transport.
func (c *Config) NodeAddress() (string, error) {
	if c.Cluster.Address != "" {
		return c.Cluster.Address, nil
	}
	for _, l := range c.Listen {
		if l.Transport != c.Cluster.Transport {
			continue
		}
		host, port, _ := net.SplitHostPort(l.Addr)
		if c.Advertise != "" {
			host = c.Advertise
		}
		if ip, err := netip.ParseAddr(host); host == "" || err == nil && ip.IsUnspecified() {
			return "", fieldError("cluster.address", "required when SIP listens on %s without advertise", l.Addr)
		}
		return net.JoinHostPort(host, port), nil
	}
	return "", fieldError("cluster.transport", "no %s listener for the other nodes to reach", c.Cluster.Transport)
}

func checkAddr(path, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fieldError(path, "%q is not host:port", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fieldError(path, "%q: invalid port %q", addr, port)
	}
	if host != "" && !isHost(host) {
		return fieldError(path, "%q: invalid host %q", addr, host)
	}
	return nil
}

func isHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return len(s) <= 253 && hostRe.MatchString(s)
}

// checkRedisURL accepts the URL forms go-redis parses.
func checkRedisURL(s string) error {
	// Messages never quote the URL: it may hold a password.
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return errors.New("no host")
		}
	case "unix":
		if u.Path == "" {
			return errors.New("no socket path")
		}
	default:
		return fmt.Errorf("scheme %q is not one of redis, rediss, unix", u.Scheme)
	}
	return nil
}

// unwrapPathError drops the path that the caller's message already quotes.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
