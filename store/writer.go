package store

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// markerEvery is how often the writer records in the index database the
// last record indexed (see indexMarker).
const markerEvery = 100 * time.Millisecond

// writer is the goroutine that empties the queue into the databases, one
// group at a time, until Close. A pass of its loop is the pipeline
//
//	take     queue.take hands over the next group
//	build    records get their time and sequence number; the group
//	         becomes a batch of the log database and one of the index
//	         database
//	commit   both batches are committed (commitBoth), under writeMu; on
//	         a full disk the group waits and is built again (space.go)
//	settle   the records' done callbacks run; Barrier sees the group
//
// Its buffers (the group's, the key and value scratch) are reused from one
// group to the next.
type writer struct {
	s        *Store
	g        group
	key, val []byte
	seq      uint64 // sequence number of the last record
	lastTime int64  // time of the last record (Unix ns): keys never go back
	marker   indexMarker
	space    diskSpace
}

// loadSeq continues the record sequence after the last stored record.
func (w *writer) loadSeq() error {
	it, err := w.s.logdb.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceAudit}, UpperBound: []byte{spaceAudit + 1}})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer it.Close()
	if it.Last() && len(it.Key()) == 17 {
		k := it.Key()
		w.lastTime = int64(beU64(k[1:9]))
		w.seq = beU64(k[9:17])
	}
	return it.Error()
}

// run is the writer goroutine: groups through the pipeline until the
// queue is closed and empty, then the index marker of a clean stop.
func (w *writer) run() {
	defer close(w.s.writerDone)
	for w.s.q.take(&w.g) {
		for i := range w.g.records {
			w.stamp(&w.g.records[i])
		}
		w.settle(w.commitGroup())
	}
	w.marker.flush(w.s)
	w.s.q.stop()
}

// build returns the group's two batches (its records already stamped):
// the records for the log database; their index entries, the index marker
// and the sessions for the index database.
func (w *writer) build() (lb, b *pebble.Batch) {
	lb, b = w.s.logdb.NewBatch(), w.s.db.NewBatch()
	recs := w.g.records
	for i := range recs {
		r := &recs[i].rec
		w.key = auditKey(w.key[:0], r.Time.UnixNano(), r.Seq)
		w.val = encodeRecord(w.val[:0], r)
		_ = lb.Set(w.key, w.val, nil)
		indexRecord(b, r, &w.key)
	}
	if n := len(recs); n > 0 {
		w.marker.note(b, &recs[n-1].rec)
	}
	for i, se := range w.g.sessions {
		writeSession(b, se, &w.key, &w.val)
		indexFormerUsers(b, se, w.g.former[i], &w.key)
	}
	return lb, b
}

// stamp gives p's record its time (when it was queued, if the producer set
// none) and its sequence number. Times never go back, so that keys grow
// with the commit order.
func (w *writer) stamp(p *pending) {
	ns := unixNano(p.rec.Time)
	if ns == 0 {
		ns = p.at.UnixNano()
	}
	ns = max(ns, w.lastTime)
	w.lastTime = ns
	w.seq++
	p.rec.Time, p.rec.Seq = time.Unix(0, ns).UTC(), w.seq
}

// commit commits the group's batches and returns the commit's error.
func (w *writer) commit(lb, b *pebble.Batch) error {
	s := w.s
	s.writeMu.Lock()
	start := time.Now()
	n := lb.Len() + b.Len()
	err := commitBoth(lb, b, s.commitOpt())
	s.writeMu.Unlock()
	if s.opts.Sync == SyncAlways {
		s.m.fsync.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		if !isDiskFull(err) { // commitGroup logs those
			s.log.Error("audit commit failed", "records", len(w.g.records), "err", err)
		}
		return err
	}
	s.unsynced.Store(true)
	s.noteWritten(n)
	return nil
}

// settle runs the records' done callbacks with the commit's error, lets go
// of the group's records and tells the queue (and so Barrier).
func (w *writer) settle(err error) {
	g := &w.g
	w.s.m.groups.Observe(float64(g.size()))
	w.s.m.records.Add(float64(len(g.records)))
	for i := range g.records {
		if d := g.records[i].done; d != nil {
			d(err)
		}
		g.records[i] = pending{}
	}
	w.s.q.settle(g.size(), err)
}

// indexMarker keeps the index database's key of the last record indexed
// (metaIndexed), from which Open indexes records again. It goes with a
// group every markerEvery rather than with every group: a marker behind
// the truth only makes Open index a few records again. A clean stop
// writes it on the last record, so the next Open has nothing to index.
type indexMarker struct {
	written time.Time // when it last went with a group
	key     []byte    // audit key of the last record indexed since; empty if none
}

// note records r as indexed by b, and puts the marker in b when it is due.
func (m *indexMarker) note(b *pebble.Batch, r *Record) {
	m.key = auditKey(m.key[:0], r.Time.UnixNano(), r.Seq)
	if time.Since(m.written) >= markerEvery {
		_ = b.Set(metaIndexed, m.key[1:], nil)
		m.key, m.written = m.key[:0], time.Now()
	}
}

// flush writes the marker if records were indexed since it last went with
// a group.
func (m *indexMarker) flush(s *Store) {
	if len(m.key) == 0 {
		return
	}
	s.writeMu.Lock()
	if err := s.db.Set(metaIndexed, m.key[1:], s.commitOpt()); err != nil {
		s.log.Error("audit index marker", "err", err)
	}
	s.writeMu.Unlock()
	s.unsynced.Store(true)
}
