package configs

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/modules"
	"github.com/lineamica/centralino/routing/directory"
)

// checkOneLine fails unless err is a one-line config error containing want.
func checkOneLine(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "config: ") || strings.Contains(msg, "\n") {
		t.Errorf("error %q is not one line starting with \"config: \"", msg)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
}

// clustered makes c a node of several sharing a Redis directory.
func clustered(c *Config) {
	c.Directory = Directory{Backend: "redis", RedisURL: "redis://127.0.0.1:6379/0"}
	c.Cluster.Secret = "0123456789abcdef"
}

func TestNodeAddress(t *testing.T) {
	c := Demo()
	clustered(c)
	for _, tt := range []struct {
		edit func(c *Config)
		want string
	}{
		{func(c *Config) {}, "127.0.0.1:5060"},
		{func(c *Config) { c.Advertise = "sip-napoli-1.lineamica.gov.it" }, "sip-napoli-1.lineamica.gov.it:5060"},
		{func(c *Config) { c.Cluster.Address = "10.20.0.7:5070" }, "10.20.0.7:5070"},
	} {
		tt.edit(c)
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		if got, err := c.NodeAddress(); got != tt.want || err != nil {
			t.Errorf("NodeAddress = %q, %v; want %q", got, err, tt.want)
		}
	}
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("a secret of the network\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Cluster.Secret, c.Cluster.SecretFile = "", file
	if got, err := c.Cluster.SecretBytes(); string(got) != "a secret of the network" || err != nil {
		t.Errorf("SecretBytes from a file = %q, %v", got, err)
	}
}

// IPv6 listeners beside IPv4 ones: the relay serves the families the
// switch listens on, at the addresses advertised or listened on.
func TestIPv6Listeners(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		v4, v6     string
	}{
		{"loopback of both families", `
listen:
  - {transport: udp, addr: "127.0.0.1:5060"}
  - {transport: udp, addr: "[::1]:5060"}
  - {transport: tcp, addr: "[::1]:5060"}
`, "127.0.0.1", "::1"},
		{"IPv6 wildcard with advertise_ipv6", `
listen: [{transport: udp, addr: "[::]:5060"}, {transport: tcp, addr: "[::]:5060"}]
advertise: sip.example.it
advertise_ipv6: 2001:db8::7
`, "", "2001:db8::7"},
		{"media addresses of both families", `
listen: [{transport: udp, addr: "0.0.0.0:5060"}]
advertise: 198.51.100.7
media: {advertise: 198.51.100.8, advertise_ipv6: "2001:db8::8"}
`, "198.51.100.8", "2001:db8::8"},
		{"an IPv6 media advertise alone, as before", `
listen: [{transport: udp, addr: "[2001:db8::1]:5060"}]
media: {advertise: "2001:db8::9"}
`, "", "2001:db8::9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			v4, v6, err := c.MediaAddresses()
			if err != nil || addrText(v4) != tt.v4 || addrText(v6) != tt.v6 {
				t.Errorf("MediaAddresses = %v, %v, %v; want %q, %q", v4, v6, err, tt.v4, tt.v6)
			}
		})
	}
}

func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func TestValidateErrors(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Demo users 0..2 are lineamica, 3..5 r_campan; agencies 0 lineamica, 1 r_campan, 2 asl_na1.
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string
	}{
		{"node id", func(c *Config) { c.NodeID = "node 1" }, `node_id: "node 1"`},
		{"realm", func(c *Config) { c.Realm = "" }, `realm: "" is not a domain name`},
		{"log format", func(c *Config) { c.Log.Format = "xml" }, `log.format: "xml" is not one of text, json`},
		{"log level", func(c *Config) { c.Log.Level = "trace" }, `log.level: "trace"`},
		{"advertise with port", func(c *Config) { c.Advertise = "sip.example.it:5060" }, `advertise: "sip.example.it:5060"`},
		{"no listener", func(c *Config) { c.Listen = nil }, `listen: at least one listener is required`},
		{"transport", func(c *Config) { c.Listen[1].Transport = "sctp" },
			`config: listen[1].transport: "sctp" is not one of udp, tcp, tls, ws, wss`},
		{"addr without port", func(c *Config) { c.Listen[0].Addr = "127.0.0.1" }, `listen[0].addr: "127.0.0.1" is not host:port`},
		{"port range", func(c *Config) { c.Listen[0].Addr = "127.0.0.1:70000" }, `listen[0].addr: "127.0.0.1:70000": invalid port`},
		{"bad host", func(c *Config) { c.Listen[2].Addr = "local_host:5066" }, `listen[2].addr: "local_host:5066": invalid host`},
		{"duplicate listener", func(c *Config) { c.Listen = append(c.Listen, Listener{Transport: "udp", Addr: "127.0.0.1:5060"}) },
			`listen[3]: udp 127.0.0.1:5060 duplicates listen[0]`},
		{"tls without cert", func(c *Config) { c.Listen = append(c.Listen, Listener{Transport: "tls", Addr: ":5061"}) },
			`listen[3].cert_file: required for tls`},
		{"wss without key", func(c *Config) {
			c.Listen = append(c.Listen, Listener{Transport: "wss", Addr: ":5067", CertFile: cert})
		}, `listen[3].key_file: required for wss`},
		{"tls missing file", func(c *Config) {
			c.Listen = append(c.Listen, Listener{Transport: "tls", Addr: ":5061", CertFile: cert, KeyFile: filepath.Join(dir, "nope.pem")})
		}, `listen[3].key_file: "` + filepath.Join(dir, "nope.pem") + `": no such file`},
		{"cert on udp", func(c *Config) { c.Listen[0].CertFile = cert }, `listen[0].cert_file: only tls and wss listeners use a certificate`},
		{"http addr", func(c *Config) { c.HTTP.Addr = "8080" }, `http.addr: "8080" is not host:port`},
		{"backend", func(c *Config) { c.Directory.Backend = "etcd" }, `directory.backend: "etcd" is not one of memory, redis`},
		{"redis without url", func(c *Config) { c.Directory.Backend = "redis" }, `directory.redis_url: required by the redis backend`},
		{"redis url scheme", func(c *Config) {
			c.Directory = Directory{Backend: "redis", RedisURL: "http://u:secret@redis:6379"}
		}, `directory.redis_url: scheme "http" is not one of redis, rediss, unix`},
		{"redis url host", func(c *Config) { c.Directory = Directory{Backend: "redis", RedisURL: "redis:///0"} }, `directory.redis_url: no host`},
		{"write back", func(c *Config) { c.Directory.WriteBack = Duration(-time.Second) }, `directory.write_back: must be from 0 to 10s, got -1s`},
		{"unix url path", func(c *Config) { c.Directory = Directory{Backend: "redis", RedisURL: "unix://"} }, `directory.redis_url: no socket path`},
		{"cluster without redis", func(c *Config) { c.Cluster.Secret = "0123456789abcdef" },
			`cluster: several nodes share a redis directory: set directory.backend to redis`},
		{"short cluster secret", func(c *Config) { clustered(c); c.Cluster.Secret = "hunter2" },
			`cluster.secret: must be at least 16 characters, got 7`},
		{"secret and file", func(c *Config) { clustered(c); c.Cluster.SecretFile = cert },
			`cluster.secret_file: give secret or secret_file, not both`},
		{"missing secret file", func(c *Config) {
			clustered(c)
			c.Cluster.Secret, c.Cluster.SecretFile = "", filepath.Join(dir, "nope")
		}, `cluster.secret_file: "` + filepath.Join(dir, "nope") + `": no such file`},
		{"cluster transport", func(c *Config) { clustered(c); c.Cluster.Transport = "ws" },
			`cluster.transport: "ws" is not one of udp, tcp, tls`},
		{"no cluster listener", func(c *Config) { clustered(c); c.Cluster.Transport = "tls" },
			`cluster.transport: no tls listener for the other nodes to reach`},
		{"cluster address needed", func(c *Config) { clustered(c); c.Listen[0].Addr = "0.0.0.0:5060" },
			`cluster.address: required when SIP listens on 0.0.0.0:5060 without advertise`},
		{"cluster address", func(c *Config) { clustered(c); c.Cluster.Address = "node-1" },
			`cluster.address: "node-1" is not host:port`},
		{"heartbeat", func(c *Config) { c.Cluster.Heartbeat = Duration(time.Millisecond) },
			`cluster.heartbeat: must be at least 100ms, got 1ms`},
		{"min expires", func(c *Config) { c.Registrar.MinExpires = 0 }, `registrar.min_expires: must be positive`},
		{"default below min", func(c *Config) { c.Registrar.DefaultExpires = 30 }, `registrar.default_expires: 30 is below min_expires 60`},
		{"max below default", func(c *Config) { c.Registrar.MaxExpires = 300 }, `registrar.max_expires: 300 is below default_expires 600`},
		{"ring timeout", func(c *Config) { c.Proxy.RingTimeout = 0 }, `proxy.ring_timeout: must be positive`},
		{"drain period", func(c *Config) { c.Proxy.DrainPeriod = Duration(-time.Second) }, `proxy.drain_period: must not be negative, got -1s`},
		{"call rate", func(c *Config) { c.Proxy.MaxCallRate = -1 }, `proxy.max_call_rate: must not be negative (0 disables the cap), got -1`},
		{"nonce ttl", func(c *Config) { c.Auth.NonceTTL = 0 }, `auth.nonce_ttl: must be positive`},
		{"no algorithm", func(c *Config) { c.Auth.Algorithms = nil }, `auth.algorithms: must list at least one`},
		{"media anchor", func(c *Config) { c.Media.Anchor = "sometimes" }, `media.anchor: "sometimes" is not one of always, nat, never`},
		{"media kernel", func(c *Config) { c.Media.Kernel = "yes" }, `media.kernel: "yes" is not one of auto, on, off`},
		{"odd media port", func(c *Config) { c.Media.PortMin = 30001 }, `media.port_min: must be an even port`},
		{"media advertise", func(c *Config) { c.Media.Advertise = "relay.example" }, `media.advertise: "relay.example" is not an IP address`},
		{"advertise_ipv6 of IPv4", func(c *Config) { c.AdvertiseIPv6 = "192.0.2.1" }, `advertise_ipv6: "192.0.2.1" is not an IPv6 address`},
		{"advertise_ipv6 in brackets", func(c *Config) { c.AdvertiseIPv6 = "[2001:db8::1]" }, `advertise_ipv6: "[2001:db8::1]" is not an IPv6 address`},
		{"two IPv6 advertise", func(c *Config) { c.Advertise, c.AdvertiseIPv6 = "2001:db8::1", "2001:db8::2" },
			`advertise: "2001:db8::1" is IPv6 while advertise_ipv6 is set`},
		{"media advertise_ipv6", func(c *Config) { c.Media.AdvertiseIPv6 = "192.0.2.1" }, `media.advertise_ipv6: "192.0.2.1" is not an IPv6 address`},
		{"wildcard beside an address", func(c *Config) { c.Listen = append(c.Listen, Listener{Transport: "udp", Addr: "[::]:5060"}) },
			`listen[3].addr: "[::]:5060" collides with listen[0] "127.0.0.1:5060"`},
		{"wildcard beside ws", func(c *Config) {
			c.Listen = append(c.Listen, Listener{Transport: "tls", Addr: ":5066", CertFile: cert, KeyFile: cert})
		},
			`listen[3].addr: ":5066" collides with listen[2] "127.0.0.1:5066"`},
		{"IPv6 wildcard without media address", func(c *Config) { c.Listen[0].Addr = "[::]:5060" },
			`media.advertise_ipv6: required when SIP listens on [::]`},
		{"no media address", func(c *Config) {
			c.Listen = []Listener{{Transport: "udp", Addr: "0.0.0.0:5060"}}
		}, `media.advertise: required when SIP listens on 0.0.0.0, [::] or a host name`},
		{"agency media", func(c *Config) { c.Network.Agencies[0].Media = "maybe" }, `network.agencies[0].media: "maybe" is not one of`},
		{"user media", func(c *Config) { c.Network.Users[0].Media = "zrtp" }, `network.users[0].media: "zrtp" is not one of rtp, srtp`},
		{"module twice", func(c *Config) { c.Modules = []modules.Config{{Name: "sla"}, {Name: "sla"}} }, `modules[1].name: "sla" is enabled twice`},
		{"unknown algorithm", func(c *Config) { c.Auth.Algorithms = []string{"MD5", "SHA-1"} }, `auth.algorithms[1]: "SHA-1" is not one of MD5, SHA-256`},
		{"trusted CIDR", func(c *Config) { c.Auth.Trusted = []string{"10.0.0/8"} }, `config: auth.trusted[0]: invalid CIDR "10.0.0/8"`},
		{"max failures", func(c *Config) { c.Auth.MaxFailures = -1 }, `auth.max_failures: must not be negative`},
		{"failure window", func(c *Config) { c.Auth.FailureWindow = 0 }, `auth.failure_window: must be positive`},
		{"block for", func(c *Config) { c.Auth.BlockFor = 0 }, `auth.block_for: must be positive`},
		{"agency code", func(c *Config) { c.Network.Agencies[1].Code = "r-campan" }, `network.agencies[1].code: "r-campan" is not an IPA code`},
		{"duplicate agency", func(c *Config) { c.Network.Agencies[2].Code = "r_campan" },
			`network.agencies[2].code: "r_campan" duplicates network.agencies[1]`},
		{"agency name", func(c *Config) { c.Network.Agencies[1].Name = " " }, `network.agencies[1].name: required`},
		{"sector", func(c *Config) { c.Network.Agencies[1].Sector = "sport" }, `network.agencies[1].sector: "sport" is not one of general`},
		{"prefix digits", func(c *Config) { c.Network.Agencies[1].Prefix = "81a0" }, `network.agencies[1].prefix: "81a0" must be digits only`},
		{"duplicate prefix", func(c *Config) { c.Network.Agencies[2].Prefix = "8100" },
			`network.agencies[2].prefix: "8100" overlaps prefix "8100" of agency "r_campan"`},
		{"overlapping prefix", func(c *Config) { c.Network.Agencies[2].Prefix = "81" },
			`network.agencies[2].prefix: "81" overlaps prefix "8100" of agency "r_campan"`},
		{"number digits", func(c *Config) { c.Network.Agencies[1].Numbers = []string{"+39 081"} },
			`network.agencies[1].numbers[0]: "+39 081" must be digits only`},
		{"duplicate number", func(c *Config) { c.Network.Agencies[2].Numbers = append(c.Network.Agencies[2].Numbers, "803001") },
			`network.agencies[2].numbers[1]: "803001" is already a number of agency "lineamica"`},
		{"unknown overflow", func(c *Config) { c.Network.Agencies[1].Overflow = "lineamic" },
			`network.agencies[1].overflow: unknown agency "lineamic"`},
		{"self overflow", func(c *Config) { c.Network.Agencies[0].Overflow = "lineamica" },
			`network.agencies[0].overflow: overflow cycle lineamica -> lineamica`},
		{"overflow cycle", func(c *Config) { c.Network.Agencies[0].Overflow = "r_campan" },
			`network.agencies[0].overflow: overflow cycle lineamica -> r_campan -> lineamica`},
		{"username", func(c *Config) { c.Network.Users[3].Username = "campania esposito" },
			`network.users[3].username: "campania esposito"`},
		{"duplicate username", func(c *Config) { c.Network.Users[4].Username = "campania.esposito" },
			`network.users[4].username: "campania.esposito" duplicates network.users[3]`},
		{"display name", func(c *Config) { c.Network.Users[3].DisplayName = "Gennaro \"Rino\"" },
			`network.users[3].display_name:`},
		{"unknown agency", func(c *Config) { c.Network.Users[3].Agency = "r_campa" },
			`config: network.users[3].agency: unknown agency "r_campa"`},
		{"role", func(c *Config) { c.Network.Users[3].Role = "boss" }, `network.users[3].role: "boss" is not one of phone, operator, admin`},
		{"extension digits", func(c *Config) { c.Network.Users[3].Extension = "1O1" }, `network.users[3].extension: "1O1" must be digits only`},
		{"duplicate extension", func(c *Config) { c.Network.Users[4].Extension = "101" },
			`network.users[4].extension: "101" duplicates network.users[3] in agency "r_campan"`},
		{"extension is a public number", func(c *Config) { c.Network.Users[3].Extension = "000" },
			`network.users[3].extension: full number 8100000 is a public number of agency "r_campan"`},
		{"no secret", func(c *Config) { c.Network.Users[3].HA1MD5, c.Network.Users[3].HA1SHA256 = "", "" },
			`network.users[3]: needs a password or both ha1_md5 and ha1_sha256`},
		{"password and HA1", func(c *Config) { c.Network.Users[3].Password = "secret" },
			`network.users[3].password: set either password or ha1_md5 and ha1_sha256, not both`},
		{"one HA1", func(c *Config) { c.Network.Users[3].HA1SHA256 = "" }, `network.users[3].ha1_sha256: want 64 lowercase hex digits`},
		{"uppercase HA1", func(c *Config) { c.Network.Users[3].HA1MD5 = strings.ToUpper(c.Network.Users[3].HA1MD5) },
			`network.users[3].ha1_md5: want 32 lowercase hex digits`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Demo()
			tt.mutate(c)
			checkOneLine(t, c.Validate(), tt.want)
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown field", "node_id: a\nnodeid: b\n", `config: line 2: unknown field "nodeid"`},
		{"unknown nested field", "auth:\n  nonce_tl: 5m\n", `config: line 2: unknown field "nonce_tl"`},
		{"unknown user field", "network:\n  users:\n    - {username: a, pasword: x}\n", `line 3: unknown field "pasword"`},
		{"syntax", "realm: a\nlisten: [\n", `config: line 2: did not find expected node content`},
		{"bad indentation", "realm: a\n  log: x\n", `line 2:`},
		{"duration", "proxy:\n  ring_timeout: 30\n", `config: line 2: invalid duration "30"`},
		{"duplicate key", "realm: a\nrealm: b\n", `line 2: mapping key "realm" already defined at line 1`},
		{"type", "registrar: {min_expires: soon}\n", "config: line 1: cannot unmarshal !!str `soon` into int"},
		{"two documents", "realm: a\n---\nrealm: b\n", `config: more than one YAML document`},
		{"validation", "listen:\n  - {transport: sctp}\n", `config: listen[0].transport: "sctp" is not one of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			checkOneLine(t, err, tt.want)
		})
	}
}

func TestDemo(t *testing.T) {
	c := Demo()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Realm != "lineamica.gov.it" {
		t.Errorf("realm = %q", c.Realm)
	}
	want := map[string]string{ // code -> sector
		"lineamica": "general", "r_campan": "general", "r_puglia": "general",
		"asl_na1": "health", "inps": "pensions", "age": "tax",
	}
	regions := map[string]bool{}
	for _, a := range c.Agencies() {
		regions[a.Region] = true
		if sector, ok := want[a.Code]; ok && a.Sector != sector {
			t.Errorf("agency %s: sector %q, want %q", a.Code, a.Sector, sector)
		}
		delete(want, a.Code)
		if len(a.Numbers) != 1 {
			t.Errorf("agency %s: %d public numbers, want 1", a.Code, len(a.Numbers))
		}
		if a.Code != "lineamica" && a.Overflow != "lineamica" {
			t.Errorf("agency %s overflows to %q, want lineamica", a.Code, a.Overflow)
		}
	}
	if len(want) > 0 {
		t.Errorf("demo lacks agencies %v", want)
	}
	if !regions[""] || !regions["Campania"] || !regions["Puglia"] {
		t.Errorf("demo regions = %v, want the centre, Campania and Puglia", regions)
	}

	users, operators := map[string]int{}, map[string]int{}
	for _, u := range c.Users() {
		users[u.Agency]++
		if u.Role == directory.RoleOperator {
			operators[u.Agency]++
		}
		if got, want := u.HA1MD5, directory.HA1("MD5", u.Username, c.Realm, "demo-"+u.Username); got != want {
			t.Errorf("user %s: ha1_md5 = %s, want %s", u.Username, got, want)
		}
		if got, want := u.HA1SHA256, directory.HA1("SHA-256", u.Username, c.Realm, "demo-"+u.Username); got != want {
			t.Errorf("user %s: ha1_sha256 = %s, want %s", u.Username, got, want)
		}
	}
	for _, a := range c.Network.Agencies {
		if users[a.Code] < 2 || operators[a.Code] < 1 {
			t.Errorf("agency %s: %d users, %d operators; want at least 2 and 1", a.Code, users[a.Code], operators[a.Code])
		}
	}
	for _, u := range c.Network.Users {
		if u.Password != "" {
			t.Errorf("user %s keeps its plaintext password after Parse", u.Username)
		}
	}
}

func TestDemoIsFresh(t *testing.T) {
	a := Demo()
	a.Network.Agencies[0].Numbers[0] = "999"
	a.Agencies()[1].Numbers[0] = "998"
	if b := Demo(); b.Network.Agencies[0].Numbers[0] != "803001" || b.Agencies()[1].Numbers[0] != "8100000" {
		t.Error("Demo or Agencies shares memory between calls")
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Parse(empty) = %+v, want Default() %+v", c, Default())
	}
	if c.NodeID == "" || c.Realm != "lineamica.gov.it" || c.HTTP.Addr != "127.0.0.1:8080" ||
		c.Directory.Backend != "memory" || time.Duration(c.Auth.NonceTTL) != 5*time.Minute ||
		time.Duration(c.Proxy.RingTimeout) != time.Minute || c.Registrar.DefaultExpires != 600 {
		t.Errorf("unexpected defaults %+v", c)
	}

	c, err = Parse([]byte(`
registrar: {max_expires: 7200}
auth: {max_failures: 0}
listen:
  - transport: tcp
  - transport: ws
    addr: 0.0.0.0:8088
network:
  agencies: [{code: a, name: A, sector: general, prefix: "1"}]
  users: [{username: u, agency: a, extension: "1", password: p}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Registrar; r.MinExpires != 60 || r.DefaultExpires != 600 || r.MaxExpires != 7200 {
		t.Errorf("registrar = %+v, want the defaults but max_expires", r)
	}
	if c.Auth.MaxFailures != 0 {
		t.Errorf("an explicit max_failures: 0 became %d", c.Auth.MaxFailures)
	}
	wantListen := []Listener{{Transport: "tcp", Addr: "127.0.0.1:5060"}, {Transport: "ws", Addr: "0.0.0.0:8088"}}
	if !reflect.DeepEqual(c.Listen, wantListen) {
		t.Errorf("listen = %+v, want %+v", c.Listen, wantListen)
	}
	if u := c.Users()[0]; u.Role != directory.RolePhone {
		t.Errorf("default role = %q, want phone", u.Role)
	}
}

func TestHA1Kept(t *testing.T) {
	md5 := directory.HA1("MD5", "u", "example.it", "pw")
	sha := directory.HA1("SHA-256", "u", "example.it", "pw")
	c, err := Parse([]byte(`
realm: example.it
network:
  agencies: [{code: a, name: A, sector: general, prefix: "1"}]
  users: [{username: u, agency: a, role: operator, extension: "1", ha1_md5: ` + md5 + `, ha1_sha256: ` + sha + `}]
`))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Users()[0]
	if u.HA1MD5 != md5 || u.HA1SHA256 != sha || u.Role != directory.RoleOperator {
		t.Errorf("user = %+v", u)
	}
}

func TestUsersHashesCodeBuiltPasswords(t *testing.T) {
	c := Default()
	c.Network.Agencies = []directory.Agency{{Code: "a", Name: "A", Sector: "general", Prefix: "1"}}
	c.Network.Users = []User{{User: directory.User{Username: "u", Agency: "a", Role: directory.RolePhone, Extension: "1"}, Password: "pw"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Users()[0].HA1MD5, directory.HA1("MD5", "u", c.Realm, "pw"); got != want {
		t.Errorf("ha1_md5 = %s, want %s", got, want)
	}
}

func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := Parse([]byte("listen:\n  - {transport: wss, cert_file: " + filepath.Join(dir, "cert.pem") +
		", key_file: " + filepath.Join(dir, "key.pem") + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen[0].Addr != "127.0.0.1:5067" {
		t.Errorf("wss default addr = %q", c.Listen[0].Addr)
	}
}

func TestRedisURLs(t *testing.T) {
	for _, u := range []string{"redis://redis-1:6379/0", "rediss://user:pw@[::1]:6380", "unix:///run/redis.sock",
		"redis://sentinel-1:26379?master_name=centralino&addr=sentinel-2:26379"} {
		c := Default()
		c.Directory = Directory{Backend: "redis", RedisURL: u}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	c := Default()
	c.Directory = Directory{Backend: "redis", RedisURL: "ftp://user:s3cret@host"}
	if err := c.Validate(); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v: want an error that does not show the password", err)
	}
}

func TestTrustedPrefixes(t *testing.T) {
	a := Auth{Trusted: []string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.1.2.3/16"}}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("10.1.0.0/16"),
	}
	if got := a.TrustedPrefixes(); !reflect.DeepEqual(got, want) {
		t.Errorf("TrustedPrefixes() = %v, want %v", got, want)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "centralino.yaml")
	if err := os.WriteFile(path, []byte("node_id: napoli-1\nlog: {format: json}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "napoli-1" || c.Log.Format != "json" || c.Log.Level != "info" {
		t.Errorf("Load = %+v", c)
	}
	_, err = Load(filepath.Join(t.TempDir(), "missing.yaml"))
	checkOneLine(t, err, "no such file")
}

// A marshalled config parses back to itself, so the effective config can be printed.
func TestMarshalRoundTrip(t *testing.T) {
	c := Demo()
	c.Auth.Trusted = []string{"192.0.2.0/24"}
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip changed the config:\n%s", data)
	}
}

func TestExampleRedis(t *testing.T) {
	c, err := Load("example-redis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Directory.Backend != "redis" {
		t.Errorf("backend = %q", c.Directory.Backend)
	}
	if addr, err := c.NodeAddress(); addr != "sip-napoli-1.lineamica.gov.it:5060" || err != nil {
		t.Errorf("NodeAddress = %q, %v", addr, err)
	}
}

// The two nodes of configs/multinode share the directory and the secret,
// and the other nodes reach each at its own address.
func TestExampleMultinode(t *testing.T) {
	var addrs []string
	var first *Config
	for _, file := range []string{"multinode/campania.yaml", "multinode/inps.yaml"} {
		c, err := Load(file)
		if err != nil {
			t.Fatal(err)
		}
		addr, err := c.NodeAddress()
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, addr)
		if first == nil {
			first = c
			continue
		}
		if c.Directory != first.Directory || c.Cluster.Secret != first.Cluster.Secret || c.Realm != first.Realm || c.NodeID == first.NodeID {
			t.Errorf("%s: not a node of the same network as campania.yaml", file)
		}
	}
	if want := "127.0.0.2:5060 127.0.0.3:5060"; strings.Join(addrs, " ") != want {
		t.Errorf("node addresses %v, want %s", addrs, want)
	}
}

func TestAlgorithmsReplaceTheDefault(t *testing.T) {
	cfg, err := Parse([]byte("auth:\n  algorithms: [SHA-256, MD5]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Auth.Algorithms, ","); got != "SHA-256,MD5" {
		t.Fatalf("algorithms = %s, want SHA-256,MD5", got)
	}
	if got := strings.Join(Default().Auth.Algorithms, ","); got != "MD5,SHA-256" {
		t.Fatalf("default algorithms = %s, want MD5,SHA-256", got)
	}
}
