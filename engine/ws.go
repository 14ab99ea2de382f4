package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// serveWS parses and handles every complete frame in in, returning the
// bytes consumed. A frame is consumed only when it is complete, except that
// a declared length over the message limit fails the connection at once,
// before its payload is read. A message started and not completed puts the
// connection in the message phase, whose deadline runs from its first byte.
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
			c.wsPartial(len(rest))
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
			c.wsPartial(len(rest))
			return consumed
		}
		payload := rest[h.size:end]
		ws.Cipher(payload, h.Mask, 0)
		consumed += int(end)
		c.loop.more = consumed < len(in) // more input: a burst (loop.burst)
		c.onFrame(h.Header, payload)
		if c.fragOp == 0 {
			c.phase = phaseNone // no message in progress
		}
	}
	c.loop.more = false
	// Closing or closed: nothing more is read.
	return len(in)
}

// wsPartial records, when a read ends, whether a message is in progress:
// partial bytes of a frame are held, or fragments of a message.
func (c *Conn) wsPartial(held int) {
	c.loop.more = false
	if held > 0 || c.fragOp != 0 {
		c.setPhase(phaseMessage, c.lastRead)
	}
}

// onFrame handles one complete, unmasked frame.
func (c *Conn) onFrame(h ws.Header, payload []byte) {
	switch h.OpCode {
	case ws.OpPing:
		c.out = appendFrame(c.outBuf(), ws.OpPong, payload)
		c.loop.markDirty(c)
	case ws.OpPong:
	case ws.OpClose:
		c.onClose(payload)
	case ws.OpText, ws.OpBinary:
		if !h.Fin {
			c.fragOp = h.OpCode
			c.appendFrag(payload)
			return
		}
		c.onMessage(h.OpCode, payload)
	case ws.OpContinuation:
		if !c.appendFrag(payload) || !h.Fin {
			return
		}
		op := c.fragOp
		c.fragOp = 0
		c.onMessage(op, c.frag)
		c.dropFrag()
	}
}

// appendFrag adds a fragment's payload to the message in progress, within
// the input budget; past it the connection is refused (1013).
func (c *Conn) appendFrag(payload []byte) bool {
	frag, ok := c.reserve(c.frag, len(payload))
	if !ok {
		c.dropFrag()
		c.fragOp = 0
		c.refuseInput()
		return false
	}
	c.frag = append(frag, payload...)
	return true
}

// onClose answers a client's close frame (RFC 6455 section 5.5.1) by echoing
// its status code, or fails the connection if the frame is malformed.
func (c *Conn) onClose(payload []byte) {
	switch {
	case len(payload) == 0:
		c.closeCode = closeNoStatus
		c.out = append(c.outBuf(), 0x80|byte(ws.OpClose), 0)
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
		if code >= 5000 {
			// RFC 6455 section 7.4.2 defines codes up to 4999 only.
			c.fail(proto.CloseProtocolError, "close code out of range")
			return
		}
		c.closeCode = uint16(code)
		c.out = appendCloseFrame(c.outBuf(), uint16(code), "")
	}
	c.closeAfterFlush()
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
