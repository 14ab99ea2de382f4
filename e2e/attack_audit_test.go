package e2e

// Attacks on the audit log: an anonymous client trying to fill the disk
// with refused and oversized publishes, and API queries trying to make the
// node build huge answers, many at once, or answers nobody waits for.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// atDirSize is the bytes of the files under dir.
func atDirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// atPublish sends n publishes of a size-byte JSON string on channel from an
// anonymous connection, ids 1..n, and reads their n answers (each an ack,
// or an error with code want when want is not "").
func atPublish(t *testing.T, s *serverProc, channel string, n, size int, want string) string {
	t.Helper()
	c := ibDialJSON(t, s, "")
	data := strings.Repeat("z", size)
	for i := 1; i <= n; i++ {
		if err := wkWrite(c, fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":"%d%s"}`, i, channel, i, data)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= n; i++ {
		m := c.readJSONWithin(20 * time.Second)
		if (want == "" && m.Op != "ack") || (want != "" && m.Code != want) {
			t.Fatalf("publish %d on %s answered %s", i, channel, m)
		}
	}
	return data
}

// atRecord is the part of an audit record these tests read.
type atRecord struct {
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Size    int             `json:"size"`
	SHA256  string          `json:"sha256"`
}

// atPage is GET /api/audit?query: the status, the records, next and the
// body's length.
func atPage(t *testing.T, s *serverProc, query string) (int, []atRecord, string, int) {
	t.Helper()
	status, b, err := auTryGet(s, "/api/audit?"+query)
	if err != nil {
		t.Fatal(err)
	}
	var page struct {
		Records []atRecord `json:"records"`
		Next    string     `json:"next"`
	}
	if status == http.StatusOK {
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatalf("audit page: %v", err)
		}
	}
	return status, page.Records, page.Next, len(b)
}

// TestAttackAuditDiskFill: an anonymous client sends 1 MiB-class
// publishes, refused (a private channel) and allowed (a public one): the
// refused keep no data, the allowed keep --audit-max-data of it, both with
// the size and SHA-256 of the whole, and the data folder barely grows.
func TestAttackAuditDiskFill(t *testing.T) {
	s := startServer(t, "--api-key", ibAPIKey, "--audit-max-data", "4KiB", "--audit-quota", "64MiB")
	dir := filepath.Join(s.Data, "pebble")
	before := atDirSize(dir)
	const n, size = 60, 800 << 10 // 47 MiB refused and 47 MiB allowed
	data := atPublish(t, s, "private-fill", n, size, "unauthorized")
	atPublish(t, s, "fill", n, size, "")
	grown := atDirSize(dir) - before
	t.Logf("the data folder grew by %d KiB for %d MiB published", grown>>10, 2*n*size>>20)
	if grown > 16<<20 {
		t.Errorf("the data folder grew by %d MiB: refused or oversized data kept", grown>>20)
	}
	whole := fmt.Sprintf("%q", "1"+data)
	sum := sha256.Sum256([]byte(whole))
	_, refused, _, _ := atPage(t, s, "op=refused&channel=private-fill&limit=1")
	if len(refused) != 1 || string(refused[0].Data) != "null" || refused[0].Size != len(whole) || refused[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("refused record %+v: want data null, size %d, sha256 %x", refused, len(whole), sum)
	}
	_, kept, _, _ := atPage(t, s, "op=publish&channel=fill&limit=1")
	var prefix string
	if len(kept) == 1 {
		_ = json.Unmarshal(kept[0].Data, &prefix)
	}
	if len(kept) != 1 || len(prefix) != 4096 || !strings.HasPrefix(whole, prefix) || kept[0].Size != len(whole) || kept[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("published record (%d bytes of data kept) size %v sha256 %v: want 4096 bytes, size %d, sha256 %x",
			len(prefix), kept, "", len(whole), sum)
	}
}

// atSeed fills the audit log with n records of about 60 KiB on channel.
func atSeed(t *testing.T, s *serverProc, channel string, n int) {
	t.Helper()
	atPublish(t, s, channel, n, 60<<10, "")
}

// TestAttackAuditQueryBytes: a page stops at 4 MiB whatever the record
// limit, and the cursor continues to the end.
func TestAttackAuditQueryBytes(t *testing.T) {
	s := startServer(t, "--api-key", ibAPIKey)
	const n = 200 // 12 MiB
	atSeed(t, s, "big", n)
	q := "channel=big&limit=1000"
	seen, pages := 0, 0
	for {
		status, recs, next, size := atPage(t, s, q)
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		if size > 4<<20 {
			t.Fatalf("a page of %d records is %d bytes, more than 4 MiB", len(recs), size)
		}
		seen += len(recs)
		pages++
		if next == "" {
			break
		}
		q = "channel=big&limit=1000&cursor=" + url.QueryEscape(next)
	}
	if seen != n || pages < 3 {
		t.Fatalf("%d records in %d pages, want %d in 3 or more", seen, pages, n)
	}
}

// TestAttackAuditQueryConcurrency: past --audit-max-queries at once,
// queries get 503 with Retry-After, and the others their answer.
func TestAttackAuditQueryConcurrency(t *testing.T) {
	s := startServer(t, "--api-key", ibAPIKey, "--audit-max-queries", "1")
	atSeed(t, s, "big", 100)
	refused := 0
	for round := 0; round < 20 && refused == 0; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", s.URL("/api/audit?channel=big&limit=1000"), nil)
				req.Header.Set("Authorization", "Bearer "+ibAPIKey)
				resp, err := s.HTTP.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				mu.Lock()
				defer mu.Unlock()
				switch {
				case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
					refused++
				case resp.StatusCode != http.StatusOK:
					t.Errorf("status %d", resp.StatusCode)
				}
			}()
		}
		wg.Wait()
	}
	if refused == 0 {
		t.Fatal("8 queries at once, 20 times, with --audit-max-queries 1: none refused")
	}
	if v := atMetric(t, s, "zenconn_api_queries_refused_total"); v < 1 {
		t.Errorf("zenconn_api_queries_refused_total = %v", v)
	}
}

// atMetric reads a counter from the node's /metrics.
func atMetric(t *testing.T, s *serverProc, name string) float64 {
	t.Helper()
	resp, err := s.HTTP.Get(s.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindStringSubmatch(b.String())
	if m == nil {
		t.Fatalf("/metrics has no %s", name)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestAttackAuditQueryCancelled: a query whose client leaves stops where
// it is (asked on the agent's socket, as the worker's proxy does, with a
// client that gives up after a few milliseconds on a query that scans
// every record and matches none).
func TestAttackAuditQueryCancelled(t *testing.T) {
	s := startServer(t, "--api-key", ibAPIKey)
	atSeed(t, s, "big", 300)
	sock := filepath.Join(s.Data, "agent.sock")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	for try := 0; try < 50 && atMetric(t, s, "zenconn_api_queries_abandoned_total") == 0; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(2+try%5)*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://agent/api/audit?op=auth&limit=1", nil)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
		time.Sleep(20 * time.Millisecond)
	}
	if v := atMetric(t, s, "zenconn_api_queries_abandoned_total"); v < 1 {
		t.Fatal("no query stopped when its client left")
	}
}
