package store

import (
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
	if n, err := s.CloseActive(at, 1006); err != nil || n != 1 {
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
