package sip

import (
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// authRequest is what digest authentication reads from a request.
type authRequest struct {
	method      sip.RequestMethod
	callID      string
	ip          netip.Addr // where it came from
	fromUser    string     // the From URI's user; read for calls only (md5Only)
	credentials []string   // the values of its Authorization (or Proxy-Authorization) headers
}

// authOf is what authentication reads from req, with its credentials in the
// headers named header.
func authOf(req *sip.Request, header string) authRequest {
	a := authRequest{method: req.Method, callID: callID(req), ip: sourceIP(req)}
	if f := req.From(); f != nil {
		a.fromUser = f.Address.User
	}
	for _, h := range allHeaders(req, header) {
		a.credentials = append(a.credentials, h.Value())
	}
	return a
}

// registerRequest is what the registrar reads from a REGISTER (RFC 3261
// §10.3). Over UDP it is scanned straight from the datagram (scanRegister);
// over the other transports, and from a datagram the scan leaves to sipgo,
// it is taken from sipgo's parse (registerOf).
type registerRequest struct {
	authRequest
	cseq       uint32
	aor        string // the To URI's user
	source     string // ip:port it came from
	transport  string // as sipgo names it: UDP, TCP, TLS, WS, WSS
	natted     bool   // its top Via names another address than source (viaNATed)
	expires    string // the Expires header's value, when hasExpires
	hasExpires bool
	contacts   []regContact
	userAgent  string
}

// regContact is one Contact of a REGISTER as the registrar reads it.
type regContact struct {
	wildcard   bool   // "*": every binding
	uri        string // as sipgo writes it
	expires    string // its expires parameter, when hasExpires
	hasExpires bool
}

// contactOf is what the registrar reads from a Contact sipgo has parsed.
func contactOf(c *sip.ContactHeader) regContact {
	rc := regContact{wildcard: c.Address.Wildcard}
	if !rc.wildcard {
		rc.uri = c.Address.String()
	}
	rc.expires, rc.hasExpires = c.Params.Get("expires")
	return rc
}

// registerOf is what the registrar reads from a REGISTER sipgo has parsed
// (and validate has checked).
func registerOf(req *sip.Request) (registerRequest, bool) {
	r := registerRequest{
		authRequest: authOf(req, "Authorization"),
		cseq:        req.CSeq().SeqNo,
		aor:         req.To().Address.User,
		source:      req.Source(),
		transport:   req.Transport(),
		natted:      viaNATed(req),
	}
	r.fromUser = "" // a REGISTER's challenge never reads it
	if h := firstHeader(req, "Expires"); h != nil {
		r.expires, r.hasExpires = strings.TrimSpace(h.Value()), true
	}
	for _, h := range allHeaders(req, "Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			return r, false
		}
		r.contacts = append(r.contacts, contactOf(c))
	}
	if h := firstHeader(req, "User-Agent"); h != nil {
		r.userAgent = h.Value()
	}
	return r, true
}

// sipgoHeaders parses the Contact lines plainContact cannot read.
var sipgoHeaders = sip.HeadersParser(sip.DefaultHeadersParser())

// scanRegister reads a REGISTER datagram, whose answers' headers raw has
// found, without parsing it whole: sipgo parses every header into
// structures, most of them headers the registrar never reads (Kamailio too
// parses only the headers it is asked for). BenchmarkReadRegister: 4–5 µs
// and 46 allocations through sipgo, 1.5 µs and 10 scanned. It reads only
// what the registrar needs, in the plain form nearly every phone sends
// (sipgo parses the Contacts of other forms), and returns false for
// anything else (folded lines, a body, an unusual request line, To, Via or
// CSeq), which sipgo then parses whole. Like
// Kamailio's, the scan does not judge headers it does not read. The
// strings it returns do not point into msg, which goes back to a pool.
func scanRegister(raw *rawRequest, msg []byte, src netip.AddrPort) (registerRequest, bool) {
	r := registerRequest{authRequest: authRequest{method: sip.REGISTER}, transport: "UDP"}
	line, rest, ok := cutLine(msg)
	if !ok || !requestLineIsPlain(line) {
		return r, false
	}
	hasUserAgent, singles := false, 0
	for {
		if line, rest, ok = cutLine(rest); !ok {
			return r, false
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return r, false // folded: sipgo joins the lines
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return r, false
		}
		name, value = bytes.TrimSpace(name), bytes.TrimSpace(value)
		switch {
		case headerIs(name, "Contact", "m"):
			if c, ok := plainContact(value); ok {
				r.contacts = append(r.contacts, c)
				continue
			}
			hs, err := sipgoHeaders.ParseHeader(nil, line)
			if err != nil {
				return r, false
			}
			for _, h := range hs {
				c, ok := h.(*sip.ContactHeader)
				if !ok {
					return r, false
				}
				r.contacts = append(r.contacts, contactOf(c))
			}
		case headerIs(name, "Authorization", ""):
			r.credentials = append(r.credentials, string(value))
		case !r.hasExpires && headerIs(name, "Expires", ""):
			r.expires, r.hasExpires = string(value), true
		case !hasUserAgent && headerIs(name, "User-Agent", ""):
			r.userAgent, hasUserAgent = string(value), true
		case headerIs(name, "Content-Length", "l"):
			if string(value) != "0" {
				return r, false
			}
		case headerIs(name, "To", "t") || headerIs(name, "Call-ID", "i") || headerIs(name, "CSeq", ""):
			// rawRequest found each; a fourth line repeats one of them,
			// of which rawRequest read the first and sipgo keeps the last
			if singles++; singles > 3 {
				return r, false
			}
		}
	}
	if len(rest) > 0 {
		return r, false // a body
	}
	aor, ok := plainAOR(raw.toValue)
	if !ok {
		return r, false
	}
	cseq, ok := plainCSeq(raw.cseq)
	if !ok {
		return r, false
	}
	host, port, ok := plainSentBy(raw.topVia)
	if !ok {
		return r, false
	}
	r.callID = string(raw.callID)
	r.cseq = cseq
	r.aor = aor
	r.ip = src.Addr().Unmap()
	r.source = netip.AddrPortFrom(r.ip, src.Port()).String()
	var text [48]byte // room for any IPv6 address with a zone
	r.natted = string(host) != string(r.ip.AppendTo(text[:0])) || port != int(src.Port())
	return r, true
}

// cutLine cuts msg at its first CRLF, as sipgo does; false when there is
// none, or a CR or LF alone comes first (which sipgo and rawRequest would
// read differently).
func cutLine(msg []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(msg, '\r')
	if i < 0 || i+1 >= len(msg) || msg[i+1] != '\n' || bytes.IndexByte(msg[:i], '\n') >= 0 {
		return nil, nil, false
	}
	return msg[:i], msg[i+2:], true
}

// requestLineIsPlain reports whether line is "REGISTER sip:host[:port]
// [;params] SIP/2.0" (or sips:), in characters that leave no doubt.
func requestLineIsPlain(line []byte) bool {
	rest, ok := bytes.CutPrefix(line, []byte("REGISTER "))
	if !ok {
		return false
	}
	uri, ok := bytes.CutSuffix(rest, []byte(" SIP/2.0"))
	if !ok {
		return false
	}
	if hp, ok := bytes.CutPrefix(uri, []byte("sip:")); ok {
		uri = hp
	} else if uri, ok = bytes.CutPrefix(uri, []byte("sips:")); !ok {
		return false
	}
	hostport, params, _ := bytes.Cut(uri, []byte(";"))
	host, port, hasPort := bytes.Cut(hostport, []byte(":"))
	return len(host) > 0 && onlyBytes(host, isHostByte) &&
		(!hasPort || len(port) > 0 && len(port) <= 5 && onlyBytes(port, isDigit)) &&
		onlyBytes(params, func(c byte) bool { return isHostByte(c) || c == ';' || c == '=' || c == '_' })
}

// plainAOR is the user of a To value "<sip:user@host...>...", "\"Name\"
// <sip:user@host...>..." or "sip:user@host;params" (or sips:), with a user
// in characters that leave no doubt; false for any other form.
func plainAOR(to []byte) (string, bool) {
	to, ok := skipDisplayName(to)
	if !ok {
		return "", false
	}
	to = bytes.TrimPrefix(to, []byte("<"))
	if rest, ok := bytes.CutPrefix(to, []byte("sip:")); ok {
		to = rest
	} else if to, ok = bytes.CutPrefix(to, []byte("sips:")); !ok {
		return "", false
	}
	user, host, ok := bytes.Cut(to, []byte("@"))
	if !ok || len(user) == 0 || len(host) == 0 || !isHostByte(host[0]) ||
		!onlyBytes(user, isUserByte) {
		return "", false
	}
	return string(user), true
}

// skipDisplayName skips a quoted display name (without escapes) and the
// spaces after it, up to the "<" that must follow; v without one is
// returned whole.
func skipDisplayName(v []byte) ([]byte, bool) {
	if len(v) == 0 || v[0] != '"' {
		return v, true
	}
	end := bytes.IndexByte(v[1:], '"')
	if end < 0 || bytes.IndexByte(v[1:end+1], '\\') >= 0 {
		return nil, false
	}
	v = bytes.TrimLeft(v[end+2:], " \t")
	return v, len(v) > 0 && v[0] == '<'
}

func onlyBytes(b []byte, ok func(byte) bool) bool {
	for _, c := range b {
		if !ok(c) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isHostByte: a letter, digit, dot or dash of a host name or IPv4 address,
// or a colon of an IPv6 address (which the callers check apart).
func isHostByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || c == '.' || c == '-' || c == ':'
}

// plainContact reads a Contact value of one address in the plain form
// phones write: "*", or <sip:user@host[:port][;param...]> with an optional
// quoted display name before it and ;name[=value] parameters after it,
// without spaces. Its URI is then written by sipgo exactly as it stands.
func plainContact(v []byte) (regContact, bool) {
	if string(v) == "*" {
		return regContact{wildcard: true}, true
	}
	v, ok := skipDisplayName(v)
	if !ok {
		return regContact{}, false
	}
	rest, ok := bytes.CutPrefix(v, []byte("<"))
	if !ok {
		return regContact{}, false
	}
	uri, params, ok := bytes.Cut(rest, []byte(">"))
	if !ok || !plainURI(uri) {
		return regContact{}, false
	}
	c := regContact{uri: string(uri)}
	for len(params) > 0 {
		var name, value []byte
		if name, value, params, ok = cutParam(params); !ok {
			return regContact{}, false
		}
		if string(name) == "expires" {
			if !onlyBytes(value, isDigit) {
				return regContact{}, false
			}
			c.expires, c.hasExpires = string(value), true
		}
	}
	return c, true
}

// cutParam cuts the first ";name[=value]" off params: a token name, and a
// token or a quoted string without escapes for value.
func cutParam(params []byte) (name, value, rest []byte, ok bool) {
	if len(params) == 0 || params[0] != ';' {
		return nil, nil, nil, false
	}
	params = params[1:]
	n := 0
	for n < len(params) && isParamByte(params[n]) {
		n++
	}
	name, rest = params[:n], params[n:]
	if v, hasValue := bytes.CutPrefix(rest, []byte("=")); hasValue {
		n = 0
		if len(v) > 0 && v[0] == '"' {
			q := bytes.IndexByte(v[1:], '"')
			if q < 0 || bytes.IndexByte(v[1:q+1], '\\') >= 0 {
				return nil, nil, nil, false
			}
			n = q + 2
		} else {
			for n < len(v) && isParamByte(v[n]) {
				n++
			}
		}
		value, rest = v[:n], v[n:]
		if n == 0 {
			return nil, nil, nil, false
		}
	}
	return name, value, rest, len(name) > 0 && (len(rest) == 0 || rest[0] == ';')
}

// plainURI reports whether uri is sip:user@host[:port][;name[=value]...] (or
// sips:) in characters that leave no doubt, with no parameter twice: the form
// sipgo writes back unchanged.
func plainURI(uri []byte) bool {
	if rest, ok := bytes.CutPrefix(uri, []byte("sip:")); ok {
		uri = rest
	} else if uri, ok = bytes.CutPrefix(uri, []byte("sips:")); !ok {
		return false
	}
	user, rest, ok := bytes.Cut(uri, []byte("@"))
	if !ok || len(user) == 0 || !onlyBytes(user, isUserByte) {
		return false
	}
	hostport, params, hasParams := bytes.Cut(rest, []byte(";"))
	host, port, hasPort := bytes.Cut(hostport, []byte(":"))
	if len(host) == 0 || !onlyBytes(host, func(c byte) bool { return isHostByte(c) && c != ':' }) {
		return false
	}
	if hasPort && (len(port) == 0 || len(port) > 5 || port[0] == '0' || !onlyBytes(port, isDigit)) {
		return false
	}
	if n, _ := strconv.Atoi(string(port)); n > 65535 {
		return false
	}
	var names [8][]byte
	for i, p := range bytes.Split(params, []byte(";")) {
		if !hasParams {
			break
		}
		name, value, hasValue := bytes.Cut(p, []byte("="))
		if i == len(names) || len(name) == 0 || !onlyBytes(name, isUserByte) || hasValue && (len(value) == 0 || !onlyBytes(value, isUserByte)) {
			return false
		}
		for _, seen := range names[:i] {
			if bytes.EqualFold(seen, name) {
				return false
			}
		}
		names[i] = name
	}
	return true
}

// isUserByte: a character of a user or URI parameter that needs no escape
// and that sipgo reads and writes back as it is.
func isUserByte(c byte) bool {
	return isHostByte(c) && c != ':' || c == '_' || c == '+' || c == '~'
}

// isParamByte: a character of a Contact parameter's name or token value
// (RFC 3261 §25.1 token, as linphone's +sip.instance).
func isParamByte(c byte) bool {
	return isUserByte(c) || c == '!' || c == '%' || c == '*' || c == '\''
}

// plainCSeq reads a CSeq line "CSeq: <digits> REGISTER".
func plainCSeq(line []byte) (uint32, bool) {
	_, v, _ := bytes.Cut(line, []byte(":"))
	num, method, ok := bytes.Cut(bytes.TrimSpace(v), []byte(" "))
	if !ok || string(method) != "REGISTER" || len(num) == 0 || len(num) > 10 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(num), 10, 32)
	if err != nil || n > 1<<31-1 { // RFC 3261 §8.1.1.5
		return 0, false
	}
	return uint32(n), true
}

// plainSentBy reads the sent-by of a Via value "SIP/2.0/UDP host[:port]
// [;params]": a host name or IPv4 address, or an IPv6 reference; the port
// is 5060 when absent.
func plainSentBy(via []byte) (host []byte, port int, ok bool) {
	sentBy, ok := bytes.CutPrefix(via, []byte("SIP/2.0/UDP "))
	if !ok {
		return nil, 0, false
	}
	if i := bytes.IndexByte(sentBy, ';'); i >= 0 {
		sentBy = sentBy[:i]
	}
	host, p := sentBy, []byte(nil)
	if len(host) > 0 && host[0] == '[' {
		end := bytes.IndexByte(host, ']')
		if end < 0 {
			return nil, 0, false
		}
		host, p = host[1:end], host[end+1:]
		if _, err := netip.ParseAddr(string(host)); err != nil {
			return nil, 0, false
		}
	} else if i := bytes.IndexByte(host, ':'); i >= 0 {
		host, p = host[:i], host[i:]
	}
	if len(host) == 0 || !onlyBytes(host, isHostByte) {
		return nil, 0, false
	}
	port = sip.DefaultUdpPort
	if len(p) > 0 {
		if p[0] != ':' || len(p) < 2 || len(p) > 6 {
			return nil, 0, false
		}
		n, err := strconv.Atoi(string(p[1:]))
		if err != nil || n < 1 || n > 65535 || p[1] == '+' || p[1] == '-' {
			return nil, 0, false
		}
		port = n
	}
	return host, port, true
}
