package cluster

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// hold keeps the messages and events for other nodes while NATS is away,
// up to a bound in bytes, and sends them, in order, once the peers can
// take them again.
//
// The NATS client's own reconnect buffer is not used (it is off): it
// sends what it kept as soon as this node is back, when the other nodes
// may not have subscribed again yet, and the server then drops those
// messages without anyone knowing. Here the messages wait until every
// peer that was up has been heard from after this node's reconnection (a
// peer's heartbeat travels on its connection after its subscriptions,
// so it proves them made again), or until DownAfter has passed, after
// which a silent peer is down anyway.
type hold struct {
	nc    *nats.Conn
	limit int
	drop  func() // counts and logs one message that did not fit

	active atomic.Bool // while set, messages wait here

	mu        sync.Mutex
	msgs      []heldMsg
	bytes     int
	back      time.Time // when the connection came back; zero while away
	expect    []string  // the peers up when the connection went away
	neverSeen bool      // not yet connected once: nothing to wait for
}

type heldMsg struct {
	subject string
	data    []byte
}

// send publishes, or keeps the message while the connection is away or
// the peers are not back.
func (h *hold) send(subject string, data []byte) {
	if !h.active.Load() {
		err := h.nc.Publish(subject, data)
		if err == nil {
			return
		}
		if !errors.Is(err, nats.ErrReconnectBufExceeded) {
			h.drop()
			return
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.active.Load() {
		// Released meanwhile, or the connection failed before the
		// disconnect handler ran: keep it unless it goes through now.
		if err := h.nc.Publish(subject, data); err == nil {
			return
		}
		h.active.Store(true)
	}
	if h.bytes+len(subject)+len(data) > h.limit {
		h.drop()
		return
	}
	h.msgs = append(h.msgs, heldMsg{subject, append([]byte(nil), data...)})
	h.bytes += len(subject) + len(data)
}

// away starts holding; peers are those up at that moment.
func (h *hold) away(peers []string) {
	h.mu.Lock()
	h.active.Store(true)
	h.back, h.expect = time.Time{}, peers
	h.mu.Unlock()
}

// returned notes the connection is back; first is the first connection
// of a node that never had one (no peer waits for its messages).
func (h *hold) returned(now time.Time, first bool) {
	h.mu.Lock()
	h.back = now
	h.neverSeen = first
	h.mu.Unlock()
}

// release sends what is held once every expected peer's heartbeat came
// after the connection's return (seen returns when a peer was last
// heard), or downAfter has passed since. It reports whether nothing is
// held any more.
func (h *hold) release(now time.Time, downAfter time.Duration, seen func(string) time.Time) bool {
	if !h.active.Load() {
		return true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.back.IsZero() || !h.nc.IsConnected() || !h.peersBack(now, downAfter, seen) {
		return false
	}
	for i, m := range h.msgs {
		if err := h.nc.Publish(m.subject, m.data); err != nil {
			// Away again: keep the rest, in order.
			h.msgs = append(h.msgs[:0], h.msgs[i:]...)
			h.bytes = 0
			for _, r := range h.msgs {
				h.bytes += len(r.subject) + len(r.data)
			}
			return false
		}
	}
	h.msgs, h.bytes = nil, 0
	h.active.Store(false)
	return true
}

func (h *hold) peersBack(now time.Time, downAfter time.Duration, seen func(string) time.Time) bool {
	if h.neverSeen || now.Sub(h.back) >= downAfter {
		return true
	}
	for _, p := range h.expect {
		if !seen(p).After(h.back) {
			return false
		}
	}
	return true
}
