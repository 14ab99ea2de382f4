package store

import (
	"context"
	"io/fs"
	"path/filepath"
	"time"
)

// The disk quota. quotaLoop measures the folder's databases every
// quotaEvery, and sooner when the writer has committed a sixteenth of the
// quota since the last measure; past the quota it trims the oldest
// records (and the sessions that ended before them) until the estimate of
// what remains is three quarters of the quota, then compacts the trimmed
// range so that its files are deleted at once.
//
// The databases take about 32 MiB whatever they hold (write-ahead logs
// and memtables): a quota must be well above that (MinQuota).
const (
	quotaEvery    = time.Second
	quotaLogEvery = time.Minute
	// MinQuota is the smallest Options.Quota that leaves records room.
	MinQuota = 64 << 20
)

// effectiveQuota is Options.Quota bounded by half of dir's filesystem.
func (s *Store) effectiveQuota(dir string) int64 {
	q := s.opts.Quota
	_, total, err := statfs(dir)
	if err != nil || total <= 0 {
		return q
	}
	if half := total / 2; q <= 0 || q > half {
		if q > 0 {
			s.log.Info("audit quota above half of the filesystem; using half", "quota", q, "used", half)
		}
		q = half
	}
	return q
}

// quotaLoop enforces the quota until Close.
func (s *Store) quotaLoop() {
	defer s.retainWG.Done()
	t := time.NewTicker(quotaEvery)
	defer t.Stop()
	for {
		s.enforceQuota()
		select {
		case <-t.C:
		case <-s.quotaKick:
		case <-s.stop:
			return
		}
	}
}

// noteWritten counts n bytes committed, and wakes quotaLoop every
// sixteenth of the quota.
func (s *Store) noteWritten(n int) {
	if s.quota <= 0 {
		return
	}
	if s.written.Add(int64(n)) >= s.quota/16 {
		s.written.Store(0)
		select {
		case s.quotaKick <- struct{}{}:
		default:
		}
	}
}

// diskUsage is the bytes of the files under the store's folder.
func (s *Store) diskUsage() int64 {
	var n int64
	_ = filepath.WalkDir(s.dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// enforceQuota trims the oldest records when the folder is past the quota.
func (s *Store) enforceQuota() {
	used := s.diskUsage()
	s.m.diskBytes.Set(float64(used))
	if used <= s.quota {
		return
	}
	cutoff, err := s.quotaCutoff(used)
	if err != nil || cutoff == 0 {
		if err != nil {
			s.quotaLog.note("used", used, "quota", s.quota, "err", err)
		}
		return
	}
	s.m.quotaTrims.Inc()
	s.quotaLog.note("used", used, "quota", s.quota, "trimmed_before", time.Unix(0, cutoff).UTC().Format(time.RFC3339Nano))
	if err := s.Trim(time.Unix(0, cutoff)); err != nil {
		s.quotaLog.note("err", err)
		return
	}
	if s.reading() {
		defer s.dbMu.RUnlock()
		_ = s.logdb.Compact(context.Background(), []byte{spaceAudit}, auditKey(nil, cutoff, 0), false)
	}
}

// quotaCutoff returns the time (Unix ns) before which the oldest records
// must go for the folder, using used bytes, to come down to three quarters
// of the quota; 0 when nothing need go. Only the log database's tables can
// go: what the rest takes (write-ahead logs, the index database) stays.
func (s *Store) quotaCutoff(used int64) (int64, error) {
	if !s.reading() {
		return 0, ErrClosed
	}
	defer s.dbMu.RUnlock()
	first, ok, err := s.edgeKey(true)
	if err != nil || !ok {
		return 0, err
	}
	last, _, err := s.edgeKey(false)
	if err != nil {
		return 0, err
	}
	lo, hi := first, last+1
	start := auditKey(nil, first, 0)
	size := func(ns int64) int64 {
		n, err := s.logdb.EstimateDiskUsage(start, auditKey(nil, ns, 0))
		if err != nil {
			return 0
		}
		return int64(n)
	}
	// The rest grows for a while under a burst of writes (write-ahead
	// logs waiting for their flush, tables waiting for deletion): counted
	// up to a quarter of the quota, so that a burst does not trim the
	// tables below half of it.
	tables := size(hi)
	rest := min(max(used-tables, 0), s.quota/4)
	need := tables - (s.quota*3/4 - rest)
	if need <= 0 {
		return 0, nil
	}
	for lo < hi {
		mid := lo + (hi-lo)/2
		if size(mid) >= need {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return max(lo, first+1), nil
}
