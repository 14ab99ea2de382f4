package proto

import (
	"encoding/binary"
	"math/bits"
	"reflect"
	"unicode/utf16"
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

// parseOp returns the op named s, OpUnknown for any other name.
func parseOp(s []byte) Op {
	switch string(s) {
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
// ID, Channel, Data and Token point into the input given to the decoder, or
// into scratch space inside the ClientMsg itself (a channel or token written
// with JSON escapes, a binary id): they are valid until that input is
// modified or the ClientMsg is decoded into again, whichever comes first.
// Copy what must live longer (string(m.Channel)).
//
// Because the decoders may point it into itself, a ClientMsg they decode
// into escapes to the heap: keep one per event loop or connection and
// decode into it again rather than declaring one per message. A ClientMsg
// is not safe for concurrent use.
type ClientMsg struct {
	// ID is the raw JSON of the request id (a number or a string), nil when
	// the request carried none. Replies echo it byte for byte.
	ID []byte
	// Op is the operation; OpUnknown never comes out of a successful decode.
	Op Op
	// Channel is the channel name for subscribe, unsubscribe and publish,
	// unescaped and valid (ValidChannel).
	Channel []byte
	// Data is the raw JSON of the payload for publish and broadcast, nil
	// when absent (a JSON null is the four bytes "null", not nil).
	Data []byte
	// Token is the JWT of an auth request, unescaped; never empty after a
	// successful decode.
	Token []byte
	// Opaque is set when Data is opaque bytes (binary protocol only)
	// rather than JSON text.
	Opaque bool

	idBuf   [20]byte            // backs ID for binary-protocol ids
	scratch [MaxChannelLen]byte // backs an escaped Channel or short escaped Token
}

var jsonAPI = sonic.ConfigStd

// Pretouch compiles sonic's codec for strings, which error replies and
// welcomes are escaped with, so that the first client does not pay for it.
// Call it once at start-up. (Client messages are decoded without sonic.)
func Pretouch() error {
	return sonic.Pretouch(reflect.TypeOf(""))
}

// APIKind reports whether sonic runs its JIT (1) or fell back to
// encoding/json (0) on this Go version; servers log it at start-up.
const APIKind = int(sonic.APIKind)

// DecodeJSON decodes one client message from a text frame's payload into m.
// It returns nil or an *Error with code CodeBadRequest; when the input was
// valid JSON with a usable id, m.ID is set even on error so the reply can
// carry it. Fields point into data or m (see ClientMsg).
//
// The decoder makes one pass over the envelope and answers as the sonic
// decoder it replaced did (FuzzDecodeJSONReference compares them). It
// recognises the keys id, op, channel, data and token exactly, else after
// strings.ToLower, JSON escapes in keys decoded first; keeps the last of
// duplicate keys; and checks every value it skips (data, id, unknown keys,
// values of the wrong type) as strict JSON: escape sequences, control
// bytes, numbers, literals, nesting at most 4,096 deep. (Sonic skipped some
// long strings without checking all their escapes; such input is invalid
// JSON here.) It allocates nothing, except for input that is not UTF-8,
// decoded from a copy with every invalid byte replaced by U+FFFD as sonic
// does (the engine closes such connections before decoding), and for a
// token of more than 128 bytes written with escapes.
func DecodeJSON(data []byte, m *ClientMsg) *Error {
	e, st := decodeJSON(data, m)
	if st == scanBadUTF8 {
		e, _ = decodeJSON(correctUTF8(data), m)
	}
	return e
}

// Scanner statuses: positions are ≥ 0; these are not.
const (
	scanSyntax  = -1 // not JSON, or nested too deep
	scanBadUTF8 = -2 // a string holds bytes that are not UTF-8
)

// Keys of the envelope.
const (
	keyOther = iota
	keyID
	keyOp
	keyChannel
	keyData
	keyToken
)

// decodeJSON is DecodeJSON on input whose strings are UTF-8; it reports
// scanBadUTF8 (and no meaningful error) when they are not. It is a decoder
// whose length is its table: one branch per envelope key and value shape,
// kept in one piece so the grammar reads top to bottom.
func decodeJSON(data []byte, m *ClientMsg) (*Error, int) {
	*m = ClientMsg{}
	i := skipWS(data, 0)
	if i == len(data) {
		return errBadJSON, 0
	}
	if data[i] != '{' {
		// A null envelope decodes to nothing: no op.
		if isLiteral(data, i, "null") && skipWS(data, i+4) == len(data) {
			return errNoOp, 0
		}
		return errBadJSON, 0
	}
	// Spans of the last value of each key, start < 0 when absent (or, for
	// channel, null). op and token keep their last string: a null leaves
	// them as they were.
	idS, idE := -1, -1
	dataS, dataE := -1, -1
	opS, opE, opEsc := -1, -1, false
	chS, chE, chEsc := -1, -1, false
	tokS, tokE, tokEsc := -1, -1, false
	typeErr := false // op, channel or token was neither a string nor null

	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		i++
	} else {
		for {
			if i >= len(data) || data[i] != '"' {
				return errBadJSON, 0
			}
			j, esc := scanString(data, i+1)
			if j < 0 {
				return errBadJSON, j
			}
			key := matchKey(data[i+1:j-1], esc)
			i = skipWS(data, j)
			if i >= len(data) || data[i] != ':' {
				return errBadJSON, 0
			}
			i = skipWS(data, i+1)
			if i >= len(data) {
				return errBadJSON, 0
			}
			switch key {
			case keyID, keyData:
				j = skipValue(data, i)
				if key == keyID {
					idS, idE = i, j
				} else {
					dataS, dataE = i, j
				}
			case keyOp, keyChannel, keyToken:
				switch {
				case data[i] == '"':
					j, esc = scanString(data, i+1)
					switch key {
					case keyOp:
						opS, opE, opEsc = i+1, j-1, esc
					case keyChannel:
						chS, chE, chEsc = i+1, j-1, esc
					default:
						tokS, tokE, tokEsc = i+1, j-1, esc
					}
				case isLiteral(data, i, "null"):
					j = i + 4
					if key == keyChannel {
						chS = -1
					}
				default:
					typeErr = true
					j = skipValue(data, i)
				}
			default:
				j = skipValue(data, i)
			}
			if j < 0 {
				return errBadJSON, j
			}
			i = skipWS(data, j)
			if i >= len(data) {
				return errBadJSON, 0
			}
			if data[i] == '}' {
				i++
				break
			}
			if data[i] != ',' {
				return errBadJSON, 0
			}
			i = skipWS(data, i+1)
		}
	}
	if skipWS(data, i) != len(data) {
		return errBadJSON, 0
	}

	if typeErr {
		// Valid JSON with a field of the wrong type still gets its id
		// back in the error reply, so the client can correlate it.
		if idS >= 0 && validID(data[idS:idE]) {
			m.ID = data[idS:idE]
			return errBadField, 0
		}
		return errBadJSON, 0
	}
	if idS >= 0 {
		if !validID(data[idS:idE]) {
			return errBadID, 0
		}
		m.ID = data[idS:idE]
	}
	var opBuf [16]byte
	var op []byte
	if opS >= 0 {
		op = data[opS:opE]
		if opEsc {
			// An op name longer than opBuf is no op: keep it non-empty.
			n, ok := unquoteInto(opBuf[:], op)
			op = opBuf[:n]
			if !ok {
				op = opBuf[:]
			}
		}
	}
	m.Op = parseOp(op)
	switch m.Op {
	case OpUnknown:
		if len(op) == 0 {
			return errNoOp, 0
		}
		return errUnknownOp, 0
	case OpSubscribe, OpUnsubscribe, OpPublish:
		if chS < 0 {
			return errNoChannel, 0
		}
		ch := data[chS:chE]
		if chEsc {
			n, ok := unquoteInto(m.scratch[:], ch)
			if !ok {
				return errBadChannel, 0 // longer than MaxChannelLen
			}
			ch = m.scratch[:n]
		}
		if !validChannel(ch) {
			return errBadChannel, 0
		}
		m.Channel = ch
		if m.Op == OpPublish {
			if dataS < 0 {
				return errNoData, 0
			}
			m.Data = data[dataS:dataE]
		}
	case OpBroadcast:
		if dataS < 0 {
			return errNoData, 0
		}
		m.Data = data[dataS:dataE]
	case OpAuth:
		if tokS < 0 || tokS == tokE {
			return errNoToken, 0
		}
		tok := data[tokS:tokE]
		if tokEsc {
			buf := m.scratch[:]
			if len(tok) > len(buf) {
				buf = make([]byte, len(tok)) // unescaping never lengthens
			}
			n, _ := unquoteInto(buf, tok)
			tok = buf[:n]
		}
		m.Token = tok
	}
	return nil, 0
}

// matchKey returns which envelope key the content of a key string is. Like
// sonic, it matches case-insensitively by strings.ToLower, under which only
// two non-ASCII runes become ASCII letters: U+0130 ('i') and U+212A ('k').
// A decoder whose branches are its table: one case per key and spelling.
func matchKey(k []byte, esc bool) int {
	var buf [8]byte
	if esc || !isASCII(k) {
		var dec [32]byte // a key that matches is at most 7 runes of 3 bytes
		n, ok := unquoteInto(dec[:], k)
		if !ok {
			return keyOther
		}
		w := 0
		for s := dec[:n]; len(s) > 0; {
			r, size := utf8.DecodeRune(s)
			s = s[size:]
			switch {
			case r == 0x130:
				r = 'i'
			case r == 0x212a:
				r = 'k'
			case r >= utf8.RuneSelf:
				return keyOther
			}
			if w == len(buf) {
				return keyOther
			}
			buf[w] = byte(r)
			w++
		}
		k = buf[:w]
	}
	// c|0x20 == letter holds for the letter and its capital only.
	switch len(k) {
	case 2:
		switch {
		case k[0]|0x20 == 'i' && k[1]|0x20 == 'd':
			return keyID
		case k[0]|0x20 == 'o' && k[1]|0x20 == 'p':
			return keyOp
		}
	case 4:
		if k[0]|0x20 == 'd' && k[1]|0x20 == 'a' && k[2]|0x20 == 't' && k[3]|0x20 == 'a' {
			return keyData
		}
	case 5:
		if k[0]|0x20 == 't' && k[1]|0x20 == 'o' && k[2]|0x20 == 'k' && k[3]|0x20 == 'e' && k[4]|0x20 == 'n' {
			return keyToken
		}
	case 7:
		if k[0]|0x20 == 'c' && k[1]|0x20 == 'h' && k[2]|0x20 == 'a' && k[3]|0x20 == 'n' &&
			k[4]|0x20 == 'n' && k[5]|0x20 == 'e' && k[6]|0x20 == 'l' {
			return keyChannel
		}
	}
	return keyOther
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// skipWS returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func isLiteral(data []byte, i int, lit string) bool {
	return len(data)-i >= len(lit) && string(data[i:i+len(lit)]) == lit
}

// SWAR constants: one byte repeated.
const (
	swarLo    = 0x0101010101010101
	swarHi    = 0x8080808080808080
	swarSpace = 0x20 * swarLo
	swarQuote = '"' * swarLo
	swarBack  = '\\' * swarLo
)

// scanString checks the JSON string whose content starts at data[i] (just
// after the opening quote) and returns the index just past its closing
// quote, and whether it holds escape sequences; or scanSyntax (an invalid
// escape, a control byte, no closing quote) or scanBadUTF8.
func scanString(data []byte, i int) (int, bool) {
	esc := false
	for {
		// Eight bytes at a time while none is a quote, a backslash, a
		// control byte or non-ASCII. The lowest flagged byte of each test
		// is exact (false positives only sit above a true one).
		for i+8 <= len(data) {
			x := binary.LittleEndian.Uint64(data[i:])
			q, b := x^swarQuote, x^swarBack
			t := ((x-swarSpace)&^x | (q-swarLo)&^q | (b-swarLo)&^b | x) & swarHi
			if t != 0 {
				i += bits.TrailingZeros64(t) >> 3
				break
			}
			i += 8
		}
		if i >= len(data) {
			return scanSyntax, esc
		}
		switch c := data[i]; {
		case c == '"':
			return i + 1, esc
		case c == '\\':
			esc = true
			n := escapeLen(data, i)
			if n == 0 {
				return scanSyntax, esc
			}
			i += n
		case c < 0x20:
			return scanSyntax, esc
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return scanBadUTF8, esc
			}
			i += size
		default:
			i++
		}
	}
}

// escapeLen returns the length of the valid escape sequence at data[i] (a
// backslash), 0 if it is not one.
func escapeLen(data []byte, i int) int {
	if i+1 >= len(data) {
		return 0
	}
	switch data[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return 2
	case 'u':
		if i+6 > len(data) {
			return 0
		}
		for _, h := range data[i+2 : i+6] {
			if hexVal(h) < 0 {
				return 0
			}
		}
		return 6
	}
	return 0
}

func hexVal(c byte) rune {
	switch {
	case c >= '0' && c <= '9':
		return rune(c - '0')
	case c >= 'a' && c <= 'f':
		return rune(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return rune(c - 'A' + 10)
	}
	return -1
}

// hex4 decodes the four hex digits of a \u escape that scanString checked.
func hex4(b []byte) rune {
	return hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3])
}

// unquoteInto writes the decoded content of a JSON string that scanString
// checked (the bytes between its quotes) into dst, as encoding/json and
// sonic decode it (a surrogate not in a valid pair becomes U+FFFD), and
// returns its length; ok is false when dst is too short. Decoding never
// makes a string longer.
func unquoteInto(dst, s []byte) (n int, ok bool) {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			if n == len(dst) {
				return n, false
			}
			dst[n] = c
			n++
			i++
			continue
		}
		var r rune
		switch s[i+1] {
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			r = hex4(s[i+2:])
			i += 4
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+8 <= len(s) && s[i+2] == '\\' && s[i+3] == 'u' {
					r2 = hex4(s[i+4:])
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
		default: // " \ /
			r = rune(s[i+1])
		}
		i += 2
		if len(dst)-n < utf8.RuneLen(r) {
			return n, false
		}
		n += utf8.EncodeRune(dst[n:], r)
	}
	return n, true
}

// maxDepth is how deeply arrays and objects may nest in a value the decoder
// skips, counted from the value itself (sonic's limit; see skipValue).
const maxDepth = 4096

// skipValue checks the JSON value starting at data[i] (not whitespace) and
// returns the index just past it, or a negative scan status.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return scanSyntax
	}
	switch c := data[i]; c {
	case '"':
		j, _ := scanString(data, i+1)
		return j
	case '{', '[':
		return skipContainer(data, i)
	case 't':
		return literalEnd(data, i, "true")
	case 'f':
		return literalEnd(data, i, "false")
	case 'n':
		return literalEnd(data, i, "null")
	default:
		return skipNumber(data, i)
	}
}

func literalEnd(data []byte, i int, lit string) int {
	if isLiteral(data, i, lit) {
		return i + len(lit)
	}
	return scanSyntax
}

// skipNumber checks the JSON number at data[i] and returns the index just
// past it. What follows is the caller's to check ("01" is a 0 followed by
// something that cannot follow a value).
func skipNumber(data []byte, i int) int {
	if data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return scanSyntax
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i+1)
	default:
		return scanSyntax
	}
	if i < len(data) && data[i] == '.' {
		j := skipDigits(data, i+1)
		if j == i+1 {
			return scanSyntax
		}
		i = j
	}
	if i < len(data) && data[i]|0x20 == 'e' {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := skipDigits(data, i)
		if j == i {
			return scanSyntax
		}
		i = j
	}
	return i
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}
	return i
}

// skipContainer checks the array or object at data[i] and returns the index
// just past it. Nesting follows the limits of sonic's skipping state
// machine (a stack of 4,096 states): a container d levels deep (the
// outermost is 1) is refused past d = 4096, and past d = 4095 when it is an
// object with a key or an array with more than one element. A decoder
// whose branches are its table: one case per JSON token.
func skipContainer(data []byte, i int) int {
	var isObj [maxDepth / 64]uint64 // bit d-1: the container at depth d is an object
	depth := 0
	for {
		// A value starts at data[i].
		if i >= len(data) {
			return scanSyntax
		}
		switch c := data[i]; c {
		case '{', '[':
			if depth == maxDepth {
				return scanSyntax
			}
			depth++
			w, bit := (depth-1)>>6, uint64(1)<<((depth-1)&63)
			i = skipWS(data, i+1)
			if i >= len(data) {
				return scanSyntax
			}
			if c == '[' {
				isObj[w] &^= bit
				if data[i] == ']' {
					i++
					depth--
					break // an empty array is a whole value
				}
				continue // its first element
			}
			isObj[w] |= bit
			if data[i] == '}' {
				i++
				depth--
				break
			}
			if depth == maxDepth {
				return scanSyntax
			}
			if i = skipKey(data, i); i < 0 {
				return i
			}
			continue // its first value
		default:
			if i = skipValue(data, i); i < 0 {
				return i
			}
		}
		// A value ended at data[i]: close containers, or find the next
		// element.
		for {
			if depth == 0 {
				return i
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return scanSyntax
			}
			obj := isObj[(depth-1)>>6]&(uint64(1)<<((depth-1)&63)) != 0
			c := data[i]
			if obj && c == '}' || !obj && c == ']' {
				i++
				depth--
				continue
			}
			if c != ',' || depth == maxDepth {
				return scanSyntax
			}
			i = skipWS(data, i+1)
			if obj {
				if i = skipKey(data, i); i < 0 {
					return i
				}
			}
			break
		}
	}
}

// skipKey checks `"key" :` and the whitespace after it, from data[i], and
// returns the index of the value.
func skipKey(data []byte, i int) int {
	if i >= len(data) || data[i] != '"' {
		return scanSyntax
	}
	j, _ := scanString(data, i+1)
	if j < 0 {
		return j
	}
	j = skipWS(data, j)
	if j >= len(data) || data[j] != ':' {
		return scanSyntax
	}
	return skipWS(data, j+1)
}

// validJSON reports whether b is one JSON value in UTF-8, with whitespace
// around it or not: ValidRaw in one pass and without sonic's state-machine
// pool (FuzzValidJSON compares the two).
func validJSON(b []byte) bool {
	i := skipWS(b, 0)
	if i == len(b) {
		return false
	}
	j := skipValue(b, i)
	return j >= 0 && skipWS(b, j) == len(b)
}

// validChannel is ValidChannel for a decoded name.
func validChannel(b []byte) bool {
	if len(b) == 0 || len(b) > MaxChannelLen {
		return false
	}
	for _, c := range b {
		if !channelByte[c] {
			return false
		}
	}
	return true
}

// correctUTF8 returns a copy of b with every byte that is not part of a
// valid UTF-8 sequence replaced by U+FFFD, as sonic does before decoding.
func correctUTF8(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/2)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return out
}

// validID reports whether raw, a JSON value, is a usable request id: a
// JSON number or string of at most MaxIDLen bytes.
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
	if plainJSON(s) {
		// Ids, channel names and most user names: nothing to escape, no
		// call into the encoder (which allocates).
		dst = append(dst, '"')
		dst = append(dst, s...)
		return append(dst, '"')
	}
	return appendEscapedJSONString(dst, s)
}

// appendEscapedJSONString is appendJSONString's encoder path, a function
// of its own so that the shortcut's dst does not escape to the heap.
func appendEscapedJSONString(dst []byte, s string) []byte {
	if err := encoder.EncodeInto(&dst, s, encoder.EscapeHTML); err != nil {
		// Unreachable for a string value; keep the envelope valid anyway.
		return append(dst, `""`...)
	}
	return dst
}

// plainJSON reports whether s is printable ASCII that a JSON string (with
// HTML escaping, as the encoder does) carries as it is.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
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
