package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestCloseActiveAuditsDisconnect: a session left open by a previous run
// gets a disconnect record when it is closed at start, like a session
// that ends while the node runs.
func TestCloseActiveAuditsDisconnect(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	start := pastHour()
	for _, se := range []Session{
		{Conn: "a", Node: "n1", Worker: 2, User: "alice", Connected: start},
		{Conn: "b", Node: "n1", Connected: start, Disconnected: start.Add(time.Minute), CloseCode: 1000},
	} {
		s.PutSession(&se)
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	if n, err := s.CloseActive(context.Background(), at, 1006); err != nil || n != 1 {
		t.Fatalf("CloseActive = %d, %v; want 1, nil", n, err)
	}
	recs, _, err := s.Audit(AuditQuery{Op: OpDisconnect, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d disconnect records, want 1: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.Conn != "a" || r.User != "alice" || r.Node != "n1" || r.Worker != 2 || r.Code != 1006 || !r.Time.Equal(at) {
		t.Errorf("disconnect record %+v; want conn a, alice, node n1, worker 2, code 1006 at %v", r, at)
	}
}

// TestStopMark: a node that stops writes one mark instead of its open
// sessions' ends; until the next start they read as ended at the mark,
// with its code, also from a read-only copy of the folder; at the next
// start CloseActive writes their ends and disconnect records at the mark,
// leaves the new run's sessions open, and drops the mark.
func TestStopMark(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	start := pastHour()
	for _, se := range []Session{
		{Conn: "a", User: "alice", Connected: start, First: true},
		{Conn: "b", User: "bob", Connected: start.Add(time.Minute), First: true},
	} {
		s.PutSession(&se)
	}
	stopped := start.Add(time.Hour)
	if err := s.MarkStopped(stopped, 1001); err != nil {
		t.Fatal(err)
	}
	checkEnded := func(s *Store, what string) {
		t.Helper()
		active := true
		ss, _, err := s.Sessions(SessionQuery{Active: &active})
		if err != nil || len(ss) > 1 || len(ss) == 1 && ss[0].Conn != "new" {
			t.Fatalf("%s: active sessions %+v, %v; want none of the stopped run", what, ss, err)
		}
		for _, se := range sessionsAll(t, s, SessionQuery{}) {
			if se.Conn != "new" && (se.CloseCode != 1001 || !se.Disconnected.Equal(stopped)) {
				t.Errorf("%s: session %+v, want ended at the mark %v with 1001", what, se, stopped)
			}
		}
	}
	checkEnded(s, "after the stop")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(dir, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	checkEnded(ro, "read-only")
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{})
	restarted := time.Now().UTC()
	s.PutSession(&Session{Conn: "new", User: "carol", Connected: restarted.Add(time.Millisecond), First: true})
	if n, err := s.CloseActive(context.Background(), restarted, 1006); err != nil || n != 2 {
		t.Fatalf("CloseActive = %d, %v; want 2, nil", n, err)
	}
	checkEnded(s, "after CloseActive")
	recs, _, err := s.Audit(AuditQuery{Op: OpDisconnect, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("%d disconnect records, want 2: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.Code != 1001 || !r.Time.Equal(stopped) {
			t.Errorf("disconnect record %+v, want 1001 at the mark %v", r, stopped)
		}
	}
	if len(s.stopMarks()) != 0 {
		t.Errorf("marks left after CloseActive: %v", s.stopMarks())
	}
	active := true
	if ss, _, err := s.Sessions(SessionQuery{Active: &active}); err != nil || len(ss) != 1 || ss[0].Conn != "new" {
		t.Fatalf("active sessions %+v, %v; want the new run's only", ss, err)
	}
}

// TestCloseActiveInChunks: more sessions than one commit's group are all
// ended, and a canceled context stops CloseActive with what it ended so
// far kept (the next call ends the rest).
func TestCloseActiveInChunks(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	start := pastHour()
	const total = 2*closeActiveChunk + 7
	for i := range total {
		s.PutSession(&Session{Conn: fmt.Sprintf("c%05d", i), Connected: start.Add(time.Duration(i) * time.Millisecond), First: true})
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if n, err := s.CloseActive(ctx, time.Now(), 1006); !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("canceled CloseActive = %d, %v; want 0, context.Canceled", n, err)
	}
	// Not written yet, they read as ended already.
	active := true
	if ss, _, err := s.Sessions(SessionQuery{Active: &active}); err != nil || len(ss) != 0 {
		t.Fatalf("%d sessions read as active while CloseActive has not written them, %v", len(ss), err)
	}
	if n, err := s.CloseActive(context.Background(), time.Now(), 1006); err != nil || n != total {
		t.Fatalf("CloseActive = %d, %v; want %d, nil", n, err, total)
	}
	if ss, _, err := s.Sessions(SessionQuery{Active: &active}); err != nil || len(ss) != 0 {
		t.Fatalf("%d active sessions left, %v", len(ss), err)
	}
}
