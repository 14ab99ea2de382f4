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
	// passQueued is set while a flush task is queued on the loop.
	passQueued bool
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
	// lent to the next ones that queue a frame (see Conn.outBuf).
	spareOut [][]byte
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
// dropped rather than kept, and the loop keeps at most maxSpareOuts.
const (
	outBufSize   = 512
	maxSpareOut  = 64 << 10
	maxSpareOuts = 1 << 16
)

// takeOut lends an empty outbound buffer.
func (l *loop) takeOut() []byte {
	if n := len(l.spareOut); n > 0 {
		b := l.spareOut[n-1]
		l.spareOut[n-1] = nil
		l.spareOut = l.spareOut[:n-1]
		return b
	}
	return make([]byte, 0, outBufSize)
}

// giveOut takes back an outbound buffer (nil is ignored).
func (l *loop) giveOut(b []byte) {
	if b != nil && cap(b) <= maxSpareOut && len(l.spareOut) < maxSpareOuts {
		l.spareOut = append(l.spareOut, b[:0])
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
func (l *loop) flushDirty() {
	queued := l.passQueued
	l.passQueued = true // the tail is queued below, once
	n, next := len(l.dirty), 0
	for i := 0; i < n; i++ {
		if i >= next && l.posted.Load() {
			l.queuePosted()
			next = i + max(switchEvery, n/passTakes)
		}
		c := l.dirty[i]
		l.dirty[i] = nil
		c.flush()
	}
	tail := copy(l.dirty, l.dirty[n:])
	clear(l.dirty[tail:])
	l.dirty = l.dirty[:tail]
	l.passQueued = queued
	if tail > 0 {
		// Usually the drain task queued by the posts taken flushes them
		// first; this one also covers a loop that no longer runs tasks.
		l.queueFlush()
	}
}

// passTakes bounds how often a pass takes posted deliveries (flushDirty):
// each take walks the subscribers of what it took, and a pass that took
// every message of a trickle alone would walk them once per message.
const passTakes = 8
