package accesslog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func readEventually(t *testing.T, path string, want int) []byte {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if bytes.Count(b, []byte("\n")) >= want || time.Now().After(deadline) {
			return b
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLinesReachFileWithoutClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteLine([]byte("one\n"))
	w.WriteLine([]byte("two\n"))
	if got := readEventually(t, path, 2); string(got) != "one\ntwo\n" {
		t.Fatalf("file = %q, want both lines after the flush interval", got)
	}
}

func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				w.WriteLine(fmt.Appendf(nil, "writer=%d line=%d end\n", g, i))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	all := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(all) != writers*lines {
		t.Fatalf("got %d lines, want %d", len(all), writers*lines)
	}
	seen := map[string]bool{}
	for _, l := range all {
		var g, i int
		if _, err := fmt.Sscanf(string(l), "writer=%d line=%d end", &g, &i); err != nil {
			t.Fatalf("torn line %q: %v", l, err)
		}
		seen[string(l)] = true
	}
	if len(seen) != writers*lines {
		t.Fatalf("%d distinct lines, want %d", len(seen), writers*lines)
	}
}

func TestReopenFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.WriteLine([]byte("before\n"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	rotated := filepath.Join(dir, "access.log.1")
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	w.WriteLine([]byte("still-old\n")) // queued before the reopen: goes to the old file
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.WriteLine([]byte("after\n"))
	if got := readEventually(t, path, 1); string(got) != "after\n" {
		t.Fatalf("new file = %q, want only the line written after Reopen", got)
	}
	if got, _ := os.ReadFile(rotated); string(got) != "before\nstill-old\n" {
		t.Fatalf("rotated file = %q", got)
	}
}

func TestFullBufferDropsAndCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Fill the buffer faster than a flush can empty it by holding the
	// buffer lock's owner out: write more than MaxBuffered in one go.
	big := bytes.Repeat([]byte("x"), MaxBuffered/2)
	big[len(big)-1] = '\n'
	w.mu.Lock()
	w.buf = append(w.buf[:0], big...)
	w.buf = append(w.buf, big...)
	w.mu.Unlock()
	w.WriteLine([]byte("overflow\n"))
	if w.Dropped() != 1 {
		t.Fatalf("Dropped = %d, want 1", w.Dropped())
	}
}

func TestOpenFailsOnBadPath(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "dir", "access.log")); err == nil {
		t.Fatal("Open succeeded on a path whose folder does not exist")
	}
}
