package engine

import (
	"net"
	"time"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/proto"
)

type connState uint8

const (
	stateHTTP    connState = iota // reading HTTP requests
	stateWS                       // WebSocket open
	stateClosing                  // close sent; discarding input until the peer closes or the deadline
	stateClosed                   // transport closed
)

// Close codes recorded for sessions that RFC 6455 reserves for reporting
// (section 7.4.1): never sent in a frame.
const (
	closeNoStatus = 1005 // the peer's close frame had no code
	closeAbnormal = 1006 // the connection ended without a close frame
)

// closeGrace is how long a connection that was sent a close frame or a
// final HTTP error may linger, draining input, before it is cut.
const closeGrace = 2e9 // ns

// Conn is one client connection. All its fields are owned by its loop; its
// methods run on that loop unless they say otherwise.
type Conn struct {
	srv  *Server
	loop *loop
	t    Transport

	state connState
	// busy is set while an HTTP response is produced off the loop; input
	// waits in the connection's held input (input.go) until it is done
	// (pipelining keeps its order).
	busy  bool
	dirty bool    // on loop.dirty
	phase inPhase // what the input waits for (input.go)
	// The TLS version and cipher suite agreed on (crypto/tls's numbers),
	// 0 over plain text; set when the TLS handshake is done. They fill the
	// padding before lastRead.
	tlsVersion, tlsCipher uint16

	lastRead      int64 // wall clock, ns
	lastPing      int64
	closeDeadline int64

	// Input not handled yet (input.go): the held bytes, charged to the
	// input budget, and the start (ns) of the phase they belong to.
	in         []byte
	phaseStart int64

	// WebSocket state.
	reported  bool           // the bridge was told the connection is gone
	closeCode uint16         // close code sent or received; 0 while open
	bin       bool           // binary protocol (else JSON)
	wslot     uint16         // slot in the loop's wheel plus one, 0 if not filed (wheel.go)
	ident     *auth.Identity // nil for an anonymous connection
	expires   int64          // token expiry, ns; 0 when none
	id        string
	fragOp    ws.OpCode // opcode of the fragmented message in progress, 0 if none
	wpos      int32     // index in the wheel's slot
	frag      []byte
	chans     []string
	subPos    []int32 // subPos[i]: c's index in the subscriber list of chans[i]
	out       []byte  // frames queued for the next flush (copies; outqueue.go)
	// wq holds shared frames queued by reference and the progress of a
	// write the kernel did not take whole; nil otherwise (outqueue.go).
	wq  *writeQueue
	lim connLimits // limits.go
}

// Serve consumes input: HTTP requests or WebSocket frames, according to the
// connection's state. in is the input received since the last call (it may
// be empty, after Transport.Wake). Serve always consumes all of in and
// returns len(in): what it cannot handle yet it keeps itself (input.go).
// The bytes of in may be modified (unmasking) but are not retained.
func (c *Conn) Serve(in []byte) int {
	l := c.loop
	l.stats.bytesIn.Add(uint64(len(in)))
	c.lastRead = time.Now().UnixNano()
	l.current = c
	buf, fromHeld := in, false
	if len(c.in) > 0 || c.busy && len(in) > 0 {
		if c.hold(in) {
			buf, fromHeld = c.in, true
		} else {
			buf = nil
		}
	}
	var n int
	if f := c.lim.fwd; f != nil && f.awaitHeader {
		n = c.readProxyHeader(buf) // proxy.go
	}
	switch {
	case c.lim.fwd != nil && c.lim.fwd.awaitHeader:
		// an incomplete PROXY header: kept until the rest comes
	case c.state == stateHTTP:
		n += c.serveHTTP(buf[n:])
	case c.state == stateWS:
		n += c.serveWS(buf[n:])
	default:
		n = len(buf) // closing: drain
	}
	c.keepRest(buf, n, fromHeld)
	if c.dirty {
		// Our own replies go out at the end of this read, not of the pass.
		c.flush()
	}
	l.endServe()
	return len(in)
}

// Closed tells the engine that the transport is gone.
func (c *Conn) Closed() {
	if c.state == stateClosed {
		return
	}
	l := c.loop
	wasWS := c.state == stateWS || c.id != ""
	c.state = stateClosed
	for len(c.chans) > 0 {
		l.unsubscribe(c, c.chans[len(c.chans)-1])
	}
	c.chans, c.subPos = nil, nil
	c.dropQueue()
	c.dropFrag()
	c.dropIn()
	delete(l.conns, c)
	l.wheel.remove(c)
	c.releaseLimits()
	l.stats.connections.Add(-1)
	c.srv.openConns.Add(-1)
	if wasWS {
		l.stats.websockets.Add(-1)
		c.reportClosed()
	}
}

// queueFrame queues a complete frame for this connection; it goes out with
// everything else queued, in one write, at the end of the read being served
// or of the loop pass. Past the outbound limit the connection is closed as
// a slow consumer instead.
func (c *Conn) queueFrame(frame []byte) { c.enqueue(frame, false, 1) }

// outBuf returns c.out to append frames to: a connection holds an outbound
// buffer only while frames are queued (flush gives it back to the loop),
// so an idle connection holds none.
func (c *Conn) outBuf() []byte {
	if c.out == nil {
		c.out = c.loop.takeOut()
	}
	return c.out
}

// flush writes the queued frames now, in one write (a writev when shared
// frames are queued). What the kernel does not take stays queued and goes
// out when the transport reports the socket writable (Conn.Writable).
func (c *Conn) flush() {
	// c stays on loop.dirty until that list is flushed; clearing dirty here
	// lets a later queueFrame in the same pass requeue it, which is
	// harmless.
	c.dirty = false
	if c.state == stateClosed {
		c.dropQueue()
		return
	}
	if c.wq != nil {
		c.flushQueue()
		return
	}
	if len(c.out) > 0 {
		l := c.loop
		iov := append(l.iov[:0], c.out)
		n, err := c.t.Writev(iov)
		iov[0] = nil
		l.iov = iov[:0]
		if err == nil {
			l.stats.bytesOut.Add(uint64(n))
			if n < len(c.out) {
				c.queue().outHead = n
				c.block()
				return
			}
		}
	}
	c.loop.giveOut(c.out)
	c.out = nil
}

// writeNow writes bytes that are not frames (HTTP responses) now, after
// anything queued.
func (c *Conn) writeNow(b []byte) {
	if c.dirty {
		c.flush()
	}
	if c.wq != nil {
		// The socket is full: b waits behind the queue.
		c.out = append(c.outBuf(), b...)
		return
	}
	c.t.Write(b)
	c.loop.stats.bytesOut.Add(uint64(len(b)))
}

// reportClosed tells the bridge, once, that the WebSocket is gone: as soon
// as it leaves the open state, not when the socket finally closes, so the
// node's table never lists a connection that can no longer be used.
func (c *Conn) reportClosed() {
	if c.reported || c.id == "" {
		return
	}
	c.reported = true
	code := c.closeCode
	if code == 0 {
		code = closeAbnormal
	}
	c.srv.cfg.Bridge.Closed(c.loop.idx, c.id, code)
}

// closeSlow disconnects a consumer whose outbound queue is over the limit.
func (c *Conn) closeSlow() {
	c.loop.stats.slowClosed.Add(1)
	c.srv.log.Debug("slow consumer disconnected", "conn", c.id, "pending", c.outPending())
	c.closeCode = proto.CloseSlowConsumer
	// Best effort: what is queued goes out now if the kernel takes it, and
	// the close frame after it; a peer that is not reading gets neither,
	// and the connection is cut now.
	if c.wq == nil || !c.wq.blocked {
		c.flush()
	}
	if c.wq == nil {
		c.t.Write(appendCloseFrame(nil, proto.CloseSlowConsumer, "slow consumer"))
	}
	c.dropQueue()
	c.state = stateClosing
	c.reschedule()
	c.reportClosed()
	c.t.Close()
}

// fail sends a close frame with code and reason, then lingers in the closing
// state (draining input) until the peer closes or the grace period ends.
func (c *Conn) fail(code uint16, reason string) {
	if c.state != stateWS {
		return
	}
	c.closeCode = code
	c.out = appendCloseFrame(c.outBuf(), code, reason)
	c.linger()
}

// linger ends the connection from this side, after a close frame or a
// final HTTP response: what is queued is flushed, the write side is shut
// and the connection enters the closing state, draining input until the
// peer closes or the grace period ends.
func (c *Conn) linger() {
	c.flush()
	c.state = stateClosing
	c.closeDeadline = time.Now().UnixNano() + closeGrace
	c.reschedule()
	if c.wq == nil {
		// Else Writable half-closes once the queue is written.
		c.t.CloseWrite()
	}
	c.reportClosed()
}

// closeAfterFlush ends the close handshake a client started: the close
// frame goes out after anything queued, then the connection is closed at
// once, as RFC 6455 section 7.1.1 asks of servers. The client sends
// nothing after its close frame, so there is no input to wait for (what
// may still come is cut). When the kernel did not take everything (a
// client that stopped reading), the connection lingers instead, so that
// what is queued is not thrown away with the socket.
func (c *Conn) closeAfterFlush() {
	c.flush()
	if c.t.Buffered() > 0 || c.wq != nil {
		c.linger()
		return
	}
	c.state = stateClosing
	c.reschedule()
	c.reportClosed()
	c.t.Close()
}

// Kick closes connection conn with 4100 if it is on this process. Safe for
// concurrent use; it does not wait.
func (s *Server) Kick(conn string) {
	for _, l := range s.hub.allLoops() {
		l := l
		_ = l.exec.Execute(func() { l.kick(conn) })
	}
}

// kick closes the loop's WebSocket conn with 4100 and reports whether it
// was there. It runs on the loop.
func (l *loop) kick(conn string) bool {
	for c := range l.conns {
		if c.id == conn && c.state == stateWS {
			c.fail(proto.CloseDisconnected, "disconnected by the server API")
			return true
		}
	}
	return false
}

// remoteIP returns the peer's IP address as text.
func (c *Conn) remoteIP() string {
	switch a := c.t.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a.IP.String()
	case nil:
		return "-"
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		return host
	}
}

// scan runs the periodic checks (Conn.check) at time now on the loop's
// connections that may be due, as filed in its wheel (wheel.go), and files
// each again at its next deadline; the bridge gets its Tick first.
func (l *loop) scan(now int64) {
	l.setKeepAlive(int(l.stats.websockets.Load()))
	l.srv.cfg.Bridge.Tick(l.idx)
	w := &l.wheel
	w.advance(second(now))
	n := 0
	for c := w.popDue(); c != nil; c = w.popDue() {
		n++
		c.check(now)
		c.reschedule()
	}
	if n > 0 {
		w.visits += uint64(n)
		w.slots[dueSlot] = emptied(w.slots[dueSlot], n)
	}
	l.flushDirty()
}

// check enforces c's deadlines at time now: lingering closes, input phase
// deadlines, idle timeouts, token expiry and server pings.
func (c *Conn) check(now int64) {
	switch c.state {
	case stateClosing:
		if now >= c.closeDue() {
			c.t.Close()
		}
	case stateHTTP:
		if !c.busy && !c.phaseExpired(now) && now >= c.idleDue() {
			c.t.Close()
		}
	case stateWS:
		if c.expires != 0 && now >= c.expires {
			c.tokenExpired()
			if c.state != stateWS {
				return
			}
		}
		switch {
		case c.phaseExpired(now):
		case now >= c.idleDue():
			c.fail(proto.CloseIdleTimeout, "idle timeout")
		case now >= c.pingDue():
			c.lastPing = now
			c.queueFrame(pingFrame)
		}
	}
}

var pingFrame = appendFrame(nil, ws.OpPing, nil)
