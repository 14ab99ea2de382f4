package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// The fuzz targets drive a real *Conn through Conn.Serve on the in-memory
// transport. Input arrives in chunks whose sizes the fuzzer picks (one byte
// of cuts per chunk, size = byte+1; the rest in one chunk once cuts run out),
// and the driver keeps the unconsumed tail as a transport does. Seeds live in
// testdata/fuzz/<target>; commit every crasher there.

// chunks splits in into pieces sized by cuts.
func chunks(in, cuts []byte) [][]byte {
	var out [][]byte
	for _, c := range cuts {
		if len(in) == 0 {
			break
		}
		n := min(int(c)+1, len(in))
		out = append(out, in[:n])
		in = in[n:]
	}
	if len(in) > 0 {
		out = append(out, in)
	}
	return out
}

// checkServerWrite fails the test unless p is a well-formed write for the
// connection's current state: an HTTP response head while it speaks HTTP,
// the 101 response then whole valid frames in the first write once it
// speaks WebSocket, whole valid frames in the others, nothing once it is
// closing. switched is per connection: set once the 101 was written.
func checkServerWrite(tb testing.TB, c *Conn, p []byte, switched *bool) {
	tb.Helper()
	switch c.state {
	case stateHTTP:
		if !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
			tb.Fatalf("HTTP write does not start with a status line: %q", p[:min(len(p), 64)])
		}
	case stateWS:
		// The first write of a WebSocket carries the 101 response, then
		// frames (the welcome); no other write may.
		if head, rest, ok := bytes.Cut(p, []byte("\r\n\r\n")); !*switched {
			if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
				tb.Fatalf("first WebSocket write does not start with the 101 response: %q", p[:min(len(p), 64)])
			}
			*switched, p = true, rest
		}
		frames, err := parseServerFrames(p)
		if err != nil {
			tb.Fatalf("malformed frames written: %v\n% x", err, p[:min(len(p), 128)])
		}
		for _, f := range frames {
			checkServerFrameContent(tb, f, c.bin)
		}
	default:
		tb.Fatalf("write in state %d: %q", c.state, p[:min(len(p), 64)])
	}
}

// checkServerFrameContent checks what a client would check: data frames
// are in the connection's protocol (text JSON objects, or well-formed binary
// envelopes), close frames carry a sendable code and a UTF-8 reason.
func checkServerFrameContent(tb testing.TB, f ws.Frame, bin bool) {
	tb.Helper()
	switch f.Header.OpCode {
	case ws.OpText:
		if bin {
			tb.Fatalf("text frame on a binary-protocol connection: %q", f.Payload)
		}
		if !utf8.Valid(f.Payload) || !json.Valid(f.Payload) || f.Payload[0] != '{' {
			tb.Fatalf("text frame is not a JSON object: %q", f.Payload)
		}
	case ws.OpBinary:
		if !bin {
			tb.Fatalf("binary frame on a JSON connection: % x", f.Payload)
		}
		if err := checkBinEnvelope(f.Payload); err != nil {
			tb.Fatalf("binary envelope % x: %v", f.Payload, err)
		}
	case ws.OpClose:
		if len(f.Payload) == 1 {
			tb.Fatalf("close frame with a 1-byte payload")
		}
		if len(f.Payload) >= 2 {
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if err := ws.CheckCloseFrameData(code, reason); err != nil {
				tb.Fatalf("close frame %d %q: %v", code, reason, err)
			}
		}
	}
}

// checkBinEnvelope parses a server envelope of the binary protocol (see
// proto/binary.go) and reports what is malformed.
func checkBinEnvelope(p []byte) error {
	if len(p) == 0 {
		return errors.New("empty")
	}
	head := p[0]
	p = p[1:]
	if head&0x20 != 0 {
		return errors.New("reserved flag set")
	}
	if head&0x80 != 0 {
		_, n := binary.Uvarint(p)
		if n <= 0 {
			return errors.New("bad id varint")
		}
		p = p[n:]
	}
	str8 := func() ([]byte, error) {
		if len(p) < 1 || len(p) < 1+int(p[0]) {
			return nil, errors.New("truncated str8")
		}
		s := p[1 : 1+int(p[0])]
		p = p[1+int(p[0]):]
		return s, nil
	}
	opaque := head&0x40 != 0
	switch op := head & 0x1f; op {
	case proto.BinWelcome:
		for range 3 {
			if _, err := str8(); err != nil {
				return err
			}
		}
	case proto.BinAck, proto.BinPong:
		if op == proto.BinAck && head&0x80 == 0 {
			return errors.New("ack without an id")
		}
	case proto.BinError:
		if len(p) < 1 || proto.ErrorCodeOf(p[0]) == "" {
			return errors.New("unknown error code")
		}
		if !utf8.Valid(p[1:]) {
			return errors.New("error message is not UTF-8")
		}
		p = nil
	case proto.BinMessage:
		ch, err := str8()
		if err != nil {
			return err
		}
		if len(ch) > 0 && !proto.ValidChannel(string(ch)) {
			return fmt.Errorf("invalid channel %q", ch)
		}
		if _, err := str8(); err != nil {
			return err
		}
		if !opaque && !json.Valid(p) {
			return fmt.Errorf("JSON data is not valid JSON: %q", p)
		}
		p = nil
	default:
		return fmt.Errorf("server op %#x", op)
	}
	if opaque && head&0x1f != proto.BinMessage {
		return errors.New("opaque flag on an op without data")
	}
	if len(p) != 0 {
		return fmt.Errorf("%d trailing bytes", len(p))
	}
	return nil
}

// checkAtRest checks a connection between inputs: it never stalls with
// processable input (a transport calls Serve again only on new bytes or a
// wake-up), and a closing connection has told its transport.
func checkAtRest(tb testing.TB, d *connDriver) {
	tb.Helper()
	switch d.c.state {
	case stateHTTP, stateWS:
		if d.c.busy {
			tb.Fatalf("connection still busy after its jobs ran")
		}
		before := d.t.nbytes
		if n := d.c.Serve(d.buf); n != 0 {
			tb.Fatalf("Serve left processable input: a second call consumed %d of %d bytes", n, len(d.buf))
		}
		if d.t.nbytes != before {
			tb.Fatalf("Serve with no new input wrote %d bytes", d.t.nbytes-before)
		}
	case stateClosing:
		if !d.t.halfClosed && !d.t.closed.Load() {
			tb.Fatalf("closing without CloseWrite or Close on the transport")
		}
		// Input may wait (a file job that ends the connection leaves the
		// pipelined tail for the next read), but a closing connection
		// drains whatever it is given and answers nothing.
		before := d.t.nbytes
		if n := d.c.Serve(d.buf); n != len(d.buf) {
			tb.Fatalf("closing connection consumed %d of %d bytes", n, len(d.buf))
		}
		d.buf = d.buf[:0]
		if d.t.nbytes != before {
			tb.Fatalf("closing connection wrote %d bytes", d.t.nbytes-before)
		}
	}
}

// accessLogCheck is an access log that fails the test on a malformed line.
type accessLogCheck struct {
	mu sync.Mutex
	tb testing.TB
	n  int
}

func (a *accessLogCheck) WriteLine(line []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.n++
	if len(line) == 0 || line[len(line)-1] != '\n' {
		a.tb.Fatalf("access log line without a final newline: %q", line)
	}
	for _, b := range line[:len(line)-1] {
		if b < 0x20 || b >= 0x7f {
			a.tb.Fatalf("access log line with an unescaped byte %#x: %q", b, line)
		}
	}
}

type fuzzEnv struct {
	s    *Server
	l    *loop
	exec *memExec
	log  *accessLogCheck
}

func newFuzzEnv(f *testing.F) *fuzzEnv {
	alog := &accessLogCheck{tb: f}
	s := newTestServer(f, Config{MaxMessage: 4096, MaxOutbound: 64 << 10, MaxSubscriptions: 4, AccessLog: alog})
	l, e := newTestLoop(f, s)
	return &fuzzEnv{s: s, l: l, exec: e, log: alog}
}

// newConn opens a connection whose every write is checked. It is closed
// when the iteration ends, even by a failure, so that iterations (and the
// minimizer's re-runs) do not see each other's connections.
func (env *fuzzEnv) newConn(t *testing.T) *connDriver {
	env.log.mu.Lock()
	env.log.tb = t
	env.log.mu.Unlock()
	d := newConnDriver(t, env.s, env.l, env.exec)
	t.Cleanup(func() {
		d.t.check = nil
		d.close()
		env.s.files.DropPending()
	})
	d.t.record = false
	switched := false
	d.t.check = func(p []byte) { checkServerWrite(t, d.c, p, &switched) }
	return d
}

// finish closes every connection and checks the loop is back to empty.
func (env *fuzzEnv) finish(t *testing.T, ds ...*connDriver) {
	for _, d := range ds {
		d.close()
	}
	l := env.l
	if len(l.conns) != 0 || len(l.subs) != 0 || l.stats.connections.Load() != 0 ||
		l.stats.websockets.Load() != 0 || l.stats.subscriptions.Load() != 0 {
		t.Fatalf("loop not empty after closing every connection: conns %d subs %d stats %d/%d/%d",
			len(l.conns), len(l.subs), l.stats.connections.Load(), l.stats.websockets.Load(), l.stats.subscriptions.Load())
	}
	l.flushDirty()
	env.exec.run()
}

// FuzzFrames feeds WebSocket frames to an upgraded connection, of the
// binary protocol when bin is set, else JSON. A second connection on the
// same loop, of the other protocol, is subscribed to channel "c" so that
// publishes fan out across protocols.
func FuzzFrames(f *testing.F) {
	f.Add(clientFrame(true, ws.OpText, []byte(`{"id":1,"op":"ping"}`)), []byte{}, false)
	f.Add(append(clientFrame(true, ws.OpText, []byte(`{"id":1,"op":"subscribe","channel":"c"}`)),
		clientFrame(true, ws.OpText, []byte(`{"id":2,"op":"publish","channel":"c","data":{"x":1}}`))...), []byte{0, 0, 0, 3, 200}, false)
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, []byte{1}, false)
	f.Add(clientFrame(true, ws.OpBinary, []byte{0xc3, 0x05, 0x01, 'c', 0x00, 0xff}), []byte{}, true)
	env := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, in, cuts []byte, bin bool) {
		sub := env.newConn(t)
		sub.feed([]byte(upgradeRequestFor(!bin)))
		if bin { // the subscriber speaks JSON
			sub.feed(clientFrame(true, ws.OpText, []byte(`{"op":"subscribe","channel":"c"}`)))
		} else {
			sub.feed(clientFrame(true, ws.OpBinary, []byte{proto.BinSubscribe, 1, 'c'}))
		}
		if sub.c.state != stateWS || sub.c.bin == bin || len(sub.c.chans) != 1 {
			t.Fatalf("subscriber setup failed: state %d bin %v chans %v", sub.c.state, sub.c.bin, sub.c.chans)
		}

		slowBefore := env.l.stats.slowClosed.Load()
		d := env.newConn(t)
		d.feed([]byte(upgradeRequestFor(bin)))
		if d.c.state != stateWS || d.c.bin != bin || len(d.buf) != 0 {
			t.Fatalf("upgrade failed: state %d, %d bytes left", d.c.state, len(d.buf))
		}
		total := 0
		for _, chunk := range chunks(in, cuts) {
			prev := d.c.state
			total += len(chunk)
			d.feed(chunk)
			if prev != stateWS && d.c.state == stateWS {
				t.Fatalf("connection went back from state %d to WebSocket", prev)
			}
			if len(d.buf) > total {
				t.Fatalf("unconsumed input %d exceeds input %d", len(d.buf), total)
			}
			checkAtRest(t, d)
		}
		if d.c.state == stateWS {
			// What is left must be an incomplete frame.
			if h, ok, err := parseFrameHeader(d.buf); err == nil && ok && int64(len(d.buf)) >= int64(h.size)+h.Length {
				t.Fatalf("a complete frame is left unconsumed: %+v", h.Header)
			}
		}
		if sub.c.state != stateWS && env.l.stats.slowClosed.Load() == slowBefore {
			t.Fatalf("the subscriber was disconnected (state %d)", sub.c.state)
		}
		env.finish(t, d, sub)
	})
}

// FuzzHTTP feeds a raw byte stream to a fresh connection: HTTP requests,
// and WebSocket frames after an upgrade.
func FuzzHTTP(f *testing.F) {
	f.Add([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), []byte{})
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), []byte{10, 10, 10})
	f.Add(append([]byte(upgradeRequest), clientFrame(true, ws.OpText, []byte(`{"op":"ping"}`))...), []byte{})
	env := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, in, cuts []byte) {
		d := env.newConn(t)
		total := 0
		for _, chunk := range chunks(in, cuts) {
			prev := d.c.state
			total += len(chunk)
			d.feed(chunk)
			if d.c.state < prev {
				t.Fatalf("state went from %d to %d", prev, d.c.state)
			}
			if len(d.buf) > total {
				t.Fatalf("unconsumed input %d exceeds input %d", len(d.buf), total)
			}
			checkAtRest(t, d)
		}
		env.finish(t, d)
	})
}

// TestChunks pins the chunking the fuzz targets rely on.
func TestChunks(t *testing.T) {
	in := []byte("abcdefghij")
	tests := []struct {
		cuts []byte
		want string
	}{
		{nil, "abcdefghij"},
		{[]byte{0, 0}, "a|b|cdefghij"},
		{[]byte{2, 255, 0}, "abc|defghij"},
		{[]byte{9}, "abcdefghij"},
	}
	for _, tt := range tests {
		var parts []string
		for _, c := range chunks(in, tt.cuts) {
			parts = append(parts, string(c))
		}
		if got := fmt.Sprint(parts); got != fmt.Sprint(splitBar(tt.want)) {
			t.Errorf("chunks(%v) = %v, want %v", tt.cuts, got, tt.want)
		}
	}
}

func splitBar(s string) []string { return bytes2strings(bytes.Split([]byte(s), []byte("|"))) }

func bytes2strings(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}
