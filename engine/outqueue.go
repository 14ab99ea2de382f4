package engine

// The outbound queue of a connection: what was handed to it and not yet
// taken by the kernel.
//
// Small frames (replies, pings, close frames, fan-out frames under
// sharedMin bytes) are copied into Conn.out, a buffer lent by the loop, so
// that a burst leaves in one write. A fan-out frame of sharedMin bytes or
// more is not copied: the queue holds a reference to the outMsg's encoded
// frame, the same bytes for every subscriber, placed at its position among
// the copied bytes. A flush hands the pieces in order to the kernel in one
// writev; what the kernel does not take stays in the queue (Transport.Writev
// buffers nothing), and the transport calls Conn.Writable once the socket
// can take more. So a subscriber that stops reading pins a reference per
// queued frame and the small frames' copies, never a copy of a large frame,
// and the frame's bytes are freed when the last queue lets go of them.
//
//	stream:  out[outHead:refs[head].at] refs[head].frame out[refs[head].at:refs[head+1].at] … out[last.at:]
//
// Config.MaxOutbound counts the bytes referenced and copied (outPending):
// past it the connection is closed as a slow consumer.

// sharedMin is the size from which a fan-out frame is queued by reference
// rather than copied.
const sharedMin = 512

// maxIov bounds the pieces handed to one writev.
const maxIov = 64

// outRef is a shared frame in a connection's queue.
type outRef struct {
	frame []byte // its unsent bytes (a suffix after a partial write)
	at    int    // its place in the stream: after Conn.out[:at]
}

// writeQueue is the state of a connection's queue beyond Conn.out, held
// only while shared frames are queued or the socket did not take
// everything; the loop lends it (takeQueue) and takes it back when the
// queue is empty.
type writeQueue struct {
	refs     []outRef
	head     int  // refs[:head] are written
	outHead  int  // Conn.out[:outHead] is written
	refBytes int  // unsent bytes of refs[head:]
	blocked  bool // the kernel did not take everything: wait for Writable
}

// Spare write queues: a pass that queues a large frame for every
// subscriber lends each a queue, so the loop keeps as many as it lent
// (at most maxSpareQueues, like outbound buffers), each with at most
// maxSpareRefs references of capacity.
const (
	maxSpareQueues = 1 << 16
	maxSpareRefs   = 64
)

func (l *loop) takeQueue() *writeQueue {
	if n := len(l.spareQueues); n > 0 {
		q := l.spareQueues[n-1]
		l.spareQueues[n-1] = nil
		l.spareQueues = l.spareQueues[:n-1]
		return q
	}
	return &writeQueue{}
}

// giveQueue takes back an emptied queue: its references are dropped.
func (l *loop) giveQueue(q *writeQueue) {
	clear(q.refs)
	*q = writeQueue{refs: q.refs[:0]}
	if cap(q.refs) > maxSpareRefs {
		q.refs = nil
	}
	if len(l.spareQueues) < maxSpareQueues {
		l.spareQueues = append(l.spareQueues, q)
	}
}

// queue returns c's write queue, taking one from the loop if needed.
func (c *Conn) queue() *writeQueue {
	if c.wq == nil {
		c.wq = c.loop.takeQueue()
	}
	return c.wq
}

// outPending is what c holds unsent: copied bytes, referenced bytes and
// what the transport buffers. Config.MaxOutbound bounds it.
func (c *Conn) outPending() int {
	n := len(c.out) + c.t.Buffered()
	if q := c.wq; q != nil {
		n += q.refBytes - q.outHead
	}
	return n
}

// queueShared queues a fan-out frame: by reference when it is large, else
// copied like queueFrame. frame must stay unchanged for as long as any
// queue holds it (an outMsg's frames do).
func (c *Conn) queueShared(frame []byte) { c.enqueue(frame, len(frame) >= sharedMin, 1) }

// queueRun is queueShared for the frames of n messages in one piece.
func (c *Conn) queueRun(frames []byte, n int) { c.enqueue(frames, len(frames) >= sharedMin, n) }

// enqueue queues frame (msgs messages), by reference when byRef, else
// copied into c.out; past the outbound limit it closes c as a slow
// consumer instead. It is queueFrame, queueShared and queueRun, which
// differ only in byRef and msgs.
func (c *Conn) enqueue(frame []byte, byRef bool, msgs int) {
	if c.state != stateWS {
		return
	}
	// outPending, written out: this runs per delivery.
	pending := len(c.out) + len(frame) + c.t.Buffered()
	if q := c.wq; q != nil {
		pending += q.refBytes - q.outHead
	}
	if pending > c.srv.cfg.MaxOutbound {
		c.closeSlow()
		return
	}
	if byRef {
		q := c.queue()
		q.refs = append(q.refs, outRef{frame: frame, at: len(c.out)})
		q.refBytes += len(frame)
	} else {
		c.out = append(c.outBuf(), frame...)
	}
	c.loop.stats.messagesOut.Add(uint64(msgs))
	c.loop.markDirty(c)
}

// queueUnwritten queues what the kernel did not take of a frame written at once
// (writeOrQueue) and waits for the socket to be writable. Nothing else is
// queued for c.
func (c *Conn) queueUnwritten(frame []byte, n int) {
	q := c.queue()
	if len(frame) >= sharedMin {
		q.refs = append(q.refs, outRef{frame: frame[n:]})
		q.refBytes += len(frame) - n
	} else {
		c.out = append(c.outBuf(), frame[n:]...)
	}
	c.block()
}

// block waits for the transport to say the socket takes more bytes.
func (c *Conn) block() {
	q := c.wq
	q.blocked = true
	c.out = q.compact(c.out)
	c.t.WaitWritable()
}

// flushQueue writes c's queue in writevs until it is empty (the queue is
// given back) or the kernel takes less than offered (c blocks).
func (c *Conn) flushQueue() {
	q, l := c.wq, c.loop
	if q.blocked {
		return
	}
	for {
		iov, want := c.appendPieces(l.iov[:0])
		if want == 0 {
			break
		}
		n, err := c.t.Writev(iov)
		clear(iov)
		l.iov = iov[:0]
		if err != nil {
			c.dropQueue()
			return
		}
		l.stats.bytesOut.Add(uint64(n))
		c.advance(n)
		if n < want {
			c.block()
			return
		}
	}
	c.dropQueue()
}

// appendPieces appends to iov the unsent bytes of c's queue in order, at
// most maxIov pieces, and returns it with their length.
func (c *Conn) appendPieces(iov [][]byte) ([][]byte, int) {
	q := c.wq
	pos, want := q.outHead, 0
	i := q.head
	for ; i < len(q.refs) && len(iov) < maxIov-1; i++ {
		r := &q.refs[i]
		if r.at > pos {
			iov = append(iov, c.out[pos:r.at])
			want += r.at - pos
			pos = r.at
		}
		iov = append(iov, r.frame)
		want += len(r.frame)
	}
	if i == len(q.refs) && pos < len(c.out) {
		iov = append(iov, c.out[pos:])
		want += len(c.out) - pos
	}
	return iov, want
}

// advance records that the kernel took n more bytes of c's queue.
func (c *Conn) advance(n int) {
	q := c.wq
	for n > 0 {
		end := len(c.out)
		if q.head < len(q.refs) {
			end = q.refs[q.head].at
		}
		if q.outHead < end {
			k := min(n, end-q.outHead)
			q.outHead += k
			n -= k
			continue
		}
		r := &q.refs[q.head]
		k := min(n, len(r.frame))
		r.frame = r.frame[k:]
		q.refBytes -= k
		n -= k
		if len(r.frame) == 0 {
			*r = outRef{}
			q.head++
		}
	}
}

// compact moves the unsent part of the queue to the front of its buffers
// once the sent part is at least half of them, so that a consumer reading
// slowly for a long time does not grow them.
func (q *writeQueue) compact(out []byte) []byte {
	if q.head > 0 && q.head*2 >= len(q.refs) {
		n := copy(q.refs, q.refs[q.head:])
		clear(q.refs[n:])
		q.refs = q.refs[:n]
		q.head = 0
	}
	if q.outHead > 0 && q.outHead*2 >= len(out) {
		n := copy(out, out[q.outHead:])
		for i := q.head; i < len(q.refs); i++ {
			q.refs[i].at -= q.outHead
		}
		out = out[:n]
		q.outHead = 0
	}
	return out
}

// dropQueue forgets everything queued for c and gives its buffers back.
func (c *Conn) dropQueue() {
	if c.wq != nil {
		c.loop.giveQueue(c.wq)
		c.wq = nil
	}
	c.loop.giveOut(c.out)
	c.out = nil
}

// Writable tells the engine that the socket of a connection whose writes
// the kernel did not take whole can take more bytes: the queue is written
// on, and a connection ending once it is written (linger) is half-closed
// when it is.
func (c *Conn) Writable() {
	if c.wq == nil || c.state == stateClosed {
		return
	}
	c.wq.blocked = false
	c.flush()
	if c.wq == nil && c.state == stateClosing {
		c.t.CloseWrite()
	}
}
