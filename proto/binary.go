package proto

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
)

// Binary protocol v1: the same envelope as JSON, in WebSocket binary frames.
//
// Every message starts with one head byte: the op in the low 5 bits and
// two flags above it. The fields that the op carries follow in a fixed
// order; short strings have a one-byte length prefix; the last field (data,
// token or message) runs to the end of the frame, its length being the
// frame's.
//
//	  7   6   5   4   3   2   1   0
//	+---+---+---+-------------------+
//	| I | B | 0 |        op         |   head byte
//	+---+---+---+-------------------+
//	I: an id follows the head (unsigned LEB128 varint, < 2^63)
//	B: data is opaque bytes (otherwise data is UTF-8 JSON text)
//	bit 5: reserved, must be 0
//
//	str8  = len:u8 bytes[len]
//	rest  = every remaining byte of the frame
//
//	op    name         direction  fields after head [and id]
//	0x01  subscribe    c → s      channel:str8
//	0x02  unsubscribe  c → s      channel:str8
//	0x03  publish      c → s      channel:str8 data:rest
//	0x04  broadcast    c → s      data:rest
//	0x05  auth         c → s      token:rest
//	0x06  ping         c → s      -
//	0x11  welcome      s → c      conn:str8 node:str8 proto:str8
//	0x12  ack          s → c      - (the id)
//	0x13  error        s → c      code:u8 message:rest (UTF-8)
//	0x14  message      s → c      channel:str8 (empty for a broadcast) from:str8 data:rest
//	0x15  pong         s → c      -
//
// Data crosses protocols as follows. JSON data published by a JSON client
// reaches binary clients as the same JSON text with B clear. A binary client
// publishing with B clear must send valid JSON (else bad_request), which JSON
// clients receive verbatim. Opaque data (B set) reaches binary clients as the
// same bytes with B set, and JSON clients as a base64 string (standard
// alphabet, padded) with "enc":"base64" added to the message envelope.

// Binary op codes.
const (
	BinSubscribe   = 0x01
	BinUnsubscribe = 0x02
	BinPublish     = 0x03
	BinBroadcast   = 0x04
	BinAuth        = 0x05
	BinPing        = 0x06
	BinWelcome     = 0x11
	BinAck         = 0x12
	BinError       = 0x13
	BinMessage     = 0x14
	BinPong        = 0x15

	binFlagID     = 0x80
	binFlagOpaque = 0x40
	binFlagRsv    = 0x20
	binOpMask     = 0x1f
)

// Binary error codes, one per JSON error code.
var binErrorCodes = []string{
	1: CodeBadRequest,
	2: CodeLimitExceeded,
	3: CodeUnauthorized,
	4: CodeForbidden,
	5: CodeTokenExpired,
	6: CodeOverloaded,
	7: CodeInternal,
	8: CodeRateLimited,
}

// BinErrorCode returns the binary number of a JSON error code (7, internal,
// for an unknown one).
func BinErrorCode(code string) byte {
	for i, c := range binErrorCodes {
		if c == code && i > 0 {
			return byte(i)
		}
	}
	return 7
}

// ErrorCodeOf returns the JSON error code of a binary one, "" if unknown.
func ErrorCodeOf(b byte) string {
	if int(b) < len(binErrorCodes) {
		return binErrorCodes[b]
	}
	return ""
}

var (
	errBinEmpty     = &Error{Code: CodeBadRequest, Message: "empty binary message"}
	errBinReserved  = &Error{Code: CodeBadRequest, Message: "reserved flag bit set"}
	errBinTruncated = &Error{Code: CodeBadRequest, Message: "truncated binary message"}
	errBinTrailing  = &Error{Code: CodeBadRequest, Message: "unexpected bytes after the last field"}
	errBinDataJSON  = &Error{Code: CodeBadRequest, Message: "data is flagged as JSON but is not valid JSON"}
	errBinFlag      = &Error{Code: CodeBadRequest, Message: "opaque flag on an op without data"}
)

// DecodeBinary decodes one client message from a binary frame's payload.
// m.ID, when set, is the id in decimal (as JSON would carry it), in m's
// scratch space; m.Channel, m.Data and m.Token alias data (see ClientMsg).
// Errors are *Error with code bad_request; m.ID is set on error when the id
// could be read. It does not allocate.
func DecodeBinary(data []byte, m *ClientMsg) *Error {
	*m = ClientMsg{}
	if len(data) == 0 {
		return errBinEmpty
	}
	head := data[0]
	p := data[1:]
	if head&binFlagID != 0 {
		id, n := binary.Uvarint(p)
		if n <= 0 || id >= 1<<63 {
			return errBinTruncated
		}
		m.ID = strconv.AppendUint(m.idBuf[:0], id, 10)
		p = p[n:]
	}
	if head&binFlagRsv != 0 {
		return errBinReserved
	}
	opaque := head&binFlagOpaque != 0
	op := head & binOpMask
	switch op {
	case BinSubscribe, BinUnsubscribe, BinPublish:
		ch, rest, ok := readStr8(p)
		if !ok {
			return errBinTruncated
		}
		if !validChannel(ch) {
			return errBadChannel
		}
		m.Channel = ch
		p = rest
		m.Op = OpSubscribe
		if op == BinUnsubscribe {
			m.Op = OpUnsubscribe
		}
		if op == BinPublish {
			m.Op = OpPublish
			if err := m.setData(p, opaque); err != nil {
				return err
			}
			return nil
		}
	case BinBroadcast:
		m.Op = OpBroadcast
		return m.setData(p, opaque)
	case BinAuth:
		m.Op = OpAuth
		if len(p) == 0 {
			return errNoToken
		}
		m.Token = p
		p = nil
	case BinPing:
		m.Op = OpPing
	default:
		return errUnknownOp
	}
	if opaque {
		return errBinFlag
	}
	if len(p) != 0 {
		return errBinTrailing
	}
	return nil
}

func (m *ClientMsg) setData(p []byte, opaque bool) *Error {
	if p == nil {
		p = []byte{}
	}
	if !opaque {
		if len(p) == 0 {
			return errNoData
		}
		if !validJSON(p) {
			return errBinDataJSON
		}
	}
	m.Data = p
	m.Opaque = opaque
	return nil
}

func readStr8(p []byte) (s, rest []byte, ok bool) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return nil, nil, false
	}
	n := int(p[0])
	return p[1 : 1+n], p[1+n:], true
}

func appendStr8(dst []byte, s string) []byte {
	if len(s) > 255 {
		s = s[:255]
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

// appendBinHead appends the head byte and, when id (decimal text) is not
// nil, the id as a varint. A non-numeric id (JSON strings cannot occur on
// binary connections) is dropped.
func appendBinHead(dst []byte, op byte, id []byte, opaque bool) []byte {
	head := op
	if opaque {
		head |= binFlagOpaque
	}
	if id == nil {
		return append(dst, head)
	}
	n, err := strconv.ParseUint(string(id), 10, 63)
	if err != nil {
		return append(dst, head)
	}
	dst = append(dst, head|binFlagID)
	return binary.AppendUvarint(dst, n)
}

// AppendBinWelcome appends a binary welcome.
func AppendBinWelcome(dst []byte, conn, node string) []byte {
	dst = append(dst, BinWelcome)
	dst = appendStr8(dst, conn)
	dst = appendStr8(dst, node)
	return appendStr8(dst, "bin")
}

// AppendBinAck appends a binary ack for id (decimal text).
func AppendBinAck(dst, id []byte) []byte {
	return appendBinHead(dst, BinAck, id, false)
}

// AppendBinPong appends a binary pong.
func AppendBinPong(dst []byte) []byte { return append(dst, BinPong) }

// AppendBinError appends a binary error; id may be nil.
func AppendBinError(dst, id []byte, e *Error) []byte {
	dst = appendBinHead(dst, BinError, id, false)
	dst = append(dst, BinErrorCode(e.Code))
	return append(dst, e.Message...)
}

// AppendBinMessage appends a binary message envelope; channel is empty for
// a broadcast.
func AppendBinMessage(dst []byte, channel, from string, data []byte, opaque bool) []byte {
	dst = appendBinHead(dst, BinMessage, nil, opaque)
	dst = appendStr8(dst, channel)
	dst = appendStr8(dst, from)
	return append(dst, data...)
}

// AppendMessageAny appends a JSON message envelope for data that may be
// opaque bytes: those travel as a base64 string with "enc":"base64".
func AppendMessageAny(dst []byte, channel, from string, data []byte, opaque bool) []byte {
	if !opaque {
		return AppendMessage(dst, channel, from, data)
	}
	dst = appendMessageHead(dst, channel, from)
	dst = append(dst, `,"enc":"base64","data":"`...)
	dst = base64.StdEncoding.AppendEncode(dst, data)
	return append(dst, `"}`...)
}
