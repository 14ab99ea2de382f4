package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// smallFS mounts a tmpfs of size bytes in a new folder and unmounts it
// when the test ends; the test is skipped where mounting is not permitted
// (not root, or no CAP_SYS_ADMIN in the container).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("cannot mount a small tmpfs (needs root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a ballast file in dir until the filesystem has at most
// leave bytes free (leave 0: until ENOSPC).
func fill(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "ballast")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		free, _, err := statfs(dir)
		if err != nil {
			t.Fatal(err)
		}
		if free <= leave {
			return path
		}
		n := min(int64(len(buf)), max(free-leave, 4096))
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path
			}
			t.Fatal(err)
		}
	}
}

// countingHandler counts the log lines at warn level and above.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.n.Add(1)
	if r.Level >= slog.LevelError {
		fmt.Fprintln(os.Stderr, "error logged:", r.Message)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// cpuTime is the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestDiskFull: on a full disk the writer pauses (no spin, one log line,
// no record settled, Append blocked once the queue is full), and resumes
// as soon as space returns, without a restart.
func TestDiskFull(t *testing.T) {
	for _, tc := range []struct {
		name    string
		reserve int64 // 0: the default
		leave   int64
	}{
		{"below the reserve", 0, 256 << 10},
		// A group larger than what is free above the reserve: committed,
		// it would meet ENOSPC in Pebble's write-ahead log, which Pebble
		// takes as fatal (the process exits).
		{"group larger than the room", 64 << 10, 512 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) { testDiskFull(t, tc.reserve, tc.leave) })
	}
}

func testDiskFull(t *testing.T, reserve, leave int64) {
	dir := smallFS(t, "48m")
	var warnings atomic.Int64
	reg := prometheus.NewRegistry()
	s := openStore(t, filepath.Join(dir, "pebble"), Options{Sync: SyncAlways, QueueLimit: 64, DiskReserve: reserve,
		Registerer: reg, Log: slog.New(countingHandler{&warnings})})
	appendAll(t, s, []Record{{Op: OpPublish, Channel: "before"}})
	ballast := fill(t, dir, leave)

	var settled, failed atomic.Int64
	data := []byte(`"` + strings.Repeat("d", 32<<10) + `"`)
	for range 32 {
		s.Append(&Record{Op: OpPublish, Channel: "during", Data: data}, func(err error) {
			settled.Add(1)
			if err != nil {
				failed.Add(1)
			}
		})
	}
	waitFor(t, "the writer to pause", func() bool { return gather(t, reg, "zenconn_audit_disk_full") == 1 })
	// Paused: nothing settled, no spin, no flood of log lines. (The
	// groups committed before the disk filled up are settled.)
	settled0 := settled.Load()
	cpu0, warn0 := cpuTime(), warnings.Load()
	time.Sleep(time.Second)
	cpu, lines := cpuTime()-cpu0, warnings.Load()-warn0
	if n := settled.Load() - settled0; n != 0 || failed.Load() != 0 {
		t.Errorf("%d records settled (%d failed) on a full disk; want none until space returns", n, failed.Load())
	}
	if warnings.Load() == 0 {
		t.Error("nothing logged on a full disk")
	}
	if cpu > 300*time.Millisecond {
		t.Errorf("%v of CPU in a second on a full disk: the writer spins", cpu)
	}
	if lines > 2 {
		t.Errorf("%d warnings logged in a second on a full disk", lines)
	}
	// The queue fills and Append blocks: backpressure.
	var blocked sync.WaitGroup
	blocked.Add(1)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		blocked.Done()
		for range 200 {
			s.Append(&Record{Op: OpPublish, Channel: "blocked"}, nil)
		}
	}()
	blocked.Wait()
	select {
	case <-returned:
		t.Error("Append did not block with the queue full on a full disk")
	case <-time.After(300 * time.Millisecond):
	}
	t.Logf("paused: %d records settled before, %v CPU in 1 s, %d warnings then, %d pauses", settled0, cpu, lines,
		int(gather(t, reg, "zenconn_audit_disk_full_pauses_total")))

	// Space returns: the writer resumes at once, without a restart.
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the records to settle", func() bool { return settled.Load() == 32 })
	<-returned
	if err := s.Barrier(); err != nil {
		t.Fatalf("Barrier after recovery: %v", err)
	}
	t.Logf("resumed %v after space returned", time.Since(start))
	if failed.Load() != 0 {
		t.Errorf("%d records failed", failed.Load())
	}
	if gather(t, reg, "zenconn_audit_disk_full") != 0 {
		t.Error("zenconn_audit_disk_full still 1")
	}
	for ch, want := range map[string]int{"before": 1, "during": 32, "blocked": 200} {
		if got := auditAll(t, s, AuditQuery{Channel: ch, Limit: 10}); len(got) != want {
			t.Errorf("channel %s: %d records; want %d", ch, len(got), want)
		}
	}
	appendAll(t, s, []Record{{Op: OpPublish, Channel: "after"}})
}

// TestLogsNotPreallocated: the write-ahead logs take on disk what is
// written to them and no more, so that the free-space check (space.go)
// counts every byte they take (nofalloc.go).
func TestLogsNotPreallocated(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Sync: SyncAlways})
	for i := range 3 { // a log is preallocated from its second write
		appendAll(t, s, []Record{{Op: OpPublish, Channel: fmt.Sprint("c", i), Data: []byte(`"x"`)}})
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	if len(logs) < 2 {
		t.Fatalf("write-ahead logs found: %v, want one per database", logs)
	}
	for _, p := range logs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		taken := fi.Sys().(*syscall.Stat_t).Blocks * 512
		if taken > fi.Size()+64<<10 {
			t.Errorf("%s takes %d bytes on disk for %d written", p, taken, fi.Size())
		}
	}
}

// TestRoomSeesOtherWriters: the free-space check reads the filesystem at
// each group, so what another writer took a moment ago counts.
func TestRoomSeesOtherWriters(t *testing.T) {
	dir := smallFS(t, "8m")
	d := diskSpace{dir: dir, reserve: 2 << 20}
	if err := d.room(4 << 10); err != nil {
		t.Fatalf("room on an empty 8 MiB filesystem: %v", err)
	}
	fill(t, dir, 1<<20)
	if err := d.room(4 << 10); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("room with 1 MiB free and 2 MiB reserved: %v, want ErrDiskFull", err)
	}
}
