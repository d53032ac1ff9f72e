package sip

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/lineamica/centralino/routing/directory"
)

// Several nodes share one directory. A phone is reached through the node it
// registered with (Binding.Node), which holds its connection or NAT mapping:
// another node forwards the request there, signed with the network's shared
// secret, and that node delivers it to its own bindings of the user, with no
// second challenge and no routing of its own. Both nodes Record-Route, so the
// dialog's requests cross both.

// nodeHeader carries a forwarded request's signature:
// "<node id>;ts=<unix seconds>;sig=<hex HMAC-SHA256>".
const nodeHeader = "X-Centralino-Node"

// nodeClockSkew is how far a signature's time may be from the receiver's
// clock: the nodes' clocks are kept by NTP, and a signed request is a
// replayable capability only for that long.
const nodeClockSkew = time.Minute

// Peers finds the other nodes of the network; *directory.Nodes implements it.
type Peers interface {
	// Lookup returns a live node, or an error wrapping directory.ErrNotFound
	// when it is gone.
	Lookup(ctx context.Context, id string) (directory.Node, error)
}

// nodeForwarding is what a node of several needs: where the others are,
// the secret, and the calls it relays for them.
type nodeForwarding struct {
	peers    Peers
	secret   []byte
	now      func() time.Time
	relayed  relayedCalls
	requests *prometheus.CounterVec

	mu     sync.Mutex
	seen   map[string]time.Time // signatures accepted, until they are too old to verify
	pruned time.Time            // when seen was last rid of expired signatures
}

// newNodeForwarding returns nil, and the switch reaches every binding
// itself as a single node does, without peers or without a secret.
func newNodeForwarding(peers Peers, secret []byte, reg prometheus.Registerer) *nodeForwarding {
	if peers == nil || len(secret) == 0 {
		return nil
	}
	n := &nodeForwarding{peers: peers, secret: secret, now: time.Now, relayed: relayedCalls{m: map[string]time.Time{}},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "centralino", Subsystem: "sip", Name: "node_requests_total",
			Help: "Requests between nodes: out forwarded or not (node_gone: the node holding the callee's registration is down), in accepted or rejected (bad signature).",
		}, []string{"direction", "result"}),
	}
	if reg != nil {
		reg.MustRegister(n.requests)
	}
	return n
}

// signature is the HMAC of what identifies a forwarded request: it cannot
// be moved to another call, caller, user or method, and verify accepts it
// once. (The body is not covered: the relay may rewrite the SDP after the
// branch is signed. A party that can change requests in flight between
// nodes is kept out by cluster.transport: tls.)
func (n *nodeForwarding) signature(node string, ts int64, req *sip.Request) string {
	tag, _ := req.From().Params.Get("tag")
	from := req.From().Address
	m := hmac.New(sha256.New, n.secret)
	for _, part := range []string{node, strconv.FormatInt(ts, 10), string(req.Method), callID(req), tag,
		strconv.FormatUint(uint64(req.CSeq().SeqNo), 10), req.Recipient.User, from.User, from.Host} {
		m.Write([]byte(part))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// sign marks req as forwarded by node, replacing any such header a phone put.
func (n *nodeForwarding) sign(req *sip.Request, node string) {
	for req.RemoveHeader(nodeHeader) {
	}
	ts := n.now().Unix()
	req.AppendHeader(sip.NewHeader(nodeHeader, node+";ts="+strconv.FormatInt(ts, 10)+";sig="+n.signature(node, ts, req)))
}

// verify checks a forwarded request's signature and returns the node that
// signed it.
func (n *nodeForwarding) verify(req *sip.Request, value string) (string, bool) {
	node, params, _ := strings.Cut(value, ";")
	var ts int64
	var sig string
	for _, p := range strings.Split(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "ts":
			ts, _ = strconv.ParseInt(v, 10, 64)
		case "sig":
			sig = v
		}
	}
	now := n.now()
	age := now.Sub(time.Unix(ts, 0))
	if node == "" || age > nodeClockSkew || age < -nodeClockSkew || !hmac.Equal([]byte(sig), []byte(n.signature(node, ts, req))) {
		return node, false
	}
	return node, n.firstUse(sig, now)
}

// firstUse reports whether a valid signature is new: a captured request
// replayed as a new transaction (retransmissions never reach the handler)
// is refused for as long as its signature verifies.
func (n *nodeForwarding) firstUse(sig string, now time.Time) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if now.After(n.pruned.Add(time.Second)) {
		n.pruned = now
		for s, until := range n.seen {
			if now.After(until) {
				delete(n.seen, s)
			}
		}
	}
	if _, ok := n.seen[sig]; ok {
		return false
	}
	if n.seen == nil {
		n.seen = map[string]time.Time{}
	}
	n.seen[sig] = now.Add(2 * nodeClockSkew)
	return true
}

// viaNodes splits the bindings of user aor into those this switch reaches
// itself and one request for each other live node holding some of them.
// The bindings of a node that is gone are reached directly when they can
// be (a phone with a routable Contact); those that stood for a connection
// or a NAT mapping of that node died with it and are dropped.
func (s *Switch) viaNodes(ctx context.Context, req, fwd *sip.Request, aor string, bindings []directory.Binding) ([]directory.Binding, []*sip.Request) {
	if s.nodes == nil {
		return bindings, nil
	}
	var local []directory.Binding
	var remote []*sip.Request
	seen := map[string]bool{}
	for _, b := range bindings {
		if b.Node == "" || b.Node == s.cfg.NodeID {
			local = append(local, b)
			continue
		}
		if seen[b.Node] {
			continue
		}
		node, err := s.nodes.peers.Lookup(ctx, b.Node)
		if err != nil {
			if !errors.Is(err, directory.ErrNotFound) {
				s.log.Warn("node lookup failed", "call_id", callID(req), "node", b.Node, "error", err)
			}
			s.nodes.requests.WithLabelValues("out", "node_gone").Inc()
			if !b.Flow {
				local = append(local, b)
			}
			continue
		}
		seen[b.Node] = true
		if br := s.toNode(req, fwd, aor, node); br != nil {
			remote = append(remote, br)
		}
	}
	return local, remote
}

// toNode builds the request that asks node to ring its bindings of aor.
func (s *Switch) toNode(req, fwd *sip.Request, aor string, node directory.Node) *sip.Request {
	uri := "sip:" + aor + "@" + node.Addr
	if node.Transport != "udp" {
		uri += ";transport=" + node.Transport
	}
	br := s.branchFor(req, fwd, directory.Binding{AOR: aor, Contact: uri, Transport: node.Transport})
	if br == nil {
		return nil
	}
	s.nodes.sign(br, s.cfg.NodeID)
	s.nodes.requests.WithLabelValues("out", "forwarded").Inc()
	return br
}

// fromNode handles a request another node forwarded with its signature,
// and reports whether req was one. A valid one rings this node's own
// bindings of the Request-URI's user; the forwarding node has authenticated
// the caller, routed the call and publishes its events.
func (s *Switch) fromNode(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, fwd *sip.Request) bool {
	h := firstHeader(req, nodeHeader)
	if h == nil {
		return false
	}
	var node string
	ok := false
	if s.nodes != nil {
		node, ok = s.nodes.verify(req, h.Value())
	}
	if !ok {
		if s.nodes != nil {
			s.nodes.requests.WithLabelValues("in", "rejected").Inc()
		}
		s.log.Warn("request with a bad node signature refused", "call_id", callID(req), "source", req.Source(), "node", node)
		s.respond(req, tx, 403, "Forbidden")
		return true
	}
	s.nodes.requests.WithLabelValues("in", "accepted").Inc()
	for fwd.RemoveHeader(nodeHeader) {
	}
	aor := req.Recipient.User
	bindings, err := s.dir.Bindings(ctx, aor)
	if err != nil {
		s.log.Error("location lookup failed", "call_id", callID(req), "from_node", node, "error", err)
		s.respond(req, tx, 503, "Service Unavailable", sip.NewHeader("Retry-After", "30"))
		return true
	}
	var group []branchTarget
	for _, b := range bindings {
		if b.Node != s.cfg.NodeID {
			continue // moved to another node meanwhile: the forwarding node will learn it
		}
		if br := s.branchFor(req, fwd, b); br != nil {
			group = append(group, branchTarget{req: br, direct: true, user: aor})
		}
	}
	if len(group) == 0 {
		s.respond(req, tx, 480, "Temporarily Unavailable")
		return true
	}
	var hooks forkHooks
	if req.IsInvite() {
		s.respond(req, tx, 100, "Trying")
		// The ACK of the 2xx and the dialog's requests cross this node too.
		hooks.answer = func(*branch, *sip.Response) { s.nodes.relayed.add(callID(req)) }
	}
	newForker(s, req, tx, hooks).run([][]branchTarget{group}, s.cfg.RingTimeout)
	return true
}

// relayingForNode reports whether the call is one this node delivered for
// another node, whose ACKs it must pass on although it keeps no call of its
// own for it.
func (s *Switch) relayingForNode(id string) bool {
	return s.nodes != nil && s.nodes.relayed.has(id)
}

// endRelayForNode forgets such a call when its BYE passes.
func (s *Switch) endRelayForNode(id string) {
	if s.nodes != nil {
		s.nodes.relayed.forget(id)
	}
}

// relayedCalls are the Call-IDs of answered calls relayed for other nodes.
// A call whose BYE never crosses this node is forgotten after maxRelayAge.
type relayedCalls struct {
	mu   sync.Mutex
	m    map[string]time.Time
	adds int
}

const maxRelayAge = 24 * time.Hour

func (r *relayedCalls) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	r.m[id] = now
	if r.adds++; r.adds%1024 == 0 {
		for k, at := range r.m {
			if now.Sub(at) > maxRelayAge {
				delete(r.m, k)
			}
		}
	}
}

func (r *relayedCalls) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[id]
	return ok
}

func (r *relayedCalls) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, id)
}
