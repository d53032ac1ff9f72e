package configs

import (
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that what it accepts validates,
// and that what it rejects is explained in one line.
func FuzzParse(f *testing.F) {
	f.Add(demoYAML)
	f.Add([]byte(trunksYAML))
	for _, s := range []string{
		"",
		"realm: [",
		"nodeid: x\n",
		"listen:\n  - {transport: sctp}\n",
		"auth: {nonce_ttl: 5x, trusted: [10.0.0/8]}\n",
		"proxy: {ring_timeout: -1s}\n",
		"a: &a [*a, *a]\n",
		"network:\n  agencies:\n    - {code: a, name: A, sector: general, prefix: '1', overflow: b}\n    - {code: b, name: B, sector: tax, prefix: '2', overflow: a}\n",
		"network:\n  users: [{username: u, agency: x, extension: '1', ha1_md5: ABC}]\n",
		"realm: a\n---\nrealm: b\n",
		"0\r\r00",
		"directory: {backend: redis, redis_url: 'redis://:pw@[::1'}\n",
		"trunks: [{name: t, prefixes: ['0'], peers: [{host: '::1', weight: -1}, {host: '::1'}], inbound: {trust: digest}}]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "config: ") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q is not one line starting with \"config: \"", msg)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
		}
		for _, u := range c.Users() {
			if len(u.HA1MD5) != 32 || len(u.HA1SHA256) != 64 {
				t.Fatalf("user %q without HA1s", u.Username)
			}
		}
	})
}
