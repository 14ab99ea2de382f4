package engine

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/proto"
)

// Canned operation errors, built once.
var (
	errTooManySubs     = &proto.Error{Code: proto.CodeLimitExceeded, Message: "too many subscriptions on this connection"}
	errAnonPrivate     = &proto.Error{Code: proto.CodeUnauthorized, Message: "private channels need a token"}
	errNoSubGrant      = &proto.Error{Code: proto.CodeForbidden, Message: "the token does not grant subscribing to this channel"}
	errNoPubGrant      = &proto.Error{Code: proto.CodeForbidden, Message: "the token does not grant publishing to this channel"}
	errAnonPublish     = &proto.Error{Code: proto.CodeUnauthorized, Message: "publishing needs a token on this server"}
	errAnonBroadcast   = &proto.Error{Code: proto.CodeUnauthorized, Message: "broadcast needs a token with the broadcast grant"}
	errNoBroadcast     = &proto.Error{Code: proto.CodeForbidden, Message: "the token does not grant broadcast"}
	errNoVerifier      = &proto.Error{Code: proto.CodeUnauthorized, Message: "this server accepts no tokens"}
	errTokenExpiredNow = &proto.Error{Code: proto.CodeTokenExpired, Message: "the token expired: its grants and private subscriptions are gone"}
	errTextOnBinary    = &proto.Error{Code: proto.CodeBadRequest, Message: "text frame on a binary-protocol connection"}
)

// privatePrefix marks channels whose use needs a grant.
const privatePrefix = "private-"

func isPrivate(channel string) bool { return strings.HasPrefix(channel, privatePrefix) }

// onMessage handles one complete data message.
func (c *Conn) onMessage(op ws.OpCode, payload []byte) {
	l := c.loop
	l.stats.messagesIn.Add(1)
	// m's fields point into payload or into m: valid during this call.
	m := &l.msg
	if !c.decode(op, payload, m) || !c.allowOp(m) {
		return
	}
	switch m.Op {
	case proto.OpPing:
		if c.bin {
			c.queueReply(proto.AppendBinPong(c.frameBuf()))
		} else {
			c.queueReply(proto.AppendPong(c.frameBuf()))
		}
	case proto.OpSubscribe:
		c.onSubscribe(m)
	case proto.OpUnsubscribe:
		// The connection holds the name when it is subscribed: no copy.
		if channel, ok := c.heldChannel(m.Channel); ok {
			c.unsubscribe(channel)
		}
		c.ack(m.ID)
	case proto.OpPublish:
		c.onPublish(m)
	case proto.OpBroadcast:
		c.onBroadcast(m)
	case proto.OpAuth:
		c.authenticate(m.ID, string(m.Token))
	}
}

// decode decodes a data message in the connection's protocol into m. On
// a message that cannot be decoded it answers (an error reply, or a close
// for a frame the protocol does not allow) and returns false.
func (c *Conn) decode(op ws.OpCode, payload []byte, m *proto.ClientMsg) bool {
	var perr *proto.Error
	switch {
	case c.bin && op == ws.OpBinary:
		perr = proto.DecodeBinary(payload, m)
	case c.bin:
		c.replyError(nil, errTextOnBinary)
		return false
	case op != ws.OpText:
		c.fail(proto.CloseUnsupportedData, "binary frames are not accepted on a JSON connection")
		return false
	case !utf8.Valid(payload):
		c.fail(proto.CloseInvalidPayload, "text message is not valid UTF-8")
		return false
	default:
		perr = proto.DecodeJSON(payload, m)
	}
	if perr != nil {
		c.replyError(m.ID, perr)
		return false
	}
	return true
}

// onSubscribe handles the subscribe op.
func (c *Conn) onSubscribe(m *proto.ClientMsg) {
	// The name outlives the message (subscription index, c.chans, the
	// bridge): one copy.
	channel := string(m.Channel)
	if e := c.canSubscribe(channel); e != nil {
		c.refused(proto.OpSubscribe, channel, e, nil, false)
		c.replyError(m.ID, e)
		return
	}
	if len(c.chans) >= c.srv.cfg.MaxSubscriptions && !c.subscribed(channel) {
		c.refused(proto.OpSubscribe, channel, errTooManySubs, nil, false)
		c.replyError(m.ID, errTooManySubs)
		return
	}
	if !c.loop.subscribe(c, channel) {
		c.ack(m.ID) // already subscribed
		return
	}
	c.subscribeAck(channel, m.ID)
}

// onPublish handles the publish op.
func (c *Conn) onPublish(m *proto.ClientMsg) {
	// The name outlives the message (the message, the bridge): one copy.
	channel := string(m.Channel)
	if e := c.canPublish(channel); e != nil {
		c.refused(proto.OpPublish, channel, e, m.Data, m.Opaque)
		c.replyError(m.ID, e)
		return
	}
	c.publishAndAck(channel, m.Data, m.Opaque, m.ID)
}

// onBroadcast handles the broadcast op, which needs the broadcast grant.
func (c *Conn) onBroadcast(m *proto.ClientMsg) {
	var e *proto.Error
	switch {
	case c.ident == nil:
		e = errAnonBroadcast
	case !c.ident.Grants.Broadcast:
		e = errNoBroadcast
	}
	if e != nil {
		c.refused(proto.OpBroadcast, "", e, m.Data, m.Opaque)
		c.replyError(m.ID, e)
		return
	}
	c.publishAndAck("", m.Data, m.Opaque, m.ID)
}

// publishAndAck publishes and acknowledges: at once, or once the message
// is on disk when the node promises durable acks.
func (c *Conn) publishAndAck(channel string, data []byte, opaque bool, id []byte) {
	if id != nil && c.srv.cfg.DurableAcks {
		if !c.publishDurable(channel, data, opaque, id) {
			c.replyError(id, errOverloaded)
		}
		return
	}
	if !c.publish(channel, data, opaque) {
		c.replyError(id, errOverloaded)
		return
	}
	c.ack(id)
}

func (c *Conn) canSubscribe(channel string) *proto.Error {
	if !isPrivate(channel) {
		return nil
	}
	if c.ident == nil {
		return errAnonPrivate
	}
	if !c.ident.Grants.CanSubscribe(channel) {
		return errNoSubGrant
	}
	return nil
}

func (c *Conn) canPublish(channel string) *proto.Error {
	if !isPrivate(channel) && !c.srv.cfg.PublicPublishGranted {
		return nil
	}
	if c.ident == nil {
		if isPrivate(channel) {
			return errAnonPrivate
		}
		return errAnonPublish
	}
	if !c.ident.Grants.CanPublish(channel) {
		return errNoPubGrant
	}
	return nil
}

func (c *Conn) subscribed(channel string) bool {
	for _, ch := range c.chans {
		if ch == channel {
			return true
		}
	}
	return false
}

// heldChannel returns the connection's copy of the name of a channel it is
// subscribed to.
func (c *Conn) heldChannel(name []byte) (string, bool) {
	for _, ch := range c.chans {
		if ch == string(name) {
			return ch, true
		}
	}
	return "", false
}

// authenticate handles the auth op: a valid token replaces the identity and
// its grants (subscriptions the new grants do not cover are dropped); an
// invalid one changes nothing.
func (c *Conn) authenticate(id []byte, token string) {
	v := c.srv.cfg.Verifier
	if v == nil {
		c.refused(proto.OpAuth, "", errNoVerifier, nil, false)
		c.replyError(id, errNoVerifier)
		return
	}
	ident, err := v.Verify(token)
	if err != nil {
		code := proto.CodeUnauthorized
		if errors.Is(err, auth.ErrTokenExpired) {
			code = proto.CodeTokenExpired
		}
		e := &proto.Error{Code: code, Message: err.Error()}
		c.refused(proto.OpAuth, "", e, nil, false)
		c.replyError(id, e)
		return
	}
	if ident.User != c.user() && c.srv.userFull(ident.User) {
		c.refused(proto.OpAuth, "", errTooManyUser, nil, false)
		c.replyError(id, errTooManyUser)
		return
	}
	c.setIdentity(ident)
	c.dropUngranted()
	c.ack(id)
}

// setIdentity installs a verified identity and its expiry, and tells the
// bridge about a change of user on an open WebSocket.
func (c *Conn) setIdentity(ident *auth.Identity) {
	before := c.user()
	c.ident = ident
	c.expires = 0
	if ident != nil && !ident.Expires.IsZero() {
		c.expires = ident.Expires.UnixNano()
	}
	c.reschedule()
	if c.state == stateWS && c.user() != before {
		c.userChanged(before, c.user())
		c.srv.cfg.Bridge.Identified(c.loop.idx, c.id, c.user())
	}
}

// user returns the connection's user id, "" when anonymous.
func (c *Conn) user() string {
	if c.ident == nil {
		return ""
	}
	return c.ident.User
}

// dropUngranted leaves every private channel the current grants do not
// cover.
func (c *Conn) dropUngranted() {
	for i := 0; i < len(c.chans); {
		ch := c.chans[i]
		if c.canSubscribe(ch) != nil {
			c.unsubscribe(ch)
			continue
		}
		i++
	}
}

// tokenExpired runs when the connection's token expires: the client gets
// token_expired, loses its grants and its private subscriptions, and goes on
// as an anonymous connection; where anonymous connections are refused it is
// closed with 4002.
func (c *Conn) tokenExpired() {
	c.replyError(nil, errTokenExpiredNow)
	c.setIdentity(nil)
	c.dropUngranted()
	if c.srv.cfg.RequireToken {
		c.fail(proto.CloseTokenExpired, "token expired")
	}
}

// frameBuf returns the loop's scratch buffer with frame headroom reserved.
// The result is valid until the next frameBuf call on the loop.
func (c *Conn) frameBuf() []byte {
	l := c.loop
	l.scratch = newFrameBuf(l.scratch)
	return l.scratch
}

// queueReply frames a payload built after frameBuf's headroom, in the
// connection's protocol, and queues it (queueFrame).
func (c *Conn) queueReply(buf []byte) {
	c.loop.scratch = buf
	op := ws.OpText
	if c.bin {
		op = ws.OpBinary
	}
	c.queueFrame(finishFrame(buf, op))
}

func (c *Conn) ack(id []byte) {
	if id == nil {
		return
	}
	if c.bin {
		c.queueReply(proto.AppendBinAck(c.frameBuf(), id))
	} else {
		c.queueReply(proto.AppendAck(c.frameBuf(), id))
	}
}

func (c *Conn) replyError(id []byte, e *proto.Error) {
	if c.bin {
		c.queueReply(proto.AppendBinError(c.frameBuf(), id, e))
	} else {
		c.queueReply(proto.AppendError(c.frameBuf(), id, e))
	}
}
