package main

// Centrifugo's client protocol (JSON, --protocol centrifugo) for the idle
// and fanout modes, so that the same generator measures Centrifugo beside
// ZenConn. A connection sends connect (id 1), then a subscriber subscribes
// (id 2); publishers do not subscribe and publish from id 3. The server
// may put several replies and pushes in one frame, one JSON object a line;
// "{}" is its ping, answered with "{}" when the connect reply asked for
// pongs.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/gobwas/ws"
)

var (
	centConnect      = []byte(`{"id":1,"connect":{"name":"bench"}}`)
	centPubKey       = []byte(`"pub":{`)
	centIDPrefix     = []byte(`{"id":`)
	centPublishReply = []byte(`,"publish":{}}`)
	centPing         = []byte(`{}`)
)

// centReply is one line of a Centrifugo frame: a reply (with an id) or a
// push.
type centReply struct {
	ID    *int64 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Connect *struct {
		Client string `json:"client"`
		Pong   bool   `json:"pong"`
	} `json:"connect"`
	Subscribe json.RawMessage `json:"subscribe"`
	Publish   json.RawMessage `json:"publish"`
	Push      *struct {
		Channel *string `json:"channel"`
		Pub     *struct {
			Data json.RawMessage `json:"data"`
			Info *struct {
				Client string `json:"client"`
			} `json:"info"`
		} `json:"pub"`
	} `json:"push"`
}

// onCentFrame handles every line of a frame.
func (l *loop) onCentFrame(c *conn, p []byte, now int64) {
	for len(p) > 0 && !c.closed() {
		var line []byte
		line, p, _ = bytes.Cut(p, newline)
		if len(line) > 0 {
			l.onCentMessage(c, line, now)
		}
	}
}

// newline separates the replies and pushes of one Centrifugo frame.
var newline = []byte{'\n'}

// onCentMessage handles one reply or push.
func (l *loop) onCentMessage(c *conn, p []byte, now int64) {
	c.frames++
	if c.welcome && c != l.validator && bytes.Contains(p, centPubKey) {
		l.onDelivery(c, p, now)
		return
	}
	if id, ok := centFastPublish(c, p); ok {
		l.onPublishAnswer(c, id, true, p, now)
		return
	}
	if bytes.Equal(p, centPing) {
		if c.pong {
			l.send(c, ws.OpText, centPing)
		}
		return
	}
	var m centReply
	if err := json.Unmarshal(p, &m); err != nil {
		l.protoErr("bad_json", string(p))
		return
	}
	switch {
	case m.Push != nil && m.Push.Pub != nil:
		if !c.welcome {
			l.protoErr("message_before_welcome", string(p))
		}
		if c == l.validator {
			from := ""
			if m.Push.Pub.Info != nil {
				from = m.Push.Pub.Info.Client
			}
			l.validateMsg(m.Push.Channel, from, m.Push.Pub.Data, p)
		}
		l.onDelivery(c, p, now)
	case m.Push != nil:
		l.protoErr("unexpected_push", string(p))
	case m.ID == nil:
		l.protoErr("reply_without_id", string(p))
	case m.Error != nil:
		l.onCentError(c, &m, p, now)
	default:
		l.onCentReply(c, &m, p, now)
	}
}

// centFastPublish reads a publish reply without encoding/json:
// {"id":N,"publish":{}}, on a publisher after its connect reply.
func centFastPublish(c *conn, p []byte) (int64, bool) {
	if c.role != rolePub || !c.welcome || !bytes.HasPrefix(p, centIDPrefix) {
		return 0, false
	}
	id, n := parseUint(p[len(centIDPrefix):])
	return id, n > 0 && bytes.Equal(p[len(centIDPrefix)+n:], centPublishReply) && id >= 3
}

// onCentReply: the connect reply (the welcome), the subscribe reply (the
// ack) or a publish reply.
func (l *loop) onCentReply(c *conn, m *centReply, p []byte, now int64) {
	id := *m.ID
	switch {
	case id == 1 && m.Connect != nil:
		switch {
		case c.welcome:
			l.protoErr("duplicate_welcome", string(p))
		case c.frames != 1:
			l.protoErr("welcome_not_first", string(p))
		case m.Connect.Client == "":
			l.protoErr("bad_welcome", string(p))
		}
		c.welcome, c.id, c.pong = true, m.Connect.Client, m.Connect.Pong
		if !c.subAck {
			l.send(c, ws.OpText, fmt.Appendf(nil, `{"id":2,"subscribe":{"channel":%s}}`, strconv.Quote(l.cfg.channel)))
		}
		l.checkReady(c)
	case !c.welcome:
		l.protoErr("ack_before_welcome", string(p))
	case id == 2 && m.Subscribe != nil && !c.subAck:
		c.subAck = true
		l.checkReady(c)
	case c.role == rolePub && id >= l.firstPubID() && m.Publish != nil:
		l.onPublishAnswer(c, id, true, p, now)
	default:
		l.protoErr("unexpected_ack", string(p))
	}
}

// onCentError: a refused publish moves the window on; any other error
// reply is a protocol error.
func (l *loop) onCentError(c *conn, m *centReply, p []byte, now int64) {
	id := *m.ID
	if c.role != rolePub || id < l.firstPubID() || id >= l.firstPubID()+c.pubSent {
		l.protoErr("error_reply", string(p))
		return
	}
	l.onPublishAnswer(c, id, false, p, now)
	l.noteRefused(strconv.Itoa(m.Error.Code), p)
}
