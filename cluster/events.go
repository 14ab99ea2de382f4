package cluster

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
)

// The kinds of events (the last token of P.event.<node>.<kind>).
const (
	KindConnect     = "connect"
	KindDisconnect  = "disconnect"
	KindSubscribe   = "subscribe"
	KindUnsubscribe = "unsubscribe"
)

// Event is the JSON payload of P.event.<node>.<kind>.
type Event struct {
	Node     string    `json:"node"`
	Conn     string    `json:"conn"`
	User     string    `json:"user"`
	Worker   int       `json:"worker"`
	Channel  string    `json:"channel,omitempty"`  // subscribe, unsubscribe
	Remote   string    `json:"remote,omitempty"`   // connect
	Protocol string    `json:"protocol,omitempty"` // connect
	Code     int       `json:"code,omitempty"`     // disconnect
	Time     time.Time `json:"time"`
}

// Emit announces an event of this node to the cluster.
func (c *Cluster) Emit(kind string, ev Event) {
	ev.Node = c.cfg.Node
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	data, _ := json.Marshal(&ev)
	c.send(c.cfg.Name+".event."+c.cfg.Node+"."+kind, data)
}

// onEvent keeps a peer's figures current between its heartbeats.
func (c *Cluster) onEvent(m *nats.Msg) {
	if node, kind := subjectParts(m.Subject); node != "" {
		c.peers.event(node, kind)
	}
}
