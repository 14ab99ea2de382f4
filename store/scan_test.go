package store

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// pageCosts pages through fetch from its first page and returns the
// items of every page, failing t if a page visits more than MaxScan keys
// and the one after (the store's count) or if paging takes more pages
// than pagesAtMost.
func pageCosts(t *testing.T, s *Store, pagesAtMost int, fetch func(cursor string) (items []string, next string, err error)) []string {
	t.Helper()
	var all []string
	cursor := ""
	for page := 0; ; page++ {
		if page == pagesAtMost {
			t.Fatalf("more than %d pages", pagesAtMost)
		}
		before := s.visited.Load()
		items, next, err := fetch(cursor)
		if err != nil {
			t.Fatal(err)
		}
		if v := s.visited.Load() - before; v > MaxScan+1 {
			t.Fatalf("page %d visited %d keys for %d items, want at most %d", page, v, len(items), MaxScan+1)
		}
		all = append(all, items...)
		if next == "" {
			return all
		}
		cursor = next
	}
}

// TestFilteredPagesAreBounded: 25,000 sessions open and five ended after
// them, and as many audit records of which five are publishes: the pages
// of active=false and of op=publish visit at most MaxScan keys each, end
// early with a cursor when they skip that many, and together list the
// five exactly once.
func TestFilteredPagesAreBounded(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	const open = 25_000
	base := time.Now().Add(-time.Hour)
	for i := range open + 5 {
		se := Session{Conn: fmt.Sprintf("c%06d", i), Node: "n", Connected: base.Add(time.Duration(i) * time.Millisecond)}
		op := OpConnect
		if i >= open {
			se.Disconnected, se.CloseCode, op = se.Connected.Add(time.Second), 1000, OpPublish
		}
		s.PutSession(&se)
		s.Append(&Record{Node: "n", Conn: se.Conn, Op: op, Channel: "ch"}, nil)
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	ended := false
	sessions := pageCosts(t, s, 5, func(cursor string) ([]string, string, error) {
		out, next, err := s.SessionsContext(context.Background(), SessionQuery{Active: &ended, Cursor: cursor, Limit: 2})
		conns := make([]string, len(out))
		for i := range out {
			conns[i] = out[i].Conn
		}
		return conns, next, err
	})
	publishes := pageCosts(t, s, 5, func(cursor string) ([]string, string, error) {
		out, next, err := s.AuditContext(context.Background(), AuditQuery{Op: OpPublish, Cursor: cursor, Limit: 2})
		conns := make([]string, len(out))
		for i := range out {
			conns[i] = out[i].Conn
		}
		return conns, next, err
	})
	want := fmt.Sprint([]string{"c025000", "c025001", "c025002", "c025003", "c025004"})
	if got := fmt.Sprint(sessions); got != want {
		t.Errorf("ended sessions %s, want %s", got, want)
	}
	if got := fmt.Sprint(publishes); got != want {
		t.Errorf("publishes %s, want %s", got, want)
	}
}
