// Command genconfig writes a centralino config for load tests: one agency
// with N users u000001… whose password is "pass-"+username (the scheme of
// ../../shared/bench), a "uas" user for the call test, and the load
// generator's address trusted as a trunk (its INVITEs are not challenged).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/lineamica/centralino/configs"
	"github.com/lineamica/centralino/routing/directory"
)

func main() {
	users := flag.Int("users", 10000, "number of users")
	sipAddr := flag.String("sip", "127.0.0.1:5060", "SIP listen address (udp and tcp)")
	httpAddr := flag.String("http", "127.0.0.1:8080", "HTTP listen address")
	redis := flag.String("redis", "", "Redis URL (default: memory directory)")
	realm := flag.String("realm", "example.test", "realm")
	out := flag.String("o", "bench.yaml", "output file")
	anchor := flag.String("media-anchor", "", "media anchoring: always, nat or never (default: the config default)")
	ports := flag.String("media-ports", "", "relay port range MIN-MAX (default: the config default); keep it clear of other programs' ranges")
	kernel := flag.String("media-kernel", "", "in-kernel RTP forwarding: auto, on or off (default: the config default)")
	writeBack := flag.Duration("write-back", -1, "directory.write_back with Redis (default: the config default)")
	callRate := flag.Float64("max-call-rate", 0, "proxy.max_call_rate: new INVITEs a second the switch takes (0: no cap)")
	flag.Parse()

	cfg := configs.Default()
	cfg.NodeID = "bench"
	cfg.Realm = *realm
	cfg.Log.Level = "warn"
	cfg.Listen = []configs.Listener{{Transport: "udp", Addr: *sipAddr}, {Transport: "tcp", Addr: *sipAddr}}
	cfg.HTTP.Addr = *httpAddr
	cfg.HTTP.Pprof = true
	cfg.Auth.Trusted = []string{"127.0.0.1/32"}
	cfg.Auth.MaxFailures = 0
	cfg.Proxy.RingTimeout = configs.Duration(30 * time.Second)
	if *anchor != "" {
		cfg.Media.Anchor = *anchor
	}
	cfg.Proxy.MaxCallRate = *callRate
	if *kernel != "" {
		cfg.Media.Kernel = *kernel
	}
	if *ports != "" {
		if _, err := fmt.Sscanf(*ports, "%d-%d", &cfg.Media.PortMin, &cfg.Media.PortMax); err != nil {
			fmt.Fprintln(os.Stderr, "media-ports:", err)
			os.Exit(2)
		}
	}
	if *redis != "" {
		cfg.Directory.Backend, cfg.Directory.RedisURL = "redis", *redis
		if *writeBack >= 0 {
			cfg.Directory.WriteBack = configs.Duration(*writeBack)
		}
	}
	cfg.Network.Agencies = []directory.Agency{{Code: "bench", Name: "Load test", Sector: "general", Prefix: "9", Numbers: []string{"9000000"}}}
	add := func(name, ext string) {
		u := directory.User{Username: name, DisplayName: name, Agency: "bench", Role: directory.RolePhone, Extension: ext}
		u.SetPassword(cfg.Realm, "pass-"+name)
		cfg.Network.Users = append(cfg.Network.Users, configs.User{User: u})
	}
	for i := 1; i <= *users; i++ {
		add(fmt.Sprintf("u%06d", i), fmt.Sprintf("%06d", i))
	}
	add("uas", "999999")
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	data, err := yaml.Marshal(cfg)
	if err == nil {
		err = os.WriteFile(*out, data, 0o600)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
