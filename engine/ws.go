package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// serveWS parses and handles every complete frame in in, returning the
// bytes consumed. A frame is consumed only when it is complete, except that
// a declared length over the message limit fails the connection at once,
// before its payload is read.
func (c *Conn) serveWS(in []byte) int {
	consumed := 0
	for c.state == stateWS {
		rest := in[consumed:]
		h, ok, err := parseFrameHeader(rest)
		if err != nil {
			c.fail(proto.CloseProtocolError, err.Error())
			break
		}
		if !ok {
			return consumed
		}
		st := ws.StateServerSide
		if c.fragOp != 0 {
			st |= ws.StateFragmented
		}
		if err := ws.CheckHeader(h.Header, st); err != nil {
			c.fail(proto.CloseProtocolError, err.Error())
			break
		}
		if !h.OpCode.IsControl() && int64(len(c.frag))+h.Length > int64(c.srv.cfg.MaxMessage) {
			c.fail(proto.CloseMessageTooBig, "message exceeds "+strconv.Itoa(c.srv.cfg.MaxMessage)+" bytes")
			break
		}
		end := int64(h.size) + h.Length
		if int64(len(rest)) < end {
			return consumed
		}
		payload := rest[h.size:end]
		ws.Cipher(payload, h.Mask, 0)
		consumed += int(end)
		c.onFrame(h.Header, payload)
	}
	// Closing or closed: nothing more is read.
	return len(in)
}

// onFrame handles one complete, unmasked frame.
func (c *Conn) onFrame(h ws.Header, payload []byte) {
	switch h.OpCode {
	case ws.OpPing:
		c.out = appendFrame(c.out, ws.OpPong, payload)
		c.loop.markDirty(c)
	case ws.OpPong:
	case ws.OpClose:
		c.onClose(payload)
	case ws.OpText, ws.OpBinary:
		if !h.Fin {
			c.fragOp = h.OpCode
			c.frag = append(c.frag[:0], payload...)
			return
		}
		c.onMessage(h.OpCode, payload)
	case ws.OpContinuation:
		c.frag = append(c.frag, payload...)
		if h.Fin {
			op := c.fragOp
			c.fragOp = 0
			c.onMessage(op, c.frag)
			if cap(c.frag) > 64<<10 {
				c.frag = nil
			} else {
				c.frag = c.frag[:0]
			}
		}
	}
}

// onClose answers a client's close frame (RFC 6455 section 5.5.1) by echoing
// its status code, or fails the connection if the frame is malformed.
func (c *Conn) onClose(payload []byte) {
	switch {
	case len(payload) == 0:
		c.out = append(c.out, 0x80|byte(ws.OpClose), 0)
	case len(payload) == 1:
		c.fail(proto.CloseProtocolError, "close frame with a 1-byte payload")
		return
	default:
		code := ws.StatusCode(binary.BigEndian.Uint16(payload))
		reason := payload[2:]
		if !utf8.Valid(reason) {
			c.fail(proto.CloseInvalidPayload, "close reason is not valid UTF-8")
			return
		}
		if err := ws.CheckCloseFrameData(code, ""); err != nil {
			c.fail(proto.CloseProtocolError, err.Error())
			return
		}
		c.out = appendCloseFrame(c.out, uint16(code), "")
	}
	c.flushAndLinger()
}

// onMessage handles one complete data message.
func (c *Conn) onMessage(op ws.OpCode, payload []byte) {
	l := c.loop
	l.stats.messagesIn.Add(1)
	if op != ws.OpText {
		c.fail(proto.CloseUnsupportedData, "binary frames are not accepted on a JSON connection")
		return
	}
	if !utf8.Valid(payload) {
		c.fail(proto.CloseInvalidPayload, "text message is not valid UTF-8")
		return
	}
	var m proto.ClientMsg
	if perr := proto.DecodeJSON(payload, &m); perr != nil {
		c.replyError(m.ID, perr)
		return
	}
	switch m.Op {
	case proto.OpPing:
		c.reply(proto.AppendPong(c.frameBuf()))
	case proto.OpSubscribe:
		if len(c.chans) >= c.srv.cfg.MaxSubscriptions {
			c.replyError(m.ID, errTooManySubs)
			return
		}
		if l.subscribe(c, m.Channel) {
			c.chans = append(c.chans, m.Channel)
		}
		c.ack(m.ID)
	case proto.OpUnsubscribe:
		if l.unsubscribe(c, m.Channel) {
			c.dropChannel(m.Channel)
		}
		c.ack(m.ID)
	case proto.OpPublish:
		buf := newFrameBuf(make([]byte, 0, frameHeadroom+64+len(m.Channel)+len(c.id)+len(m.Data)))
		frame := finishFrame(proto.AppendMessage(buf, m.Channel, c.id, m.Data), ws.OpText)
		c.srv.hub.publish(l, m.Channel, frame, c)
		c.ack(m.ID)
	default:
		c.replyError(m.ID, errNotAvailable)
	}
}

var (
	errTooManySubs  = &proto.Error{Code: proto.CodeLimitExceeded, Message: "too many subscriptions on this connection"}
	errNotAvailable = &proto.Error{Code: proto.CodeBadRequest, Message: "op not available on this server"}
)

func (c *Conn) dropChannel(ch string) {
	for i, s := range c.chans {
		if s == ch {
			last := len(c.chans) - 1
			c.chans[i] = c.chans[last]
			c.chans[last] = ""
			c.chans = c.chans[:last]
			return
		}
	}
}

// frameBuf returns the loop's scratch buffer with frame headroom reserved.
// The result is valid until the next frameBuf call on the loop.
func (c *Conn) frameBuf() []byte {
	l := c.loop
	l.scratch = newFrameBuf(l.scratch)
	return l.scratch
}

// reply frames a payload built after frameBuf's headroom and queues it.
func (c *Conn) reply(buf []byte) {
	c.loop.scratch = buf
	c.send(finishFrame(buf, ws.OpText))
}

func (c *Conn) ack(id []byte) {
	if id != nil {
		c.reply(proto.AppendAck(c.frameBuf(), id))
	}
}

func (c *Conn) replyError(id []byte, e *proto.Error) {
	c.reply(proto.AppendError(c.frameBuf(), id, e))
}

// upgradeWS performs the WebSocket handshake on the request head. On
// success the connection switches to WebSocket and gets its welcome.
func (c *Conn) upgradeWS(head []byte, req *requestInfo) {
	l := c.loop
	var resp bytes.Buffer
	u := ws.Upgrader{ReadBufferSize: maxHeadSize + 1024}
	_, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(head), &resp})
	status := 101
	if err != nil {
		status = statusFromResponse(resp.Bytes())
		if resp.Len() == 0 {
			resp.Write(canned400)
			status = 400
		}
	}
	c.writeNow(resp.Bytes())
	c.srv.accessLog(c, req, status, 0)
	c.srv.countStatus(status)
	if err != nil {
		c.srv.log.Debug("websocket handshake refused", "remote", c.remoteIP(), "err", err)
		c.state = stateClosing
		c.closeDeadline = c.srv.clock.Load() + closeGrace
		c.t.CloseWrite()
		return
	}
	c.state = stateWS
	c.id = c.srv.nextConnID()
	c.lastPing = c.srv.clock.Load()
	l.stats.websockets.Add(1)
	c.reply(proto.AppendWelcome(c.frameBuf(), c.id, c.srv.cfg.Node, "json"))
}

// statusFromResponse reads the status code of an HTTP response's status line.
func statusFromResponse(b []byte) int {
	if len(b) < 12 || !bytes.HasPrefix(b, []byte("HTTP/1.")) {
		return 400
	}
	n, err := strconv.Atoi(string(b[9:12]))
	if err != nil {
		return 400
	}
	return n
}

var errClosed = errors.New("engine: connection closed")
