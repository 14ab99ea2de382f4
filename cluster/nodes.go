package cluster

import (
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Beat is a node's heartbeat (subject P.node.beat) and its entry in
// GET /api/nodes.
type Beat struct {
	ID            string    `json:"id"`
	Address       string    `json:"address"`
	Workers       int       `json:"workers"`
	Connections   int       `json:"connections"`
	Subscriptions int       `json:"subscriptions"`
	Channels      int       `json:"channels"`
	Started       time.Time `json:"started"`
	// Leaving is set in the last heartbeat of a node that shuts down.
	Leaving bool `json:"leaving,omitempty"`
}

// Node is a node as this node sees it.
type Node struct {
	Beat
	LastSeen time.Time `json:"last_seen"`
	Up       bool      `json:"up"`
	Self     bool      `json:"self,omitempty"`
}

// maxPeers bounds the peers remembered (anyone on the NATS account can
// send heartbeats); the longest-silent peer makes room.
const maxPeers = 1024

// peers is what this node knows of the others, from their heartbeats and
// events.
type peers struct {
	self      string
	downAfter time.Duration
	log       *slog.Logger

	mu    sync.Mutex
	nodes map[string]*Node
}

func newPeers(self string, downAfter time.Duration, log *slog.Logger) *peers {
	return &peers{self: self, downAfter: downAfter, log: log, nodes: map[string]*Node{}}
}

// beat records a heartbeat.
func (p *peers) beat(b Beat, now time.Time) {
	if b.ID == "" || len(b.ID) > 64 {
		return
	}
	if b.ID == p.self {
		// NoEcho: this node never hears itself. Another node has its id.
		p.log.Error("cluster: another node uses this node's id; give each node its own --data", "node", b.ID, "address", b.Address)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[b.ID]
	if n == nil {
		p.makeRoom()
		n = &Node{}
		p.nodes[b.ID] = n
	}
	if !n.Up && !b.Leaving {
		p.log.Info("cluster: node up", "node", b.ID, "address", b.Address)
	}
	if b.Leaving && n.Up {
		p.log.Info("cluster: node left", "node", b.ID)
	}
	n.Beat, n.LastSeen, n.Up = b, now, !b.Leaving
}

func (p *peers) makeRoom() {
	if len(p.nodes) < maxPeers {
		return
	}
	var oldest string
	for id, n := range p.nodes {
		if oldest == "" || n.LastSeen.Before(p.nodes[oldest].LastSeen) {
			oldest = id
		}
	}
	delete(p.nodes, oldest)
}

// event applies a peer's event to its figures until its next heartbeat.
func (p *peers) event(node, kind string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.nodes[node]
	if n == nil {
		return
	}
	switch kind {
	case KindConnect:
		n.Connections++
	case KindDisconnect:
		n.Connections = max(n.Connections-1, 0)
	case KindSubscribe:
		n.Subscriptions++
	case KindUnsubscribe:
		n.Subscriptions = max(n.Subscriptions-1, 0)
	}
}

// check marks down the peers silent for downAfter.
func (p *peers) check(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, n := range p.nodes {
		if n.Up && now.Sub(n.LastSeen) > p.downAfter {
			n.Up = false
			p.log.Warn("cluster: node down", "node", id, "last_seen", n.LastSeen)
		}
	}
}

// list returns the peers sorted by id.
func (p *peers) list() []Node {
	p.mu.Lock()
	out := make([]Node, 0, len(p.nodes))
	for _, n := range p.nodes {
		out = append(out, *n)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// lastSeen returns when peer id was last heard (zero: never).
func (p *peers) lastSeen(id string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.nodes[id]; n != nil {
		return n.LastSeen
	}
	return time.Time{}
}

// up returns the ids of the peers up.
func (p *peers) up() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id, n := range p.nodes {
		if n.Up {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// checksPerBeat: silent peers are looked for four times per Beat, so a
// peer is down at most a quarter Beat after DownAfter.
const checksPerBeat = 4

// beat sends this node's heartbeat every Beat interval, marks down the
// silent peers and releases held messages, until the cluster stops.
func (c *Cluster) beat() {
	t := time.NewTicker(c.cfg.Beat / checksPerBeat)
	defer t.Stop()
	c.sendBeat(false)
	for i := 1; ; i++ {
		select {
		case <-c.stop:
			return
		case now := <-t.C:
			if i%checksPerBeat == 0 {
				c.sendBeat(false)
			}
			c.peers.check(now)
			c.release()
		}
	}
}

// sendBeat publishes the heartbeat directly: while NATS is away a
// heartbeat is worth nothing later, so it is not held.
func (c *Cluster) sendBeat(leaving bool) {
	b := c.host.Beat()
	b.ID, b.Address, b.Leaving = c.cfg.Node, c.cfg.Address, leaving
	data, _ := json.Marshal(b)
	_ = c.nc.Publish(c.cfg.Name+".node.beat", data)
}

func (c *Cluster) onBeat(m *nats.Msg) {
	var b Beat
	if json.Unmarshal(m.Data, &b) == nil {
		c.peers.beat(b, time.Now())
		c.release()
	}
}

// Nodes returns this node and its peers, this node first.
func (c *Cluster) Nodes() []Node {
	b := c.host.Beat()
	b.ID, b.Address = c.cfg.Node, c.cfg.Address
	self := Node{Beat: b, LastSeen: time.Now(), Up: true, Self: true}
	return append([]Node{self}, c.peers.list()...)
}

// Known reports whether node is a peer this node has heard of.
func (c *Cluster) Known(node string) bool { return !c.peers.lastSeen(node).IsZero() }

// Peers counts the peers up and down.
func (c *Cluster) Peers() (up, down int) {
	c.peers.mu.Lock()
	defer c.peers.mu.Unlock()
	for _, n := range c.peers.nodes {
		if n.Up {
			up++
		} else {
			down++
		}
	}
	return up, down
}

// Up returns the ids of the peers up.
func (c *Cluster) Up() []string { return c.peers.up() }
