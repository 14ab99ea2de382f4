package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSessionCoalescing holds the writer in its commit so that updates of
// one session pile up, and checks they are written once, as the last.
func TestSessionCoalescing(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), Options{Registerer: reg})
	start := pastHour()
	release := holdWriter(t, s)
	s.PutSession(&Session{Conn: "other", Connected: start})
	waitFor(t, "the writer to take the first group", func() bool {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		return s.q.held.len() == 0
	})
	s.q.mu.Lock()
	queued := s.q.queued
	s.q.mu.Unlock()

	se := Session{Conn: "c1", User: "alice", Connected: start.Add(time.Minute)}
	for i := range 100 {
		se.Channels = append(se.Channels, fmt.Sprintf("ch%d", i))
		s.PutSession(&se)
	}
	// Two changes of user merged into one write: the session stays listed
	// under every user it had.
	se.User = "bob"
	s.PutSession(&se)
	se.User = "carol"
	se.Disconnected, se.CloseCode = start.Add(time.Hour), 1000
	s.PutSession(&se)

	s.q.mu.Lock()
	pending, added := s.q.held.len(), s.q.queued-queued
	s.q.mu.Unlock()
	if pending != 1 || added != 1 {
		t.Fatalf("102 updates of one session queued %d items (%d pending), want 1", added, pending)
	}
	release()
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	ss := sessionsAll(t, s, SessionQuery{})
	if len(ss) != 2 || ss[1].Conn != "c1" {
		t.Fatalf("sessions: %+v", ss)
	}
	if got := ss[1]; got.Active() || got.CloseCode != 1000 || len(got.Channels) != 100 || got.Channels[99] != "ch99" {
		t.Fatalf("coalesced session stored as %+v", got)
	}
	if ss[1].User != "carol" {
		t.Fatalf("user %q, want the last one", ss[1].User)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if ss := sessionsAll(t, s, SessionQuery{User: u}); len(ss) != 1 || ss[0].Conn != "c1" {
			t.Errorf("sessions of %s: %+v", u, ss)
		}
	}
	// Two groups: "other", then the 102 updates as one write.
	if n := gather(t, reg, "zenconn_audit_batch_records"); n != 2 {
		t.Errorf("%v group commits, want 2", n)
	}
}

// TestBackpressure fills a tiny queue: the writer is held in its commit
// until appenders have blocked, and then nothing may be lost.
func TestBackpressure(t *testing.T) {
	for _, tc := range []struct {
		name              string
		queueLimit, group int
	}{
		{"queue4", 4, 0},
		{"queue4-group3", 4, 3},
		{"queue1-group1", 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := openStore(t, t.TempDir(), Options{Sync: SyncNone, QueueLimit: tc.queueLimit, MaxGroup: tc.group, Registerer: reg})
			release := holdWriter(t, s)
			const writers, each = 4, 2500
			var wg sync.WaitGroup
			var doneCalls, errs atomic.Int64
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						r := Record{Op: OpPublish, User: fmt.Sprint(w), Channel: "bp", Data: fmt.Appendf(nil, "%d/%d", w, i)}
						s.Append(&r, func(err error) {
							if err != nil {
								errs.Add(1)
							}
							doneCalls.Add(1)
						})
						if i%100 == 0 {
							s.PutSession(&Session{Conn: fmt.Sprintf("%d/%d", w, i), User: fmt.Sprint(w)})
						}
					}
				})
			}
			waitFor(t, "an appender to block", func() bool {
				return gather(t, reg, "zenconn_audit_backpressure_total") > 0
			})
			release()
			wg.Wait()
			if err := s.Barrier(); err != nil {
				t.Fatal(err)
			}
			if doneCalls.Load() != writers*each || errs.Load() != 0 {
				t.Fatalf("done called %d times, %d errors; want %d, 0", doneCalls.Load(), errs.Load(), writers*each)
			}
			recs := auditAll(t, s, AuditQuery{Limit: MaxLimit})
			if len(recs) != writers*each {
				t.Fatalf("%d records, want %d", len(recs), writers*each)
			}
			seen := map[string]bool{}
			next := make([]int, writers)
			for i, r := range recs {
				if r.Seq != uint64(i+1) || (i > 0 && r.Time.Before(recs[i-1].Time)) {
					t.Fatalf("record %d: seq %d time %v after %v", i, r.Seq, r.Time, recs[max(i-1, 0)].Time)
				}
				seen[string(r.Data)] = true
				// Each writer's records are in its append order.
				var w, n int
				fmt.Sscanf(string(r.Data), "%d/%d", &w, &n)
				if n != next[w] {
					t.Fatalf("writer %d: record %d where %d was due", w, n, next[w])
				}
				next[w]++
			}
			if len(seen) != writers*each {
				t.Fatalf("%d distinct records, want %d", len(seen), writers*each)
			}
			for w := range writers {
				if n := len(auditAll(t, s, AuditQuery{User: fmt.Sprint(w), Limit: MaxLimit})); n != each {
					t.Fatalf("user %d: %d records, want %d", w, n, each)
				}
			}
			if n := len(sessionsAll(t, s, SessionQuery{Limit: MaxLimit})); n != writers*each/100 {
				t.Fatalf("%d sessions, want %d", n, writers*each/100)
			}
		})
	}
}

// TestCloseUnblocksAppend closes the store while an Append waits for room.
func TestCloseUnblocksAppend(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, err := Open(t.TempDir(), Options{QueueLimit: 1, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	release := holdWriter(t, s)
	results := make(chan string, 3)
	s.Append(&Record{Op: "first"}, func(err error) { results <- fmt.Sprint("first ", err) })
	waitFor(t, "the writer to take the first record", func() bool {
		s.q.mu.Lock()
		defer s.q.mu.Unlock()
		return len(s.q.records) == 0
	})
	s.Append(&Record{Op: "second"}, func(err error) { results <- fmt.Sprint("second ", err) })
	go s.Append(&Record{Op: "third"}, func(err error) { results <- fmt.Sprint("third ", err) })
	waitFor(t, "the third Append to block", func() bool {
		return gather(t, reg, "zenconn_audit_backpressure_total") > 0
	})
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	if got := <-results; got != "third "+ErrClosed.Error() {
		t.Fatalf("blocked Append: %q", got)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if a, b := <-results, <-results; a != "first <nil>" || b != "second <nil>" {
		t.Fatalf("queued records: %q, %q", a, b)
	}
}
