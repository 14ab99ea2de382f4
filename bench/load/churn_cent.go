package main

// The churn cycle over Centrifugo's client protocol (JSON, --protocol
// centrifugo), the same steps as over ZenConn's:
//
//	connect and upgrade → connect command (id 1) → its reply (the welcome)
//	→ subscribe (id 2) → its reply (the ack) → publish (id 3) of the
//	client id → its reply (the ack) → close frame (1000) → the server's
//	close frame → end of stream
//
// Centrifugo's client speaks first (the connect command, anonymous, as in
// the other centrifugo modes), and Centrifugo delivers a publication to
// its publisher too: a worker ignores the pushes of its own channel. The
// observer subscribes to every worker channel (ids 2 to n+1) and checks
// every push: a channel of this process, and the publisher's client id
// (info.client) equal to the data.

import (
	"bytes"
	"encoding/json"
	"strconv"

	"github.com/gobwas/ws"
)

var (
	centPushKey       = []byte(`{"push":`)
	centSubscribeAck  = []byte(`{"id":2,"subscribe":{}}`)
	centPublishAckOne = []byte(`{"id":3,"publish":{}}`)
)

// onCentUpgrade sends the connect command: Centrifugo's client speaks
// first.
func (l *churnLoop) onCentUpgrade(c *cconn) {
	l.send(c, ws.OpText, centConnect)
}

// onCentFrame handles every line of a Centrifugo frame.
func (l *churnLoop) onCentFrame(c *cconn, p []byte, now int64) {
	for len(p) > 0 && c.state != csIdle && c.state != csDone {
		var line []byte
		line, p, _ = bytes.Cut(p, newline)
		if len(line) > 0 {
			l.onCentLine(c, line, now)
		}
	}
}

// onCentLine handles one reply or push.
func (l *churnLoop) onCentLine(c *cconn, p []byte, now int64) {
	if bytes.HasPrefix(p, centPushKey) {
		if c.worker < 0 && c.state == csOpen {
			l.onCentDelivery(p)
		}
		// A worker's own publication, or a push before the observer's
		// last subscribe reply: not counted.
		return
	}
	if bytes.Equal(p, centPing) {
		l.send(c, ws.OpText, centPing)
		return
	}
	switch {
	case c.state == csClosing:
		// Sent before the node read our close frame: a client may still
		// receive data after it sent its close (RFC 6455, 5.5.1).
	case c.state == csWelcome:
		l.onCentWelcome(c, p, now)
	case c.state == csSubscribe && c.worker < 0:
		var m centReply
		if json.Unmarshal(p, &m) != nil || m.ID == nil || m.Error != nil || m.Subscribe == nil ||
			*m.ID < 2 || *m.ID > int64(len(l.workers))+1 {
			l.protoFail(c, "observer_unexpected", p, now)
			return
		}
		if c.acks++; c.acks == len(l.workers) {
			c.state = csOpen
			c.deadline = 0
		}
	case c.state == csSubscribe:
		if !centIsReply(p, 2, "subscribe") {
			l.protoFail(c, "subscribe_not_acked", p, now)
			return
		}
		l.phase(c, phSubscribe, now)
		l.centPublish(c)
	case c.state == csPublish:
		if !centIsReply(p, 3, "publish") {
			l.protoFail(c, "publish_not_acked", p, now)
			return
		}
		l.st.acked++
		l.phase(c, phPublish, now)
		l.startClose(c, now)
	default:
		l.protoFail(c, "unexpected_message", p, now)
	}
}

// centIsReply reports whether p is the successful reply to command id of
// kind ("subscribe" or "publish").
func centIsReply(p []byte, id int64, kind string) bool {
	switch {
	case id == 2 && bytes.Equal(p, centSubscribeAck), id == 3 && bytes.Equal(p, centPublishAckOne):
		return true
	}
	var m centReply
	if json.Unmarshal(p, &m) != nil || m.ID == nil || *m.ID != id || m.Error != nil {
		return false
	}
	if kind == "subscribe" {
		return m.Subscribe != nil
	}
	return m.Publish != nil
}

// onCentWelcome checks the connect reply and subscribes: the worker to its
// channel, the observer to every worker's.
func (l *churnLoop) onCentWelcome(c *cconn, p []byte, now int64) {
	var m centReply
	if json.Unmarshal(p, &m) != nil || m.ID == nil || *m.ID != 1 || m.Connect == nil {
		l.protoFail(c, "welcome_not_first", p, now)
		return
	}
	if m.Connect.Client == "" {
		l.protoFail(c, "bad_welcome", p, now)
		return
	}
	c.id = m.Connect.Client
	l.phase(c, phOpen, now)
	c.state = csSubscribe
	if c.worker < 0 {
		l.write(c, l.subs)
		return
	}
	b := append(l.body[:0], `{"id":2,"subscribe":{"channel":`...)
	b = strconv.AppendQuote(b, c.channel)
	l.body = append(b, `}}`...)
	l.send(c, ws.OpText, l.body)
}

// centPublish publishes the worker's client id to its channel.
func (l *churnLoop) centPublish(c *cconn) {
	c.state = csPublish
	b := append(l.body[:0], `{"id":3,"publish":{"channel":`...)
	b = strconv.AppendQuote(b, c.channel)
	b = append(b, `,"data":`...)
	b = strconv.AppendQuote(b, c.id)
	l.body = append(b, `}}`...)
	l.st.published++
	l.send(c, ws.OpText, l.body)
}

// centObserverSubs are the observer's subscribe commands, one frame each.
func (l *churnLoop) centObserverSubs() []byte {
	var out []byte
	for i, c := range l.workers {
		b := strconv.AppendInt([]byte(`{"id":`), int64(i+2), 10)
		b = append(b, `,"subscribe":{"channel":`...)
		b = strconv.AppendQuote(b, c.channel)
		b = append(b, `}}`...)
		out = l.appendFrame(out, ws.OpText, b)
	}
	return out
}

// onCentDelivery checks one push received by the observer.
func (l *churnLoop) onCentDelivery(p []byte) {
	var m centReply
	if err := json.Unmarshal(p, &m); err != nil || m.Push == nil || m.Push.Pub == nil || m.Push.Channel == nil {
		l.protoErr("bad_message", string(p))
		return
	}
	var data, from string
	if json.Unmarshal(m.Push.Pub.Data, &data) != nil {
		l.protoErr("bad_message", string(p))
		return
	}
	if m.Push.Pub.Info != nil {
		from = m.Push.Pub.Info.Client
	}
	if !l.chans[*m.Push.Channel] {
		l.protoErr("message_wrong_channel", string(p))
	}
	if from != data {
		l.protoErr("message_wrong_from", string(p))
	}
	l.st.received++
}
