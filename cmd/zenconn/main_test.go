package main

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/zenconn/server/internal/leaktest"
	"github.com/zenconn/server/nodemsg"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

func TestByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1048576", 1 << 20, true},
		{"1MiB", 1 << 20, true},
		{"1M", 1 << 20, true},
		{"512KiB", 512 << 10, true},
		{"2G", 2 << 30, true},
		{"0", 0, false},
		{"-5", 0, false},
		{"ten", 0, false},
		{"1TiB", 0, false},
		{"99999999999999999999", 0, false},
	} {
		var b byteSize
		err := b.Set(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Set(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && int64(b) != tc.want {
			t.Errorf("Set(%q) = %d, want %d", tc.in, b, tc.want)
		}
	}
}

func TestEnvFillsFlagsNotGiven(t *testing.T) {
	t.Setenv("ZENCONN_ADDR", "127.0.0.1:9999")
	t.Setenv("ZENCONN_MAX_MESSAGE", "2MiB")
	t.Setenv("ZENCONN_PUBLIC", "/from/env")
	var o serveOptions
	fs := newServeFlags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse([]string{"--public", "/from/flag"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs); err != nil {
		t.Fatal(err)
	}
	if o.addr != "127.0.0.1:9999" || o.maxMessage != 2<<20 {
		t.Fatalf("env not applied: addr=%q max-message=%d", o.addr, o.maxMessage)
	}
	if o.public != "/from/flag" {
		t.Fatalf("command line must win over env: public=%q", o.public)
	}
}

func TestEnvBadValueIsReported(t *testing.T) {
	t.Setenv("ZENCONN_MAX_MESSAGE", "lots")
	var o serveOptions
	fs := newServeFlags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	err := applyEnv(fs)
	if err == nil || !strings.Contains(err.Error(), "ZENCONN_MAX_MESSAGE") {
		t.Fatalf("err = %v, want one naming ZENCONN_MAX_MESSAGE", err)
	}
}

func TestHelpListsEveryFlag(t *testing.T) {
	var buf bytes.Buffer
	printServeFlags(&buf)
	var o serveOptions
	newServeFlags(&o).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(buf.String(), "-"+f.Name) {
			t.Errorf("help does not mention --%s", f.Name)
		}
	})
}

func TestWorkersOutOfRangeRefused(t *testing.T) {
	for _, n := range []string{"-1", strconv.Itoa(nodemsg.MaxWorkers + 1)} {
		if code := serve([]string{"--workers", n, "--data", t.TempDir()}); code != 2 {
			t.Fatalf("--workers %s: exit %d, want 2", n, code)
		}
	}
}

// TestDefaultWorkersWithinMax checks that the --workers default never
// exceeds the node's maximum, whatever the number of CPUs.
func TestAuditLimitsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--audit-quota", "1MiB"}, {"--audit-max-queries", "0"}, {"--audit-max-data", "0"}, {"--audit-max-data", "x"},
	} {
		if code := serve(append(args, "--data", t.TempDir())); code != 2 {
			t.Fatalf("%v: exit %d, want 2", args, code)
		}
	}
}

func TestDefaultWorkersWithinMax(t *testing.T) {
	var o serveOptions
	newServeFlags(&o)
	if o.workers < 1 || o.workers > nodemsg.MaxWorkers || o.workers > runtime.NumCPU() {
		t.Fatalf("default --workers %d: want 1..min(%d CPUs, %d)", o.workers, runtime.NumCPU(), nodemsg.MaxWorkers)
	}
}

func TestUnknownCommandAndFlag(t *testing.T) {
	if code := run([]string{"frobnicate"}); code != 2 {
		t.Fatalf("unknown command exit = %d, want 2", code)
	}
	if code := serve([]string{"--no-such-flag"}); code != 2 {
		t.Fatalf("unknown flag exit = %d, want 2", code)
	}
}

func TestNodeIDIsKept(t *testing.T) {
	dir := t.TempDir()
	a, err := loadNodeID(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadNodeID(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if a == "" || a != b {
		t.Fatalf("node ids %q then %q, want one stable id", a, b)
	}
	if _, err := os.Stat(filepath.Join(dir, "node-id")); err != nil {
		t.Fatal(err)
	}
}

func TestPprofAddr(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:6060": true, "[::1]:6060": true, "localhost:6060": true,
		":6060": false, "0.0.0.0:6060": false, "10.0.0.1:6060": false, "127.0.0.1": false, "127.0.0.1:65535": false,
	} {
		if err := checkPprofAddr(addr); (err == nil) != ok {
			t.Errorf("%s: err %v, want ok=%v", addr, err, ok)
		}
	}
	if got := pprofAddrFor("127.0.0.1:6060", 2); got != "127.0.0.1:6063" {
		t.Fatalf("worker 2's address %s", got)
	}
}

func TestNodeFlag(t *testing.T) {
	dir := t.TempDir()
	if id, err := loadNodeID(dir, "n1"); err != nil || id != "n1" {
		t.Fatalf("--node n1 on an empty folder: %q, %v", id, err)
	}
	if id, err := loadNodeID(dir, ""); err != nil || id != "n1" {
		t.Fatalf("no --node on n1's folder: %q, %v", id, err)
	}
	if _, err := loadNodeID(dir, "n2"); err == nil || !strings.Contains(err.Error(), `belongs to node "n1"`) {
		t.Fatalf("--node n2 on n1's folder: %v", err)
	}
	for _, bad := range []string{"a-b", "a.b", strings.Repeat("x", 65), "é"} {
		if code := serve([]string{"--node", bad, "--data", t.TempDir()}); code != 2 {
			t.Fatalf("--node %q: exit %d, want 2", bad, code)
		}
	}
}
