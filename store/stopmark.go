package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// A node that stops with a million sessions open would write a million
// session ends and disconnect records before it exits: minutes, while its
// clients wait to reconnect elsewhere or to its successor. Instead it
// writes one stop mark (MarkStopped: the time and the close code), and a
// session still active that connected before a mark reads as ended at the
// first mark after its start (Sessions applies it). At the next start,
// CloseActive writes those sessions' ends and disconnect records, stamped
// with the mark, in the background, and deletes the marks.

// stopMarkPrefix starts the keys of the stop marks in the index database:
// then the mark's time (big-endian nanoseconds); the value is the close
// code.
var stopMarkPrefix = []byte{spaceMeta, 's'}

// stopMark is one stop of the node: sessions active at it ended then,
// with code.
type stopMark struct {
	at   int64
	code int
}

// closeActiveChunk is how many sessions CloseActive ends per commit: it
// waits for each group to be written, so that the records of the
// connections being served meanwhile never wait behind a million of its
// own.
const closeActiveChunk = 1000

// MarkStopped records that the node stopped at `at`: every session still
// active then ended then, with close code code. It commits what is queued
// first.
func (s *Store) MarkStopped(at time.Time, code int) error {
	if s.opts.ReadOnly || s.q.isClosing() {
		return ErrClosed
	}
	if err := s.Barrier(); err != nil {
		return err
	}
	m := stopMark{at: unixNano(at), code: code}
	k := appendU64(slices.Clone(stopMarkPrefix), uint64(m.at))
	if !s.reading() {
		return ErrClosed
	}
	err := s.db.Set(k, binary.BigEndian.AppendUint16(nil, uint16(code)), pebble.Sync)
	s.dbMu.RUnlock()
	if err != nil {
		return err
	}
	s.updateStopMarks(func(marks []stopMark) []stopMark { return append(marks, m) })
	return nil
}

// loadStopMarks reads the stop marks at open.
func (s *Store) loadStopMarks() error {
	var marks []stopMark
	err := s.scanRange(stopMarkPrefix, []byte{spaceMeta, 's' + 1}, func(k, v []byte) (bool, error) {
		if len(k) == len(stopMarkPrefix)+8 && len(v) == 2 {
			marks = append(marks, stopMark{at: int64(binary.BigEndian.Uint64(k[len(stopMarkPrefix):])), code: int(binary.BigEndian.Uint16(v))})
		}
		return false, nil
	})
	s.updateStopMarks(func([]stopMark) []stopMark { return marks })
	return err
}

// updateStopMarks makes f's result, in time order, the marks queries
// apply; f gets a copy of the current ones. Every change of the marks
// goes through it, one at a time: the agent's MarkStopped may come while
// CloseActive still runs.
func (s *Store) updateStopMarks(f func([]stopMark) []stopMark) {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	marks := f(slices.Clone(s.stopMarks()))
	slices.SortFunc(marks, func(a, b stopMark) int { return cmp.Compare(a.at, b.at) })
	s.marks.Store(&marks)
}

func (s *Store) stopMarks() []stopMark {
	if p := s.marks.Load(); p != nil {
		return *p
	}
	return nil
}

// endedByStop ends an active session that connected before a stop mark
// at the first mark after its start, with the mark's code; it reports
// whether it did.
func endedByStop(marks []stopMark, se *Session) bool {
	if !se.Active() {
		return false
	}
	c := unixNano(se.Connected)
	i, _ := slices.BinarySearchFunc(marks, c+1, func(m stopMark, c int64) int { return cmp.Compare(m.at, c) })
	if i == len(marks) {
		return false
	}
	se.Disconnected, se.CloseCode = time.Unix(0, marks[i].at).UTC(), marks[i].code
	return true
}

// CloseActive ends every session still active that connected before
// `before` (the node's start: they belong to earlier runs), audits its
// disconnect like the end of a live session, deletes the stop marks, and
// returns how many sessions it ended. A session ends at the first stop
// mark after its start, with the mark's code; without one (the run did
// not stop cleanly) at `before`, with code. It commits in groups of
// closeActiveChunk and returns ctx's error once ctx is done; what it
// did not end yet, the next call ends.
func (s *Store) CloseActive(ctx context.Context, before time.Time, code int) (int, error) {
	if s.opts.ReadOnly || s.q.isClosing() {
		return 0, ErrClosed
	}
	// Until they are written, the sessions it ends read as ended already:
	// a mark at `before`, kept in memory only, ends those no stop ended.
	s.updateStopMarks(func(marks []stopMark) []stopMark {
		return append(marks, stopMark{at: unixNano(before), code: code})
	})
	marks := s.stopMarks()
	lo, hi := []byte{spaceActive}, sessionKey(nil, spaceActive, unixNano(before), "")
	n := 0
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		keys, err := s.activeKeys(lo, hi, closeActiveChunk)
		if err != nil {
			return n, err
		}
		// This group is read while the writer commits the one before.
		ended, err := s.leftovers(keys, marks)
		if err == nil {
			err = s.Barrier()
		}
		if err != nil {
			return n, err
		}
		if len(keys) == 0 {
			return n, s.dropStopMarks(before)
		}
		for i := range ended {
			se := &ended[i]
			s.PutSession(se)
			s.Append(&Record{Time: se.Disconnected, Node: se.Node, Worker: se.Worker, Conn: se.Conn, User: se.User, Op: OpDisconnect, Code: se.CloseCode}, nil)
		}
		n += len(ended)
		lo = append(keys[len(keys)-1], 0)
	}
}

// activeKeys returns up to max active markers in [lo, hi).
func (s *Store) activeKeys(lo, hi []byte, max int) ([][]byte, error) {
	if !s.reading() {
		return nil, ErrClosed
	}
	defer s.dbMu.RUnlock()
	var keys [][]byte
	err := s.scanRange(lo, hi, func(k, _ []byte) (bool, error) {
		keys = append(keys, slices.Clone(k))
		return len(keys) == max, nil
	})
	return keys, err
}

// leftovers returns the sessions of active markers keys, ended by marks;
// those gone or unreadable are left out. The keys are in order, and so
// are their sessions: one iterator seeks from each to the next, reading
// each table block once (a Get per key decompressed it again and again).
// An error of the iterator stops it: the sessions it did not read would
// otherwise lose their marks.
func (s *Store) leftovers(keys [][]byte, marks []stopMark) ([]Session, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	if !s.reading() {
		return nil, ErrClosed
	}
	defer s.dbMu.RUnlock()
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceSession}, UpperBound: []byte{spaceSession + 1}})
	if err != nil {
		return nil, err
	}
	ended := make([]Session, 0, len(keys))
	var sk []byte
	for _, k := range keys {
		sk = append(append(sk[:0], spaceSession), k[1:]...)
		if !it.SeekGE(sk) || !bytes.Equal(it.Key(), sk) {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return nil, err
		}
		var se Session
		if decodeSession(v, &se) == nil && endedByStop(marks, &se) {
			ended = append(ended, se)
		}
	}
	return ended, it.Close()
}

// dropStopMarks deletes the stop marks before `before`, whose sessions
// are all ended now.
func (s *Store) dropStopMarks(before time.Time) error {
	b := unixNano(before)
	if !s.reading() {
		return ErrClosed
	}
	err := s.db.DeleteRange(stopMarkPrefix, appendU64(slices.Clone(stopMarkPrefix), uint64(b)), pebble.Sync)
	s.dbMu.RUnlock()
	if err != nil {
		return err
	}
	s.updateStopMarks(func(marks []stopMark) []stopMark {
		return slices.DeleteFunc(marks, func(m stopMark) bool { return m.at <= b })
	})
	return nil
}
