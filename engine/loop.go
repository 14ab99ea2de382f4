package engine

import (
	"math/bits"
	"slices"
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

	http    *httpParser // request-head parser, reused
	scratch []byte      // reply frame scratch, reused
	respBuf []byte      // small HTTP response scratch, reused
	logBuf  []byte      // access-log line scratch, reused
	date    static.Date // Date header of cached-file responses

	// msg is the client message being handled, reused: a ClientMsg may
	// point into itself, so one declared per message would be allocated.
	// Its fields are valid only during onMessage.
	msg proto.ClientMsg

	// mu guards inbox and inboxQueued: deliveries posted by other loops.
	mu          sync.Mutex
	inbox       []delivery
	spare       []delivery
	inboxQueued bool

	stats loopStats

	// The loop's tasks as func values, made once: a method value
	// allocates each time it is taken.
	flushFn, drainFn func()
}

// delivery is one message posted to a loop for its subscribers of the
// message's channel (for a broadcast, every WebSocket on the loop).
type delivery struct {
	msg *outMsg
}

// loopStats are counters read by the metrics collector. They are atomics so
// that a scrape from another goroutine is race free; each is written by one
// loop only, so the adds are uncontended.
type loopStats struct {
	connections   atomic.Int64
	websockets    atomic.Int64
	subscriptions atomic.Int64
	messagesIn    atomic.Uint64
	messagesOut   atomic.Uint64
	bytesIn       atomic.Uint64
	bytesOut      atomic.Uint64
	slowClosed    atomic.Uint64
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

func (l *loop) flushDirty() {
	for i, c := range l.dirty {
		c.flush()
		l.dirty[i] = nil
	}
	l.dirty = l.dirty[:0]
}

// deliver queues m to every local subscriber of its channel, or for a
// broadcast to every local WebSocket, except skip.
// With direct, subscribers with nothing queued are written as they are
// reached (one walk, the first subscriber served at once); else every
// frame is queued for the end-of-pass flush.
func (l *loop) deliver(m *outMsg, skip *Conn, direct bool) {
	send := (*Conn).send
	if direct {
		send = (*Conn).sendNow
		defer func() { l.lastDeliver = time.Now().UnixNano() }()
	}
	if m.channel == "" {
		for c := range l.conns {
			if c != skip && c.state == stateWS {
				send(c, m.frame(c.bin))
			}
		}
		return
	}
	sl := l.subs[m.channel]
	if sl == nil {
		return
	}
	// Nothing below removes a subscriber: a connection is closed (and
	// unsubscribed) by a later task, never inside send.
	for _, c := range sl.conns {
		if c != skip {
			send(c, m.frame(c.bin))
		}
	}
}

// burstGap separates bursts of deliveries from isolated ones.
const burstGap = 1e6 // ns

// burst tells how to deliver n messages arriving now: directly (false)
// when it is one message, its sender sent nothing more yet and the loop
// delivered nothing in the last burstGap; else queued (true), so that a
// burst is coalesced into one write per subscriber at the end of the
// pass. Queueing costs a second walk over the subscribers and makes the
// first wait for the last; writing a burst directly would cost a write
// per message and subscriber.
func (l *loop) burst(n int) bool {
	now := time.Now().UnixNano()
	quiet := now-l.lastDeliver > burstGap
	l.lastDeliver = now
	return n > 1 || l.more || !quiet
}

// post hands a delivery to this loop from another goroutine.
func (l *loop) post(d delivery) {
	l.mu.Lock()
	l.inbox = append(l.inbox, d)
	queue := !l.inboxQueued
	l.inboxQueued = true
	l.mu.Unlock()
	if queue {
		if err := l.exec.Execute(l.drainFn); err != nil {
			l.srv.log.Debug("deliver to stopping loop", "loop", l.idx, "err", err)
		}
	}
}

// drainInbox runs on the loop: it delivers every posted frame, then flushes
// each touched connection once.
func (l *loop) drainInbox() {
	l.mu.Lock()
	batch := l.inbox
	l.inbox = l.spare[:0]
	l.inboxQueued = false
	l.mu.Unlock()
	// The deliveries below are flushed at the end of this task: no
	// separate flush task is needed for them.
	queued := l.passQueued
	l.passQueued = true
	direct := !l.burst(len(batch))
	for i := range batch {
		l.deliver(batch[i].msg, nil, direct)
		batch[i] = delivery{}
	}
	l.mu.Lock()
	l.spare = batch[:0]
	l.mu.Unlock()
	l.flushDirty()
	l.passQueued = queued
}

// subList is a channel's local subscribers, in a slice rather than a set:
// the fan-out walks them in the order they subscribed, which is close to
// the order their sockets were accepted, and the kernel's write path is
// measurably cheaper over sockets in allocation order than over the same
// sockets in a random order (a set's).
type subList struct {
	conns []*Conn
}

// subscribe adds c to channel's local subscribers and to c.chans. It
// reports false when c was already subscribed.
func (l *loop) subscribe(c *Conn, channel string) bool {
	if c.subscribed(channel) {
		return false
	}
	sl := l.subs[channel]
	if sl == nil {
		sl = &subList{}
		l.subs[channel] = sl
		l.srv.hub.addInterest(channel, l.idx)
	}
	c.chans = append(c.chans, channel)
	c.subPos = append(c.subPos, int32(len(sl.conns)))
	sl.conns = append(sl.conns, c)
	l.stats.subscriptions.Add(1)
	return true
}

// unsubscribe removes c from channel's local subscribers and from c.chans
// (the last of c.chans takes its place), reporting whether it was there.
func (l *loop) unsubscribe(c *Conn, channel string) bool {
	i := slices.Index(c.chans, channel)
	if i < 0 {
		return false
	}
	sl := l.subs[channel]
	pos, last := c.subPos[i], len(sl.conns)-1
	if moved := sl.conns[last]; moved != c {
		sl.conns[pos] = moved
		moved.subPos[slices.Index(moved.chans, channel)] = pos
	}
	sl.conns[last] = nil
	sl.conns = sl.conns[:last]
	n := len(c.chans) - 1
	c.chans[i], c.subPos[i] = c.chans[n], c.subPos[n]
	c.chans[n] = ""
	c.chans, c.subPos = c.chans[:n], c.subPos[:n]
	l.stats.subscriptions.Add(-1)
	if len(sl.conns) == 0 {
		delete(l.subs, channel)
		l.srv.hub.removeInterest(channel, l.idx)
	}
	return true
}

// hub routes channel messages between loops: it knows, per channel, which
// loops have local subscribers.
type hub struct {
	mu       sync.RWMutex
	interest map[string]uint64 // channel → bitmask of loop indexes

	loopsMu sync.RWMutex
	loops   [maxLoops]*loop
}

func newHub() *hub {
	return &hub{interest: make(map[string]uint64)}
}

func (h *hub) addInterest(channel string, idx int) {
	h.mu.Lock()
	h.interest[channel] |= 1 << idx
	h.mu.Unlock()
}

func (h *hub) removeInterest(channel string, idx int) {
	h.mu.Lock()
	if m := h.interest[channel] &^ (1 << idx); m == 0 {
		delete(h.interest, channel)
	} else {
		h.interest[channel] = m
	}
	h.mu.Unlock()
}

// publish delivers m to every subscriber of its channel, or for a
// broadcast to every WebSocket, except from. On src (from's loop) delivery
// is direct; other loops get it through their inboxes. src is nil when the
// message comes from outside the loops (the server API); every loop then
// gets it through its inbox.
func (h *hub) publish(src *loop, m *outMsg, from *Conn) {
	var mask uint64
	if m.channel == "" {
		mask = h.loopMask()
	} else {
		h.mu.RLock()
		mask = h.interest[m.channel]
		h.mu.RUnlock()
	}
	if src != nil {
		if mask&(1<<src.idx) != 0 {
			src.deliver(m, from, !src.burst(1))
		}
		mask &^= 1 << src.idx
	}
	for mask != 0 {
		idx := bits.TrailingZeros64(mask)
		mask &^= 1 << idx
		if l := h.loop(idx); l != nil {
			l.post(delivery{msg: m})
		}
	}
}

// loopMask returns the bitmask of every registered loop.
func (h *hub) loopMask() uint64 {
	h.loopsMu.RLock()
	defer h.loopsMu.RUnlock()
	var m uint64
	for i, l := range h.loops {
		if l != nil {
			m |= 1 << i
		}
	}
	return m
}

func (h *hub) loop(idx int) *loop {
	h.loopsMu.RLock()
	l := h.loops[idx]
	h.loopsMu.RUnlock()
	return l
}

func (h *hub) allLoops() []*loop {
	h.loopsMu.RLock()
	defer h.loopsMu.RUnlock()
	var out []*loop
	for _, l := range h.loops {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// addLoop registers a loop and returns it; exec is how to run code on it.
func (h *hub) addLoop(srv *Server, exec Executor) *loop {
	h.loopsMu.Lock()
	defer h.loopsMu.Unlock()
	for i, l := range h.loops {
		if l == nil {
			l = newLoop(srv, i, exec)
			h.loops[i] = l
			return l
		}
	}
	return nil
}
