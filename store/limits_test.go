package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestDataCap: data up to MaxData is kept whole; longer data keeps its
// first MaxData bytes, its size and its SHA-256; a refused attempt keeps
// only the size and hash; the API's JSON shows them.
func TestDataCap(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), Options{MaxData: 16, Registerer: reg})
	long := []byte(`{"text":"` + strings.Repeat("x", 100) + `"}`)
	exact := []byte(`"` + strings.Repeat("y", 14) + `"`)
	opaque := make([]byte, 40)
	_, _ = rand.Read(opaque)
	appendAll(t, s, []Record{
		{Op: OpPublish, Channel: "a", Data: long},
		{Op: OpPublish, Channel: "a", Data: exact},
		{Op: OpPublish, Channel: "a", Data: opaque, Opaque: true},
		{Op: OpRefused, Attempt: OpPublish, Channel: "a", Error: "forbidden", Data: long},
	})
	got, _, err := s.Audit(AuditQuery{})
	if err != nil || len(got) != 4 {
		t.Fatalf("Audit: %d records, %v", len(got), err)
	}
	check := func(r Record, data []byte, whole []byte) {
		t.Helper()
		if string(r.Data) != string(data) {
			t.Errorf("%s: data %q, want %q", r.Op, r.Data, data)
		}
		wantSize, wantHash := 0, [32]byte{}
		if whole != nil {
			wantSize, wantHash = len(whole), sha256.Sum256(whole)
		}
		if r.DataSize != wantSize || r.DataHash != wantHash {
			t.Errorf("%s: size %d hash %x, want %d %x", r.Op, r.DataSize, r.DataHash, wantSize, wantHash)
		}
	}
	check(got[0], long[:16], long)
	check(got[1], exact, nil)
	check(got[2], opaque[:16], opaque)
	check(got[3], nil, long)
	if n := gather(t, reg, "zenconn_audit_data_cut_total"); n != 2 {
		t.Errorf("zenconn_audit_data_cut_total = %v, want 2", n)
	}
	// JSON: size and sha256; data is the prefix as a string, null when
	// nothing was kept; and back.
	for i, want := range []string{
		`"data":"{\"text\":\"xxxxxxx","size":111,"sha256":"` + hex.EncodeToString(got[0].DataHash[:]) + `"`,
		`"data":"yyyyyyyyyyyyyy","channel"`,
		`"enc":"base64","size":40,"sha256":"`,
		`"data":null,"size":111,"sha256":"` + hex.EncodeToString(got[3].DataHash[:]) + `"`,
	} {
		b, err := json.Marshal(got[i])
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			want = `"channel":"a","data":"yyyyyyyyyyyyyy"`
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("record %d: %s lacks %s", i, b, want)
		}
		var back Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.DataSize != got[i].DataSize || back.DataHash != got[i].DataHash || string(back.Data) != string(got[i].Data) {
			t.Errorf("record %d: JSON round trip gave %+v, want %+v", i, back, got[i])
		}
	}
}

// TestQuotaTrimsOldestFirst: past the quota the oldest records go, the
// newest stay, and the folder comes back under the quota.
func TestQuotaTrimsOldestFirst(t *testing.T) {
	const quota = MinQuota
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone, Quota: quota, Registerer: reg})
	base := time.Now().Add(-time.Hour)
	data := make([]byte, 32<<10)
	const n = 5000 // 156 MiB of data that does not compress
	for i := range n {
		_, _ = rand.Read(data)
		s.Append(&Record{Time: base.Add(time.Duration(i) * time.Millisecond), Op: OpPublish, Channel: "c", Data: data, Opaque: true}, nil)
		if i%100 == 99 {
			if err := s.Barrier(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.diskUsage() > quota && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if u := s.diskUsage(); u > quota {
		_ = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, _ error) error {
			if fi, err := d.Info(); err == nil && !d.IsDir() {
				t.Logf("%s %d", p, fi.Size())
			}
			return nil
		})
		t.Fatalf("%d bytes used, quota %d", u, quota)
	}
	if gather(t, reg, "zenconn_audit_quota_trims_total") == 0 {
		t.Error("no quota trim counted")
	}
	// The quota loop may still be trimming (it goes down to three quarters
	// of the quota, a tick at a time): read until two reads a quota period
	// apart agree, so that no trim runs between the pages of one read.
	got := auditEvery(t, s)
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); {
		time.Sleep(quotaEvery + 100*time.Millisecond)
		again := auditEvery(t, s)
		if len(again) == len(got) && (len(got) == 0 || again[0].Seq == got[0].Seq) {
			break
		}
		got = again
	}
	if len(got) == 0 || len(got) == n {
		t.Fatalf("%d records left of %d", len(got), n)
	}
	// What is left is the newest records, without a gap.
	for i, r := range got {
		if want := uint64(n - len(got) + i + 1); r.Seq != want {
			t.Fatalf("record %d has seq %d, want %d (oldest first must go)", i, r.Seq, want)
		}
	}
	t.Logf("%d records of %d kept, %d bytes on disk (quota %d)", len(got), n, s.diskUsage(), quota)
}

// TestAuditPageBytes: a page stops at MaxBytes of JSON (at least one
// record), and the cursor continues with the rest.
func TestAuditPageBytes(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	var recs []Record
	for i := range 50 {
		recs = append(recs, Record{Op: OpPublish, Channel: "c", Data: []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("p", 10<<10)))})
	}
	appendAll(t, s, recs)
	const maxBytes = 64 << 10
	q := AuditQuery{Limit: MaxLimit, MaxBytes: maxBytes}
	seen, pages := 0, 0
	for {
		page, next, err := s.Audit(q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(map[string]any{"records": page, "next": next})
		if len(b) > maxBytes {
			t.Fatalf("page of %d records is %d bytes, more than %d", len(page), len(b), maxBytes)
		}
		for _, r := range page {
			if r.Seq != uint64(seen+1) {
				t.Fatalf("seq %d after %d", r.Seq, seen)
			}
			seen++
		}
		pages++
		if next == "" {
			break
		}
		q.Cursor = next
	}
	if seen != 50 || pages < 8 {
		t.Fatalf("%d records in %d pages; want 50 in 8 or more", seen, pages)
	}
	// One record larger than the bound still comes, alone.
	page, next, err := s.Audit(AuditQuery{MaxBytes: 100})
	if err != nil || len(page) != 1 || next == "" {
		t.Fatalf("tiny bound: %d records, next %q, %v", len(page), next, err)
	}
}

// TestQueryStopsWhenCancelled: a query whose context is done stops its
// scan with the context's error.
func TestQueryStopsWhenCancelled(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{SyncInterval: time.Millisecond})
	var recs []Record
	for range 2000 {
		recs = append(recs, Record{Op: OpPublish, Channel: "c"})
	}
	appendAll(t, s, recs)
	for i := range 300 {
		s.PutSession(&Session{Conn: fmt.Sprint(i), Connected: time.Now()})
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Nothing matches: without the context the scan reads every record.
	if _, _, err := s.AuditContext(ctx, AuditQuery{Op: OpAuth}); !errors.Is(err, context.Canceled) {
		t.Errorf("audit: err %v, want context.Canceled", err)
	}
	if _, _, err := s.AuditContext(context.Background(), AuditQuery{Op: OpAuth}); err != nil {
		t.Errorf("audit: %v", err)
	}
	active := false
	if _, _, err := s.SessionsContext(ctx, SessionQuery{Active: &active}); !errors.Is(err, context.Canceled) {
		t.Errorf("sessions: err %v, want context.Canceled", err)
	}
}

// auditEvery reads every audit record of s, page by page (pages bounded
// in bytes as well, unlike auditAll's).
func auditEvery(t *testing.T, s *Store) []Record {
	t.Helper()
	var got []Record
	q := AuditQuery{Limit: MaxLimit}
	for {
		page, next, err := s.Audit(q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page...)
		if next == "" {
			return got
		}
		q.Cursor = next
	}
}
