package engine

import (
	"github.com/zenconn/server/proto"
)

// Bridge connects the engine of a worker process to its node's agent: it
// reports what happens on this process and carries messages to the
// others. Every Server has one (Config.Bridge); the worker's goes over the
// shared-memory rings, NopBridge serves tests of the engine alone.
//
// Methods are called on event loops, each with the index of the calling
// loop (0 ≤ loop < Config.Loops), so an implementation can give every loop
// its own single-producer queue. They must not block.
type Bridge interface {
	// Opened reports a WebSocket connection after its handshake.
	Opened(loop int, s SessionInfo)
	// Closed reports a WebSocket connection gone, with the close code sent
	// or received (1006 when none was); its subscriptions go with it.
	Closed(loop int, conn string, code uint16)
	// Identified reports a connection's new user after an auth op or a
	// token expiry ("" for anonymous).
	Identified(loop int, conn, user string)
	// Subscribed reports a new subscription. When messages published
	// anywhere on the node already reach it, it returns live true (with
	// err nil) and never calls live; else it calls live, from any
	// goroutine, once they do (or with an error when that cannot be done),
	// or returns the error itself.
	Subscribed(loop int, conn, channel string, live func(error)) (now bool, err error)
	// Unsubscribed reports a subscription dropped by the client.
	Unsubscribed(loop int, conn, channel string)
	// Published hands a message published on this process to the node
	// (channel "" for a broadcast): its audit log and its other processes.
	// An error means it could not be taken now; the engine then refuses
	// the publish as overloaded. durable is nil unless Config.DurableAcks
	// is set and the client asked for an ack: then, when Published returns
	// nil, the bridge calls durable exactly once, from any goroutine, when
	// the node has the message on disk (or with an error).
	Published(loop int, channel, from string, data []byte, opaque bool, durable func(error)) error
	// Refused reports an attempt the engine turned down (a forbidden or
	// unauthenticated op, a refused token).
	Refused(loop int, r Refusal)
}

// SessionInfo describes a WebSocket connection when it opens.
type SessionInfo struct {
	Conn, User, Remote, UserAgent, Protocol string
}

// Refusal describes an attempt the engine turned down.
type Refusal struct {
	Conn string // "" for a refused handshake
	User string
	// Op is the protocol op refused, or "connect" for a handshake.
	Op      string
	Channel string
	Code    string // the error code sent back (proto.Code…)
	Remote  string // for a refused handshake
	Data    []byte // the refused publish's data; valid only during the call
	Opaque  bool
}

// NopBridge is a Bridge without a node, for tests of the engine alone: it
// reports nothing, every subscription is live at once, every publish is
// taken and a durable ack is confirmed at once.
type NopBridge struct{}

func (NopBridge) Opened(int, SessionInfo)          {}
func (NopBridge) Closed(int, string, uint16)       {}
func (NopBridge) Identified(int, string, string)   {}
func (NopBridge) Unsubscribed(int, string, string) {}
func (NopBridge) Refused(int, Refusal)             {}

func (NopBridge) Subscribed(int, string, string, func(error)) (bool, error) { return true, nil }

func (NopBridge) Published(_ int, _, _ string, _ []byte, _ bool, durable func(error)) error {
	if durable != nil {
		durable(nil)
	}
	return nil
}

var (
	errOverloaded = &proto.Error{Code: proto.CodeOverloaded, Message: "the node is overloaded, retry"}
	errNotDurable = &proto.Error{Code: proto.CodeInternal, Message: "the message was delivered but could not be written to the audit log"}
)

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
// on the whole node.
func (c *Conn) subscribeAck(channel string, id []byte) {
	b := c.srv.cfg.Bridge
	l := c.loop
	idCopy := append([]byte(nil), id...)
	now, err := b.Subscribed(l.idx, c.id, channel, func(err error) {
		_ = l.exec.Execute(func() {
			if c.state != stateWS {
				return
			}
			if err != nil {
				c.replyError(idCopy, errOverloaded)
			} else {
				c.ack(idCopy)
			}
			c.flush()
		})
	})
	switch {
	case err != nil:
		c.replyError(id, errOverloaded)
	case now:
		// Answered in this read, with the rest of its replies.
		c.ack(id)
	}
}

// unsubscribe drops a subscription and tells the bridge.
func (c *Conn) unsubscribe(channel string) bool {
	if !c.loop.unsubscribe(c, channel) {
		return false
	}
	c.srv.cfg.Bridge.Unsubscribed(c.loop.idx, c.id, channel)
	return true
}

// publish delivers a message locally and hands it to the other processes
// of the node; it reports false (nothing delivered) when the bridge could
// not take it.
func (c *Conn) publish(channel string, data []byte, opaque bool) bool {
	if err := c.srv.cfg.Bridge.Published(c.loop.idx, channel, c.id, data, opaque, nil); err != nil {
		return false
	}
	c.srv.hub.publish(c.loop, newOutMsg(channel, c.id, data, opaque), c)
	return true
}

// publishDurable is publish for a client that wants its ack only once the
// node has the message on disk (Config.DurableAcks): the ack, or an error,
// is sent when the bridge calls back.
func (c *Conn) publishDurable(channel string, data []byte, opaque bool, id []byte) bool {
	l := c.loop
	id = append([]byte(nil), id...)
	err := c.srv.cfg.Bridge.Published(l.idx, channel, c.id, data, opaque, func(err error) {
		_ = l.exec.Execute(func() {
			if c.state != stateWS {
				return
			}
			if err != nil {
				c.replyError(id, errNotDurable)
			} else {
				c.ack(id)
			}
			c.flush()
		})
	})
	if err != nil {
		return false
	}
	c.srv.hub.publish(l, newOutMsg(channel, c.id, data, opaque), c)
	return true
}

// refused reports a turned-down op to the bridge.
func (c *Conn) refused(op proto.Op, channel string, e *proto.Error, data []byte, opaque bool) {
	c.srv.cfg.Bridge.Refused(c.loop.idx, Refusal{Conn: c.id, User: c.user(), Op: op.String(), Channel: channel, Code: e.Code, Data: data, Opaque: opaque})
}
