package engine

import (
	"encoding/binary"
	"errors"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// frameHeadroom is the space reserved in front of a payload for the largest
// server frame header (no mask): 2 + 8 bytes.
const frameHeadroom = 10

// newFrameBuf returns dst with frameHeadroom bytes reserved for the header.
// Append the payload to it, then call finishFrame.
func newFrameBuf(dst []byte) []byte {
	return append(dst[:0], make([]byte, frameHeadroom)...)
}

// finishFrame writes a final, unmasked frame header for op in front of the
// payload that follows the headroom of buf, and returns the complete frame
// (a subslice of buf).
func finishFrame(buf []byte, op ws.OpCode) []byte {
	n := len(buf) - frameHeadroom
	var start int
	switch {
	case n < 126:
		start = frameHeadroom - 2
		buf[start+1] = byte(n)
	case n <= 0xffff:
		start = frameHeadroom - 4
		buf[start+1] = 126
		binary.BigEndian.PutUint16(buf[start+2:], uint16(n))
	default:
		start = 0
		buf[1] = 127
		binary.BigEndian.PutUint64(buf[2:], uint64(n))
	}
	buf[start] = 0x80 | byte(op)
	return buf[start:]
}

// appendFrame appends a complete final unmasked frame to dst.
func appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// appendCloseFrame appends a close frame with code and a reason cut to fit
// the 125-byte control payload limit (RFC 6455 section 5.5).
func appendCloseFrame(dst []byte, code uint16, reason string) []byte {
	if len(reason) > 123 {
		// Cut on a rune boundary: the reason must stay valid UTF-8.
		n := 123
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n]
	}
	dst = append(dst, 0x80|byte(ws.OpClose), byte(2+len(reason)))
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// frameHeader is a parsed client frame header.
type frameHeader struct {
	ws.Header
	size int // header size in bytes
}

// errNonMinimalLength refuses a payload length not in its shortest
// encoding (RFC 6455 section 5.2: "the minimal number of bytes MUST be
// used").
var errNonMinimalLength = errors.New("payload length not in its minimal encoding")

// parseFrameHeader parses a frame header at the start of b. It returns ok
// false when b is too short to hold the whole header. The length's most
// significant bit and a length not in its minimal encoding are reported
// through err (RFC 6455 section 5.2).
func parseFrameHeader(b []byte) (h frameHeader, ok bool, err error) {
	if len(b) < 2 {
		return h, false, nil
	}
	h.Fin = b[0]&0x80 != 0
	h.Rsv = (b[0] >> 4) & 0x7
	h.OpCode = ws.OpCode(b[0] & 0x0f)
	h.Masked = b[1]&0x80 != 0
	l := b[1] & 0x7f
	h.size = 2
	switch l {
	case 126:
		h.size += 2
	case 127:
		h.size += 8
	}
	if h.Masked {
		h.size += 4
	}
	if len(b) < h.size {
		return h, false, nil
	}
	switch l {
	case 126:
		h.Length = int64(binary.BigEndian.Uint16(b[2:]))
		if h.Length < 126 {
			return h, true, errNonMinimalLength
		}
	case 127:
		u := binary.BigEndian.Uint64(b[2:])
		if u>>63 != 0 {
			return h, true, ws.ErrHeaderLengthMSB
		}
		if u <= 0xffff {
			return h, true, errNonMinimalLength
		}
		h.Length = int64(u)
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[h.size-4:h.size])
	}
	return h, true, nil
}
