package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// memTransport is an in-memory Transport: it records (or only counts) what
// the engine writes, and remembers closes and wake-ups. Everything except
// Close, Wake and RemoteAddr runs on the test's "loop" goroutine.
type memTransport struct {
	// record keeps the written bytes in out; otherwise they are only
	// counted (benchmarks, allocation tests).
	record bool
	out    []byte
	writes int // Write calls with a non-empty p
	nbytes int // bytes written in total
	// check, when set, sees every non-empty write before it is recorded.
	check func(p []byte)
	// buffered is what Buffered reports: bytes "not yet accepted by the
	// kernel". Tests set it to simulate a slow reader.
	buffered int
	// limited makes Writev take at most room bytes in all (a kernel
	// buffer that fills); waits counts WaitWritable calls.
	limited bool
	room    int
	waits   int
	vec     []byte // Writev's pieces joined for check, reused

	halfClosed bool
	closed     atomic.Bool
	wakes      atomic.Int32
	addr       net.Addr
}

func newMemTransport(record bool) *memTransport {
	return &memTransport{record: record, addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}}
}

func (t *memTransport) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	if t.check != nil {
		t.check(p)
	}
	t.writes++
	t.nbytes += len(p)
	if t.record {
		t.out = append(t.out, p...)
	}
}

// Writev takes the bytes of iov in order, up to room when limited, and
// none while Buffered reports bytes.
func (t *memTransport) Writev(iov [][]byte) (int, error) {
	if t.buffered > 0 {
		return 0, nil
	}
	if len(iov) == 1 && !t.limited {
		t.Write(iov[0])
		return len(iov[0]), nil
	}
	n := 0
	for _, p := range iov {
		n += len(p)
	}
	if t.limited {
		n = min(n, t.room)
		t.room -= n
	}
	if n == 0 {
		return 0, nil
	}
	if len(iov) == 1 {
		t.Write(iov[0][:n])
		return n, nil
	}
	t.vec = t.vec[:0]
	for _, p := range iov {
		t.vec = append(t.vec, p[:min(len(p), n-len(t.vec))]...)
	}
	t.Write(t.vec)
	return n, nil
}

func (t *memTransport) WaitWritable() { t.waits++ }

func (t *memTransport) Buffered() int { return t.buffered }

func (t *memTransport) CloseWrite() { t.halfClosed = true }

func (t *memTransport) ResetOnClose() {}

func (t *memTransport) Close() { t.closed.Store(true) }

func (t *memTransport) Wake() { t.wakes.Add(1) }

// AsyncWrite writes p and runs done at once. The harness runs file jobs on
// the loop goroutine itself, so "on the loop" is here and now; a queued
// callback would deadlock the job waiting for it.
func (t *memTransport) AsyncWrite(p []byte, done func(int, error)) error {
	if t.closed.Load() {
		return errClosed
	}
	t.Write(p)
	done(t.buffered, nil)
	return nil
}

func (t *memTransport) RemoteAddr() net.Addr { return t.addr }

// takeOut returns and forgets what was written so far.
func (t *memTransport) takeOut() []byte {
	b := t.out
	t.out = nil
	return b
}

var errExecStopped = errors.New("memExec: stopped")

// memExec is an in-memory Executor: Execute queues, run drains the queue on
// the caller's goroutine, as an event loop would at the end of a pass.
type memExec struct {
	mu      sync.Mutex
	queue   []func()
	spare   []func()
	stopped bool
}

func (e *memExec) Execute(fn func()) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return errExecStopped
	}
	e.queue = append(e.queue, fn)
	return nil
}

// Yield queues fn behind what Execute queued: the fixture has no sockets
// to serve in between unless the test feeds them (runOne).
func (e *memExec) Yield(fn func()) error { return e.Execute(fn) }

// runOne runs the first queued function, if any.
func (e *memExec) runOne() {
	e.mu.Lock()
	if len(e.queue) == 0 {
		e.mu.Unlock()
		return
	}
	fn := e.queue[0]
	e.queue = append(e.queue[:0], e.queue[1:]...)
	e.mu.Unlock()
	fn()
}

// run runs queued functions, including those they queue, until none is left.
func (e *memExec) run() {
	for {
		e.mu.Lock()
		if len(e.queue) == 0 {
			e.mu.Unlock()
			return
		}
		batch := e.queue
		e.queue, e.spare = e.spare[:0], nil // never let queue and batch share an array
		e.mu.Unlock()
		for i, fn := range batch {
			fn()
			batch[i] = nil
		}
		e.mu.Lock()
		e.spare = batch[:0]
		e.mu.Unlock()
	}
}

// newTestServer builds a Server with test defaults (a temporary public
// folder holding index.html, one loop, a temporary compression folder, a
// NopBridge).
// It is not started: tests drive connections through loops made by
// newTestLoop.
func newTestServer(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if cfg.PublicDir == "" {
		cfg.PublicDir = tb.TempDir()
		writeFile(tb, cfg.PublicDir, "index.html", "<!doctype html><title>zenconn</title>\n")
	}
	if cfg.CompressDir == "" {
		cfg.CompressDir = tb.TempDir()
	}
	if cfg.Loops == 0 {
		cfg.Loops = 1
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Bridge == nil {
		cfg.Bridge = NopBridge{}
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	// Stops the file server's cache cleaner; a test that shut the server
	// down itself gets "already shut down", which is fine here.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// newTestLoop registers a loop driven by an in-memory executor, as
// gnetTransportServer.loopFor does for a gnet event loop.
func newTestLoop(tb testing.TB, s *Server) (*loop, *memExec) {
	tb.Helper()
	e := &memExec{}
	l := s.hub.addLoop(s, e)
	if l == nil {
		tb.Fatal("hub.addLoop: no free loop slot")
	}
	l.http = newHTTPParser()
	return l, e
}

// connDriver feeds input to one Conn as a transport does: it keeps the
// unconsumed tail, appends new input to it and calls Serve again; it runs
// the loop's queued functions and the file jobs after each call, and calls
// Serve again when the connection asks to be woken.
type connDriver struct {
	tb   testing.TB
	s    *Server
	l    *loop
	exec *memExec
	t    *memTransport
	c    *Conn
	buf  []byte // unconsumed input
}

func newConnDriver(tb testing.TB, s *Server, l *loop, exec *memExec) *connDriver {
	t := newMemTransport(true)
	return &connDriver{tb: tb, s: s, l: l, exec: exec, t: t, c: s.open(l, t)}
}

// feed appends in to the unconsumed input and serves it.
func (d *connDriver) feed(in []byte) {
	d.buf = append(d.buf, in...)
	d.serve()
}

func (d *connDriver) serve() {
	for range 1000 {
		if d.t.closed.Load() {
			// The transport is gone: gnet would call OnClose and drop input.
			d.close()
			return
		}
		n := d.c.Serve(d.buf)
		if n < 0 || n > len(d.buf) {
			d.tb.Fatalf("Serve consumed %d of %d bytes", n, len(d.buf))
		}
		d.buf = append(d.buf[:0], d.buf[n:]...)
		d.exec.run()
		d.runJobs()
		if d.t.wakes.Swap(0) == 0 {
			return
		}
	}
	d.tb.Fatal("connection keeps asking to be woken")
}

// runJobs runs queued file and metrics jobs on this goroutine.
func (d *connDriver) runJobs() {
	for d.s.files.RunPending() > 0 {
		d.exec.run()
	}
}

// close ends the connection as the transport would on a peer close.
func (d *connDriver) close() {
	if d.c.state != stateClosed {
		d.c.Closed()
	}
	d.exec.run()
}

func writeFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// upgradeRequest is a valid WebSocket handshake for /ws.
const upgradeRequest = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

// upgradeRequestFor is upgradeRequest asking for the binary protocol when
// bin is set.
func upgradeRequestFor(bin bool) string {
	if !bin {
		return upgradeRequest
	}
	return strings.Replace(upgradeRequest, "\r\n\r\n", "\r\nX-Bin-Protocol: 1\r\n\r\n", 1)
}

// readServerFrames parses b as a sequence of complete server frames and
// returns them, failing the test on anything malformed: a server frame is
// final or a data fragment, unmasked, with no RSV bits, a known opcode and,
// for control frames, at most 125 bytes of payload.
func readServerFrames(tb testing.TB, b []byte) []ws.Frame {
	tb.Helper()
	frames, err := parseServerFrames(b)
	if err != nil {
		tb.Fatalf("server wrote malformed frames: %v\n% x", err, b[:min(len(b), 256)])
	}
	return frames
}

func parseServerFrames(b []byte) ([]ws.Frame, error) {
	var frames []ws.Frame
	for len(b) > 0 {
		h, ok, err := parseFrameHeader(b)
		if err != nil {
			return frames, err
		}
		if !ok || int64(len(b)-h.size) < h.Length {
			return frames, fmt.Errorf("incomplete frame (header %+v, %d bytes)", h.Header, len(b))
		}
		if err := ws.CheckHeader(h.Header, ws.StateClientSide); err != nil {
			return frames, fmt.Errorf("frame %+v: %w", h.Header, err)
		}
		if !h.Fin {
			return frames, fmt.Errorf("server sent a fragment: %+v", h.Header)
		}
		switch h.OpCode {
		case ws.OpText, ws.OpBinary, ws.OpClose, ws.OpPing, ws.OpPong:
		default:
			return frames, fmt.Errorf("server sent opcode %d", h.OpCode)
		}
		end := h.size + int(h.Length)
		frames = append(frames, ws.Frame{Header: h.Header, Payload: b[h.size:end]})
		b = b[end:]
	}
	return frames, nil
}

// fanoutFixture is one loop with n WebSocket connections on the in-memory
// transport (writes counted, not kept), all subscribed to channel "room".
type fanoutFixture struct {
	s      *Server
	l      *loop
	exec   *memExec
	conns  []*connDriver
	msg    *outMsg
	frame  []byte // msg's JSON frame
	direct bool   // pass delivers directly (an isolated message)
}

func newFanoutFixture(tb testing.TB, n, payload int) *fanoutFixture {
	tb.Helper()
	s := newTestServer(tb, Config{})
	l, e := newTestLoop(tb, s)
	fx := &fanoutFixture{s: s, l: l, exec: e}
	for range n {
		d := newConnDriver(tb, s, l, e)
		d.feed([]byte(upgradeRequest))
		d.feed(clientFrame(true, ws.OpText, []byte(`{"op":"subscribe","channel":"room"}`)))
		if d.c.state != stateWS || len(d.c.chans) != 1 {
			tb.Fatalf("connection setup failed: state %d", d.c.state)
		}
		d.t.record = false
		d.t.out = nil
		fx.conns = append(fx.conns, d)
	}
	if got := len(l.subs["room"].conns); got != n {
		tb.Fatalf("%d subscribers, want %d", got, n)
	}
	data := []byte(`"` + strings.Repeat("x", payload-2) + `"`)
	fx.msg = newOutMsg("room", "k3j2h1x", data, false)
	fx.frame = fx.msg.frame(false)
	return fx
}

// pass delivers one frame to every subscriber and flushes, as drainInbox
// does for a frame posted by another loop: queued then flushed, or with
// fx.direct written as each subscriber is reached.
func (fx *fanoutFixture) pass() {
	fx.l.deliver(fx.msg, nil, fx.direct)
	fx.l.flushDirty()
}

// written is the number of bytes written to every connection so far.
func (fx *fanoutFixture) written() int {
	n := 0
	for _, d := range fx.conns {
		n += d.t.nbytes
	}
	return n
}
