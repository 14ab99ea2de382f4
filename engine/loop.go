package engine

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/zenconn/server/engine/static"
	"github.com/zenconn/server/proto"
)

// loop is the engine's state for one event loop. Fields without a comment
// saying otherwise are owned by the loop's goroutine.
type loop struct {
	idx  int
	srv  *Server
	exec Executor

	conns map[*Conn]struct{}
	subs  map[string]*subList // local channel index
	dirty []*Conn             // connections with unsent frames
	// passQueued is set while a flush task, or the rest of a pass that
	// yielded, is queued on the loop.
	passQueued bool
	// yielded is set while a pass has stopped to let the loop serve its
	// sockets (flushDirty); a Yield task continues it. slice is how long a
	// pass writes before it yields (passSlice).
	yielded bool
	slice   time.Duration
	// current is the connection whose Conn.Serve is running: Serve
	// flushes it at the end and queues the flush task only if others were
	// marked, so a read that only answers its sender costs no task
	// wake-up.
	current *Conn
	// lastDeliver is when the loop last finished delivering a message
	// (Unix ns), and more is set while a connection's input holds more
	// after the message being handled: both tell an isolated delivery
	// from a burst (see burst).
	lastDeliver int64
	more        bool

	// spareOut are outbound buffers given back by flushed connections,
	// lent to the next ones that queue a frame (see Conn.outBuf), and
	// spareBytes their capacity.
	spareOut   [][]byte
	spareBytes int
	// spareQueues are write queues given back by connections whose queue
	// emptied (outqueue.go); iov is the pieces of one writev, reused.
	spareQueues []*writeQueue
	iov         [][]byte
	// tlsPlain receives the plaintext of one TLS record, tlsGather the
	// frames of one TLS Writev (tls.go), tlsIn is the input buffer lent to
	// crypto/tls while the loop serves a connection's records (tlsbufs.go);
	// made on first use.
	tlsPlain, tlsGather, tlsIn []byte

	http    *httpParser // request-head parser, reused
	scratch []byte      // reply frame scratch, reused
	respBuf []byte      // small HTTP response scratch, reused
	logBuf  []byte      // access-log line scratch, reused
	date    static.Date // Date header of cached-file responses

	// msg is the client message being handled, reused: a ClientMsg may
	// point into itself, so one declared per message would be allocated.
	// Its fields are valid only during onMessage.
	msg proto.ClientMsg

	// mu guards inbox: deliveries posted by other loops (and a burst
	// published on this one). posted is set, under mu, while the inbox
	// holds deliveries and a drain task is queued for them; a direct pass
	// reads it without mu (deliver).
	mu     sync.Mutex
	inbox  []delivery
	spare  []delivery
	posted atomic.Bool

	stats loopStats

	// wheel files the connections by their next deadline for scan.
	wheel wheel
	// pingEvery and idleWS are the WebSockets' ping interval and idle
	// timeout (ns), as setKeepAlive stretches them for the loop's
	// connections.
	pingEvery, idleWS int64

	// The loop's tasks as func values, made once: a method value
	// allocates each time it is taken.
	flushFn, drainFn func()
}

func newLoop(srv *Server, idx int, exec Executor) *loop {
	l := &loop{
		idx:   idx,
		srv:   srv,
		exec:  exec,
		conns: make(map[*Conn]struct{}),
		subs:  make(map[string]*subList),
		slice: passSlice,
	}
	l.flushFn, l.drainFn = l.flushTask, l.drainInbox
	l.wheel.cur = second(time.Now().UnixNano())
	l.setKeepAlive(0)
	return l
}

// markDirty records that c has frames to send and makes sure a flush runs
// at the end of this loop pass.
func (l *loop) markDirty(c *Conn) {
	if c.dirty {
		return
	}
	c.dirty = true
	l.dirty = append(l.dirty, c)
	if l.current == nil {
		l.queueFlush()
	}
}

// Outbound buffers: new ones start at outBufSize; one over maxSpareOut is
// dropped rather than kept, and the loop keeps at most maxSpareBytes of
// them (65,536 new ones): buffers that slow readers grew cannot pile up.
const (
	outBufSize    = 512
	maxSpareOut   = 64 << 10
	maxSpareBytes = 32 << 20
)

// takeOut lends an empty outbound buffer.
func (l *loop) takeOut() []byte {
	if n := len(l.spareOut); n > 0 {
		b := l.spareOut[n-1]
		l.spareOut[n-1] = nil
		l.spareOut = l.spareOut[:n-1]
		l.spareBytes -= cap(b)
		return b
	}
	return make([]byte, 0, outBufSize)
}

// giveOut takes back an outbound buffer (nil is ignored).
func (l *loop) giveOut(b []byte) {
	if b != nil && cap(b) <= maxSpareOut && l.spareBytes+cap(b) <= maxSpareBytes {
		l.spareOut = append(l.spareOut, b[:0])
		l.spareBytes += cap(b)
	}
}

// queueFlush makes sure a flush task runs at the end of this loop pass.
func (l *loop) queueFlush() {
	if l.passQueued {
		return
	}
	l.passQueued = true
	if err := l.exec.Execute(l.flushFn); err != nil {
		// The engine is stopping: flush now rather than lose frames.
		l.flushTask()
	}
}

// endServe runs when Conn.Serve has flushed c: connections other than c
// marked during the read get the end-of-pass flush.
func (l *loop) endServe() {
	l.current = nil
	for _, d := range l.dirty {
		if d.dirty {
			l.queueFlush()
			return
		}
	}
	// Only flushed connections are listed: forget them now.
	clear(l.dirty)
	l.dirty = l.dirty[:0]
}

// flushTask writes every dirty connection's queued frames in one write each.
func (l *loop) flushTask() {
	l.passQueued = false
	l.flushDirty()
}

// flushDirty writes the dirty connections' queued frames, one write each.
// Deliveries posted meanwhile are queued as the pass goes (queuePosted),
// at most about passTakes times, so that a burst arriving during the pass
// leaves with the frames already queued for every connection not yet
// written, in the same write: each write goes out as late in the pass as
// it can. Connections written before such a take, dirty again, are left
// for the next pass (a flush task), with whatever arrives until then.
// A pass longer than passSlice stops and yields (yield): the loop serves
// its ready sockets before the rest is written.
func (l *loop) flushDirty() {
	queued := l.passQueued
	l.passQueued = true // the rest is queued below, once
	l.yielded = false
	n, next := len(l.dirty), 0
	var start time.Time
	if n > passSliceMin {
		start = time.Now()
	}
	i := 0
	for ; i < n; i++ {
		if i >= passSliceMin && i%switchEvery == 0 && time.Since(start) > l.slice {
			break
		}
		if i >= next && l.posted.Load() {
			l.queuePosted()
			next = i + max(switchEvery, n/passTakes)
		}
		c := l.dirty[i]
		l.dirty[i] = nil
		c.flush()
	}
	rest := copy(l.dirty, l.dirty[i:])
	clear(l.dirty[rest:])
	l.dirty = l.dirty[:rest]
	l.passQueued = queued
	switch {
	case i < n:
		l.yield()
	case rest > 0:
		// Usually the drain task queued by the posts taken flushes them
		// first; this one also covers a loop that no longer runs tasks.
		l.queueFlush()
	}
}

// A pass writes for at least passSlice (and passSliceMin connections)
// before it yields: each yield costs a wake-up through a socket pair.
const (
	passSlice    = 5 * time.Millisecond
	passSliceMin = 4 * switchEvery
)

// yield stops the pass under way until the loop has served its ready
// sockets (Executor.Yield); meanwhile deliveries are queued, not written
// (burst, drainInbox), so that they leave with the rest of the pass.
func (l *loop) yield() {
	l.yielded = true
	if l.passQueued {
		return // a flush task or an earlier yield continues the pass
	}
	l.passQueued = true
	if err := l.exec.Yield(l.flushFn); err != nil {
		l.flushTask() // the engine is stopping: finish now
	}
}

// passTakes bounds how often a pass takes posted deliveries (flushDirty):
// each take walks the subscribers of what it took, and a pass that took
// every message of a trickle alone would walk them once per message.
const passTakes = 8
