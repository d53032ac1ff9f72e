package configs

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/lineamica/centralino/routing"
)

var (
	trunkNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	numberRe    = regexp.MustCompile(`^\+?[0-9]{1,20}$`)
	// Characters that would break the SIP headers credentials are written in.
	credentialRe = regexp.MustCompile(`^[^\x00-\x1f\x7f"\\:@]{1,128}$`)
)

var trunkTransports = []string{"udp", "tcp", "tls"}

// validateTrunks checks the trunks section. Passwords are never quoted.
func (c *Config) validateTrunks() error {
	names := map[string]int{}
	taken := map[string]string{} // number or prefix -> what holds it
	for _, a := range c.Network.Agencies {
		for _, n := range a.Numbers {
			taken["number "+n] = fmt.Sprintf("a public number of agency %q", a.Code)
		}
	}
	listening := map[string]bool{}
	for _, l := range c.Listen {
		listening[l.Transport] = true
	}
	for i, t := range c.Trunks {
		path := fmt.Sprintf("trunks[%d]", i)
		if !trunkNameRe.MatchString(t.Name) {
			return fieldError(path+".name", "%q must be 1-63 letters, digits, '.', '_' or '-'", t.Name)
		}
		if j, dup := names[t.Name]; dup {
			return fieldError(path+".name", "%q duplicates trunks[%d]", t.Name, j)
		}
		names[t.Name] = i
		for _, list := range []struct {
			field, kind string
			values      []string
		}{{"numbers", "number", t.Numbers}, {"prefixes", "prefix", t.Prefixes}} {
			for k, n := range list.values {
				npath := fmt.Sprintf("%s.%s[%d]", path, list.field, k)
				if !numberRe.MatchString(n) {
					return fieldError(npath, "%q must be digits, optionally after a '+'", n)
				}
				key := list.kind + " " + n
				if holder, dup := taken[key]; dup {
					return fieldError(npath, "%q is already %s", n, holder)
				}
				taken[key] = fmt.Sprintf("a %s of trunk %q", list.kind, t.Name)
			}
		}
		if err := validatePeers(path, t, listening); err != nil {
			return err
		}
		if err := validateTrunkAuth(path, t); err != nil {
			return err
		}
		if u := t.Inbound.Username; u != "" && slices.ContainsFunc(c.Network.Users, func(n User) bool { return n.Username == u }) {
			return fieldError(path+".inbound.username", "%q is also a user of network.users", u)
		}
		for _, d := range []struct {
			field string
			value int64
		}{
			{"reply_timeout", int64(t.ReplyTimeout)}, {"probe.interval", int64(t.Probe.Interval)},
			{"probe.failures", int64(t.Probe.Failures)}, {"probe.successes", int64(t.Probe.Successes)},
			{"outbound.expires", int64(t.Outbound.Expires)},
		} {
			if d.value < 0 {
				return fieldError(path+"."+d.field, "must not be negative (0 takes the default)")
			}
		}
	}
	return nil
}

func validatePeers(path string, t routing.Trunk, listening map[string]bool) error {
	if len(t.Peers) == 0 {
		return fieldError(path+".peers", "at least one peer is required")
	}
	names := map[string]int{}
	for k, p := range t.WithDefaults().Peers {
		ppath := fmt.Sprintf("%s.peers[%d]", path, k)
		if !isHost(p.Host) {
			return fieldError(ppath+".host", "%q is not a host name or IP address", p.Host)
		}
		if p.Port < 1 || p.Port > 65535 {
			return fieldError(ppath+".port", "%d is not a port", p.Port)
		}
		if !slices.Contains(trunkTransports, p.Transport) {
			return fieldError(ppath+".transport", "%q is not one of %s", p.Transport, strings.Join(trunkTransports, ", "))
		}
		if !listening[p.Transport] {
			// Our Via and Record-Route need a port of that transport.
			return fieldError(ppath+".transport", "%s needs a %s listener", p.Transport, p.Transport)
		}
		if p.Priority < 0 {
			return fieldError(ppath+".priority", "must not be negative, got %d", p.Priority)
		}
		if w := t.Peers[k].Weight; w < 0 { // before the default, which takes it as unset
			return fieldError(ppath+".weight", "must not be negative, got %d", w)
		}
		if j, dup := names[p.Name]; dup {
			return fieldError(ppath+".name", "%q duplicates %s.peers[%d]", p.Name, path, j)
		}
		names[p.Name] = k
		if p.Register && (t.Outbound.Username == "" || t.Outbound.Password == "") {
			return fieldError(ppath+".register", "needs %s.outbound.username and password", path)
		}
	}
	return nil
}

func validateTrunkAuth(path string, t routing.Trunk) error {
	in, out := t.Inbound, t.Outbound
	switch in.Trust {
	case "", routing.TrustAddress:
		if in.Username != "" || in.Password != "" {
			return fieldError(path+".inbound.username", "only trust: digest takes credentials")
		}
		for k, s := range in.Sources {
			if _, err := parsePrefix(s); err != nil {
				return fieldError(fmt.Sprintf("%s.inbound.sources[%d]", path, k), "invalid CIDR %q", s)
			}
		}
	case routing.TrustDigest:
		if len(in.Sources) > 0 {
			return fieldError(path+".inbound.sources", "only trust: address takes sources")
		}
		if !usernameRe.MatchString(in.Username) {
			return fieldError(path+".inbound.username", "%q must be 1-64 letters, digits, '.', '_' or '-'", in.Username)
		}
		if in.Password == "" {
			return fieldError(path+".inbound.password", "required by trust: digest")
		}
	default:
		return fieldError(path+".inbound.trust", "%q is not one of address, digest", in.Trust)
	}
	if out.Username != "" && !credentialRe.MatchString(out.Username) {
		return fieldError(path+".outbound.username", "%q has characters a SIP URI cannot carry", out.Username)
	}
	if out.Password != "" && out.Username == "" {
		return fieldError(path+".outbound.username", "required with outbound.password")
	}
	if strings.ContainsAny(out.Password, "\x00\r\n") {
		return fieldError(path+".outbound.password", "must not contain control characters")
	}
	return nil
}
