package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Query limits: records (or sessions) per page, and the bytes of a page
// rendered as JSON (see pageBudget).
const (
	DefaultLimit    = 100
	MaxLimit        = 1000
	DefaultMaxBytes = 4 << 20
)

// ErrBadCursor is returned for a cursor this store did not produce.
var ErrBadCursor = errors.New("store: invalid cursor")

func beU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// ParseTime reads a query time: RFC 3339 (with or without fractional
// seconds) or Unix milliseconds; "" is the zero time.
func ParseTime(v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errors.New("not an RFC 3339 time or Unix milliseconds")
	}
	return t, nil
}

// AuditQuery selects audit records. Zero fields do not filter.
type AuditQuery struct {
	Channel, User, Op string
	Since, Until      time.Time // Since inclusive, Until exclusive
	Limit             int       // default DefaultLimit, at most MaxLimit
	// MaxBytes bounds the page's size in JSON (estimated from above);
	// a page holds at least one record. Default DefaultMaxBytes.
	MaxBytes int
	Cursor   string // Next of the previous page
}

// Audit returns records in time order and the cursor of the next page
// ("" when there is none).
func (s *Store) Audit(q AuditQuery) ([]Record, string, error) {
	return s.AuditContext(context.Background(), q)
}

// AuditContext is Audit that gives up with ctx's error once ctx is done.
func (s *Store) AuditContext(ctx context.Context, q AuditQuery) ([]Record, string, error) {
	if !s.reading() {
		return nil, "", ErrClosed
	}
	defer s.dbMu.RUnlock()
	lo, hi, after, err := q.bounds()
	if err != nil {
		return nil, "", err
	}
	if lo >= hi {
		return []Record{}, "", nil
	}
	p := auditPage{q: &q, limit: clampLimit(q.Limit), after: after, budget: newPageBudget(ctx, q.MaxBytes)}
	p.out = make([]Record, 0, min(p.limit, 64))
	switch {
	case q.Channel != "":
		err = s.scanIndex(spaceChanIndex, q.Channel, lo, hi, p.take)
	case q.User != "":
		err = s.scanIndex(spaceUserIndex, q.User, lo, hi, p.take)
	default:
		err = s.scanRange(auditKey(nil, lo, 0), auditKey(nil, hi, 0), p.take)
	}
	s.visited.Add(int64(p.budget.visits))
	if err != nil {
		return nil, "", fmt.Errorf("store: audit query: %w", err)
	}
	next := ""
	if p.more {
		next = base64.RawURLEncoding.EncodeToString(p.lastKey[1:])
	}
	return p.out, next, nil
}

// bounds returns the query's time range [lo, hi) in Unix ns, and the key
// of the last record already returned (from the cursor; nil without one).
func (q *AuditQuery) bounds() (lo, hi int64, after []byte, err error) {
	if !q.Since.IsZero() {
		lo = max(q.Since.UnixNano(), 0)
	}
	hi = int64(1<<63 - 1)
	if !q.Until.IsZero() {
		hi = q.Until.UnixNano()
	}
	if q.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || len(c) != 16 {
			return 0, 0, nil, ErrBadCursor
		}
		after = append([]byte{spaceAudit}, c...)
		lo = max(lo, int64(beU64(c[:8])))
	}
	return lo, hi, after, nil
}

// matches reports whether r passes the query's filters.
func (q *AuditQuery) matches(r *Record) bool {
	return (q.Channel == "" || r.Channel == q.Channel) &&
		(q.User == "" || r.User == q.User) &&
		(q.Op == "" || r.Op == q.Op)
}

// auditPage collects one page of an audit query from a scan of the log or
// of an index.
type auditPage struct {
	q       *AuditQuery
	limit   int
	after   []byte // key of the last record of the previous page
	out     []Record
	more    bool   // a match past the page was seen, or MaxScan keys
	lastKey []byte // key of the last record in out, or the last visited
	budget  pageBudget
}

// take is the scan's callback for audit key k and value v.
func (p *auditPage) take(k, v []byte) (stop bool, err error) {
	if err := p.budget.visit(); err != nil {
		return true, err
	}
	if p.after != nil && bytes.Compare(k, p.after) <= 0 {
		return false, nil
	}
	var r Record
	if err := decodeRecord(k, v, &r); err != nil {
		return false, err
	}
	if !p.q.matches(&r) {
		if p.budget.skipEnds() {
			p.more = true
			p.lastKey = append(p.lastKey[:0], k...)
			return true, nil
		}
		return false, nil
	}
	if len(p.out) == p.limit || !p.budget.fits(recordCost(&r), len(p.out)) {
		p.more = true
		return true, nil
	}
	p.out = append(p.out, r)
	p.lastKey = append(p.lastKey[:0], k...)
	return false, nil
}

// dbFor returns the database holding the keys of space sp.
func (s *Store) dbFor(sp byte) *pebble.DB {
	if sp == spaceAudit {
		return s.logdb
	}
	return s.db
}

// scanRange calls fn for each key in [lo, hi) until it says stop; lo and
// hi are in one key space.
func (s *Store) scanRange(lo, hi []byte, fn func(k, v []byte) (bool, error)) error {
	it, err := s.dbFor(lo[0]).NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return err
		}
		stop, err := fn(it.Key(), v)
		if err != nil || stop {
			_ = it.Close()
			return err
		}
	}
	return it.Close()
}

// scanIndex walks the index of name in space, hour by hour from lo to hi,
// and calls fn with each referenced audit record that still exists.
func (s *Store) scanIndex(space byte, name string, lo, hi int64, fn func(k, v []byte) (bool, error)) error {
	first, last := hourOf(lo), hourOf(hi-1)
	if fk, ok, err := s.edgeKey(true); err != nil {
		return err
	} else if ok {
		first = max(first, hourOf(fk))
	} else {
		return nil // no records: do not walk every hour since 1970
	}
	if lk, ok, err := s.edgeKey(false); err != nil {
		return err
	} else if ok {
		last = min(last, hourOf(lk))
	}
	pk := make([]byte, 0, 17)
	for h := first; h <= last && h >= first; h++ {
		prefix := indexPrefix(nil, space, h, name)
		lower := appendU64(slices.Clone(prefix), uint64(lo))
		upper := appendU64(slices.Clone(prefix), uint64(hi))
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) != len(prefix)+16 {
				continue
			}
			pk = append(append(pk[:0], spaceAudit), k[len(prefix):]...)
			v, closer, err := s.logdb.Get(pk)
			if errors.Is(err, pebble.ErrNotFound) {
				continue // trimmed by retention, or lost with a power cut
			}
			if err != nil {
				_ = it.Close()
				return err
			}
			stop, ferr := fn(pk, v)
			_ = closer.Close()
			if ferr != nil || stop {
				_ = it.Close()
				return ferr
			}
		}
		if err := it.Close(); err != nil {
			return err
		}
	}
	return nil
}

// edgeKey returns the time of the first (or last) audit record.
func (s *Store) edgeKey(first bool) (int64, bool, error) {
	it, err := s.logdb.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceAudit}, UpperBound: []byte{spaceAudit + 1}})
	if err != nil {
		return 0, false, err
	}
	defer it.Close()
	ok := false
	if first {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	if !ok || len(it.Key()) != 17 {
		return 0, false, it.Error()
	}
	return int64(beU64(it.Key()[1:9])), true, nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultLimit
	case n > MaxLimit:
		return MaxLimit
	}
	return n
}

// SessionQuery selects sessions. Zero fields do not filter.
type SessionQuery struct {
	User     string
	Active   *bool
	Limit    int
	MaxBytes int // as in AuditQuery
	Cursor   string
}

// Sessions returns sessions in order of connection time and the cursor of
// the next page ("" when there is none).
func (s *Store) Sessions(q SessionQuery) ([]Session, string, error) {
	return s.SessionsContext(context.Background(), q)
}

// SessionsContext is Sessions that gives up with ctx's error once ctx is
// done.
func (s *Store) SessionsContext(ctx context.Context, q SessionQuery) ([]Session, string, error) {
	if !s.reading() {
		return nil, "", ErrClosed
	}
	defer s.dbMu.RUnlock()
	limit := clampLimit(q.Limit)
	var after []byte // the 's' key of the last session returned
	if q.Cursor != "" {
		c, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil || len(c) < 8 {
			return nil, "", ErrBadCursor
		}
		after = append([]byte{spaceSession}, c...)
	}
	p := sessionPage{active: q.Active, limit: limit, after: after, marks: s.stopMarks(), budget: newPageBudget(ctx, q.MaxBytes)}
	p.out = make([]Session, 0, min(limit, 64))
	take := p.take
	from := []byte{spaceSession}
	if after != nil {
		from = after
	}
	var err error
	switch {
	case q.User != "":
		err = s.scanSessionIndex(q.User, after, take)
		slices.SortFunc(p.out, func(a, b Session) int { return a.Connected.Compare(b.Connected) })
	case q.Active != nil && *q.Active:
		lo := []byte{spaceActive}
		if after != nil {
			lo = append([]byte{spaceActive}, after[1:]...)
		}
		err = s.scanRange(lo, []byte{spaceActive + 1}, func(k, _ []byte) (bool, error) {
			return s.follow(append([]byte{spaceSession}, k[1:]...), take)
		})
	default:
		err = s.scanRange(from, []byte{spaceSession + 1}, take)
	}
	s.visited.Add(int64(p.budget.visits))
	if err != nil {
		return nil, "", fmt.Errorf("store: session query: %w", err)
	}
	next := ""
	if p.more {
		next = base64.RawURLEncoding.EncodeToString(p.lastKey[1:])
	}
	return p.out, next, nil
}

// sessionPage collects one page of a session query from a scan of the
// sessions, of the active markers or of a user's index.
type sessionPage struct {
	active  *bool
	limit   int
	after   []byte // the 's' key of the last session of the previous page
	marks   []stopMark
	out     []Session
	more    bool   // a match past the page was seen, or MaxScan keys
	lastKey []byte // 's' key of the last session in out, or the last visited
	budget  pageBudget
}

// take is the scan's callback for session key sk and value v.
func (p *sessionPage) take(sk, v []byte) (bool, error) {
	if err := p.budget.visit(); err != nil {
		return true, err
	}
	if p.after != nil && bytes.Compare(sk, p.after) <= 0 {
		return false, nil
	}
	var se Session
	if err := decodeSession(v, &se); err != nil {
		return false, err
	}
	endedByStop(p.marks, &se)
	// Through the user index a session is listed under every user it
	// had, so its latest user need not match.
	if p.active != nil && *p.active != se.Active() {
		if p.budget.skipEnds() {
			p.more = true
			p.lastKey = append(p.lastKey[:0], sk...)
			return true, nil
		}
		return false, nil
	}
	if len(p.out) == p.limit || !p.budget.fits(sessionCost(&se), len(p.out)) {
		p.more = true
		return true, nil
	}
	p.out = append(p.out, se)
	p.lastKey = append(p.lastKey[:0], sk...)
	return false, nil
}

// follow reads session key sk and passes it to fn; a missing session is
// skipped.
func (s *Store) follow(sk []byte, fn func(k, v []byte) (bool, error)) (bool, error) {
	v, closer, err := s.db.Get(sk)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return true, err
	}
	defer closer.Close()
	return fn(sk, v)
}

// scanSessionIndex walks the user's session index hour by hour.
func (s *Store) scanSessionIndex(user string, after []byte, fn func(k, v []byte) (bool, error)) error {
	first := uint32(0)
	if after != nil {
		first = hourOf(int64(beU64(after[1:9])))
	}
	// Hours run from the first session on; find it.
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceSession}, UpperBound: []byte{spaceSession + 1}})
	if err != nil {
		return err
	}
	var lo, hi uint32
	if it.First() && len(it.Key()) >= 9 {
		lo = hourOf(int64(beU64(it.Key()[1:9])))
	}
	if it.Last() && len(it.Key()) >= 9 {
		hi = hourOf(int64(beU64(it.Key()[1:9])))
	}
	if err := it.Close(); err != nil {
		return err
	}
	first = max(first, lo)
	for h := first; h <= hi && h >= first; h++ {
		prefix := indexPrefix(nil, spaceSessionUser, h, user)
		stop := false
		err := s.scanRange(prefix, prefixEnd(prefix), func(k, _ []byte) (bool, error) {
			sk := append([]byte{spaceSession}, k[len(prefix):]...)
			st, err := s.follow(sk, fn)
			stop = st
			return st, err
		})
		if err != nil || stop {
			return err
		}
	}
	return nil
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := slices.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
