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
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	if want == "" {
		atPublishAcked(t, c, channel, n, data)
		return data
	}
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

// atPublishAcked publishes n messages one at a time, each acked before the
// next, and publishes again after a while one the node answers with
// "overloaded" (its ring to the agent is full: a loaded machine), as a
// client is told to.
func atPublishAcked(t *testing.T, c *ibConn, channel string, n int, data string) {
	t.Helper()
	for i := 1; i <= n; i++ {
		for try := 0; ; try++ {
			if err := wkWrite(c, fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":"%d%s"}`, i, channel, i, data)); err != nil {
				t.Fatal(err)
			}
			m := c.readJSONWithin(20 * time.Second)
			if m.Op == "ack" {
				break
			}
			if m.Code != "overloaded" || try == 100 {
				t.Fatalf("publish %d on %s answered %s (try %d)", i, channel, m, try+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
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

// atProcCPU is the CPU time process pid has used.
func atProcCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return time.Duration(ut+st) * time.Second / 100 // clock ticks (USER_HZ 100)
}

// TestAttackAuditDiskFull: the data folder's filesystem fills up under a
// node with --audit-sync always. The node neither spins nor floods its
// log, acknowledges no publish without its record (the publishes wait,
// then new ones are refused as overloaded), /api/audit answers 503 rather
// than 502, and everything resumes once space returns, without a restart.
func TestAttackAuditDiskFull(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	// Three times the quota: room for the write-ahead logs and memtables
	// that the flood's backlog passes through once space returns (what a
	// quota does not bound), so that the backlog does not fill the disk
	// again by itself.
	if err := syscall.Mount("tmpfs", data, "tmpfs", 0, "size=192m"); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(data, syscall.MNT_DETACH) })
	s := startServerIn(t, root, nil, nil, "--api-key", ibAPIKey, "--audit-sync", "always", "--audit-quota", "64MiB")
	c := ibDialJSON(t, s, "")
	c.ok(1, `{"id":1,"op":"publish","channel":"df","data":"before"}`)

	ballast := atFill(t, data, 1<<20)
	for i := 2; i <= 11; i++ {
		if err := wkWrite(c, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"df","data":%d}`, i, i)); err != nil {
			t.Fatal(err)
		}
	}
	if f, err := c.nextE(time.Second); err == nil {
		t.Fatalf("on a full disk a durable publish was answered: %s", describeIB(f))
	}
	cpu0, lines0 := atProcCPU(t, s.cmd.Process.Pid), strings.Count(s.Stderr.String(), "\n")
	time.Sleep(2 * time.Second)
	cpu, lines := atProcCPU(t, s.cmd.Process.Pid)-cpu0, strings.Count(s.Stderr.String(), "\n")-lines0
	t.Logf("full disk: %v CPU and %d log lines in 2 s", cpu, lines)
	if cpu > 500*time.Millisecond || lines > 4 {
		t.Errorf("full disk: %v CPU and %d log lines in 2 s; want a node at rest", cpu, lines)
	}
	if !strings.Contains(s.Stderr.String(), "audit log paused") {
		t.Error("nothing logged about the full disk")
	}
	if status, b, err := auTryGet(s, "/api/audit?channel=df"); err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("/api/audit on a full disk: %d %s %v; want 503", status, b, err)
	}
	if status, _, b := apiCall(t, s, "POST", "/api/publish", ibAPIKey, `{"channel":"df","data":"api"}`); status != http.StatusServiceUnavailable {
		t.Errorf("POST /api/publish on a full disk: %d %s; want 503", status, b)
	}
	// A flood of publishes from another client: the queue and the rings
	// fill, and publishes are refused as overloaded, never acknowledged.
	f := ibDialJSON(t, s, "")
	overloaded := atFlood(t, f, 200000)
	t.Logf("%d publishes refused as overloaded", overloaded)
	if overloaded == 0 {
		t.Error("no publish refused as overloaded on a full disk")
	}

	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 2; i <= 11; i++ {
		m := c.readJSONWithin(10 * time.Second)
		if m.Op != "ack" || string(m.ID) != strconv.Itoa(i) {
			t.Fatalf("after space returned: %s, want ack %d", m, i)
		}
	}
	t.Logf("acknowledged %v after space returned", time.Since(start))
	// The flood's backlog drains first: retry while overloaded.
	for try := 0; ; try++ {
		c.send(`{"id":12,"op":"publish","channel":"df","data":"after"}`)
		m := c.readJSONWithin(10 * time.Second)
		if m.Op == "ack" {
			break
		}
		if m.Code != "overloaded" || try == 100 {
			t.Fatalf("a publish after recovery answered %s", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if recs := auAudit(t, s, "channel=df&op=publish"); len(recs) != 12 {
		t.Errorf("%d publish records on df, want 12", len(recs))
	}
}

// atFill writes a ballast file in dir until its filesystem has at most
// leave bytes free, and returns its path.
func atFill(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := st.Bavail * uint64(st.Bsize)
		if free <= leave {
			return path
		}
		if _, err := f.Write(buf[:min(uint64(len(buf)), max(free-leave, 4096))]); err != nil {
			return path
		}
	}
}

// atFlood sends n small publishes with ids from c without waiting, then
// reads the answers for up to 5 s and returns how many were overloaded
// errors; any ack fails the test (the disk is full).
func atFlood(t *testing.T, c *ibConn, n int) int {
	t.Helper()
	go func() {
		for i := 1; i <= n; i++ {
			if wkWrite(c, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"flood","data":%d}`, i, i)) != nil {
				return
			}
		}
	}()
	overloaded := 0
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		f, err := c.nextE(time.Until(deadline))
		if err != nil {
			break
		}
		m, err := ibParseJSON(f.p)
		switch {
		case err != nil:
			t.Fatal(err)
		case m.Op == "ack":
			t.Fatalf("a publish acknowledged on a full disk: %s", m)
		case m.Code == "overloaded":
			overloaded++
		}
	}
	return overloaded
}
