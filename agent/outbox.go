package agent

import (
	"encoding/binary"
	"errors"
	"sync"
	"time"

	"github.com/zenconn/server/shm"
)

// Reasons for which the agent gives up on a worker that does not take its
// records; they label zenconn_node_worker_failures_total.
const (
	reasonQueueFull = "queue_full" // its outbox reached Config.QueueBytes
	reasonStalled   = "stalled"    // its ring took nothing for Config.StallTimeout
)

var failureReasons = [...]string{reasonStalled, reasonQueueFull}

// Errors of outbox.enqueue.
var (
	errWorkerGone = errors.New("agent: the worker process is gone or being replaced")
	errQueueFull  = errors.New("agent: the worker's queue is full")
)

// stallPoll is how long the drainer sleeps at most, while the ring is
// full, before it checks for close and for the stall timeout again.
const stallPoll = 50 * time.Millisecond

// outbox carries the agent's records to one worker process: no caller
// ever waits on the worker's ring. A record goes straight onto the ring
// when the ring has room and nothing is queued before it; otherwise it is
// copied into a queue bounded in bytes, which the outbox's own goroutine
// (run) writes onto the ring in order as the worker makes room.
//
// A worker that cannot take its records is reported once through fail:
// when a record does not fit in the queue (reasonQueueFull) or when the
// ring accepts nothing for the stall timeout (reasonStalled). From then
// on the outbox takes nothing more (enqueue returns errWorkerGone): the
// agent kills that process, and what was meant for it dies with its
// connections.
//
// enqueue is safe for concurrent use and never blocks on the worker.
type outbox struct {
	limit     int           // bytes the queue may hold
	stall     time.Duration // how long a full ring may take nothing
	maxRecord int
	fail      func(reason string) // called at most once; must not block

	mu sync.Mutex
	// prod belongs to enqueue while draining is false, to run while it
	// is true; the switch happens under mu.
	prod     *shm.Producer
	draining bool
	queue    []byte // records waiting for the ring, each with a uint32 length
	queued   int    // bytes in queue and in the batch run is writing
	failed   bool
	closed   bool

	batch []byte // owned by run
	wake  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

// newOutbox returns an outbox onto the ring of prod; call run in its own
// goroutine and close once the worker process is gone.
func newOutbox(prod *shm.Producer, maxRecord, limit int, stall time.Duration, fail func(string)) *outbox {
	return &outbox{
		prod: prod, maxRecord: maxRecord, limit: limit, stall: stall, fail: fail,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// enqueue passes rec (copied; the caller keeps it) to the worker. It
// returns shm.ErrTooLarge for a record the ring can never hold,
// errQueueFull when the queue overflows (the worker is then reported
// failed) and errWorkerGone once the worker has failed or is gone.
func (o *outbox) enqueue(rec []byte) error { return o.put(rec, true) }

// hold is enqueue without waking the worker: what it writes onto the ring
// is published by the next enqueue or release, so that the worker takes a
// run of records in one wake-up.
func (o *outbox) hold(rec []byte) error { return o.put(rec, false) }

// release publishes what hold wrote onto the ring.
func (o *outbox) release() {
	o.mu.Lock()
	if !o.draining && !o.closed {
		o.prod.Flush()
	}
	o.mu.Unlock()
}

func (o *outbox) put(rec []byte, flush bool) error {
	if len(rec) > o.maxRecord {
		return shm.ErrTooLarge
	}
	o.mu.Lock()
	if o.failed || o.closed {
		o.mu.Unlock()
		return errWorkerGone
	}
	if !o.draining && o.prod.TryWrite(rec) == nil {
		if flush {
			o.prod.Flush()
		}
		o.mu.Unlock()
		return nil
	}
	need := 4 + len(rec)
	if o.queued+need > o.limit {
		o.failed = true
		o.mu.Unlock()
		o.fail(reasonQueueFull)
		return errQueueFull
	}
	o.queue = binary.LittleEndian.AppendUint32(o.queue, uint32(len(rec)))
	o.queue = append(o.queue, rec...)
	o.queued += need
	start := !o.draining
	o.draining = true
	o.mu.Unlock()
	if start {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// run writes the queued records onto the ring until close, and once a
// second gives back the ring's pages that the traffic left
// (Producer.Release).
func (o *outbox) run() {
	defer close(o.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-o.wake:
		case now := <-tick.C:
			o.releasePages(now)
			continue
		case <-o.stop:
			return
		}
		if !o.drain() {
			return
		}
	}
}

// releasePages gives back the ring's free pages (Producer.Release), unless
// run holds the producer to drain the queue: a later tick does it then.
func (o *outbox) releasePages(now time.Time) {
	o.mu.Lock()
	if !o.draining && !o.closed {
		o.prod.Release(now)
	}
	o.mu.Unlock()
}

// drain writes batches until the queue is empty (then hands the producer
// back to enqueue and reports true) or the worker failed or is closed.
func (o *outbox) drain() bool {
	for {
		o.mu.Lock()
		if o.failed || o.closed {
			o.mu.Unlock()
			return false
		}
		if len(o.queue) == 0 {
			o.draining = false
			o.shrinkLocked()
			o.mu.Unlock()
			return true
		}
		o.queue, o.batch = o.batch[:0], o.queue
		o.mu.Unlock()
		ok := o.writeBatch(o.batch)
		o.mu.Lock()
		o.queued -= len(o.batch)
		o.mu.Unlock()
		if !ok {
			return false
		}
	}
}

// keepBytes is the capacity the queue and the batch keep once drained: a
// burst that found the ring full does not pin its peak for the life of
// the worker.
const keepBytes = 64 << 10

// shrinkLocked lets go of buffers grown by a burst; o.mu is held and the
// queue is empty.
func (o *outbox) shrinkLocked() {
	if cap(o.queue) > keepBytes {
		o.queue = nil
	}
	if cap(o.batch) > keepBytes {
		o.batch = nil
	}
}

// writeBatch writes the records of batch onto the ring, in order, waiting
// for room; it reports false when the worker stalled or close was called.
func (o *outbox) writeBatch(batch []byte) bool {
	defer o.prod.Flush()
	for len(batch) > 0 {
		n := int(binary.LittleEndian.Uint32(batch))
		rec := batch[4 : 4+n]
		batch = batch[4+n:]
		if o.prod.TryWrite(rec) == nil {
			continue
		}
		if !o.waitRoom(rec) {
			return false
		}
	}
	return true
}

// waitRoom writes rec once the ring has room for it. It reports false on
// close, and when the ring took nothing for the stall timeout, after
// reporting the worker failed.
func (o *outbox) waitRoom(rec []byte) bool {
	deadline := time.Now().Add(o.stall)
	for {
		// Write publishes what is written before it sleeps.
		err := o.prod.Write(rec, min(stallPoll, max(time.Until(deadline), 0)))
		if err == nil {
			return true
		}
		select {
		case <-o.stop:
			return false
		default:
		}
		if !time.Now().Before(deadline) {
			o.mu.Lock()
			first := !o.failed && !o.closed
			o.failed = true
			o.mu.Unlock()
			if first {
				o.fail(reasonStalled)
			}
			return false
		}
	}
}

// close stops the outbox and waits for its goroutine: after it, nothing
// touches the ring. Records still queued are those of a process that is
// gone.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	close(o.stop)
	<-o.done
}
