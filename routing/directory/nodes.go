package directory

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Node is a running switch of the network, as the other nodes reach it.
type Node struct {
	ID        string    `json:"id"`
	Addr      string    `json:"addr"`      // host:port of its SIP listener for other nodes
	Transport string    `json:"transport"` // udp, tcp or tls
	Since     time.Time `json:"since"`     // when the process started
	// Instance is random per process: two processes announcing one node ID
	// tell each other apart by it.
	Instance string `json:"instance"`
}

// A node's record lives nodeTTLFactor heartbeats: two may be lost before the
// others give it up.
const nodeTTLFactor = 3

func nodeKey(id string) string     { return "cen:{node:" + id + "}" } // JSON Node, expiring
const nodesKey = "cen:{idx}:nodes" // set of node IDs that announced themselves

// delIfSame deletes KEYS[1] if it still holds ARGV[1]: a node that stops
// removes its own record, never the one of a process that took its ID over.
var delIfSame = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// Nodes announces this node in Redis and finds the others. A node's record
// expires unless the node refreshes it every heartbeat, so a node that dies
// is gone for the others within three heartbeats, and one that stops cleanly
// at once.
type Nodes struct {
	client redis.UniversalClient
	self   Node
	data   []byte // self as stored
	every  time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	known map[string]Node // last seen alive, served while Redis is unreachable
	stop  context.CancelFunc
	done  chan struct{}
}

// NewNodes announces self (its Instance and Since are filled in) and keeps
// announcing it every heartbeat until Close.
func NewNodes(ctx context.Context, client redis.UniversalClient, self Node, every time.Duration, log *slog.Logger) (*Nodes, error) {
	if self.ID == "" || self.Addr == "" || every <= 0 {
		return nil, errors.New("directory: nodes: need a node ID, an address and a heartbeat")
	}
	self.Instance, self.Since = rand.Text(), time.Now().UTC()
	data, err := json.Marshal(self)
	if err != nil {
		return nil, err
	}
	n := &Nodes{client: client, self: self, data: data, every: every, log: log, known: map[string]Node{}, done: make(chan struct{})}
	if err := n.announce(ctx); err != nil {
		return nil, fmt.Errorf("directory: announcing node %s: %w", self.ID, err)
	}
	bg, stop := context.WithCancel(context.Background())
	n.stop = stop
	go n.heartbeat(bg)
	return n, nil
}

// announce writes this node's record and warns when another live process
// had announced the same ID from another address.
func (n *Nodes) announce(ctx context.Context) error {
	old, err := n.client.SetArgs(ctx, nodeKey(n.self.ID), n.data, redis.SetArgs{TTL: nodeTTLFactor * n.every, Get: true}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	var prev Node
	if old != "" && json.Unmarshal([]byte(old), &prev) == nil && prev.Instance != n.self.Instance && prev.Addr != n.self.Addr {
		n.log.Error("another live process announces this node_id; every node needs its own",
			"node", n.self.ID, "other_addr", prev.Addr, "addr", n.self.Addr)
	}
	return n.client.SAdd(ctx, nodesKey, n.self.ID).Err()
}

func (n *Nodes) heartbeat(ctx context.Context) {
	defer close(n.done)
	t := time.NewTicker(n.every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, n.every)
		err := n.announce(actx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// Logged on change only: the directory already says Redis is down.
		if (err != nil) != failing {
			failing = err != nil
			if failing {
				n.log.Warn("node heartbeat not written; other nodes will give this one up", "node", n.self.ID, "error", err)
			} else {
				n.log.Info("node heartbeat written again", "node", n.self.ID)
			}
		}
	}
}

// Self is this node as announced.
func (n *Nodes) Self() Node { return n.self }

// Lookup returns a live node by ID, or ErrNotFound when its record has
// expired (the node is dead or stopped). While Redis is unreachable the last
// record seen is returned.
func (n *Nodes) Lookup(ctx context.Context, id string) (Node, error) {
	if id == n.self.ID {
		return n.self, nil
	}
	data, err := n.client.Get(ctx, nodeKey(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		n.mu.Lock()
		delete(n.known, id)
		n.mu.Unlock()
		return Node{}, notFound("node", id)
	}
	if err != nil {
		n.mu.Lock()
		node, ok := n.known[id]
		n.mu.Unlock()
		if ok {
			return node, nil
		}
		return Node{}, wrap(err)
	}
	var node Node
	if err := json.Unmarshal(data, &node); err != nil {
		return Node{}, fmt.Errorf("directory: redis: node %q: %w", id, err)
	}
	n.mu.Lock()
	n.known[id] = node
	n.mu.Unlock()
	return node, nil
}

// List returns the live nodes by ID, and forgets the IDs of dead ones.
func (n *Nodes) List(ctx context.Context) ([]Node, error) {
	ids, cmds, err := getMembers(ctx, n.client, nodesKey, nodeKey)
	if err != nil {
		return nil, err
	}
	var out []Node
	var gone []any
	for i, c := range cmds {
		var node Node
		if c.Err() != nil || json.Unmarshal([]byte(c.Val()), &node) != nil {
			gone = append(gone, ids[i])
			continue
		}
		out = append(out, node)
	}
	if len(gone) > 0 {
		if err := n.client.SRem(ctx, nodesKey, gone...).Err(); err != nil {
			n.log.Warn("redis: cannot prune the node index", "error", err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Close stops the heartbeat and withdraws this node's record, so the other
// nodes stop forwarding to it at once.
func (n *Nodes) Close() error {
	n.stop()
	<-n.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return wrap(delIfSame.Run(ctx, n.client, []string{nodeKey(n.self.ID)}, n.data).Err())
}
