package engine

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// crypto/tls keeps three buffers in a tls.Conn for its whole life, grown
// by the handshake and never given back: rawInput (the ciphertext read,
// as large as the largest record so far plus 512 bytes: about 2 KiB after
// a TLS 1.3 ClientHello carrying a post-quantum key share), input (the
// plaintext of the last record, a window on rawInput) and hand (handshake
// messages, as large as the ClientHello). Together they are half of what
// an idle TLS connection costs, and crypto/tls has no API to release
// them, so the loop reaches them through their offsets in tls.Conn, found
// by reflection at start: with records, a loop lends rawInput its buffer
// for the time it serves one connection's input and takes it back after
// (the wire adapter hands crypto/tls whole records only, so nothing is
// left in it), and an empty hand is released when the handshake ends.
//
// The offsets are used only if the fields exist with these types (the
// toolchain's crypto/tls is the one the binary was built with); otherwise
// tlsBufsKnown is false and crypto/tls keeps its buffers, costing memory
// but nothing else. TestTLSBuffersReachable fails when that happens.
var (
	tlsBufsKnown                            bool
	tlsRawInputOff, tlsInputOff, tlsHandOff uintptr
)

func init() {
	t := reflect.TypeFor[tls.Conn]()
	buf, rd := reflect.TypeFor[bytes.Buffer](), reflect.TypeFor[bytes.Reader]()
	raw, ok1 := t.FieldByName("rawInput")
	in, ok2 := t.FieldByName("input")
	hand, ok3 := t.FieldByName("hand")
	if !ok1 || !ok2 || !ok3 || raw.Type != buf || in.Type != rd || hand.Type != buf {
		return
	}
	tlsRawInputOff, tlsInputOff, tlsHandOff = raw.Offset, in.Offset, hand.Offset
	tlsBufsKnown = true
}

func tlsRawInput(c *tls.Conn) *bytes.Buffer {
	return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(c), tlsRawInputOff))
}

func tlsInput(c *tls.Conn) *bytes.Reader {
	return (*bytes.Reader)(unsafe.Add(unsafe.Pointer(c), tlsInputOff))
}

func tlsHand(c *tls.Conn) *bytes.Buffer {
	return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(c), tlsHandOff))
}

// tlsInBufSize is the loop's record input buffer: crypto/tls grows
// rawInput to a whole record (at most 5 + 16384 + 2048 bytes, TLS 1.2's
// largest ciphertext) plus 512 bytes before it reads.
const tlsInBufSize = 20 << 10

// lendInput gives tc's rawInput the loop's input buffer for the records
// served now; it returns false when the fields are unknown (see above).
func (l *loop) lendInput(tc *tls.Conn) bool {
	if !tlsBufsKnown {
		return false
	}
	rb := tlsRawInput(tc)
	buf := l.tlsIn
	l.tlsIn = nil
	if buf == nil {
		buf = make([]byte, 0, tlsInBufSize)
	}
	// rawInput is empty between calls (whole records only); should it not
	// be, its bytes move to the loop's buffer.
	*rb = *bytes.NewBuffer(append(buf[:0], rb.Bytes()...))
	return true
}

// takeInput takes the loop's buffer back from tc once its records are
// served, with the plaintext window on it; rawInput, input and hand are
// then empty and hold no memory. A connection left with unread plaintext
// (it closed meanwhile) keeps the buffer, and the loop makes another.
func (l *loop) takeInput(tc *tls.Conn) {
	rb, in := tlsRawInput(tc), tlsInput(tc)
	if in.Len() > 0 {
		return
	}
	*in = bytes.Reader{}
	var rest []byte
	if rb.Len() > 0 {
		// Not expected (see lendInput): the rest is kept in its own buffer.
		rest = append(rest, rb.Bytes()...)
	}
	rb.Reset()
	buf := rb.AvailableBuffer() // the whole buffer, empty
	*rb = bytes.Buffer{}
	if rest != nil {
		*rb = *bytes.NewBuffer(rest)
	}
	if cap(buf) <= 2*tlsInBufSize {
		l.tlsIn = buf
	}
	releaseHand(tc)
}

// releaseHand drops tc's handshake buffer when it holds nothing.
func releaseHand(tc *tls.Conn) {
	if h := tlsHand(tc); tlsBufsKnown && h.Len() == 0 {
		*h = bytes.Buffer{}
	}
}
