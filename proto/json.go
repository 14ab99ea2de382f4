package proto

import (
	"reflect"
	"unicode/utf8"

	"github.com/bytedance/sonic"
	"github.com/bytedance/sonic/encoder"
)

// Op is a client operation.
type Op uint8

// Client operations of protocol v1.
const (
	OpUnknown Op = iota
	OpSubscribe
	OpUnsubscribe
	OpPublish
	OpBroadcast
	OpAuth
	OpPing
)

// String returns the op's wire name.
func (o Op) String() string {
	switch o {
	case OpSubscribe:
		return "subscribe"
	case OpUnsubscribe:
		return "unsubscribe"
	case OpPublish:
		return "publish"
	case OpBroadcast:
		return "broadcast"
	case OpAuth:
		return "auth"
	case OpPing:
		return "ping"
	}
	return "unknown"
}

func parseOp(s string) Op {
	switch s {
	case "subscribe":
		return OpSubscribe
	case "unsubscribe":
		return OpUnsubscribe
	case "publish":
		return OpPublish
	case "broadcast":
		return OpBroadcast
	case "auth":
		return OpAuth
	case "ping":
		return OpPing
	}
	return OpUnknown
}

// MaxIDLen bounds the length of a request id as it appears on the wire.
const MaxIDLen = 64

// ClientMsg is one decoded client request.
//
// ID and Data may alias the input given to the decoder: treat them as valid
// only as long as that input is. A ClientMsg is not safe for concurrent use.
type ClientMsg struct {
	// ID is the raw JSON of the request id (a number or a string), nil when
	// the request carried none. Replies echo it byte for byte.
	ID []byte
	// Op is the operation; OpUnknown never comes out of a successful decode.
	Op Op
	// Channel is the channel name for subscribe, unsubscribe and publish.
	Channel string
	// Data is the raw JSON of the payload for publish and broadcast, nil
	// when absent (a JSON null is the four bytes "null", not nil).
	Data []byte
	// Token is the JWT of an auth request.
	Token string
	// Opaque is set when Data is opaque bytes (binary protocol only)
	// rather than JSON text.
	Opaque bool

	idBuf [20]byte // backs ID for binary-protocol ids
}

// wireClient is the JSON shape sonic decodes into.
type wireClient struct {
	ID      sonic.NoCopyRawMessage `json:"id"`
	Op      string                 `json:"op"`
	Channel *string                `json:"channel"`
	Data    sonic.NoCopyRawMessage `json:"data"`
	Token   string                 `json:"token"`
}

var jsonAPI = sonic.ConfigStd

// Pretouch compiles the codec for the protocol types so that the first
// client does not pay for it. Call it once at start-up.
func Pretouch() error {
	return sonic.Pretouch(reflect.TypeOf(wireClient{}))
}

// APIKind reports whether sonic runs its JIT (1) or fell back to
// encoding/json (0) on this Go version; servers log it at start-up.
const APIKind = int(sonic.APIKind)

// DecodeJSON decodes one client message from a text frame's payload into m.
// It returns nil or an *Error with code CodeBadRequest; when the input was
// valid JSON with a usable id, m.ID is set even on error so the reply can
// carry it.
func DecodeJSON(data []byte, m *ClientMsg) *Error {
	*m = ClientMsg{}
	var w wireClient
	if err := jsonAPI.Unmarshal(data, &w); err != nil {
		// Valid JSON with a field of the wrong type still gets its id
		// back in the error reply, so the client can correlate it.
		var idOnly struct {
			ID sonic.NoCopyRawMessage `json:"id"`
		}
		if jsonAPI.Unmarshal(data, &idOnly) == nil && validID(idOnly.ID) && strictStrings(idOnly.ID) {
			m.ID = idOnly.ID
			return errBadField
		}
		return errBadJSON
	}
	if len(w.ID) > 0 {
		if !validID(w.ID) || !strictStrings(w.ID) {
			return errBadID
		}
		m.ID = w.ID
	}
	if w.Data != nil && !strictStrings(w.Data) {
		return errBadData
	}
	m.Op = parseOp(w.Op)
	switch m.Op {
	case OpUnknown:
		if w.Op == "" {
			return errNoOp
		}
		return errUnknownOp
	case OpSubscribe, OpUnsubscribe, OpPublish:
		if w.Channel == nil {
			return errNoChannel
		}
		if !ValidChannel(*w.Channel) {
			return errBadChannel
		}
		m.Channel = *w.Channel
		if m.Op == OpPublish {
			if w.Data == nil {
				return errNoData
			}
			m.Data = w.Data
		}
	case OpBroadcast:
		if w.Data == nil {
			return errNoData
		}
		m.Data = w.Data
	case OpAuth:
		if w.Token == "" {
			return errNoToken
		}
		m.Token = w.Token
	}
	return nil
}

// validID reports whether raw is a usable request id: a JSON number or
// string of at most MaxIDLen bytes.
func validID(raw []byte) bool {
	if len(raw) == 0 || len(raw) > MaxIDLen {
		return false
	}
	c := raw[0]
	return c == '"' || c == '-' || c >= '0' && c <= '9'
}

// Canned decode errors, built once.
var (
	errBadJSON    = &Error{Code: CodeBadRequest, Message: "invalid JSON"}
	errBadData    = &Error{Code: CodeBadRequest, Message: "data is not valid JSON"}
	errBadField   = &Error{Code: CodeBadRequest, Message: "a field has the wrong type"}
	errBadID      = &Error{Code: CodeBadRequest, Message: "id must be a number or a string of at most 64 bytes"}
	errNoOp       = &Error{Code: CodeBadRequest, Message: "missing op"}
	errUnknownOp  = &Error{Code: CodeBadRequest, Message: "unknown op"}
	errNoChannel  = &Error{Code: CodeBadRequest, Message: "missing channel"}
	errBadChannel = &Error{Code: CodeBadRequest, Message: "invalid channel name: 1-128 bytes of A-Z a-z 0-9 _ . : @ -"}
	errNoData     = &Error{Code: CodeBadRequest, Message: "missing data"}
	errNoToken    = &Error{Code: CodeBadRequest, Message: "missing token"}
)

// AppendWelcome appends the welcome envelope sent once on connect.
func AppendWelcome(dst []byte, conn, node, protoName string) []byte {
	dst = append(dst, `{"op":"welcome","conn":`...)
	dst = appendJSONString(dst, conn)
	dst = append(dst, `,"node":`...)
	dst = appendJSONString(dst, node)
	dst = append(dst, `,"proto":`...)
	dst = appendJSONString(dst, protoName)
	return append(dst, '}')
}

// AppendAck appends {"op":"ack","id":<id>}; id is raw JSON as decoded.
func AppendAck(dst, id []byte) []byte {
	dst = append(dst, `{"op":"ack","id":`...)
	dst = append(dst, id...)
	return append(dst, '}')
}

// AppendPong appends {"op":"pong"}.
func AppendPong(dst []byte) []byte {
	return append(dst, `{"op":"pong"}`...)
}

// AppendError appends an error envelope. id may be nil (no id field).
func AppendError(dst, id []byte, e *Error) []byte {
	dst = append(dst, `{"op":"error",`...)
	if id != nil {
		dst = append(dst, `"id":`...)
		dst = append(dst, id...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"code":"`...)
	dst = append(dst, e.Code...)
	dst = append(dst, `","message":`...)
	dst = appendJSONString(dst, e.Message)
	return append(dst, '}')
}

// AppendMessage appends a message envelope. channel is empty for a
// broadcast (the field is then omitted). channel and from are produced by
// the server and need no escaping (channel names are validated, connection
// ids are base-36); data is raw JSON and is copied verbatim.
func AppendMessage(dst []byte, channel, from string, data []byte) []byte {
	dst = appendMessageHead(dst, channel, from)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// appendMessageHead appends a message envelope up to its from field:
// {"op":"message","channel":"<channel>","from":"<from>" (no channel field
// for a broadcast).
func appendMessageHead(dst []byte, channel, from string) []byte {
	dst = append(dst, `{"op":"message",`...)
	if channel != "" {
		dst = append(dst, `"channel":"`...)
		dst = append(dst, channel...)
		dst = append(dst, `",`...)
	}
	dst = append(dst, `"from":"`...)
	dst = append(dst, from...)
	return append(dst, '"')
}

// appendJSONString appends s as a JSON string, escaped by sonic.
func appendJSONString(dst []byte, s string) []byte {
	if err := encoder.EncodeInto(&dst, s, encoder.EscapeHTML); err != nil {
		// Unreachable for a string value; keep the envelope valid anyway.
		return append(dst, `""`...)
	}
	return dst
}

// ValidRaw reports whether b is one valid JSON value in UTF-8: sonic checks
// the structure; strictStrings checks what sonic's raw-value path skips
// (escape sequences and control bytes inside strings).
func ValidRaw(b []byte) bool {
	return utf8.Valid(b) && jsonAPI.Valid(b) && strictStrings(b)
}

// strictStrings checks every string in b, which must already be
// structurally valid JSON: escapes are one of \" \\ \/ \b \f \n \r \t \uXXXX
// and no byte below 0x20 appears unescaped.
func strictStrings(b []byte) bool {
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !in {
			in = c == '"'
			continue
		}
		switch {
		case c == '"':
			in = false
		case c < 0x20:
			return false
		case c == '\\':
			i++
			if i >= len(b) {
				return false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return false
				}
				for _, h := range b[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false
					}
				}
				i += 4
			default:
				return false
			}
		}
	}
	return !in
}
