package engine

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/proto"
)

// openWSDriver returns a driver whose connection completed the handshake,
// with its output cleared.
func openWSDriver(t *testing.T, s *Server, l *loop, exec *memExec) *connDriver {
	t.Helper()
	d := newConnDriver(t, s, l, exec)
	d.feed([]byte(upgradeRequest))
	if d.c.state != stateWS {
		t.Fatalf("handshake failed: %q", d.t.out)
	}
	d.t.out = d.t.out[:0]
	return d
}

// closeCodeOf returns the code of the close frame the server sent, 0 if
// none.
func closeCodeOf(t *testing.T, out []byte) uint16 {
	t.Helper()
	for _, f := range readServerFrames(t, out) {
		if f.Header.OpCode == ws.OpClose && len(f.Payload) >= 2 {
			return binary.BigEndian.Uint16(f.Payload)
		}
	}
	return 0
}

// frameHead is the header of a masked client frame declaring n payload
// bytes, with the mask used by clientFrame.
func frameHead(op ws.OpCode, n int) []byte {
	return clientFrame(true, op, make([]byte, n))[:14]
}

// TestTrickledMessageHeldInProportion: a frame declaring 1 MiB of which a
// few bytes arrived holds memory for those bytes, not for the declared
// length, and gives it back when the connection goes.
func TestTrickledMessageHeldInProportion(t *testing.T) {
	s := newTestServer(t, Config{})
	l, exec := newTestLoop(t, s)
	d := openWSDriver(t, s, l, exec)
	d.feed(frameHead(ws.OpText, 1<<20))
	for range 100 {
		d.feed([]byte("x"))
	}
	received := 14 + 100
	if got := s.input.held.Load(); got > 4*int64(received)+minHeld || got < int64(received) {
		t.Fatalf("held %d bytes for %d received", got, received)
	}
	if cap(d.c.in) > 4*received+minHeld {
		t.Fatalf("connection buffer of %d bytes for %d received", cap(d.c.in), received)
	}
	// Larger pieces: the buffer stays within a small factor.
	chunk := make([]byte, 64<<10)
	for range 8 {
		d.feed(chunk)
		received += len(chunk)
	}
	if got := int(s.input.held.Load()); got > 2*received {
		t.Fatalf("held %d bytes for %d received", got, received)
	}
	d.close()
	if got := s.input.held.Load(); got != 0 {
		t.Fatalf("held %d bytes after the connection closed", got)
	}
}

// TestInputBudgetRefuses: past the process's input budget a WebSocket with
// new partial input is closed with 1013 and an HTTP request gets 503;
// connections within it go on, and a completed message returns its bytes.
func TestInputBudgetRefuses(t *testing.T) {
	s := newTestServer(t, Config{InputBudget: 1400 << 10, APIKey: testAPIKey, APIProxy: nopProxy})
	l, exec := newTestLoop(t, s)
	a := openWSDriver(t, s, l, exec)
	b := openWSDriver(t, s, l, exec)
	msg := []byte(`{"op":"ping","pad":"` + strings.Repeat("a", 900<<10) + `"}`)
	frame := clientFrame(true, ws.OpText, msg)
	a.feed(frame[:len(frame)-1])
	b.feed(frame[:600<<10])
	if b.c.state == stateWS || closeCodeOf(t, b.t.out) != proto.CloseTryAgainLater {
		t.Fatalf("over the budget: state %d, output %q", b.c.state, b.t.out)
	}
	if s.input.refused.Load() != 1 {
		t.Fatalf("refusals %d, want 1", s.input.refused.Load())
	}
	a.feed(frame[len(frame)-1:])
	if a.c.state != stateWS || !bytes.Contains(a.t.out, []byte(`"pong"`)) {
		t.Fatalf("within the budget: state %d, output %.200q", a.c.state, a.t.out)
	}
	if got := s.input.held.Load(); got != 0 {
		t.Fatalf("held %d bytes once every message completed", got)
	}
	// HTTP: a body that does not fit.
	a.feed(frame[:len(frame)-1])
	h := newConnDriver(t, s, l, exec)
	h.feed([]byte("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testAPIKey + "\r\nContent-Length: 1000000\r\n\r\n"))
	h.feed(make([]byte, 600<<10))
	if !bytes.HasPrefix(h.t.out, []byte("HTTP/1.1 503 ")) || h.c.state == stateHTTP {
		t.Fatalf("body over the budget: state %d, output %q", h.c.state, h.t.out)
	}
}

// TestMessageDeadline: a started message must complete within
// MessageTimeout of its first byte; bytes trickling in do not extend it,
// and completed messages start the clock again.
func TestMessageDeadline(t *testing.T) {
	s := newTestServer(t, Config{MessageTimeout: 3 * time.Second})
	l, exec := newTestLoop(t, s)
	d := openWSDriver(t, s, l, exec)
	ping := clientFrame(true, ws.OpText, []byte(`{"op":"ping"}`))
	d.feed(ping)
	d.feed(ping[:3])
	start := d.c.phaseStart
	if d.c.phase != phaseMessage {
		t.Fatalf("phase %d after a partial frame, want message", d.c.phase)
	}
	l.scan(start + int64(2*time.Second))
	d.feed(ping[3:5]) // trickled bytes
	if d.c.phaseStart != start {
		t.Fatal("trickled bytes moved the message's start")
	}
	l.scan(start + int64(2*time.Second))
	if d.c.state != stateWS {
		t.Fatal("closed before the deadline")
	}
	// Completing it ends the phase.
	d.feed(ping[5:])
	if d.c.phase != phaseNone {
		t.Fatalf("phase %d after the message completed", d.c.phase)
	}
	l.scan(start + int64(10*time.Second))
	if d.c.state != stateWS {
		t.Fatal("a connection with no message in progress was closed")
	}
	// A fragmented message that never ends, with pings between fragments.
	d.feed(clientFrame(false, ws.OpText, []byte(`{"op":`)))
	start = d.c.phaseStart
	d.feed(clientFrame(true, ws.OpPing, nil))
	if d.c.phase != phaseMessage || d.c.phaseStart != start {
		t.Fatalf("a ping inside a fragmented message changed its phase: %d", d.c.phase)
	}
	d.t.out = d.t.out[:0]
	l.scan(start + int64(4*time.Second))
	if code := closeCodeOf(t, d.t.out); code != proto.CloseMessageTimeout || d.c.state == stateWS {
		t.Fatalf("after the deadline: state %d, close code %d, want %d", d.c.state, code, proto.CloseMessageTimeout)
	}
	if s.input.timeouts[phaseMessage].Load() != 1 {
		t.Fatal("message timeout not counted")
	}
}

// TestHeadDeadlines: a new connection must send its first request head
// within HandshakeTimeout of the accept (a silent one is closed, a
// trickling one gets 408), a later head within HeaderTimeout of its first
// byte, a body within BodyTimeout of its head.
func TestHeadDeadlines(t *testing.T) {
	s := newTestServer(t, Config{HandshakeTimeout: 2 * time.Second, HeaderTimeout: 3 * time.Second,
		BodyTimeout: 4 * time.Second, IdleTimeout: time.Hour, APIKey: testAPIKey, APIProxy: nopProxy})
	l, exec := newTestLoop(t, s)
	sec := int64(time.Second)

	silent := newConnDriver(t, s, l, exec)
	opened := silent.c.phaseStart
	l.scan(opened + 2*sec - 1)
	if silent.t.closed.Load() {
		t.Fatal("silent connection closed before the handshake deadline")
	}
	l.scan(opened + 3*sec)
	if !silent.t.closed.Load() || len(silent.t.out) != 0 {
		t.Fatalf("silent connection: closed %v, output %q", silent.t.closed.Load(), silent.t.out)
	}

	slow := newConnDriver(t, s, l, exec)
	opened = slow.c.phaseStart
	for _, b := range []byte("GET /ws HTTP/1.1\r\nHost") {
		slow.feed([]byte{b})
	}
	l.scan(opened + 3*sec)
	if !slow.t.closed.Load() || !bytes.HasPrefix(slow.t.out, []byte("HTTP/1.1 408 ")) {
		t.Fatalf("trickled first head: closed %v, output %q", slow.t.closed.Load(), slow.t.out)
	}

	later := newConnDriver(t, s, l, exec)
	later.feed([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	later.feed([]byte("GET /healthz HTTP/1.1\r\n"))
	if later.c.phase != phaseHead {
		t.Fatalf("phase %d, want head", later.c.phase)
	}
	started := later.c.phaseStart
	l.scan(started + 3*sec - 1)
	later.feed([]byte("X-A: 1\r\n"))
	l.scan(started + 3*sec + 1)
	if !later.t.closed.Load() || !bytes.Contains(later.t.out, []byte("HTTP/1.1 408 ")) {
		t.Fatalf("trickled later head: closed %v, output %q", later.t.closed.Load(), later.t.out)
	}

	body := newConnDriver(t, s, l, exec)
	body.feed([]byte("POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: " + testAPIKey + "\r\nContent-Length: 100\r\n\r\nab"))
	if body.c.phase != phaseBody {
		t.Fatalf("phase %d, want body", body.c.phase)
	}
	started = body.c.phaseStart
	l.scan(started + 4*sec - 1)
	body.feed([]byte("cd"))
	l.scan(started + 4*sec + 1)
	if !body.t.closed.Load() || !bytes.HasPrefix(body.t.out, []byte("HTTP/1.1 408 ")) {
		t.Fatalf("trickled body: closed %v, output %q", body.t.closed.Load(), body.t.out)
	}
	for p, want := range map[inPhase]uint64{phaseFirst: 2, phaseHead: 1, phaseBody: 1} {
		if got := s.input.timeouts[p].Load(); got != want {
			t.Errorf("%s timeouts %d, want %d", phaseNames[p], got, want)
		}
	}
}

// TestAPIRefusedOnHead: a server-API request without the right key is
// answered 401 as soon as its head arrives, and its body is never held.
func TestAPIRefusedOnHead(t *testing.T) {
	s := newTestServer(t, Config{APIKey: testAPIKey, APIProxy: nopProxy})
	l, exec := newTestLoop(t, s)
	d := newConnDriver(t, s, l, exec)
	d.feed([]byte("POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"))
	if !bytes.HasPrefix(d.t.out, []byte("HTTP/1.1 401 ")) || !bytes.Contains(d.t.out, []byte("Connection: close")) {
		t.Fatalf("output %q", d.t.out)
	}
	d.feed(make([]byte, 64<<10))
	if d.c.state != stateClosing || len(d.c.in) != 0 || s.input.held.Load() != 0 {
		t.Fatalf("state %d, holding %d bytes", d.c.state, s.input.held.Load())
	}
	// Without a body, the connection is kept.
	k := newConnDriver(t, s, l, exec)
	k.feed([]byte("GET /api/channels HTTP/1.1\r\nHost: x\r\n\r\n"))
	if !bytes.HasPrefix(k.t.out, []byte("HTTP/1.1 401 ")) || k.c.state != stateHTTP || !bytes.HasSuffix(k.t.out, apiUnauthorized) {
		t.Fatalf("state %d, output %q", k.c.state, k.t.out)
	}
}

// TestObsFoldRefused: a header continued on the next line (obs-fold) is
// refused with 400.
func TestObsFoldRefused(t *testing.T) {
	s := newTestServer(t, Config{})
	l, exec := newTestLoop(t, s)
	for _, fold := range []string{" ", "\t"} {
		d := newConnDriver(t, s, l, exec)
		d.feed([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n" + fold + "2\r\n\r\n"))
		if !bytes.HasPrefix(d.t.out, []byte("HTTP/1.1 400 ")) {
			t.Fatalf("fold %q: output %q", fold, d.t.out)
		}
	}
}

// TestNonMinimalLengthRefused: a frame length not in its shortest encoding
// fails the connection with 1002.
func TestNonMinimalLengthRefused(t *testing.T) {
	s := newTestServer(t, Config{})
	l, exec := newTestLoop(t, s)
	d := openWSDriver(t, s, l, exec)
	payload := []byte(`{"op":"ping"}`)
	f := []byte{0x81, 0x80 | 126, 0, byte(len(payload)), 0, 0, 0, 0}
	d.feed(append(f, payload...))
	if code := closeCodeOf(t, d.t.out); code != proto.CloseProtocolError {
		t.Fatalf("close code %d, want 1002; output %q", code, d.t.out)
	}
}

// TestHandshakeRefusalLogsBody: a refused handshake is logged with the size
// of the body sent.
func TestHandshakeRefusalLogsBody(t *testing.T) {
	log := &lineLog{}
	s := newTestServer(t, Config{AccessLog: log})
	l, exec := newTestLoop(t, s)
	d := newConnDriver(t, s, l, exec)
	d.feed([]byte(strings.Replace(upgradeRequest, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 12", 1)))
	i := bytes.Index(d.t.out, []byte("\r\n\r\n"))
	if i < 0 || statusFromResponse(d.t.out) == 101 {
		t.Fatalf("output %q", d.t.out)
	}
	sent := len(d.t.out) - i - 4
	if sent == 0 {
		t.Fatalf("refusal without a body: %q", d.t.out)
	}
	if want := " " + itoa(statusFromResponse(d.t.out)) + " " + itoa(sent) + " "; !strings.Contains(log.last(), want) {
		t.Fatalf("access log %q, want %q", log.last(), want)
	}
}

// nopProxy answers every server-API request with 200 and an empty object.
func nopProxy(_ *fasthttp.Request, resp *fasthttp.Response) error {
	resp.SetStatusCode(fasthttp.StatusOK)
	resp.SetBodyString("{}")
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestReclaimSlot: at MaxConnections a new connection takes the slot of
// the connection whose request head has been under way the longest (at
// least a second); connections that completed a request, and heads younger
// than that, keep theirs.
func TestReclaimSlot(t *testing.T) {
	s := newTestServer(t, Config{MaxConnections: 4})
	l, exec := newTestLoop(t, s)
	ws1 := openWSDriver(t, s, l, exec)
	keep := newConnDriver(t, s, l, exec)
	keep.feed([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	older := newConnDriver(t, s, l, exec)
	older.feed([]byte("GET / HTTP/1.1\r\nHo"))
	young := newConnDriver(t, s, l, exec)
	young.c.phaseStart = older.c.phaseStart + int64(500*time.Millisecond)
	now := older.c.phaseStart + int64(900*time.Millisecond)
	if l.reclaimSlot(now) {
		t.Fatal("a head under way for less than a second was reclaimed")
	}
	now = older.c.phaseStart + int64(1200*time.Millisecond)
	if !l.reclaimSlot(now) {
		t.Fatal("no slot reclaimed from a head under way for 1.2 s")
	}
	if !older.t.closed.Load() || !bytes.HasPrefix(older.t.out, []byte("HTTP/1.1 408 ")) {
		t.Fatalf("the oldest head: closed %v, output %q", older.t.closed.Load(), older.t.out)
	}
	for name, d := range map[string]*connDriver{"websocket": ws1, "keep-alive": keep, "younger": young} {
		if d.t.closed.Load() {
			t.Errorf("%s connection closed", name)
		}
	}
	older.close()
	if l.reclaimSlot(now) {
		t.Fatal("a head under way for 0.7 s was reclaimed")
	}
	newConnDriver(t, s, l, exec) // the connection that took the slot
	if !s.overCapacity(l) || s.refused.Load() != 1 {
		t.Fatalf("at capacity with nothing to reclaim: refused %d", s.refused.Load())
	}
	if got := s.input.reclaimed.Load(); got != 1 {
		t.Fatalf("reclaimed %d, want 1", got)
	}
}
