package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// storedSession reads conn's session key straight from the index database
// (no Barrier, which would write held sessions at once).
func storedSession(t testing.TB, s *Store, connected time.Time, conn string) (Session, bool) {
	t.Helper()
	v, closer, err := s.db.Get(sessionKey(nil, spaceSession, unixNano(connected), conn))
	if errors.Is(err, pebble.ErrNotFound) {
		return Session{}, false
	}
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	var se Session
	if err := decodeSession(v, &se); err != nil {
		t.Fatal(err)
	}
	return se, true
}

// hasActiveMarker reports whether conn's active-session marker is stored.
func hasActiveMarker(t testing.TB, s *Store, connected time.Time, conn string) bool {
	t.Helper()
	_, closer, err := s.db.Get(sessionKey(nil, spaceActive, unixNano(connected), conn))
	if errors.Is(err, pebble.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	closer.Close()
	return true
}

// waitRecords waits until the log database holds n audit records.
func waitRecords(t testing.TB, s *Store, n int) {
	t.Helper()
	waitFor(t, fmt.Sprint(n, " records"), func() bool {
		it, err := s.logdb.NewIter(&pebble.IterOptions{LowerBound: []byte{spaceAudit}, UpperBound: []byte{spaceAudit + 1}})
		if err != nil {
			t.Fatal(err)
		}
		defer it.Close()
		got := 0
		for it.First(); it.Valid(); it.Next() {
			got++
		}
		return got >= n
	})
}

// TestSessionHold: in the batch mode a session's changes wait a sync
// interval after the first, so a connection opened and closed within it
// is written once, closed, and never gets an active marker; records are
// not held; a Barrier (every query) writes held sessions at once.
func TestSessionHold(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncBatch, SyncInterval: time.Hour})
	at := pastHour()
	se := Session{Conn: "short", Connected: at}
	s.PutSession(&se)
	s.Append(&Record{Conn: "short", Op: OpConnect}, nil)
	waitRecords(t, s, 1)
	if _, ok := storedSession(t, s, at, "short"); ok {
		t.Fatal("an open session was written before its hold ended")
	}
	se.Channels = []string{"news"}
	s.PutSession(&se)
	se.Disconnected, se.CloseCode = at.Add(time.Second), 1000
	s.PutSession(&se)
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	got, ok := storedSession(t, s, at, "short")
	if !ok || got.Active() || got.CloseCode != 1000 || !slices.Equal(got.Channels, []string{"news"}) {
		t.Fatalf("after Barrier: %+v, stored %v; want the closed session", got, ok)
	}
	if hasActiveMarker(t, s, at, "short") {
		t.Fatal("a session closed within its hold left an active marker")
	}

	// A session still open when its hold ends is written, with its marker,
	// without a Barrier.
	s2 := openStore(t, t.TempDir(), Options{Sync: SyncBatch, SyncInterval: 20 * time.Millisecond})
	s2.PutSession(&Session{Conn: "long", Connected: at})
	waitFor(t, "the held session to be written", func() bool {
		_, ok := storedSession(t, s2, at, "long")
		return ok
	})
	if !hasActiveMarker(t, s2, at, "long") {
		t.Fatal("an open session was written without its active marker")
	}
}

// TestSessionHoldAlways: SyncAlways holds nothing.
func TestSessionHoldAlways(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncAlways, SyncInterval: time.Hour})
	at := pastHour()
	s.PutSession(&Session{Conn: "c", Connected: at})
	waitFor(t, "the session to be written", func() bool {
		_, ok := storedSession(t, s, at, "c")
		return ok
	})
}

// TestSessionHoldFullQueue: held sessions count in the queue; producers
// waiting for room make the writer write them rather than hang.
func TestSessionHoldFullQueue(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncBatch, SyncInterval: time.Hour, QueueLimit: 8})
	at := pastHour()
	for i := range 8 { // a full queue
		s.PutSession(&Session{Conn: fmt.Sprint("c", i), Connected: at})
	}
	time.Sleep(50 * time.Millisecond) // the writer is back waiting
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 8; i < 50; i++ {
			s.PutSession(&Session{Conn: fmt.Sprint("c", i), Connected: at})
		}
		s.Append(&Record{Op: OpConnect}, nil)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("PutSession hung with the queue full of held sessions")
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	if n := len(sessionsAll(t, s, SessionQuery{})); n != 50 {
		t.Fatalf("%d sessions, want 50", n)
	}
}

// TestSessionHoldFormerUsers: a user replaced while the session is held
// is still indexed.
func TestSessionHoldFormerUsers(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncBatch, SyncInterval: time.Hour})
	at := pastHour()
	se := Session{Conn: "c", User: "alice", Connected: at}
	s.PutSession(&se)
	se.User = "bob"
	s.PutSession(&se)
	// The writer commits a group while the session is held.
	s.Append(&Record{Op: OpConnect}, nil)
	waitRecords(t, s, 1)
	if _, ok := storedSession(t, s, at, "c"); ok {
		t.Fatal("the session was not held")
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if ss, _, err := s.Sessions(SessionQuery{User: u}); err != nil || len(ss) != 1 || ss[0].User != "bob" {
			t.Fatalf("Sessions(user=%s) = %+v, %v", u, ss, err)
		}
	}
}

// TestSessionHoldUnit: the held sessions as plain data: merging keeps the
// first change's place and time and collects replaced users; dueBy and
// takeInto hand over the oldest first.
func TestSessionHoldUnit(t *testing.T) {
	h := newSessionHold()
	h.add(&Session{Conn: "a", User: "alice", Channels: []string{"x"}}, 10)
	h.add(&Session{Conn: "b"}, 20)
	if h.merge(&Session{Conn: "c"}) {
		t.Fatal("merge of a session not held reported true")
	}
	chans := []string{"x", "y"}
	if !h.merge(&Session{Conn: "a", User: "bob", Channels: chans}) || !h.merge(&Session{Conn: "a", User: "carol", Channels: chans}) {
		t.Fatal("merge of a held session reported false")
	}
	chans[0] = "changed" // the hold keeps its own copy
	h.add(&Session{Conn: "c"}, 30)
	if h.len() != 3 || h.oldest() != 10 {
		t.Fatalf("len %d, oldest %d; want 3, 10", h.len(), h.oldest())
	}
	for limit, want := range map[int64]int{9: 0, 10: 1, 19: 1, 20: 2, 100: 3} {
		if got := h.dueBy(limit); got != want {
			t.Errorf("dueBy(%d) = %d, want %d", limit, got, want)
		}
	}
	var g group
	h.takeInto(2, &g)
	if len(g.sessions) != 2 || g.sessions[0].Conn != "a" || g.sessions[1].Conn != "b" {
		t.Fatalf("took %+v", g.sessions)
	}
	if a := g.sessions[0]; a.User != "carol" || !slices.Equal(a.Channels, []string{"x", "y"}) {
		t.Fatalf("merged session %+v", a)
	}
	if !slices.Equal(g.former[0], []string{"alice", "bob"}) || g.former[1] != nil {
		t.Fatalf("former users %q", g.former)
	}
	if h.len() != 1 || h.oldest() != 30 || len(h.latest) != 1 || len(h.former) != 0 {
		t.Fatalf("left: order %q since %v, %d latest, %d former", h.order, h.since, len(h.latest), len(h.former))
	}
}

// indexDeletions flushes the index database and counts the deletions
// (tombstones) in its tables.
func indexDeletions(t testing.TB, s *Store) uint64 {
	t.Helper()
	if err := s.db.Flush(); err != nil {
		t.Fatal(err)
	}
	levels, err := s.db.SSTables(pebble.WithProperties())
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, tables := range levels {
		for _, tb := range tables {
			n += tb.Properties.NumDeletions
		}
	}
	return n
}

// TestSessionHoldNoTombstone: a session opened (First) and closed within
// its hold is written once and deletes no active marker, so the index
// database gets no tombstone; a session whose marker was written gets it
// deleted when it closes.
func TestSessionHoldNoTombstone(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncBatch, SyncInterval: time.Hour})
	at := pastHour()
	se := Session{Conn: "short", Connected: at, First: true}
	s.PutSession(&se)
	se.First, se.Channels = false, []string{"news"}
	s.PutSession(&se)
	se.Disconnected, se.CloseCode = at.Add(time.Second), 1000
	s.PutSession(&se)
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	if got, ok := storedSession(t, s, at, "short"); !ok || got.Active() || got.First {
		t.Fatalf("stored %+v, %v; want the closed session, First false", got, ok)
	}
	if n := indexDeletions(t, s); n != 0 {
		t.Fatalf("%d deletions in the index database after a session closed within its hold; want none", n)
	}

	long := Session{Conn: "long", Connected: at, First: true}
	s.PutSession(&long)
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	if !hasActiveMarker(t, s, at, "long") {
		t.Fatal("an open session was written without its active marker")
	}
	long.First, long.Disconnected, long.CloseCode = false, at.Add(time.Second), 1000
	s.PutSession(&long)
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	if hasActiveMarker(t, s, at, "long") {
		t.Fatal("a closed session kept its active marker")
	}
	if n := indexDeletions(t, s); n != 1 {
		t.Fatalf("%d deletions in the index database; want the one of the closed session's marker", n)
	}
}
