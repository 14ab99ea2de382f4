package store

import (
	"errors"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// commitOpt is how commits are written: fsynced with SyncAlways, else
// left to syncLoop or the operating system.
func (s *Store) commitOpt() *pebble.WriteOptions {
	if s.opts.Sync == SyncAlways {
		return pebble.Sync
	}
	return pebble.NoSync
}

// commitBoth commits a group's batch of the log database and its batch of
// the index database, then closes them. With fsync the two commits run
// side by side, so the group waits for one fsync's time, not two.
func commitBoth(lb, b *pebble.Batch, opt *pebble.WriteOptions) error {
	defer lb.Close()
	defer b.Close()
	if opt != pebble.Sync {
		if err := lb.Commit(opt); err != nil {
			return err
		}
		return b.Commit(opt)
	}
	lerr := make(chan error, 1)
	go func() { lerr <- lb.Commit(opt) }()
	err := b.Commit(opt)
	return errors.Join(<-lerr, err)
}

// syncLoop fsyncs the write-ahead log every SyncInterval when something
// was committed since the last sync (SyncBatch), and once more when the
// writer has stopped.
func (s *Store) syncLoop() {
	defer close(s.syncDone)
	t := time.NewTicker(s.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if s.unsynced.Swap(false) {
				s.syncWAL()
			}
		case <-s.writerDone:
			if s.unsynced.Swap(false) {
				s.syncWAL()
			}
			return
		}
	}
}

func (s *Store) syncWAL() {
	start := time.Now()
	// The log first: an index ahead of its records only points at
	// records a query skips; records ahead of their index are indexed
	// again at the next Open.
	for _, db := range []*pebble.DB{s.logdb, s.db} {
		if err := db.LogData(nil, pebble.Sync); err != nil {
			s.log.Error("audit fsync failed", "err", err)
			return
		}
	}
	s.m.fsync.Observe(time.Since(start).Seconds())
}
