package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
)

// openStore opens a store in dir and closes it when the test ends (a
// test that closes it itself gets ErrClosed from the cleanup, ignored).
func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// appendAll appends every record, then waits for the commit.
func appendAll(t testing.TB, s *Store, recs []Record) {
	t.Helper()
	for i := range recs {
		s.Append(&recs[i], nil)
	}
	if err := s.Barrier(); err != nil {
		t.Fatalf("Barrier: %v", err)
	}
}

// auditAll pages through q with its Limit and returns every record,
// checking that only the last page is short and has no cursor.
func auditAll(t testing.TB, s *Store, q AuditQuery) []Record {
	t.Helper()
	limit := clampLimit(q.Limit)
	var all []Record
	for page := 0; ; page++ {
		if page > 100000 {
			t.Fatalf("%+v: too many pages", q)
		}
		recs, next, err := s.Audit(q)
		if err != nil {
			t.Fatalf("Audit(%+v): %v", q, err)
		}
		all = append(all, recs...)
		if next == "" {
			return all
		}
		if len(recs) != limit {
			t.Fatalf("Audit(%+v): page %d has %d records and a next cursor, want %d", q, page, len(recs), limit)
		}
		q.Cursor = next
	}
}

// sessionsAll pages through q like auditAll.
func sessionsAll(t testing.TB, s *Store, q SessionQuery) []Session {
	t.Helper()
	limit := clampLimit(q.Limit)
	var all []Session
	for page := 0; ; page++ {
		if page > 100000 {
			t.Fatalf("%+v: too many pages", q)
		}
		ss, next, err := s.Sessions(q)
		if err != nil {
			t.Fatalf("Sessions(%+v): %v", q, err)
		}
		all = append(all, ss...)
		if next == "" {
			return all
		}
		if len(ss) != limit {
			t.Fatalf("Sessions(%+v): page %d has %d sessions and a next cursor, want %d", q, page, len(ss), limit)
		}
		q.Cursor = next
	}
}

// gather returns the value of the counter (or the sample count of the
// histogram) named name.
func gather(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// holdWriter stops the writer in its next commit until release is called
// (at the latest when the test ends, before the store is closed).
func holdWriter(t testing.TB, s *Store) (release func()) {
	s.writeMu.Lock()
	release = sync.OnceFunc(s.writeMu.Unlock)
	t.Cleanup(release)
	return release
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pastHour is a whole hour well in the past, so that records set hours
// after it are still in the past and their keys grow with the append order.
func pastHour() time.Time {
	return time.Now().Add(-48 * time.Hour).Truncate(time.Hour).UTC()
}

func fullRecord(i int, at time.Time) Record {
	return Record{
		Time:    at,
		Node:    "node-1",
		Worker:  i%3 - 1,
		Conn:    fmt.Sprintf("c%d", i),
		User:    fmt.Sprintf("user-%d", i%2),
		Op:      OpRefused,
		Channel: "chan/" + fmt.Sprint(i%2),
		Data:    []byte(fmt.Sprintf(`{"i":%d}`, i)),
		Opaque:  i%2 == 1,
		Attempt: OpPublish,
		Error:   "forbidden",
		Remote:  "127.0.0.1:4242",
		Code:    1000 + i,
	}
}

func TestAppendRoundTrip(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	base := pastHour()
	want := make([]Record, 5)
	for i := range want {
		want[i] = fullRecord(i, base.Add(time.Duration(i)*time.Minute))
		r := want[i]
		r.Data = slices.Clone(r.Data)
		s.Append(&r, nil)
		// The store copied Data: scribbling over the caller's bytes
		// after Append must not show in the stored record.
		for j := range r.Data {
			r.Data[j] = 'X'
		}
		want[i].Seq = uint64(i + 1)
		// A refused attempt keeps the size and hash of its data, not
		// the data.
		want[i].DataSize, want[i].DataHash, want[i].Data = len(want[i].Data), sha256.Sum256(want[i].Data), nil
	}
	// A record with no data, no channel and no user.
	want = append(want, Record{Time: base.Add(time.Hour), Seq: 6, Node: "node-1", Worker: -1, Op: OpBroadcast})
	s.Append(&Record{Time: want[5].Time, Node: "node-1", Worker: -1, Op: OpBroadcast}, nil)
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	got, next, err := s.Audit(AuditQuery{})
	if err != nil || next != "" {
		t.Fatalf("Audit: next %q, err %v", next, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("records differ\n got %+v\nwant %+v", got, want)
	}
}

func TestAppendSetsTimeAndOrder(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	before := time.Now()
	s.Append(&Record{Op: OpPublish}, nil)
	// A record dated before the previous one is moved up to it, so that
	// the log's keys (time, seq) grow in commit order.
	s.Append(&Record{Op: OpAuth, Time: before.Add(-time.Hour)}, nil)
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	got, _, err := s.Audit(AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("got %d records, want 2", len(got))
	}
	if got[0].Time.Before(before) || got[0].Time.After(after) {
		t.Errorf("zero Time became %v, want between %v and %v", got[0].Time, before, after)
	}
	if !got[1].Time.Equal(got[0].Time) || got[1].Seq != got[0].Seq+1 {
		t.Errorf("back-dated record got (%v, %d), want (%v, %d)", got[1].Time, got[1].Seq, got[0].Time, got[0].Seq+1)
	}
}

func TestSessionLifecycle(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	start := pastHour().Add(17 * time.Minute)
	se := Session{Conn: "c1", Node: "n", Worker: 2, User: "alice", Remote: "10.0.0.1:1", UserAgent: "ua",
		Protocol: "json", Connected: start}
	get := func() Session {
		t.Helper()
		if err := s.Barrier(); err != nil {
			t.Fatal(err)
		}
		ss, _, err := s.Sessions(SessionQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ss) != 1 {
			t.Fatalf("got %d sessions, want 1", len(ss))
		}
		return ss[0]
	}
	s.PutSession(&se)
	if got := get(); !got.Active() || got.CloseCode != 0 || len(got.Channels) != 0 || got.User != "alice" ||
		got.UserAgent != "ua" || got.Protocol != "json" || got.Worker != 2 || !got.Connected.Equal(start) {
		t.Fatalf("open session stored as %+v", got)
	}

	se.Channels = append(se.Channels, "news", "chat")
	s.PutSession(&se)
	se.Channels[0] = "mutated by the caller" // PutSession copied Channels
	se.Channels[0] = "news"
	if got := get(); !slices.Equal(got.Channels, []string{"news", "chat"}) {
		t.Fatalf("channels stored as %q", got.Channels)
	}

	se.User = "bob"
	s.PutSession(&se)
	if got := get(); got.User != "bob" {
		t.Fatalf("user stored as %q", got.User)
	}

	se.Disconnected, se.CloseCode = start.Add(90*time.Minute), 1001
	s.PutSession(&se)
	got := get()
	if got.Active() || got.CloseCode != 1001 || !got.Disconnected.Equal(se.Disconnected) {
		t.Fatalf("closed session stored as %+v", got)
	}
	active := true
	if ss, _, err := s.Sessions(SessionQuery{Active: &active}); err != nil || len(ss) != 0 {
		t.Fatalf("active sessions after close: %v %v", ss, err)
	}
	// The user index lists a session under every user it had.
	for _, u := range []string{"alice", "bob"} {
		if ss, _, err := s.Sessions(SessionQuery{User: u}); err != nil || len(ss) != 1 || ss[0].User != "bob" {
			t.Fatalf("Sessions(user=%s) = %+v, %v", u, ss, err)
		}
	}
}

func TestCloseActive(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	start := pastHour()
	ended := start.Add(2 * time.Hour)
	sessions := []Session{
		{Conn: "a", User: "alice", Connected: start, Channels: []string{"x"}},
		{Conn: "b", User: "bob", Connected: start.Add(time.Minute)},
		{Conn: "c", User: "carol", Connected: start.Add(2 * time.Minute), Disconnected: ended, CloseCode: 1000},
		{Conn: "d", Connected: start.Add(3 * time.Hour)},
	}
	for i := range sessions {
		s.PutSession(&sessions[i])
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	at := time.Now().UTC()
	n, err := s.CloseActive(context.Background(), at, 1012)
	if err != nil || n != 3 {
		t.Fatalf("CloseActive = %d, %v; want 3, nil", n, err)
	}
	got := sessionsAll(t, s, SessionQuery{})
	if len(got) != 4 {
		t.Fatalf("got %d sessions, want 4", len(got))
	}
	for _, se := range got {
		if se.Conn == "c" {
			if se.CloseCode != 1000 || !se.Disconnected.Equal(ended) {
				t.Errorf("closed session changed: %+v", se)
			}
			continue
		}
		if se.Active() || se.CloseCode != 1012 || !se.Disconnected.Equal(at) {
			t.Errorf("session %s after CloseActive: %+v", se.Conn, se)
		}
	}
	if got[0].Channels[0] != "x" || got[0].User != "alice" {
		t.Errorf("CloseActive lost the session's fields: %+v", got[0])
	}
	active := true
	if ss, _, err := s.Sessions(SessionQuery{Active: &active}); err != nil || len(ss) != 0 {
		t.Fatalf("active sessions after CloseActive: %v %v", ss, err)
	}
	if n, err := s.CloseActive(context.Background(), at, 1012); err != nil || n != 0 {
		t.Fatalf("second CloseActive = %d, %v; want 0, nil", n, err)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Sync: SyncBatch})
	if err != nil {
		t.Fatal(err)
	}
	base := pastHour()
	recs := make([]Record, 50)
	for i := range recs {
		recs[i] = Record{Time: base.Add(time.Duration(i) * time.Minute), Op: OpPublish, Channel: "news", User: "u",
			Data: []byte(fmt.Sprint(i))}
	}
	appendAll(t, s, recs)
	s.PutSession(&Session{Conn: "c1", User: "u", Connected: base, Channels: []string{"news"}})
	s.PutSession(&Session{Conn: "c2", User: "v", Connected: base.Add(time.Hour), Disconnected: base.Add(2 * time.Hour), CloseCode: 1000})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, Options{Sync: SyncBatch})
	got := auditAll(t, s, AuditQuery{Limit: 7})
	if len(got) != 50 || got[49].Seq != 50 || string(got[49].Data) != "49" {
		t.Fatalf("after reopen: %d records, last %+v", len(got), got[len(got)-1])
	}
	ss := sessionsAll(t, s, SessionQuery{})
	if len(ss) != 2 || ss[0].Conn != "c1" || !ss[0].Active() || ss[1].CloseCode != 1000 {
		t.Fatalf("sessions after reopen: %+v", ss)
	}
	// The sequence continues: 50 more records give 100, none overwritten.
	more := make([]Record, 50)
	for i := range more {
		more[i] = Record{Op: OpPublish, Channel: "news", User: "u"}
	}
	appendAll(t, s, more)
	got = auditAll(t, s, AuditQuery{Limit: 1000})
	if len(got) != 100 {
		t.Fatalf("after more appends: %d records, want 100", len(got))
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
	}
	if n := len(auditAll(t, s, AuditQuery{Channel: "news", Limit: 1000})); n != 100 {
		t.Fatalf("channel index after reopen: %d records, want 100", n)
	}
}

func TestReadOnly(t *testing.T) {
	t.Run("no database", func(t *testing.T) {
		for _, dir := range []string{t.TempDir(), t.TempDir() + "/missing"} {
			s, err := Open(dir, Options{ReadOnly: true})
			if err == nil {
				s.Close()
				t.Fatalf("ReadOnly Open(%s) of a folder without a database succeeded", dir)
			}
			if !strings.HasPrefix(err.Error(), "store: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		}
	})

	t.Run("closed store", func(t *testing.T) {
		dir := t.TempDir()
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		base := pastHour()
		appendAll(t, s, []Record{{Time: base, Op: OpPublish, Channel: "news", User: "u"},
			{Time: base.Add(time.Hour), Op: OpSubscribe, Channel: "news", User: "v"}})
		s.PutSession(&Session{Conn: "c1", User: "u", Connected: base})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		ro := openStore(t, dir, Options{ReadOnly: true})
		if got := auditAll(t, ro, AuditQuery{Channel: "news"}); len(got) != 2 {
			t.Fatalf("read-only channel query: %d records", len(got))
		}
		if got := auditAll(t, ro, AuditQuery{User: "v"}); len(got) != 1 || got[0].Op != OpSubscribe {
			t.Fatalf("read-only user query: %+v", got)
		}
		if got := sessionsAll(t, ro, SessionQuery{User: "u"}); len(got) != 1 {
			t.Fatalf("read-only session query: %+v", got)
		}
		var calls atomic.Int32
		var gotErr error
		ro.Append(&Record{Op: OpPublish}, func(err error) { calls.Add(1); gotErr = err })
		if calls.Load() != 1 || !errors.Is(gotErr, ErrClosed) {
			t.Fatalf("read-only Append: done called %d times with %v, want once with ErrClosed", calls.Load(), gotErr)
		}
		ro.Append(&Record{Op: OpPublish}, nil) // must not hang
		ro.PutSession(&Session{Conn: "c2"})    // must not hang
		if err := ro.Barrier(); err != nil {   // nor this
			t.Fatal(err)
		}
		if n, err := ro.CloseActive(context.Background(), time.Now(), 1001); !errors.Is(err, ErrClosed) {
			t.Errorf("read-only CloseActive = %d, %v; want ErrClosed", n, err)
		}
		if got := sessionsAll(t, ro, SessionQuery{}); len(got) != 1 || !got[0].Active() {
			t.Fatalf("read-only store changed: %+v", got)
		}
		if err := ro.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ro.Close(); !errors.Is(err, ErrClosed) {
			t.Fatalf("second Close = %v, want ErrClosed", err)
		}
	})
}

// TestOpenWhileOpen opens a folder that a Store of this process holds.
func TestOpenWhileOpen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{})
	appendAll(t, s, []Record{{Op: OpPublish}})
	if s2, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("read-write Open of a folder in use = %v, want ErrLocked", err)
	}
	// Pebble takes the folder's lock for read-only opens too, so a folder
	// in use cannot be opened to query it.
	if s2, err := Open(dir, Options{ReadOnly: true}); !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Fatalf("read-only Open of a folder in use = %v, want ErrLocked", err)
	}
	// The failed opens left the holder working.
	appendAll(t, s, []Record{{Op: OpPublish}})
	if got := auditAll(t, s, AuditQuery{}); len(got) != 2 {
		t.Fatalf("%d records, want 2", len(got))
	}
}

// TestOpenLockedByProcess opens a folder that a child process holds.
func TestOpenLockedByProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), holdEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("child did not get ready: %q %v", line, err)
	}
	for _, ro := range []bool{false, true} {
		if s, err := Open(dir, Options{ReadOnly: ro}); !errors.Is(err, ErrLocked) {
			if err == nil {
				s.Close()
			}
			t.Errorf("Open(ReadOnly: %v) of a folder another process holds = %v, want ErrLocked", ro, err)
		}
	}
	stdin.Close()
	rest, _ := out.ReadString(0)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v %s", err, rest)
	}
	// Released by the child: the folder opens again.
	s := openStore(t, dir, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSyncModes(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncBatch, SyncNone} {
		t.Run(mode.String(), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s, err := Open(t.TempDir(), Options{Sync: mode, SyncInterval: 5 * time.Millisecond, Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			const writers, each = 4, 300
			calls := make([]atomic.Int32, writers*each)
			var bad atomic.Int32
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						n := w*each + i
						s.Append(&Record{Op: OpPublish, Channel: "c", Data: []byte(fmt.Sprint(n))}, func(err error) {
							if err != nil {
								bad.Add(1)
							}
							calls[n].Add(1)
						})
					}
				})
			}
			wg.Wait()
			if err := s.Barrier(); err != nil {
				t.Fatal(err)
			}
			for n := range calls {
				if c := calls[n].Load(); c != 1 {
					t.Fatalf("done of record %d called %d times before Barrier returned", n, c)
				}
			}
			if bad.Load() != 0 {
				t.Fatalf("%d done callbacks got an error", bad.Load())
			}
			if got := gather(t, reg, "zenconn_audit_records_total"); got != writers*each {
				t.Errorf("records_total = %v, want %d", got, writers*each)
			}
			if mode == SyncAlways && gather(t, reg, "zenconn_audit_fsync_seconds") == 0 {
				t.Errorf("SyncAlways observed no fsync")
			}
			if mode == SyncBatch {
				waitFor(t, "a batch fsync", func() bool { return gather(t, reg, "zenconn_audit_fsync_seconds") > 0 })
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for n := range calls {
				if c := calls[n].Load(); c != 1 {
					t.Fatalf("done of record %d called %d times", n, c)
				}
			}
			var after []error
			s.Append(&Record{Op: OpPublish}, func(err error) { after = append(after, err) })
			if len(after) != 1 || !errors.Is(after[0], ErrClosed) {
				t.Fatalf("Append after Close: done got %v, want [ErrClosed]", after)
			}
			s.PutSession(&Session{Conn: "late"}) // dropped, must not hang
			if err := s.Barrier(); err != nil {
				t.Fatalf("Barrier after Close = %v", err)
			}
			if err := s.Close(); !errors.Is(err, ErrClosed) {
				t.Fatalf("second Close = %v, want ErrClosed", err)
			}
			// Close unregistered the metrics: a new store can register.
			s2 := openStore(t, t.TempDir(), Options{Registerer: reg})
			s2.Close()
		})
	}
}

func TestParseSyncMode(t *testing.T) {
	for _, m := range []SyncMode{SyncAlways, SyncBatch, SyncNone} {
		if got, err := ParseSyncMode(m.String()); err != nil || got != m {
			t.Errorf("ParseSyncMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseSyncMode("sometimes"); err == nil || !strings.HasPrefix(err.Error(), "store: ") {
		t.Errorf("ParseSyncMode(sometimes) = %v", err)
	}
}

func TestTrim(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	base := pastHour()
	cutoff := base.Add(3*time.Hour + 30*time.Minute)
	var recs []Record
	for h := range 6 {
		for _, m := range []int{0, 10, 29, 30, 31, 50} {
			at := base.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
			recs = append(recs, Record{Time: at, Op: OpPublish, Channel: []string{"news", "chat"}[m%2], User: "u" + fmt.Sprint(h%2)})
		}
	}
	appendAll(t, s, recs)
	ended := func(d time.Duration) time.Time { return base.Add(d) }
	sessions := []Session{
		{Conn: "ended-before", User: "alice", Connected: base, Disconnected: ended(time.Hour), CloseCode: 1000},
		{Conn: "ended-at-cutoff", User: "alice", Connected: base.Add(time.Minute), Disconnected: cutoff, CloseCode: 1000},
		{Conn: "active-old", User: "alice", Connected: base.Add(2 * time.Minute), Channels: []string{"news"}},
		{Conn: "ended-after", User: "bob", Connected: base.Add(3 * time.Minute), Disconnected: ended(5 * time.Hour), CloseCode: 1001},
		{Conn: "new", User: "bob", Connected: base.Add(4 * time.Hour)},
		{Conn: "active-cutoff-hour", User: "carol", Connected: base.Add(3*time.Hour + time.Minute)},
	}
	for i := range sessions {
		s.PutSession(&sessions[i])
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	if err := s.Trim(cutoff); err != nil {
		t.Fatal(err)
	}

	var want []Record
	for i, r := range recs {
		if !r.Time.Before(cutoff) {
			r.Seq = uint64(i + 1)
			want = append(want, r)
		}
	}
	for _, q := range []AuditQuery{
		{}, {Limit: 1}, {Channel: "news"}, {Channel: "chat", Limit: 2}, {User: "u1"}, {User: "u0", Limit: 3},
		{Channel: "news", Since: base}, {User: "u1", Until: base.Add(5 * time.Hour)},
	} {
		got := auditAll(t, s, q)
		exp := filterRecords(want, q)
		if !sameRecords(got, exp) {
			t.Errorf("after Trim, Audit(%+v) = %s, want %s", q, seqs(got), seqs(exp))
		}
	}
	// Index hours wholly before the cutoff are gone (but for the entries
	// of the three sessions kept, written back); the cutoff's own hour
	// stays until the next trim.
	for sp, want := range map[byte]int{spaceChanIndex: 0, spaceUserIndex: 0, spaceSessionUser: 3} {
		keys := 0
		err := s.scanRange([]byte{sp}, indexPrefix(nil, sp, hourOf(cutoff.UnixNano()), "")[:5], func(_, _ []byte) (bool, error) {
			keys++
			return false, nil
		})
		if err != nil || keys != want {
			t.Errorf("space %c: %d index keys before the cutoff's hour (%v), want %d", sp, keys, err, want)
		}
	}

	conns := func(ss []Session) []string {
		var out []string
		for _, se := range ss {
			out = append(out, se.Conn)
		}
		return out
	}
	active, inactive := true, false
	for _, tc := range []struct {
		q    SessionQuery
		want []string
	}{
		{SessionQuery{}, []string{"ended-at-cutoff", "active-old", "ended-after", "active-cutoff-hour", "new"}},
		{SessionQuery{Limit: 1}, []string{"ended-at-cutoff", "active-old", "ended-after", "active-cutoff-hour", "new"}},
		{SessionQuery{Active: &active}, []string{"active-old", "active-cutoff-hour", "new"}},
		{SessionQuery{Active: &inactive}, []string{"ended-at-cutoff", "ended-after"}},
		{SessionQuery{User: "alice"}, []string{"ended-at-cutoff", "active-old"}},
		{SessionQuery{User: "alice", Active: &active}, []string{"active-old"}},
		{SessionQuery{User: "bob", Limit: 1}, []string{"ended-after", "new"}},
		{SessionQuery{User: "carol"}, []string{"active-cutoff-hour"}},
	} {
		if got := conns(sessionsAll(t, s, tc.q)); !slices.Equal(got, tc.want) {
			t.Errorf("after Trim, Sessions(%+v) = %q, want %q", tc.q, got, tc.want)
		}
	}
	ss := sessionsAll(t, s, SessionQuery{User: "alice", Active: &active})
	if len(ss) != 1 || !slices.Equal(ss[0].Channels, []string{"news"}) || !ss[0].Connected.Equal(sessions[2].Connected) {
		t.Errorf("kept session rewritten as %+v", ss)
	}

	// A second trim at the same cutoff changes nothing; appends go on.
	if err := s.Trim(cutoff); err != nil {
		t.Fatal(err)
	}
	if got := auditAll(t, s, AuditQuery{}); !sameRecords(got, want) {
		t.Errorf("second Trim: %s, want %s", seqs(got), seqs(want))
	}
	appendAll(t, s, []Record{{Op: OpPublish, Channel: "news"}})
	if got := auditAll(t, s, AuditQuery{Channel: "news"}); len(got) != len(filterRecords(want, AuditQuery{Channel: "news"}))+1 {
		t.Errorf("append after Trim: %s", seqs(got))
	}
	// Trimming everything.
	if err := s.Trim(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, q := range []AuditQuery{{}, {Channel: "news"}, {User: "u1"}} {
		if got := auditAll(t, s, q); len(got) != 0 {
			t.Errorf("after trimming everything, Audit(%+v) = %s", q, seqs(got))
		}
	}
	if got := conns(sessionsAll(t, s, SessionQuery{})); !slices.Equal(got, []string{"active-old", "active-cutoff-hour", "new"}) {
		t.Errorf("after trimming everything, sessions %q", got)
	}
}

func TestRetention(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), Options{Retention: time.Second, Registerer: reg})
	now := time.Now().UTC()
	var recs []Record
	for i := range 10 {
		recs = append(recs, Record{Time: now.Add(-3*time.Hour + time.Duration(i)*time.Minute), Op: OpPublish, Channel: "old", User: "u"})
	}
	// Dated in the future, so that the trims of this test do not reach them.
	for i := range 5 {
		recs = append(recs, Record{Time: now.Add(time.Hour + time.Duration(i)*time.Minute), Op: OpPublish, Channel: "new", User: "u"})
	}
	appendAll(t, s, recs)
	s.PutSession(&Session{Conn: "gone", Connected: now.Add(-3 * time.Hour), Disconnected: now.Add(-2 * time.Hour)})
	s.PutSession(&Session{Conn: "active", User: "u", Connected: now.Add(-3*time.Hour + time.Second)})
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	runs := gather(t, reg, "zenconn_audit_retention_runs_total")
	waitFor(t, "retention to trim the old records", func() bool {
		recs, _, err := s.Audit(AuditQuery{})
		return err == nil && len(recs) == 5 && gather(t, reg, "zenconn_audit_retention_runs_total") > runs
	})
	for _, q := range []AuditQuery{{User: "u"}, {Channel: "new"}} {
		if got := auditAll(t, s, q); len(got) != 5 {
			t.Errorf("Audit(%+v): %d records, want 5", q, len(got))
		}
	}
	if got := auditAll(t, s, AuditQuery{Channel: "old"}); len(got) != 0 {
		t.Errorf("channel of trimmed records: %d records", len(got))
	}
	active := true
	for _, q := range []SessionQuery{{}, {Active: &active}, {User: "u"}} {
		if ss := sessionsAll(t, s, q); len(ss) != 1 || ss[0].Conn != "active" {
			t.Errorf("Sessions(%+v) = %+v", q, ss)
		}
	}
}

// filterRecords is the reference for AuditQuery's filters.
func filterRecords(recs []Record, q AuditQuery) []Record {
	out := []Record{}
	for _, r := range recs {
		if (q.Channel == "" || r.Channel == q.Channel) && (q.User == "" || r.User == q.User) &&
			(q.Op == "" || r.Op == q.Op) && (q.Since.IsZero() || !r.Time.Before(q.Since)) &&
			(q.Until.IsZero() || r.Time.Before(q.Until)) {
			out = append(out, r)
		}
	}
	return out
}

func sameRecords(a, b []Record) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Time.Equal(b[i].Time) || a[i].Seq != b[i].Seq || a[i].Channel != b[i].Channel ||
			a[i].User != b[i].User || a[i].Op != b[i].Op || !bytes.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func seqs(recs []Record) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, r := range recs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, r.Seq)
	}
	b.WriteByte(']')
	return b.String()
}

// TestReindexTail: when the index database lost the end of what the log
// database kept (a power cut between their syncs), Open indexes those
// records again, so channel and user queries find every record.
func TestReindexTail(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Sync: SyncBatch})
	base := pastHour()
	recs := make([]Record, 40)
	for i := range recs {
		recs[i] = Record{Time: base.Add(time.Duration(i) * time.Second), Op: OpPublish, Channel: "news", User: "u"}
	}
	appendAll(t, s, recs)
	// Lose the index entries (and the marker) of the last 15 records, as
	// a power cut would.
	all := auditAll(t, s, AuditQuery{Limit: 1000})
	b := s.db.NewBatch()
	_ = b.Set(metaIndexed, auditKey(nil, all[24].Time.UnixNano(), all[24].Seq)[1:], nil)
	for _, r := range all[25:] {
		ns := r.Time.UnixNano()
		_ = b.Delete(indexKey(nil, spaceChanIndex, r.Channel, ns, r.Seq), nil)
		_ = b.Delete(indexKey(nil, spaceUserIndex, r.User, ns, r.Seq), nil)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if n := len(auditAll(t, s, AuditQuery{Channel: "news", Limit: 1000})); n != 25 {
		t.Fatalf("channel query before reopen: %d records, want the 25 still indexed", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Sync: SyncBatch})
	for _, q := range []AuditQuery{{Channel: "news", Limit: 1000}, {User: "u", Limit: 1000}} {
		if n := len(auditAll(t, s, q)); n != 40 {
			t.Errorf("query %+v after reopen: %d records, want 40", q, n)
		}
	}
}

// TestOpenRefusesOldLayout: a folder holding a single Pebble database (the
// layout before the log and index split) is refused with a clear error,
// not silently shadowed by new databases beside it.
func TestOpenRefusesOldLayout(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{FS: vfs.Default})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		s, err := Open(dir, Options{ReadOnly: ro})
		if err == nil {
			s.Close()
			t.Fatalf("Open(ReadOnly: %v) of an earlier layout succeeded", ro)
		}
		if !strings.Contains(err.Error(), "earlier layout") {
			t.Errorf("Open(ReadOnly: %v): %v, want the earlier layout named", ro, err)
		}
	}
}

// TestCleanCloseLeavesNothingToReindex: the index marker is written every
// 100 ms, and once more when the store closes, so a clean stop is not
// taken for an unclean one at the next Open.
func TestCleanCloseLeavesNothingToReindex(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Sync: SyncBatch})
	for i := range 5 { // several groups within one marker interval
		appendAll(t, s, []Record{{Op: OpPublish, Channel: "news", Data: []byte(fmt.Sprint(i))}})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	s = openStore(t, dir, Options{Sync: SyncBatch, Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if strings.Contains(logged.String(), "indexed again") {
		t.Errorf("a clean close was followed by a reindex: %s", logged.String())
	}
	if n := len(auditAll(t, s, AuditQuery{Channel: "news", Limit: 100})); n != 5 {
		t.Errorf("channel query after reopen: %d records, want 5", n)
	}
}
