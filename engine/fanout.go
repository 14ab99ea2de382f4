package engine

import (
	"iter"
	"math/bits"
	"slices"
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// Fan-out: how a published message reaches its subscribers.
//
//	client frame ─ Conn.publish ─┬─ Bridge.Published (audit log, other workers)
//	                             └─ hub.publish ─┬─ own loop: loop.publishLocal → loop.deliver (a burst: its inbox)
//	agent record ─ Server.Deliver ─ hub.publish  └─ other loops: loop.post → inbox → drainInbox → loop.deliver, loop.deliverRun
//
// An outMsg is built once per message and shared by every loop; its frame
// is encoded at most once per wire protocol. The hub knows which loops
// have subscribers of a channel; each loop keeps its own subscriber lists
// (subList) and delivers on its own goroutine, by writing the frame at once
// to an idle subscriber (writeOrQueue) or by queueing it for the loop's
// end-of-pass flush, one write per connection. A queue holds a large frame
// by reference (queueShared, outqueue.go): every subscriber's queue shares
// the outMsg's bytes. A drained batch goes out as runs (deliverRun):
// consecutive messages of a channel queued to each subscriber in one piece.

// outMsg is one published message on its way to subscribers: a channel
// message, or a broadcast when channel is empty. It is shared by every loop
// that delivers it and immutable once built, except for its frames, each
// encoded at most once (on first need) per wire protocol.
type outMsg struct {
	channel string // "" for a broadcast
	from    string // publisher's connection id, or "api"
	data    []byte // JSON text, or opaque bytes when opaque is set
	opaque  bool

	jsonOnce, binOnce   sync.Once
	jsonFrame, binFrame []byte
}

// newOutMsg copies data, which usually aliases a read buffer.
func newOutMsg(channel, from string, data []byte, opaque bool) *outMsg {
	return &outMsg{channel: channel, from: from, data: append([]byte(nil), data...), opaque: opaque}
}

// frame returns the complete WebSocket frame for the given protocol.
func (m *outMsg) frame(bin bool) []byte {
	if bin {
		m.binOnce.Do(func() {
			buf := newFrameBuf(make([]byte, 0, frameHeadroom+4+len(m.channel)+len(m.from)+len(m.data)))
			m.binFrame = finishFrame(proto.AppendBinMessage(buf, m.channel, m.from, m.data, m.opaque), ws.OpBinary)
		})
		return m.binFrame
	}
	m.jsonOnce.Do(func() {
		size := frameHeadroom + 64 + len(m.channel) + len(m.from) + len(m.data)
		if m.opaque {
			size += len(m.data)/3 + 20
		}
		buf := newFrameBuf(make([]byte, 0, size))
		m.jsonFrame = finishFrame(proto.AppendMessageAny(buf, m.channel, m.from, m.data, m.opaque), ws.OpText)
	})
	return m.jsonFrame
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
// message comes from outside the loops (Server.Deliver: what the agent
// forwards from other workers and from the server API); every loop then
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
			src.publishLocal(m, from)
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

// Deliver hands a message published elsewhere on the node (on another
// worker, or through the server API) to this process's subscribers of channel (every WebSocket for a broadcast,
// channel ""). Safe for concurrent use; data is copied.
func (s *Server) Deliver(channel, from string, data []byte, opaque bool) {
	s.hub.publish(nil, newOutMsg(channel, from, data, opaque), nil)
}

// publish delivers a message locally and hands it to the other processes
// of the node; it reports false (nothing delivered) when the bridge could
// not take it.
func (c *Conn) publish(channel string, data []byte, opaque bool) bool {
	if err := c.srv.cfg.Bridge.Published(c.loop.idx, channel, c.id, data, opaque, nil); err != nil {
		return false
	}
	c.srv.hub.publish(c.loop, newOutMsg(channel, c.id, data, opaque), c)
	return true
}

// publishDurable is publish for a client that wants its ack only once the
// node has the message on disk (Config.DurableAcks): the ack, or an error,
// is sent when the bridge calls back.
func (c *Conn) publishDurable(channel string, data []byte, opaque bool, id []byte) bool {
	l := c.loop
	id = append([]byte(nil), id...)
	err := c.srv.cfg.Bridge.Published(l.idx, channel, c.id, data, opaque, func(err error) {
		_ = l.exec.Execute(func() {
			if c.state != stateWS {
				return
			}
			if err != nil {
				c.replyError(id, errNotDurable)
			} else {
				c.ack(id)
			}
			c.flush()
		})
	})
	if err != nil {
		return false
	}
	c.srv.hub.publish(l, newOutMsg(channel, c.id, data, opaque), c)
	return true
}

// delivery is one message posted to a loop for its subscribers of the
// message's channel (for a broadcast, every WebSocket on the loop) but
// skip, its publisher when it is on that loop.
type delivery struct {
	msg  *outMsg
	skip *Conn
}

// publishLocal delivers m, published by from on this loop, to the loop's
// other subscribers: an isolated message at once (deliver, direct), a
// burst's through the loop's own inbox, so that the drain after the read
// queues the burst's messages to each subscriber as runs (deliverRun)
// rather than one by one. While the inbox holds deliveries, m goes
// behind them: a message at once would overtake its publisher's earlier
// ones still there.
func (l *loop) publishLocal(m *outMsg, from *Conn) {
	if l.burst(1) || l.posted.Load() {
		l.post(delivery{msg: m, skip: from})
		return
	}
	l.deliver(m, from, true)
}

// deliver queues m to every local subscriber of its channel, or for a
// broadcast to every local WebSocket, except skip.
// With direct, subscribers with nothing queued are written as they are
// reached (one walk, the first subscriber served at once); else every
// frame is queued for the end-of-pass flush. A direct pass that sees
// deliveries posted meanwhile queues the rest of its frames, so that they
// leave with what was posted (flushDirty takes it).
func (l *loop) deliver(m *outMsg, skip *Conn, direct bool) {
	send := (*Conn).queueShared
	if direct {
		send = (*Conn).writeOrQueue
		defer func() { l.lastDeliver = time.Now().UnixNano() }()
	}
	n := 0
	for c := range l.recipients(m.channel, skip) {
		send(c, m.frame(c.bin))
		if n++; direct && n%switchEvery == 0 && l.posted.Load() {
			direct = false
			send = (*Conn).queueShared
		}
	}
}

// recipients yields the loop's subscribers of channel, or for a broadcast
// (channel "") its WebSockets, except skip. Nothing a delivery does to a
// recipient removes one: a connection is closed (and unsubscribed) by a
// later task, never inside queueShared, queueRun or writeOrQueue.
func (l *loop) recipients(channel string, skip *Conn) iter.Seq[*Conn] {
	return func(yield func(*Conn) bool) {
		if channel == "" {
			for c := range l.conns {
				if c != skip && c.state == stateWS && !yield(c) {
					return
				}
			}
			return
		}
		if sl := l.subs[channel]; sl != nil {
			for _, c := range sl.conns {
				if c != skip && !yield(c) {
					return
				}
			}
		}
	}
}

// switchEvery is how many subscribers a direct pass serves between looks
// at its loop's inbox.
const switchEvery = 64

// burstGap separates bursts of deliveries from isolated ones.
const burstGap = 1e6 // ns

// burst tells how to deliver n messages arriving now: directly (false)
// when it is one message, its sender sent nothing more yet and the loop
// delivered nothing in the last burstGap, and no pass has yielded; else
// queued (true), so that a
// burst is coalesced into one write per subscriber at the end of the
// pass. Queueing costs a second walk over the subscribers and makes the
// first wait for the last; writing a burst directly would cost a write
// per message and subscriber.
func (l *loop) burst(n int) bool {
	now := time.Now().UnixNano()
	quiet := now-l.lastDeliver > burstGap
	l.lastDeliver = now
	return n > 1 || l.more || !quiet || l.yielded
}

// post hands a delivery to this loop from another goroutine.
func (l *loop) post(d delivery) {
	l.mu.Lock()
	l.inbox = append(l.inbox, d)
	queue := !l.posted.Swap(true)
	l.mu.Unlock()
	if queue {
		if err := l.exec.Execute(l.drainFn); err != nil {
			l.srv.log.Debug("deliver to stopping loop", "loop", l.idx, "err", err)
		}
	}
}

// drainInbox runs on the loop: it delivers every posted frame, then flushes
// each touched connection once; deliveries posted meanwhile are taken
// during that flush (flushDirty). While a pass has yielded, it only queues:
// the pass writes them when it goes on.
func (l *loop) drainInbox() {
	// The deliveries below are flushed at the end of this task, or by the
	// pass that yielded: no separate flush task is needed for them.
	queued := l.passQueued
	l.passQueued = true
	batch := l.takeInbox()
	l.deliverBatch(batch, !l.burst(len(batch)))
	l.giveInbox(batch)
	l.passQueued = queued
	if !l.yielded {
		l.flushDirty()
	}
}

// queuePosted queues the deliveries posted since the inbox was last taken,
// for the pass under way to write.
func (l *loop) queuePosted() {
	batch := l.takeInbox()
	l.deliverBatch(batch, false)
	l.giveInbox(batch)
}

// takeInbox empties the inbox and returns what it held; giveInbox takes
// the slice back once delivered.
func (l *loop) takeInbox() []delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	batch := l.inbox
	l.inbox = l.spare[:0]
	l.spare = nil
	l.posted.Store(false)
	return batch
}

func (l *loop) giveInbox(batch []delivery) {
	l.mu.Lock()
	l.spare = batch[:0]
	l.mu.Unlock()
}

// deliverBatch delivers posted deliveries in order, as runs where it can;
// direct applies to a batch of one.
func (l *loop) deliverBatch(batch []delivery, direct bool) {
	for i := 0; i < len(batch); {
		j := runEnd(batch, i)
		if j-i == 1 {
			l.deliver(batch[i].msg, batch[i].skip, direct)
		} else {
			l.deliverRun(batch[i:j])
		}
		clear(batch[i:j])
		i = j
	}
}

// A run is consecutive messages of a drained batch on the same channel
// (or consecutive broadcasts) from the same publisher or none on the
// loop, at most maxRunBytes of data. The loop
// encodes a run once per wire protocol, as one piece, and queues that
// piece to each subscriber: one visit per subscriber for the whole run
// rather than one per message. At a million connections a subscriber's
// connection and queue are out of every cache, and visiting them once per
// message cost a pass more than its writes did. Runs keep the order of the
// batch, so every subscriber still gets the messages in the order posted.
const maxRunBytes = 64 << 10

// runEnd returns the end of the run that starts at batch[i].
func runEnd(batch []delivery, i int) int {
	ch, skip := batch[i].msg.channel, batch[i].skip
	size := len(batch[i].msg.data)
	j := i + 1
	for ; j < len(batch); j++ {
		m := batch[j].msg
		size += len(m.data)
		if m.channel != ch || batch[j].skip != skip || size > maxRunBytes {
			break
		}
	}
	return j
}

// runFrames is a run's frames, concatenated, per wire protocol: encoded
// on first need.
type runFrames struct {
	msgs      []delivery
	json, bin []byte
}

func (r *runFrames) frame(bin bool) []byte {
	p := &r.json
	if bin {
		p = &r.bin
	}
	if *p == nil {
		n := 0
		for _, d := range r.msgs {
			n += len(d.msg.frame(bin))
		}
		b := make([]byte, 0, n)
		for _, d := range r.msgs {
			b = append(b, d.msg.frame(bin)...)
		}
		*p = b
	}
	return *p
}

// deliverRun queues a run (see maxRunBytes) to every local subscriber of
// its channel, or for broadcasts to every local WebSocket, in one piece.
func (l *loop) deliverRun(run []delivery) {
	r := runFrames{msgs: run}
	for c := range l.recipients(run[0].msg.channel, run[0].skip) {
		c.queueRun(r.frame(c.bin), len(run))
	}
}

// writeOrQueue writes a delivered frame at once when nothing is queued for
// this connection, else queues it behind what is (queueShared). The
// connection being served queues too: its replies and frames go out
// together at the end of its read. What the kernel does not take of the
// frame is kept by reference (queueUnwritten), never copied whole.
func (c *Conn) writeOrQueue(frame []byte) {
	l := c.loop
	if c.dirty || len(c.out) > 0 || c.wq != nil || c == l.current || c.state != stateWS {
		c.queueShared(frame)
		return
	}
	if len(frame)+c.t.Buffered() > c.srv.cfg.MaxOutbound {
		c.closeSlow()
		return
	}
	iov := append(l.iov[:0], frame)
	n, err := c.t.Writev(iov)
	iov[0] = nil
	l.iov = iov[:0]
	l.stats.messagesOut.Add(1)
	if err != nil {
		return
	}
	l.stats.bytesOut.Add(uint64(n))
	if n < len(frame) {
		c.queueUnwritten(frame, n)
	}
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

// subscribeAck acknowledges a subscription once the bridge reports it live
// on the whole node.
func (c *Conn) subscribeAck(channel string, id []byte) {
	b := c.srv.cfg.Bridge
	l := c.loop
	idCopy := append([]byte(nil), id...)
	now, err := b.Subscribed(l.idx, c.id, channel, func(err error) {
		_ = l.exec.Execute(func() {
			if c.state != stateWS {
				return
			}
			if err != nil {
				c.replyError(idCopy, errOverloaded)
			} else {
				c.ack(idCopy)
			}
			c.flush()
		})
	})
	switch {
	case err != nil:
		c.replyError(id, errOverloaded)
	case now:
		// Answered in this read, with the rest of its replies.
		c.ack(id)
	}
}

// unsubscribe drops a subscription and tells the bridge.
func (c *Conn) unsubscribe(channel string) bool {
	if !c.loop.unsubscribe(c, channel) {
		return false
	}
	c.srv.cfg.Bridge.Unsubscribed(c.loop.idx, c.id, channel)
	return true
}
