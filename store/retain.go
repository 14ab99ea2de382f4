package store

import (
	"time"
)

// retainLoop trims old records every tenth of the retention period (at
// least every second, at most every minute) until Close.
func (s *Store) retainLoop() {
	defer s.retainWG.Done()
	every := min(max(s.opts.Retention/10, time.Second), time.Minute)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := s.Trim(time.Now().Add(-s.opts.Retention)); err != nil {
			s.log.Error("audit retention", "err", err)
		}
		select {
		case <-t.C:
		case <-s.stop:
			return
		}
	}
}

// Trim deletes audit records older than cutoff and sessions that ended
// before it, with range deletions:
//   - the audit log up to cutoff, exactly;
//   - index hours wholly before cutoff (entries of the cutoff's own hour
//     stay until the next hour is trimmed; queries skip them);
//   - sessions that started before cutoff, except those still active or
//     ended after cutoff, which are written back in the same batch (a
//     later write in a batch wins over its range deletion).
func (s *Store) Trim(cutoff time.Time) error {
	c := cutoff.UnixNano()
	if c <= 0 {
		return nil
	}
	hour := hourOf(c)
	if !s.reading() {
		return ErrClosed
	}
	defer s.dbMu.RUnlock()
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	// Sessions to keep among those that started before the cutoff.
	var keep []Session
	err := s.scanRange([]byte{spaceSession}, sessionKey(nil, spaceSession, c, ""), func(_, v []byte) (bool, error) {
		var se Session
		if err := decodeSession(v, &se); err != nil {
			return false, nil
		}
		if se.Active() || !se.Disconnected.Before(cutoff) {
			keep = append(keep, se)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	lb := s.logdb.NewBatch()
	_ = lb.DeleteRange([]byte{spaceAudit}, auditKey(nil, c, 0), nil)
	b := s.db.NewBatch()
	for _, sp := range []byte{spaceChanIndex, spaceUserIndex, spaceSessionUser} {
		_ = b.DeleteRange([]byte{sp}, indexPrefix(nil, sp, hour, "")[:5], nil)
	}
	_ = b.DeleteRange([]byte{spaceSession}, sessionKey(nil, spaceSession, c, ""), nil)
	_ = b.DeleteRange([]byte{spaceActive}, sessionKey(nil, spaceActive, c, ""), nil)
	var key, val []byte
	for i := range keep {
		writeSession(b, &keep[i], &key, &val)
	}
	// The log first (commitBoth): index entries left without their record
	// are skipped by queries.
	if err := commitBoth(lb, b, s.commitOpt()); err != nil {
		return err
	}
	s.m.trimmed.Inc()
	return nil
}
