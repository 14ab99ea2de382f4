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
	// Tick is called on each loop about once a second (with its periodic
	// checks), for the bridge's own periodic work on that loop's queue.
	Tick(loop int)
}

// SessionInfo describes a WebSocket connection when it opens.
type SessionInfo struct {
	Conn, User, Remote, UserAgent, Protocol string
	// TLSVersion and TLSCipher are the TLS version and cipher suite of
	// the connection (crypto/tls's numbers), 0 over plain text.
	TLSVersion, TLSCipher uint16
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
// taken and a durable ack is confirmed at once. Safe for concurrent use.
type NopBridge struct{}

func (NopBridge) Opened(int, SessionInfo)          {}
func (NopBridge) Closed(int, string, uint16)       {}
func (NopBridge) Identified(int, string, string)   {}
func (NopBridge) Unsubscribed(int, string, string) {}
func (NopBridge) Refused(int, Refusal)             {}
func (NopBridge) Tick(int)                         {}

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

// refused reports a turned-down op to the bridge.
func (c *Conn) refused(op proto.Op, channel string, e *proto.Error, data []byte, opaque bool) {
	c.srv.cfg.Bridge.Refused(c.loop.idx, Refusal{Conn: c.id, User: c.user(), Op: op.String(), Channel: channel, Code: e.Code, Data: data, Opaque: opaque})
}
