package configs

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/routing"
)

const trunksYAML = `
trunks:
  - name: pstn-napoli
    prefixes: ["0", "3"]
    numbers: ["+390811234567"]
    peers:
      - {name: gw1, host: 192.0.2.10, priority: 1, weight: 3}
      - {host: gw2.example.it, port: 5070, transport: tcp, priority: 1}
      - {host: 192.0.2.30, priority: 2, register: true}
    outbound: {username: centralino, password: "s3cret!", expires: 300s}
    probe: {interval: 5s, failures: 2, successes: 1}
    reply_timeout: 3s
  - name: inps
    numbers: ["803164"]
    peers: [{host: 192.0.2.40}]
    inbound: {trust: digest, username: inps-trunk, password: other}
`

func TestTrunksParse(t *testing.T) {
	c, err := Parse([]byte(trunksYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Trunks) != 2 {
		t.Fatalf("trunks: %+v", c.Trunks)
	}
	p := c.Trunks[0]
	if p.Name != "pstn-napoli" || p.Peers[1].Port != 5070 || p.Peers[1].Transport != "tcp" || !p.Peers[2].Register ||
		p.Outbound.Password != "s3cret!" || p.Outbound.Expires != 300*time.Second || p.ReplyTimeout != 3*time.Second ||
		p.Probe != (routing.Probe{Interval: 5 * time.Second, Failures: 2, Successes: 1}) {
		t.Errorf("pstn-napoli: %+v", p)
	}
	if in := c.Trunks[1].Inbound; in.Trust != "digest" || in.Username != "inps-trunk" {
		t.Errorf("inps inbound: %+v", in)
	}
	// The effective config prints and parses back, secrets included.
	data, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if !reflect.DeepEqual(back.Trunks, c.Trunks) {
		t.Errorf("round trip changed the trunks:\n%s", data)
	}
}

func TestTrunkErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(tr *routing.Trunk)
		want   string
	}{
		{"name", func(tr *routing.Trunk) { tr.Name = "pstn napoli" }, `trunks[0].name: "pstn napoli" must be`},
		{"prefix", func(tr *routing.Trunk) { tr.Prefixes = []string{"0x"} }, `trunks[0].prefixes[0]: "0x" must be digits`},
		{"number of an agency", func(tr *routing.Trunk) { tr.Numbers = []string{"8100000"} },
			`trunks[0].numbers[0]: "8100000" is already a public number of agency "r_campan"`},
		{"no peer", func(tr *routing.Trunk) { tr.Peers = nil }, `trunks[0].peers: at least one peer is required`},
		{"host", func(tr *routing.Trunk) { tr.Peers[0].Host = "gw_1" }, `trunks[0].peers[0].host: "gw_1" is not a host name`},
		{"port", func(tr *routing.Trunk) { tr.Peers[0].Port = 70000 }, `trunks[0].peers[0].port: 70000 is not a port`},
		{"transport", func(tr *routing.Trunk) { tr.Peers[0].Transport = "ws" }, `trunks[0].peers[0].transport: "ws" is not one of udp, tcp, tls`},
		{"transport without listener", func(tr *routing.Trunk) { tr.Peers[0].Transport = "tls" },
			`trunks[0].peers[0].transport: tls needs a tls listener`},
		{"weight", func(tr *routing.Trunk) { tr.Peers[0].Weight = -1 }, `trunks[0].peers[0].weight: must not be negative`},
		{"duplicate peer", func(tr *routing.Trunk) { tr.Peers = append(tr.Peers, tr.Peers[0]) },
			`trunks[0].peers[1].name: "192.0.2.10:5060" duplicates trunks[0].peers[0]`},
		{"register without credentials", func(tr *routing.Trunk) { tr.Peers[0].Register = true },
			`trunks[0].peers[0].register: needs trunks[0].outbound.username and password`},
		{"trust", func(tr *routing.Trunk) { tr.Inbound.Trust = "ip" }, `trunks[0].inbound.trust: "ip" is not one of address, digest`},
		{"source", func(tr *routing.Trunk) { tr.Inbound.Sources = []string{"192.0.2.0/33"} }, `trunks[0].inbound.sources[0]: invalid CIDR`},
		{"digest without password", func(tr *routing.Trunk) { tr.Inbound = routing.Inbound{Trust: "digest", Username: "gw"} },
			`trunks[0].inbound.password: required by trust: digest`},
		{"digest user is a phone", func(tr *routing.Trunk) {
			tr.Inbound = routing.Inbound{Trust: "digest", Username: "campania.esposito", Password: "x"}
		}, `trunks[0].inbound.username: "campania.esposito" is also a user of network.users`},
		{"outbound user", func(tr *routing.Trunk) { tr.Outbound = routing.Outbound{Username: "a@b", Password: "x"} },
			`trunks[0].outbound.username: "a@b" has characters`},
		{"probe", func(tr *routing.Trunk) { tr.Probe.Failures = -2 }, `trunks[0].probe.failures: must not be negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Demo()
			tr := routing.Trunk{Name: "pstn", Prefixes: []string{"0"}, Peers: []routing.Peer{{Host: "192.0.2.10"}}}
			tt.mutate(&tr)
			c.Trunks = []routing.Trunk{tr}
			checkOneLine(t, c.Validate(), tt.want)
		})
	}
	c := Demo()
	c.Trunks = []routing.Trunk{
		{Name: "a", Prefixes: []string{"0"}, Peers: []routing.Peer{{Host: "192.0.2.1"}}},
		{Name: "a", Prefixes: []string{"0"}, Peers: []routing.Peer{{Host: "192.0.2.2"}}},
	}
	checkOneLine(t, c.Validate(), `trunks[1].name: "a" duplicates trunks[0]`)
	c.Trunks[1].Name = "b"
	checkOneLine(t, c.Validate(), `trunks[1].prefixes[0]: "0" is already a prefix of trunk "a"`)
	// A password never appears in an error.
	c.Trunks = []routing.Trunk{{Name: "a", Peers: []routing.Peer{{Host: "192.0.2.1"}}, Outbound: routing.Outbound{Password: "hunter2"}}}
	err := c.Validate()
	checkOneLine(t, err, `trunks[0].outbound.username: required with outbound.password`)
	if strings.Contains(err.Error(), "hunter2") {
		t.Error("the password is in the error")
	}
}
