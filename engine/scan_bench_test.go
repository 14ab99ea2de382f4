package engine

import (
	"testing"
	"time"
)

// BenchmarkScanIdle is one periodic scan of a loop holding 100,000 idle
// WebSocket connections, none of them due (no ping, no timeout): the cost
// an idle node pays every second. Ticks are one second apart and stay
// within the connections' silence allowance, so a scan finds nothing to do.
func BenchmarkScanIdle(b *testing.B) {
	const conns = 100_000
	s := newTestServer(b, Config{PingInterval: 25 * time.Second, IdleTimeout: time.Minute})
	l, exec := newTestLoop(b, s)
	base := time.Now().Truncate(time.Second).UnixNano()
	for range conns {
		c := s.open(l, newMemTransport(true))
		c.state, c.phase, c.lastRead, c.lastPing = stateWS, phaseNone, base, base
	}
	exec.run()
	sec := int64(time.Second)
	// Past the handshake deadline, where the connections were first filed:
	// from there on they wait for their pings, 25 s on.
	l.scan(base + 11*sec)
	var i int64
	for b.Loop() {
		l.scan(base + (1+i%20)*sec)
		i++
	}
	if len(l.conns) != conns {
		b.Fatalf("%d connections left, want %d", len(l.conns), conns)
	}
}
