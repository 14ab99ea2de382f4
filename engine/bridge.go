package engine

import (
	"github.com/zenconn/server/proto"
)

// Bridge connects the engine of a worker process to its node's agent: it
// reports what happens on this process and carries messages to the
// others. A nil Bridge (single-process mode) reports nothing.
//
// Methods are called on event loops, each with the index of the calling
// loop (0 ≤ loop < Config.Loops), so an implementation can give every loop
// its own single-producer queue. They must not block.
type Bridge interface {
	// Opened reports a WebSocket connection after its handshake.
	Opened(loop int, conn, user, remote, protocol string)
	// Closed reports a WebSocket connection gone; its subscriptions go with it.
	Closed(loop int, conn string)
	// Identified reports a connection's new user after an auth op or a
	// token expiry ("" for anonymous).
	Identified(loop int, conn, user string)
	// Subscribed reports a new subscription and calls live, from any
	// goroutine, once a message published anywhere on the node reaches it
	// (or with an error when that cannot be done).
	Subscribed(loop int, conn, channel string, live func(error))
	// Unsubscribed reports a subscription dropped by the client.
	Unsubscribed(loop int, conn, channel string)
	// Published hands a message published on this process to the other
	// processes (channel "" for a broadcast). An error means it could not
	// be taken now; the engine then refuses the publish as overloaded.
	Published(loop int, channel, from string, data []byte, opaque bool) error
}

var errOverloaded = &proto.Error{Code: proto.CodeOverloaded, Message: "the node is overloaded, retry"}

// Deliver hands a message published on another process of the node to
// this process's subscribers of channel (every WebSocket for a broadcast,
// channel ""). Safe for concurrent use; data is copied.
func (s *Server) Deliver(channel, from string, data []byte, opaque bool) {
	s.hub.publish(nil, newOutMsg(channel, from, data, opaque), nil)
}

// Kick closes connection conn with 4100 if it is on this process. Safe for
// concurrent use; it does not wait.
func (s *Server) Kick(conn string) {
	for _, l := range s.hub.allLoops() {
		l := l
		_ = l.exec.Execute(func() { l.kick(conn) })
	}
}

// kick closes the loop's WebSocket conn with 4100 and reports whether it
// was there. It runs on the loop.
func (l *loop) kick(conn string) bool {
	for c := range l.conns {
		if c.id == conn && c.state == stateWS {
			c.fail(proto.CloseDisconnected, "disconnected by the server API")
			return true
		}
	}
	return false
}

// Stats returns this process's counters: open connections, subscriptions,
// messages in, messages out, bytes in, bytes out, slow-consumer closes.
func (s *Server) Stats() [7]uint64 {
	var n [7]uint64
	for _, l := range s.hub.allLoops() {
		st := &l.stats
		n[0] += uint64(max(st.websockets.Load(), 0))
		n[1] += uint64(max(st.subscriptions.Load(), 0))
		n[2] += st.messagesIn.Load()
		n[3] += st.messagesOut.Load()
		n[4] += st.bytesIn.Load()
		n[5] += st.bytesOut.Load()
		n[6] += st.slowClosed.Load()
	}
	return n
}

// subscribeAck acknowledges a subscription once the bridge reports it live
// on the whole node; without a bridge at once.
func (c *Conn) subscribeAck(channel string, id []byte) {
	b := c.srv.cfg.Bridge
	if b == nil {
		c.ack(id)
		return
	}
	l := c.loop
	id = append([]byte(nil), id...)
	b.Subscribed(l.idx, c.id, channel, func(err error) {
		_ = l.exec.Execute(func() {
			if c.state != stateWS {
				return
			}
			if err != nil {
				c.replyError(id, errOverloaded)
			} else {
				c.ack(id)
			}
			c.flush()
		})
	})
}

// unsubscribe drops a subscription and tells the bridge.
func (c *Conn) unsubscribe(channel string) bool {
	if !c.loop.unsubscribe(c, channel) {
		return false
	}
	c.dropChannel(channel)
	if b := c.srv.cfg.Bridge; b != nil {
		b.Unsubscribed(c.loop.idx, c.id, channel)
	}
	return true
}

// publish delivers a message locally and hands it to the other processes
// of the node; it reports false (nothing delivered) when the bridge could
// not take it.
func (c *Conn) publish(channel string, data []byte, opaque bool) bool {
	if b := c.srv.cfg.Bridge; b != nil {
		if err := b.Published(c.loop.idx, channel, c.id, data, opaque); err != nil {
			return false
		}
	}
	c.srv.hub.publish(c.loop, newOutMsg(channel, c.id, data, opaque), c)
	return true
}
