package main

// A minimal rtpengine "ng" control protocol (UDP datagrams
// "<cookie> <bencoded dictionary>", the reply echoes the cookie), so the
// relay can run in a process of its own and be driven by this generator or
// by the shared rtpbench harness (RELAYS=ext EXT_CONTROL=ng). Commands:
// ping, offer, answer, delete. It is a benchmark control, not a product
// interface: loopback only, no authentication.

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lineamica/centralino/media"
)

func bencode(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case string:
		b.WriteString(strconv.Itoa(len(x)))
		b.WriteByte(':')
		b.WriteString(x)
	case []byte:
		b.WriteString(strconv.Itoa(len(x)))
		b.WriteByte(':')
		b.Write(x)
	case int:
		fmt.Fprintf(b, "i%de", x)
	case []string:
		b.WriteByte('l')
		for _, s := range x {
			bencode(b, s)
		}
		b.WriteByte('e')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b.WriteByte('d')
		for _, k := range keys {
			bencode(b, k)
			bencode(b, x[k])
		}
		b.WriteByte('e')
	default:
		panic(fmt.Sprintf("bencode: %T", v))
	}
}

// bdecode decodes one value: strings, integers, lists and dictionaries.
func bdecode(p []byte, depth int) (any, []byte, error) {
	if len(p) == 0 || depth > 8 {
		return nil, nil, errors.New("bdecode: short or too deep")
	}
	switch c := p[0]; {
	case c == 'i':
		e := bytes.IndexByte(p, 'e')
		if e < 0 {
			return nil, nil, errors.New("bdecode: bad integer")
		}
		n, err := strconv.ParseInt(string(p[1:e]), 10, 64)
		return n, p[e+1:], err
	case c == 'l' || c == 'd':
		var list []any
		dict := map[string]any{}
		p = p[1:]
		for len(p) > 0 && p[0] != 'e' {
			v, rest, err := bdecode(p, depth+1)
			if err != nil {
				return nil, nil, err
			}
			p = rest
			if c == 'l' {
				list = append(list, v)
				continue
			}
			k, ok := v.(string)
			if !ok {
				return nil, nil, errors.New("bdecode: key is not a string")
			}
			if v, p, err = bdecode(p, depth+1); err != nil {
				return nil, nil, err
			}
			dict[k] = v
		}
		if len(p) == 0 {
			return nil, nil, errors.New("bdecode: unterminated")
		}
		if c == 'l' {
			return list, p[1:], nil
		}
		return dict, p[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(p, ':')
		if colon < 0 {
			return nil, nil, errors.New("bdecode: bad string")
		}
		n, err := strconv.Atoi(string(p[:colon]))
		if err != nil || n < 0 || colon+1+n > len(p) {
			return nil, nil, errors.New("bdecode: bad string length")
		}
		return string(p[colon+1 : colon+1+n]), p[colon+1+n:], nil
	}
	return nil, nil, fmt.Errorf("bdecode: unexpected %q", p[0])
}

// serveNG answers ng commands on conn with the relay until conn is closed.
func serveNG(conn *net.UDPConn, r *media.Relay) {
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		cookie, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok {
			continue
		}
		reply := ngHandle(r, body, from.Addr())
		var b bytes.Buffer
		b.Write(cookie)
		b.WriteByte(' ')
		bencode(&b, reply)
		_, _ = conn.WriteToUDPAddrPort(b.Bytes(), from)
	}
}

func ngHandle(r *media.Relay, body []byte, source netip.Addr) map[string]any {
	v, _, err := bdecode(body, 0)
	d, ok := v.(map[string]any)
	if err != nil || !ok {
		return map[string]any{"result": "error", "error-reason": "malformed command"}
	}
	str := func(k string) string { s, _ := d[k].(string); return s }
	callID := str("call-id")
	var out []byte
	switch str("command") {
	case "ping":
		return map[string]any{"result": "pong"}
	case "offer":
		opts := media.LegOptions{Source: source}
		switch str("transport-protocol") {
		case "RTP/AVP", "RTP/AVPF":
			opts.PeerTransport = media.TransportRTP
		case "RTP/SAVP", "RTP/SAVPF":
			opts.PeerTransport = media.TransportSRTP
		}
		out, err = r.Offer(callID, str("from-tag"), []byte(str("sdp")), opts)
	case "answer":
		out, err = r.Answer(callID, str("to-tag"), []byte(str("sdp")), media.LegOptions{Source: source})
	case "delete":
		r.Release(callID)
		return map[string]any{"result": "ok"}
	default:
		return map[string]any{"result": "error", "error-reason": "unknown command"}
	}
	if err != nil {
		return map[string]any{"result": "error", "error-reason": err.Error()}
	}
	return map[string]any{"result": "ok", "sdp": out}
}

// ngClient sends commands to an ng server, one at a time per client.
type ngClient struct {
	conn *net.UDPConn
	mu   sync.Mutex
	seq  atomic.Uint64
	buf  []byte
}

func dialNG(addr string) (*ngClient, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("ng address %q: must be a loopback ip:port", addr)
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	return &ngClient{conn: conn, buf: make([]byte, 65536)}, nil
}

func (c *ngClient) call(msg map[string]any) (map[string]any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cookie := "crl" + strconv.FormatUint(c.seq.Add(1), 10)
	var b bytes.Buffer
	b.WriteString(cookie + " ")
	bencode(&b, msg)
	for try := 0; try < 3; try++ {
		if _, err := c.conn.Write(b.Bytes()); err != nil {
			return nil, err
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			n, err := c.conn.Read(c.buf)
			if err != nil {
				break // timeout: send again
			}
			got, body, _ := bytes.Cut(c.buf[:n], []byte(" "))
			if string(got) != cookie {
				continue
			}
			v, _, err := bdecode(body, 0)
			d, ok := v.(map[string]any)
			if err != nil || !ok {
				return nil, errors.New("ng: malformed reply")
			}
			if res, _ := d["result"].(string); res != "ok" && res != "pong" {
				return nil, fmt.Errorf("ng %v: %v %v", msg["command"], res, d["error-reason"])
			}
			return d, nil
		}
	}
	return nil, fmt.Errorf("ng %v: no reply", msg["command"])
}

// control is how the generator sets calls up: in process or over ng.
type control interface {
	offer(callID, tag string, sdp []byte, peer media.Transport) ([]byte, error)
	answer(callID, tag string, sdp []byte) ([]byte, error)
	release(callID string)
}

type inProcess struct{ r *media.Relay }

func (c inProcess) offer(id, tag string, sdp []byte, peer media.Transport) ([]byte, error) {
	return c.r.Offer(id, tag, sdp, media.LegOptions{Source: lo, PeerTransport: peer})
}

func (c inProcess) answer(id, tag string, sdp []byte) ([]byte, error) {
	return c.r.Answer(id, tag, sdp, media.LegOptions{Source: lo})
}

func (c inProcess) release(id string) { c.r.Release(id) }

func (c *ngClient) offer(id, tag string, sdp []byte, peer media.Transport) ([]byte, error) {
	msg := map[string]any{"command": "offer", "call-id": id, "from-tag": tag, "sdp": sdp}
	switch peer {
	case media.TransportRTP:
		msg["transport-protocol"] = "RTP/AVP"
	case media.TransportSRTP:
		msg["transport-protocol"] = "RTP/SAVP"
	}
	return c.sdpOf(c.call(msg))
}

func (c *ngClient) answer(id, tag string, sdp []byte) ([]byte, error) {
	// rtpengine wants the offer's from-tag too; the relay reads to-tag.
	return c.sdpOf(c.call(map[string]any{"command": "answer", "call-id": id, "from-tag": "a", "to-tag": tag, "sdp": sdp}))
}

func (c *ngClient) release(id string) {
	if _, err := c.call(map[string]any{"command": "delete", "call-id": id, "from-tag": "a"}); err != nil {
		log.Printf("release %s: %v", id, err)
	}
}

func (c *ngClient) sdpOf(d map[string]any, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	s, ok := d["sdp"].(string)
	if !ok {
		return nil, errors.New("ng: reply without sdp")
	}
	return []byte(s), nil
}
