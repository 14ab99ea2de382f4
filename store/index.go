package store

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// indexRecord adds r's index entries to b; key is scratch.
func indexRecord(b *pebble.Batch, r *Record, key *[]byte) {
	ns := r.Time.UnixNano()
	if r.Channel != "" {
		*key = indexKey((*key)[:0], spaceChanIndex, r.Channel, ns, r.Seq)
		_ = b.Set(*key, nil, nil)
	}
	if r.User != "" {
		*key = indexKey((*key)[:0], spaceUserIndex, r.User, ns, r.Seq)
		_ = b.Set(*key, nil, nil)
	}
}

// writeSession adds a session's keys to b; key and val are scratch.
func writeSession(b *pebble.Batch, se *Session, key, val *[]byte) {
	c := unixNano(se.Connected)
	*key = sessionKey((*key)[:0], spaceSession, c, se.Conn)
	*val = encodeSession((*val)[:0], se)
	_ = b.Set(*key, *val, nil)
	*key = sessionKey((*key)[:0], spaceActive, c, se.Conn)
	switch {
	case se.Active():
		_ = b.Set(*key, nil, nil)
	case !se.First:
		// A marker may have been set by an earlier write. A session
		// written for the first time already closed never had one: no
		// tombstone (which flushes and compactions would carry).
		_ = b.Delete(*key, nil)
	}
	if se.User != "" {
		*key = sessionUserKey((*key)[:0], se.User, c, se.Conn)
		_ = b.Set(*key, nil, nil)
	}
}

// indexFormerUsers adds to b the user index entries of se under users it
// had before its latest change; key is scratch.
func indexFormerUsers(b *pebble.Batch, se *Session, users []string, key *[]byte) {
	for _, u := range users {
		*key = sessionUserKey((*key)[:0], u, unixNano(se.Connected), se.Conn)
		_ = b.Set(*key, nil, nil)
	}
}

// reindexTail indexes again the audit records after the last one the
// index database says it has: after a power loss the log database may
// have kept a few more records than the index database.
func (s *Store) reindexTail() error {
	from := []byte{spaceAudit}
	v, closer, err := s.db.Get(metaIndexed)
	switch {
	case err == nil:
		if len(v) == 16 {
			from = append(from, v...)
			from = append(from, 0) // just after that record
		}
		_ = closer.Close()
	case !errors.Is(err, pebble.ErrNotFound):
		return fmt.Errorf("store: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	var key, last []byte
	var r Record
	n := 0
	err = s.scanRange(from, []byte{spaceAudit + 1}, func(k, v []byte) (bool, error) {
		if decodeRecord(k, v, &r) != nil {
			return false, nil
		}
		indexRecord(b, &r, &key)
		last = append(last[:0], k[1:]...)
		n++
		return false, nil
	})
	if err != nil || last == nil {
		return err
	}
	_ = b.Set(metaIndexed, last, nil)
	s.log.Info("audit records indexed again after an unclean stop", "records", n)
	return b.Commit(pebble.Sync)
}
