package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWorkerProcessors checks the Go processors each worker runs with: one
// more than its loops when the node has no more workers than CPUs, as
// many as its loops when it has more (spareProc). The node runs on one
// CPU (taskset), whatever the machine's size.
func TestWorkerProcessors(t *testing.T) {
	bin := buildZenconn(t)
	for _, tc := range []struct {
		workers int
		spare   int // Ps beyond the loops
	}{
		{1, 1},
		{2, 0},
	} {
		t.Run(fmt.Sprintf("workers=%d", tc.workers), func(t *testing.T) {
			lines := workerServingLines(t, bin, tc.workers)
			re := regexp.MustCompile(`loops=(\d+) gomaxprocs=(\d+)`)
			for _, l := range lines {
				m := re.FindStringSubmatch(l)
				if m == nil {
					t.Fatalf("no loops and gomaxprocs in %q", l)
				}
				loops, _ := strconv.Atoi(m[1])
				procs, _ := strconv.Atoi(m[2])
				if procs != loops+tc.spare {
					t.Errorf("a worker of %d on one CPU runs %d loops with GOMAXPROCS %d, want %d", tc.workers, loops, procs, loops+tc.spare)
				}
			}
		})
	}
}

// workerServingLines runs a node of workers workers on CPU 0 (GOMAXPROCS
// not set) until it listens, stops it, and returns its workers' "worker
// serving" log lines.
func workerServingLines(t *testing.T, bin string, workers int) []string {
	t.Helper()
	node := exec.Command("taskset", "-c", "0", bin, "serve", "--addr", "127.0.0.1:0", "--workers", strconv.Itoa(workers),
		"--public", "off", "--data", t.TempDir(), "--access-log", "off", "--audit=false")
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "GOMAXPROCS=") {
			node.Env = append(node.Env, e)
		}
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "node.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	node.Stdout, node.Stderr = logf, logf
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = node.Process.Kill(); _ = node.Wait() }()
	logs := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs(), "msg=listening"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the node did not listen within 30 s:\n%s", logs())
		}
	}
	_ = node.Process.Signal(os.Interrupt)
	_ = node.Wait()
	var lines []string
	for _, l := range strings.Split(logs(), "\n") {
		if strings.Contains(l, `msg="worker serving"`) {
			lines = append(lines, l)
		}
	}
	if len(lines) != workers {
		t.Fatalf("%d workers logged \"worker serving\", want %d:\n%s", len(lines), workers, logs())
	}
	return lines
}
