package engine

import (
	"bytes"
	"testing"
	"time"
	"unsafe"

	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/proto"
)

const sec = int64(time.Second)

// filed returns how many connections the wheel holds, and fails the test
// when an emptied part of a slot still points to a connection.
func filed(t *testing.T, w *wheel) int {
	t.Helper()
	n := 0
	for i, s := range w.slots {
		n += len(s)
		for _, c := range s[len(s):cap(s)] {
			if c != nil {
				t.Fatalf("slot %d keeps a connection past its end", i)
			}
		}
	}
	return n
}

// keepAlive opens an HTTP connection that has answered one request and
// was last read at base.
func keepAlive(t *testing.T, s *Server, l *loop, exec *memExec, base int64) *connDriver {
	t.Helper()
	d := newConnDriver(t, s, l, exec)
	d.feed([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	if d.c.state != stateHTTP || d.c.phase != phaseNone {
		t.Fatalf("after a request: state %d phase %d", d.c.state, d.c.phase)
	}
	d.c.lastRead = base
	return d
}

// TestConnSize: the wheel's fields fit in the Conn's padding.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(Conn{}); n > 304 {
		t.Fatalf("Conn is %d bytes, want at most 304", n)
	}
}

// TestWheelIdleDue: a keep-alive connection idle for IdleTimeout is closed
// by the first scan past it, not before; a read postpones it; the scans
// before it look at it at most once (where it was first filed).
func TestWheelIdleDue(t *testing.T) {
	s := newTestServer(t, Config{IdleTimeout: 5 * time.Second, PingInterval: time.Second})
	l, exec := newTestLoop(t, s)
	base := time.Now().UnixNano()
	d := keepAlive(t, s, l, exec, base)
	l.scan(base)
	visits := l.wheel.visits
	for k := int64(1); k <= 5; k++ {
		l.scan(base + k*sec)
		if d.t.closed.Load() {
			t.Fatalf("closed %d s after its last read, idle timeout 5 s", k)
		}
	}
	l.scan(base + 6*sec)
	if !d.t.closed.Load() {
		t.Fatal("open 6 s after its last read, idle timeout 5 s")
	}
	if v := l.wheel.visits - visits; v > 2 {
		t.Errorf("%d visits for one connection due once", v)
	}

	r := keepAlive(t, s, l, exec, base)
	l.scan(base + 3*sec)
	r.c.lastRead = base + 3*sec // a read, as Serve records it
	for k := int64(4); k <= 8; k++ {
		l.scan(base + k*sec)
		if r.t.closed.Load() {
			t.Fatalf("closed %d s after a read, idle timeout 5 s", k-3)
		}
	}
	l.scan(base + 9*sec)
	if !r.t.closed.Load() {
		t.Fatal("open 6 s after a read, idle timeout 5 s")
	}
}

// TestWheelReschedule: what brings a deadline earlier than where the
// connection is filed moves it: a token expiry, closing.
func TestWheelReschedule(t *testing.T) {
	s := newTestServer(t, Config{})
	l, exec := newTestLoop(t, s)
	d := openWSDriver(t, s, l, exec)
	base := d.c.lastRead
	l.scan(base + sec) // filed at the ping, 25 s on
	d.c.setIdentity(&auth.Identity{User: "u", Expires: time.Unix(0, base+3*sec)})
	l.scan(base + 2*sec)
	if bytes.Contains(d.t.out, []byte(proto.CodeTokenExpired)) {
		t.Fatal("token_expired before the expiry")
	}
	l.scan(base + 3*sec)
	if !bytes.Contains(d.t.out, []byte(proto.CodeTokenExpired)) || d.c.ident != nil {
		t.Fatalf("3 s after the expiry: identity %v, output %q", d.c.ident, d.t.out)
	}
	d.c.fail(proto.CloseDisconnected, "bye")
	deadline := d.c.closeDeadline
	l.scan(deadline)
	if d.t.closed.Load() {
		t.Fatal("cut before the close grace ended")
	}
	l.scan(deadline + sec)
	if !d.t.closed.Load() {
		t.Fatal("not cut a second after the close grace ended")
	}
}

// TestWheelRemoves: closed connections leave the wheel at once, whatever
// their slot, and the wheel keeps no pointer to them.
func TestWheelRemoves(t *testing.T) {
	s := newTestServer(t, Config{})
	l, exec := newTestLoop(t, s)
	base := time.Now().UnixNano()
	var ds []*connDriver
	for i := range 1000 {
		d := keepAlive(t, s, l, exec, base+int64(i%50)*sec)
		ds = append(ds, d)
	}
	l.scan(base + sec)
	if n := filed(t, &l.wheel); n != 1000 {
		t.Fatalf("wheel holds %d connections, want 1000", n)
	}
	for i := 0; i < len(ds); i += 2 {
		ds[i].close()
	}
	if n := filed(t, &l.wheel); n != 500 {
		t.Fatalf("wheel holds %d connections after 500 closed, want 500", n)
	}
	for i := 1; i < len(ds); i += 2 {
		ds[i].close()
	}
	if n := filed(t, &l.wheel); n != 0 {
		t.Fatalf("wheel holds %d connections after all closed", n)
	}
}

// TestWheelIdleTicks: scans with nothing due look at no connection; the
// scan at the ping looks at each once, and the pings of connections opened
// together are spread over several seconds.
func TestWheelIdleTicks(t *testing.T) {
	const conns = 5000
	s := newTestServer(t, Config{PingInterval: 30 * time.Second, IdleTimeout: 2 * time.Minute})
	l, _ := newTestLoop(t, s)
	cs := make([]*Conn, conns)
	for i := range cs {
		cs[i] = s.open(l, newMemTransport(true))
	}
	// base comes after every open, so that the handshake deadlines (10 s
	// after each open) all come by base+10 s, however long the opens took.
	base := time.Now().UnixNano()
	for _, c := range cs {
		c.state, c.phase, c.lastRead, c.lastPing = stateWS, phaseNone, base, base
		c.reschedule() // as the upgrade does
	}
	// They were filed first at the handshake deadline, which comes earlier:
	// that scan looks at each once and files it at its ping.
	for k := int64(1); k <= 10; k++ {
		l.scan(base + k*sec)
	}
	if v := l.wheel.visits; v != conns {
		t.Fatalf("%d connections looked at by the scan at the handshake deadline, want %d", v, conns)
	}
	for k := int64(11); k < 30; k++ {
		l.scan(base + k*sec)
	}
	if v := l.wheel.visits - conns; v != 0 {
		t.Fatalf("%d connections looked at in 19 scans with nothing due", v)
	}
	pinged := map[int64]int{}
	for k := int64(30); k <= 34; k++ {
		before := l.wheel.visits
		l.scan(base + k*sec)
		if n := l.wheel.visits - before; n > 0 {
			pinged[k] = int(n)
		}
	}
	total := 0
	for c := range l.conns {
		if c.lastPing != base {
			total++
		}
	}
	if total != conns || len(pinged) < 3 {
		t.Fatalf("%d of %d connections pinged, by second: %v (want 3 seconds or more)", total, conns, pinged)
	}
	if pinged[34] != 0 {
		t.Fatalf("pings past the interval plus a tenth: %v", pinged)
	}
}

// TestWheelNoAllocs: scans that find connections read from since they were
// filed, and file them again, allocate nothing for them: once the wheel
// has gone round, only a slot that gets more connections than it ever
// held grows.
func TestWheelNoAllocs(t *testing.T) {
	const conns = 2000
	s := newTestServer(t, Config{PingInterval: 10 * time.Second, IdleTimeout: 20 * time.Second})
	l, _ := newTestLoop(t, s)
	l.slice = time.Hour // whole passes: a yield would queue a task nothing runs
	now := time.Now().UnixNano()
	var cs []*Conn
	for i := range conns {
		c := s.open(l, newMemTransport(true))
		c.state, c.phase = stateWS, phaseNone
		c.lastRead, c.lastPing = now-int64(i%10)*sec, now
		c.reschedule()
		cs = append(cs, c)
	}
	seconds := func(n int) {
		for range n {
			now += sec
			for i, c := range cs {
				if i%7 == int(now/sec%7) {
					c.lastRead = now // a read every 7 s
				}
			}
			l.scan(now)
		}
	}
	seconds(wheelSlots + 20) // every slot has been used
	visits := l.wheel.visits
	a := testing.AllocsPerRun(3, func() { seconds(20) })
	filedAgain := float64(l.wheel.visits-visits) / 4 // AllocsPerRun runs it once more first
	if filedAgain < conns || a > filedAgain/100 {
		t.Errorf("%v allocations in 20 scans that looked at %v connections", a, filedAgain)
	}
	for _, c := range cs {
		if c.state != stateWS {
			t.Fatalf("a connection read from every 7 s left the open state (%d)", c.state)
		}
	}
}

// TestKeepAliveStretches: a loop whose WebSockets would take more pings a
// second than its share of PingRate pings each less often, and times them
// out later in the same proportion; under the cap, or without one, the
// configured interval and timeout hold.
func TestKeepAliveStretches(t *testing.T) {
	// pingsAndClose drives n silent WebSockets on one loop with scans a
	// second apart from first seconds after their last read and returns,
	// for the first, the second of its first ping and of its close (0:
	// none within 40 s).
	pingsAndClose := func(rate float64, n int, first int64) (ping, closed int64) {
		s := newTestServer(t, Config{PingInterval: time.Second, IdleTimeout: 3 * time.Second, PingRate: rate, Loops: 1})
		l, exec := newTestLoop(t, s)
		var ds []*connDriver
		for range n {
			d := newConnDriver(t, s, l, exec)
			d.feed([]byte(upgradeRequest))
			if d.c.state != stateWS {
				t.Fatalf("upgrade failed: state %d", d.c.state)
			}
			d.t.takeOut()
			ds = append(ds, d)
		}
		base := time.Now().UnixNano()
		for _, d := range ds {
			d.c.lastRead = base
		}
		d := ds[0]
		for k := first; k <= 40 && closed == 0; k++ {
			l.scan(base + k*sec)
			exec.run()
			if ping == 0 && bytes.Contains(d.t.out, pingFrame) {
				ping = k
			}
			if d.c.state != stateWS {
				closed = k
			}
		}
		return ping, closed
	}
	// 3 connections at a cap of 1 ping a second: a 3 s interval (plus up
	// to a tenth), a 9 s timeout, so 6 s to answer the ping.
	if ping, closed := pingsAndClose(1, 3, 1); ping != 4 || closed != 11 {
		t.Errorf("3 connections, 1 ping/s: pinged at %d s, closed at %d s; want 4 and 11", ping, closed)
	}
	for _, c := range []struct {
		rate float64
		n    int
	}{{0, 3}, {10, 3}} {
		if ping, closed := pingsAndClose(c.rate, c.n, 1); ping != 2 || closed != 5 {
			t.Errorf("%d connections, cap %v: pinged at %d s, closed at %d s; want 2 and 5 (1 s interval, 3 s timeout, 2 s to answer)", c.n, c.rate, ping, closed)
		}
	}
	// A connection silent for longer than its timeout and never pinged, as
	// when the interval it was filed with shrank: pinged first, closed only
	// once it has left the ping unanswered for its time to answer.
	if ping, closed := pingsAndClose(1, 3, 20); ping != 20 || closed != 27 {
		t.Errorf("first scan 20 s after the last read: pinged at %d s, closed at %d s; want 20 and 27", ping, closed)
	}
}
