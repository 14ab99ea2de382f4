package store

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// groupDelay is how long the writer lets a group grow in the batch and
// none sync modes: one commit for many records, and a session opened and
// closed meanwhile is written once.
const groupDelay = time.Millisecond

// pending is one record waiting for the writer.
type pending struct {
	rec  Record
	done func(error)
	at   time.Time // when it was queued
}

// group is what the writer takes from the queue for one commit: records in
// queue order, and the held sessions that are due.
type group struct {
	records  []pending
	sessions []*Session
	former   [][]string // users sessions[i] had before its last change
}

// size is the number of queue items the group settles.
func (g *group) size() int { return len(g.records) + len(g.sessions) }

// queue is the hand-off between the producers (Append, PutSession) and the
// writer goroutine. One lock guards the records waiting to be written, the
// held sessions and the counters of Barrier and backpressure; three
// conditions wait on it:
//
//	wake     the writer: a record arrived, a held session is due, a
//	         producer wants room, a Barrier waits, or the store is closing
//	room     producers waiting on a full queue: the writer took a group
//	settled  Barrier: a group was committed, or the writer stopped
//
// Records and held sessions together count against the limit, so held
// sessions can fill the queue: a producer waiting for room makes every held
// session due, as do a Barrier (queries see what was written before them)
// and Close.
type queue struct {
	mu      sync.Mutex
	wake    sync.Cond
	room    sync.Cond
	settled sync.Cond

	limit    int           // records and held sessions past which producers wait
	maxGroup int           // records of one group at most
	hold     time.Duration // how long a session's changes wait; 0 for none
	grow     time.Duration // how long a group may grow; 0 for none
	// holdTimer wakes the writer when the oldest held session is due.
	holdTimer *time.Timer
	blocked   prometheus.Counter // times a producer waited for room

	records  []pending
	held     sessionHold
	queued   uint64 // items ever queued (records and newly held sessions)
	done     uint64 // items ever settled
	waiting  int    // producers waiting for room
	barriers int    // Barrier calls waiting
	closing  bool
	stopped  bool  // the writer has returned
	err      error // the writer's last commit error, reported by Barrier
}

// newQueue returns the queue of a store opened with opts (defaults filled
// in). SyncAlways holds no session and commits every group at once.
func newQueue(opts Options, blocked prometheus.Counter) *queue {
	q := &queue{limit: opts.QueueLimit, maxGroup: opts.MaxGroup, blocked: blocked, held: newSessionHold()}
	q.wake.L, q.room.L, q.settled.L = &q.mu, &q.mu, &q.mu
	if opts.Sync != SyncAlways {
		q.hold, q.grow = opts.SyncInterval, groupDelay
	}
	q.holdTimer = time.AfterFunc(time.Hour, func() {
		q.mu.Lock()
		q.wake.Signal()
		q.mu.Unlock()
	})
	q.holdTimer.Stop()
	return q
}

// push queues p once there is room, and reports false (p not queued) if
// the store is closing instead.
func (q *queue) push(p *pending) bool {
	q.mu.Lock()
	if !q.waitRoomLocked() {
		q.mu.Unlock()
		return false
	}
	p.at = time.Now()
	q.records = append(q.records, *p)
	q.queued++
	q.wake.Signal()
	q.mu.Unlock()
	return true
}

// putSession merges se into its held session, or holds it once there is
// room; se is copied. It drops se only when the store is closing.
func (q *queue) putSession(se *Session) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.held.merge(se) || !q.waitRoomLocked() {
		return
	}
	q.held.add(se, time.Now().UnixNano())
	q.queued++
	q.wake.Signal()
}

// waitRoomLocked waits until the queue has room, and reports false if the
// store is closing instead.
func (q *queue) waitRoomLocked() bool {
	counted := false
	for !q.closing && len(q.records)+q.held.len() >= q.limit {
		if !counted {
			q.blocked.Inc()
			counted = true
		}
		q.waiting++
		q.wake.Signal() // held sessions may be what fills it
		q.room.Wait()
		q.waiting--
	}
	return !q.closing
}

// barrier waits until every item queued before the call is settled, and
// returns the writer's last error.
func (q *queue) barrier() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	target := q.queued
	q.barriers++
	q.wake.Signal()
	for q.done < target && q.err == nil && !q.stopped {
		q.settled.Wait()
	}
	q.barriers--
	return q.err
}

// barrierWithin is barrier that gives up after d with ErrBehind.
func (q *queue) barrierWithin(d time.Duration) error {
	deadline := time.Now().Add(d)
	t := time.AfterFunc(d, func() {
		q.mu.Lock()
		q.settled.Broadcast()
		q.mu.Unlock()
	})
	defer t.Stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	target := q.queued
	q.barriers++
	q.wake.Signal()
	defer func() { q.barriers-- }()
	for q.done < target && q.err == nil && !q.stopped {
		if !time.Now().Before(deadline) {
			return ErrBehind
		}
		q.settled.Wait()
	}
	return q.err
}

// take waits for work and moves the next group into g, whose buffers it
// reuses: up to maxGroup records, and the held sessions that are due. It
// reports false, with g empty, once the store is closing and the queue is
// empty.
func (q *queue) take(g *group) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.records) == 0 && !q.closing && !q.sessionsDueLocked() {
		if q.held.len() > 0 {
			q.holdTimer.Reset(time.Duration(q.held.oldest() + int64(q.hold) - time.Now().UnixNano()))
		}
		q.wake.Wait()
	}
	if q.mayGrowLocked() {
		// Nothing waits on a growing group but queries (Barrier).
		q.mu.Unlock()
		time.Sleep(q.grow)
		q.mu.Lock()
	}
	g.sessions, g.former = g.sessions[:0], g.former[:0]
	if q.closing && len(q.records) == 0 && q.held.len() == 0 {
		g.records = g.records[:0]
		return false
	}
	q.takeRecordsLocked(g)
	due := q.held.len()
	if !q.allSessionsDueLocked() {
		due = q.held.dueBy(time.Now().UnixNano() - int64(q.hold))
	}
	q.held.takeInto(due, g)
	q.room.Broadcast()
	return true
}

// mayGrowLocked reports whether the writer lets the group grow before
// taking it: not in SyncAlways, nor when closing, nor when producers wait
// for room, nor when a whole group is already there.
func (q *queue) mayGrowLocked() bool {
	return q.grow > 0 && !q.closing && q.waiting == 0 && len(q.records)+q.held.len() < q.maxGroup
}

// takeRecordsLocked moves up to maxGroup records into g.records.
func (q *queue) takeRecordsLocked(g *group) {
	n := min(len(q.records), q.maxGroup)
	if n == len(q.records) {
		// The usual case: take the whole queue and give the writer's
		// emptied buffer back as the next queue (no allocation).
		g.records, q.records = q.records, g.records[:0]
		return
	}
	g.records = append(g.records[:0], q.records[:n]...)
	rest := copy(q.records, q.records[n:])
	clear(q.records[rest:])
	q.records = q.records[:rest]
}

// sessionsDueLocked reports whether a held session is to be written now:
// one has waited hold since its first change, or all are due.
func (q *queue) sessionsDueLocked() bool {
	if q.held.len() == 0 {
		return false
	}
	return q.allSessionsDueLocked() || time.Now().UnixNano()-q.held.oldest() >= int64(q.hold)
}

// allSessionsDueLocked reports whether every held session goes with the
// next group: no hold (SyncAlways), a Barrier waits, a producer waits for
// room, or the store is closing.
func (q *queue) allSessionsDueLocked() bool {
	return q.hold == 0 || q.barriers > 0 || q.waiting > 0 || q.closing
}

// settle counts a committed group of n items, with its commit error, and
// wakes the barriers.
func (q *queue) settle(n int, err error) {
	q.mu.Lock()
	q.done += uint64(n)
	if err != nil {
		q.err = err
	}
	q.settled.Broadcast()
	q.mu.Unlock()
}

// close starts the store's closing: producers waiting for room return,
// and the writer empties the queue and stops. It reports false if the
// store was closing already.
func (q *queue) close() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closing {
		return false
	}
	q.closing = true
	q.holdTimer.Stop()
	q.wake.Broadcast()
	q.room.Broadcast()
	return true
}

// isClosing reports whether close was called.
func (q *queue) isClosing() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closing
}

// stop records that the writer returned: barriers stop waiting.
func (q *queue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.settled.Broadcast()
	q.mu.Unlock()
}

// lag is the number of items waiting for the writer and the age of the
// oldest record among them (0 when none).
func (q *queue) lag() (items int, oldest time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.records) > 0 {
		oldest = time.Since(q.records[0].at)
	}
	return len(q.records) + q.held.len(), oldest
}
