package engine

import (
	"bytes"
	"strings"
	"testing"

	"github.com/zenconn/server/proto"
)

// slowSubs returns n subscribers of channel "c" whose transport takes no
// bytes (a kernel buffer that is full) until the test gives it room.
func slowSubs(t *testing.T, s *Server, l *loop, e *memExec, n int) []*connDriver {
	t.Helper()
	var ds []*connDriver
	for range n {
		d := newConnDriver(t, s, l, e)
		upgrade(t, d)
		sendText(t, d, `{"op":"subscribe","channel":"c"}`)
		d.t.limited, d.t.room = true, 0
		ds = append(ds, d)
	}
	return ds
}

func bigMsg(size int, fill string) *outMsg {
	return newOutMsg("c", "p1", []byte(`"`+strings.Repeat(fill, size)+`"`), false)
}

// A large frame queued for many subscribers that do not read is held once:
// every queue references the message's own bytes, and counts them.
func TestOutQueueSharesFrames(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	subs := slowSubs(t, s, l, e, 3)
	m := bigMsg(5000, "x")
	frame := m.frame(false)
	for _, direct := range []bool{false, true} {
		l.deliver(m, nil, direct)
		l.flushDirty()
	}
	for i, d := range subs {
		q := d.c.wq
		if q == nil || len(q.refs)-q.head != 2 || !q.blocked {
			t.Fatalf("sub %d: want two references in a blocked queue", i)
		}
		for _, r := range q.refs[q.head:] {
			if &r.frame[0] != &frame[0] {
				t.Errorf("sub %d: the queue holds a copy of the frame, not the message's bytes", i)
			}
		}
		if len(d.c.out) != 0 {
			t.Errorf("sub %d: %d bytes copied into the out buffer", i, len(d.c.out))
		}
		if got, want := d.c.outPending(), 2*len(frame); got != want {
			t.Errorf("sub %d: outPending %d, want %d (the bytes referenced)", i, got, want)
		}
	}
	for _, d := range subs {
		d.close()
	}
}

// Partial writes keep the stream in order: shared frames and small copied
// frames interleaved, queued before and while the socket is full, leave in
// the order they were queued, however the kernel splits them.
func TestOutQueuePartialWritesKeepOrder(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	d := slowSubs(t, s, l, e, 1)[0]
	var want []byte
	big := func(fill string) {
		m := bigMsg(1500, fill)
		want = append(want, m.frame(false)...)
		l.deliver(m, nil, false)
	}
	small := func() {
		want = append(want, pingFrame...)
		d.c.queueFrame(pingFrame)
	}
	before := d.t.nbytes
	d.t.room = 700 // the first flush stops inside the first frame
	big("a")
	small()
	big("b")
	small()
	small()
	big("c")
	l.flushDirty()
	if d.c.wq == nil || !d.c.wq.blocked || d.t.waits != 1 {
		t.Fatalf("after a partial write: queue %v, %d waits; want blocked, waiting once", d.c.wq != nil, d.t.waits)
	}
	// More while blocked: queued behind, nothing written.
	small()
	big("d")
	l.flushDirty()
	if n := d.t.nbytes - before; n != 700 {
		t.Fatalf("%d bytes written while blocked, want 700", n)
	}
	for range 100 {
		if d.c.wq == nil {
			break
		}
		d.t.room += 333
		d.c.Writable()
	}
	if d.c.wq != nil || d.c.out != nil {
		t.Fatalf("queue not drained: %d bytes pending", d.c.outPending())
	}
	if got := d.t.takeOut(); !bytes.Equal(got, want) {
		t.Fatalf("stream differs from the frames queued, in order (%d bytes, want %d)", len(got), len(want))
	}
	// A direct delivery the kernel takes in part keeps the rest by reference.
	m := bigMsg(3000, "e")
	d.t.room = 100
	l.deliver(m, nil, true)
	if q := d.c.wq; q == nil || len(q.refs) != 1 || &q.refs[0].frame[0] != &m.frame(false)[100] {
		t.Fatalf("direct partial write: want the rest of the frame by reference in the queue")
	}
	d.t.room = 1 << 20
	d.c.Writable()
	if got := d.t.takeOut(); !bytes.Equal(got, m.frame(false)) || d.c.wq != nil {
		t.Fatalf("direct partial write: %d bytes out, %d pending", len(got), d.c.outPending())
	}
	d.close()
}

// Config.MaxOutbound counts the bytes referenced: a subscriber that holds
// back more than that in shared frames is closed as a slow consumer.
func TestOutQueueLimitCountsReferences(t *testing.T) {
	m := bigMsg(2100, "x")
	n := len(m.frame(false))
	s := newTestServer(t, Config{MaxOutbound: 2*n + 10})
	l, e := newTestLoop(t, s)
	d := slowSubs(t, s, l, e, 1)[0]
	for i := range 3 {
		l.deliver(m, nil, false)
		l.flushDirty()
		if i < 2 && d.t.closed.Load() {
			t.Fatalf("closed after %d frames (%d bytes held), under the limit", i+1, (i+1)*n)
		}
	}
	if !d.t.closed.Load() || l.stats.slowClosed.Load() != 1 || d.c.closeCode != proto.CloseSlowConsumer {
		t.Fatalf("closed %v, slowClosed %d, code %d after 3 frames of %d bytes over a %d-byte limit; want closed with 4001 and counted",
			d.t.closed.Load(), l.stats.slowClosed.Load(), d.c.closeCode, n, 2*n+10)
	}
	d.close()
}

// Closing a connection drops its references: neither the connection nor
// the queue the loop keeps for the next one holds the frames.
func TestOutQueueReleasedOnClose(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	subs := slowSubs(t, s, l, e, 2)
	for range 3 {
		l.deliver(bigMsg(4000, "x"), nil, false)
		d := subs[0]
		d.c.queueFrame(pingFrame)
	}
	l.flushDirty()
	for _, d := range subs {
		d.close()
		if d.c.wq != nil || d.c.out != nil {
			t.Fatalf("closed connection holds a queue (%v) or out bytes (%d)", d.c.wq != nil, len(d.c.out))
		}
	}
	if len(l.spareQueues) != 2 {
		t.Fatalf("%d spare queues, want the 2 given back", len(l.spareQueues))
	}
	for _, q := range l.spareQueues {
		for _, r := range q.refs[:cap(q.refs)] {
			if r.frame != nil {
				t.Fatalf("a spare queue still references a frame")
			}
		}
		if q.head != 0 || q.refBytes != 0 || q.outHead != 0 || q.blocked {
			t.Fatalf("spare queue not reset: head %d, refBytes %d, outHead %d, blocked %v", q.head, q.refBytes, q.outHead, q.blocked)
		}
	}
}

// While bytes given to Write are still buffered by the transport, the
// queue waits behind them and is written once they are gone.
func TestOutQueueWaitsForTransportBuffer(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	d := slowSubs(t, s, l, e, 1)[0]
	d.t.limited = false
	d.t.buffered = 10
	before := d.t.nbytes
	m := bigMsg(2000, "x")
	l.deliver(m, nil, true)
	if n := d.t.nbytes - before; n != 0 || d.c.wq == nil || d.t.waits != 1 {
		t.Fatalf("wrote %d bytes past the transport's buffer; queued %v, waits %d", n, d.c.wq != nil, d.t.waits)
	}
	d.c.Writable() // spurious: still buffered
	if n := d.t.nbytes - before; n != 0 || d.t.waits != 2 {
		t.Fatalf("wrote %d bytes, waits %d; want none, waiting again", n, d.t.waits)
	}
	d.t.buffered = 0
	d.c.Writable()
	if got := d.t.takeOut(); !bytes.Equal(got, m.frame(false)) || d.c.wq != nil {
		t.Fatalf("after the buffer drained: %d bytes out, %v queued", len(got), d.c.wq != nil)
	}
	d.close()
}

// TestSpareOutBounded: the loop keeps at most maxSpareBytes of spare
// outbound buffers, however many large ones come back.
func TestSpareOutBounded(t *testing.T) {
	s := newTestServer(t, Config{})
	l, _ := newTestLoop(t, s)
	for range 2 * maxSpareBytes / maxSpareOut {
		l.giveOut(make([]byte, 0, maxSpareOut))
	}
	if l.spareBytes != maxSpareBytes || len(l.spareOut) != maxSpareBytes/maxSpareOut {
		t.Fatalf("%d spare buffers, %d bytes; want %d, %d", len(l.spareOut), l.spareBytes, maxSpareBytes/maxSpareOut, maxSpareBytes)
	}
	l.takeOut()
	l.giveOut(make([]byte, 0, outBufSize))
	if l.spareBytes != maxSpareBytes-maxSpareOut+outBufSize {
		t.Fatalf("%d spare bytes after one taken and a small one given back", l.spareBytes)
	}
	for len(l.spareOut) > 0 {
		l.takeOut()
	}
	if l.spareBytes != 0 {
		t.Fatalf("%d spare bytes with no spare buffer", l.spareBytes)
	}
}
