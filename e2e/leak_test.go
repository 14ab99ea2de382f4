package e2e

// Leak tests: churn thousands of WebSocket connections through a node, in one
// process (--workers 0) and with two worker processes (--workers 2), then
// require every process of the node (the agent and each worker) to come back
// near where it started: goroutines, open file descriptors, heap and RSS.
//
// The figures come from the node itself: `--pprof 127.0.0.1:PORT` serves
// net/http/pprof for the agent on PORT and for worker i on PORT+1+i;
// /debug/pprof/heap?gc=1&debug=1 forces a GC in that process and prints its
// runtime.MemStats, /debug/pprof/goroutine?debug=1 counts its goroutines,
// and /proc/PID gives its open fds and RSS. A first round of churn (the
// warm-up) runs before the baseline, so that what the node sets up once
// (pools, caches, the event loops' buffers, Pebble's first memtable) is in
// the baseline and not counted as a leak.
//
// Bounds, per process, once GET /api/connections is empty and after two
// forced GCs (the second empties what sync.Pool's victim cache kept through
// the first):
//
//	goroutines   ≤ baseline + 10
//	open fds     ≤ baseline + 10
//	HeapAlloc    ≤ baseline + 2 MiB   (live heap)
//	HeapInuse    ≤ baseline + 4 MiB   (live heap and the free space in its spans)
//	RSS (VmRSS)  ≤ baseline + 32 MiB
//
// (The heap bounds are wider, and RSS is not checked, for a server built
// without cgo or with -race: see leakBoundsFor.)
//
// With 7,680 connections churned, a leak of one goroutine or one fd per
// connection exceeds its bound several hundred times over, and a leak of
// 300 bytes of heap per connection exceeds HeapAlloc's. Observed on a 2-CPU
// machine after 7,680 connections: goroutines and fds +0 to +2 in every
// process, HeapAlloc +0.0 to +0.2 MiB, HeapInuse +0.0 to +0.4 MiB; after
// 15,360 the heap figures were the same.
//
// RSS grows for two reasons that are not leaks and are bounded by design,
// which is why its headroom is the widest (each test logs RSS split into
// RssAnon and RssShmem):
//
//   - The shared-memory rings between the workers and the agent (4 MiB each,
//     three per worker with one event loop) become resident page by page as
//     records pass through them: RssShmem of every process, +1 to +2 MiB
//     after 7,680 connections, +2 to +4 MiB after 15,360.
//   - The audit log is on (the default): every connection writes its session
//     and a handful of audit records to Pebble in the agent, and Pebble's
//     memtables and block cache are C memory, outside the Go heap: RssAnon of
//     the agent, +6 to +8 MiB after 7,680 connections, +8.6 MiB after 15,360
//     (+3.4 MiB with --audit=false).
//
// Observed RSS growth after 7,680 connections: +9 to +11 MiB for the agent
// (with the in-process worker or without), +0 to +2 MiB for a worker.
//
// The figures after the churn are polled for up to leakSettle (a process may
// still be closing the last sockets when GET /api/connections is already
// empty); a leak does not settle. Nothing here asserts a duration.

import (
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/nodemsg"
)

// Churn sizes. A wave opens leakWaveClients connections at once (in pairs
// that share a channel), exchanges messages on every pair, then closes them
// all; the test process holds at most one wave's connections open.
const (
	leakWaveClients = 320
	leakWarmupWaves = 2  // 640 connections before the baseline
	leakChurnWaves  = 24 // 7,680 connections between the baseline and the check
)

// Bounds over the baseline, per process (see the package comment above).
const (
	leakGoroutineSlack = 10
	leakFDSlack        = 10
	leakHeapAllocSlack = 2 << 20
	leakHeapInuseSlack = 4 << 20
	leakRSSSlack       = 32 << 20

	// leakPebbleHeap is added to the heap bounds when Pebble's memtables and
	// block cache are in the Go heap: up to MemTableStopWritesThreshold (2)
	// memtables of 4 MiB waiting for a flush besides the one being written,
	// and the 8 MiB block cache.
	leakPebbleHeap = 24 << 20
)

// leakBounds are the bounds over the baseline that apply to the binary under
// test.
type leakBounds struct {
	Goroutines, FDs           uint64
	HeapAlloc, HeapInuse, RSS uint64 // RSS 0: not checked
	Note                      string // why they differ from the constants above
}

func (b leakBounds) String() string {
	rss := "not checked"
	if b.RSS > 0 {
		rss = "+" + leakMiB(b.RSS)
	}
	return fmt.Sprintf("goroutines +%d, open fds +%d, HeapAlloc +%s, HeapInuse +%s, RSS %s",
		b.Goroutines, b.FDs, leakMiB(b.HeapAlloc), leakMiB(b.HeapInuse), rss)
}

// leakBoundsFor reads how the server binary was built. Built with cgo (what
// `go build` does when a C compiler is present, as on these machines),
// Pebble allocates its memtables and block cache with C's malloc, outside the
// Go heap. Without cgo it allocates them in the Go heap, and with -race
// (ZENCONN_E2E_RACE=1) it does so in one process out of two, chosen at
// random: the heap bounds then make room for them. A -race build's RSS is
// mostly the race detector's own memory, which grows with what the process
// has done (in this test, the agent's grew by 300 MiB when Pebble used the Go
// heap, by 15 MiB when it used C's): RSS is not checked.
func leakBoundsFor(t *testing.T) leakBounds {
	t.Helper()
	b := leakBounds{Goroutines: leakGoroutineSlack, FDs: leakFDSlack,
		HeapAlloc: leakHeapAllocSlack, HeapInuse: leakHeapInuseSlack, RSS: leakRSSSlack}
	info, err := buildinfo.ReadFile(zenconnBin)
	if err != nil {
		t.Fatalf("reading the build settings of %s: %v", zenconnBin, err)
	}
	set := map[string]string{}
	for _, s := range info.Settings {
		set[s.Key] = s.Value
	}
	race := set["-race"] == "true"
	if set["CGO_ENABLED"] != "1" || race {
		b.HeapAlloc += leakPebbleHeap
		b.HeapInuse += leakPebbleHeap
		b.Note = fmt.Sprintf("the server is built with CGO_ENABLED=%s -race=%v: Pebble's memory may be in the Go heap (+%s on the heap bounds)",
			set["CGO_ENABLED"], race, leakMiB(leakPebbleHeap))
	}
	if race {
		b.RSS = 0
		b.Note += "; RSS is not checked in a -race build"
	}
	return b
}

const (
	leakSettle = 15 * time.Second // churn's end to settled figures
	leakIO     = 10 * time.Second // one exchange of a churning client (the machine is loaded)
)

// The leak tests are not parallel: the figures are the node's own, but the
// churn needs the machine.

func TestLeakSingleProcess(t *testing.T) {
	leakRun(t, 0)
}

func TestLeakWorkers(t *testing.T) {
	leakRun(t, wkWorkerCount)
}

// leakRun starts a node with workers worker processes (0: one process), warms
// it up, takes the baseline, churns, and checks the bounds.
func leakRun(t *testing.T, workers int) {
	port := leakPprofPort(t, workers)
	s := startServer(t,
		"--workers", strconv.Itoa(workers),
		"--api-key", ibAPIKey,
		"--jwt-secret", ibSecret,
		"--pprof", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
	)
	hc := &http.Client{
		Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 1},
		Timeout:   10 * time.Second,
	}
	t.Cleanup(hc.CloseIdleConnections)
	procs := leakProcs(t, s, hc, workers, port)
	bounds := leakBoundsFor(t)
	if bounds.Note != "" {
		t.Logf("%s", bounds.Note)
	}

	token := ibToken(t, "leak", ibGrants{Subscribe: []string{"private-leak-*"}, Publish: []string{"private-leak-*"}})
	leakChurn(t, s, token, 0, leakWarmupWaves)
	leakWaitIdle(t, s, workers)
	base := make([]leakFigures, len(procs))
	for i, p := range procs {
		f, err := leakMeasure(hc, p)
		if err != nil {
			t.Fatalf("baseline of %s: %v", p, err)
		}
		base[i] = f
	}

	start := time.Now()
	leakChurn(t, s, token, leakWarmupWaves, leakChurnWaves)
	churned := time.Since(start)
	leakWaitIdle(t, s, workers)
	idle := time.Since(start)

	after, problems := leakSettled(t, hc, procs, base, bounds)
	t.Logf("%d connections churned in %v (%d warm-up before the baseline); node idle after %v, settled after %v",
		leakChurnWaves*leakWaveClients, churned.Round(time.Millisecond), leakWarmupWaves*leakWaveClients,
		idle.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	for i, p := range procs {
		t.Logf("%s\n%s", p, leakTable(base[i], after[i]))
	}
	if len(problems) > 0 {
		var b strings.Builder
		for _, p := range problems {
			b.WriteString("\n  ")
			b.WriteString(p)
		}
		t.Errorf("after churning %d connections, not back within bounds of the baseline after %v:%s\nbounds over the baseline, per process: %s",
			leakChurnWaves*leakWaveClients, leakSettle, b.String(), bounds)
		for i, p := range procs {
			if len(leakExceeds(p.Name, base[i], after[i], bounds)) > 0 {
				t.Logf("%s: open fds by kind: %s", p, leakFDKinds(p.PID))
				t.Logf("%s: start of its goroutine profile:\n%s", p, leakGoroutineHead(hc, p))
				t.Logf("%s: the allocation sites with the most bytes in use (heap profile):\n%s", p, leakHeapTop(hc, p, 6))
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The node's processes and their figures.

// leakProc is one process of the node: the agent (with the in-process worker
// when --workers 0) or a worker.
type leakProc struct {
	Name  string
	PID   int
	Pprof string // host:port of its net/http/pprof
}

func (p leakProc) String() string {
	return fmt.Sprintf("%s (pid %d, pprof %s)", p.Name, p.PID, p.Pprof)
}

// leakPprofPort returns a port P such that P and the workers' P+1+i are free
// now. The server binds them a moment later; another process could take one
// in between, which leakProcs would notice.
func leakPprofPort(t *testing.T, workers int) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		free := port+workers <= 65535-nodemsg.MaxWorkers-1 // the --pprof maximum
		for i := 1; free && i <= workers; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		ln.Close()
		if free {
			return port
		}
	}
	t.Fatalf("no free run of %d loopback ports for --pprof", workers+1)
	return 0
}

// leakProcs lists the node's processes and checks that each pprof address is
// served by that process (its command line names this node's data folder, and
// for a worker its id).
func leakProcs(t *testing.T, s *serverProc, hc *http.Client, workers, port int) []leakProc {
	t.Helper()
	pprofAt := func(off int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port+off)) }
	procs := []leakProc{{Name: "agent", PID: s.cmd.Process.Pid, Pprof: pprofAt(0)}}
	if workers > 0 {
		var ws []wkInfo
		eventually(t, startTimeout, func() string {
			ws = wkWorkers(t, s)
			for _, w := range ws {
				if !w.Up || w.PID <= 0 {
					return fmt.Sprintf("GET /api/workers: %+v, want every worker up", ws)
				}
			}
			return ""
		})
		for _, w := range ws {
			procs = append(procs, leakProc{Name: fmt.Sprintf("worker %d", w.ID), PID: w.PID, Pprof: pprofAt(1 + w.ID)})
		}
	} else {
		procs[0].Name = "node (agent and worker)"
	}
	for i, p := range procs {
		var cmdline string
		eventually(t, startTimeout, func() string {
			b, err := leakGet(hc, p.Pprof, "/debug/pprof/cmdline")
			if err != nil {
				return err.Error()
			}
			cmdline = string(b)
			return ""
		})
		args := strings.Split(cmdline, "\x00")
		ok := strings.Contains(cmdline, s.Data)
		if i > 0 {
			ok = ok && len(args) > 1 && args[1] == "worker" && strings.Contains(cmdline, "\x00--worker-id\x00"+strconv.Itoa(i-1))
		}
		if !ok {
			t.Fatalf("%s: pprof serves another process (command line %q); the port was taken between the check and the start", p, args)
		}
	}
	return procs
}

// leakFigures is what is measured of one process.
type leakFigures struct {
	Goroutines int
	FDs        int
	HeapAlloc  uint64 // runtime.MemStats.HeapAlloc after a forced GC
	HeapInuse  uint64
	GoHeld     uint64 // MemStats.Sys - HeapReleased: what the Go runtime holds from the kernel (not bounded; explains RSS)
	RSS        uint64 // VmRSS, bytes
	RSSAnon    uint64 // RssAnon: private memory, the Go runtime's and C's (Pebble's)
	RSSShmem   uint64 // RssShmem: the shared-memory rings' pages touched so far
}

var (
	leakGoroutinesRE = regexp.MustCompile(`^goroutine profile: total (\d+)\n`)
	leakHeapAllocRE  = regexp.MustCompile(`(?m)^# HeapAlloc = (\d+)$`)
	leakHeapInuseRE  = regexp.MustCompile(`(?m)^# HeapInuse = (\d+)$`)
	leakSysRE        = regexp.MustCompile(`(?m)^# Sys = (\d+)$`)
	leakReleasedRE   = regexp.MustCompile(`(?m)^# HeapReleased = (\d+)$`)
	leakRSSRE        = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`)
	leakRSSAnonRE    = regexp.MustCompile(`(?m)^RssAnon:\s+(\d+) kB$`)
	leakRSSShmemRE   = regexp.MustCompile(`(?m)^RssShmem:\s+(\d+) kB$`)
)

// leakMeasure forces two GCs in p and reads its figures.
func leakMeasure(hc *http.Client, p leakProc) (leakFigures, error) {
	var f leakFigures
	// Two GCs: objects in a sync.Pool survive the first in its victim cache.
	if _, err := leakGet(hc, p.Pprof, "/debug/pprof/heap?gc=1"); err != nil {
		return f, err
	}
	heap, err := leakGet(hc, p.Pprof, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return f, err
	}
	if f.HeapAlloc, err = leakMatch(leakHeapAllocRE, heap, "heap profile"); err != nil {
		return f, err
	}
	if f.HeapInuse, err = leakMatch(leakHeapInuseRE, heap, "heap profile"); err != nil {
		return f, err
	}
	sys, err := leakMatch(leakSysRE, heap, "heap profile")
	if err != nil {
		return f, err
	}
	released, err := leakMatch(leakReleasedRE, heap, "heap profile")
	if err != nil {
		return f, err
	}
	f.GoHeld = sys - released
	gr, err := leakGet(hc, p.Pprof, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return f, err
	}
	n, err := leakMatch(leakGoroutinesRE, gr, "goroutine profile")
	if err != nil {
		return f, err
	}
	f.Goroutines = int(n)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.PID))
	if err != nil {
		return f, err
	}
	f.FDs = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return f, err
	}
	for _, v := range []struct {
		re  *regexp.Regexp
		dst *uint64
	}{{leakRSSRE, &f.RSS}, {leakRSSAnonRE, &f.RSSAnon}, {leakRSSShmemRE, &f.RSSShmem}} {
		kb, err := leakMatch(v.re, status, "/proc/PID/status")
		if err != nil {
			return f, err
		}
		*v.dst = kb << 10
	}
	return f, nil
}

func leakGet(hc *http.Client, hostport, path string) ([]byte, error) {
	resp, err := hc.Get("http://" + hostport + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", path, resp.StatusCode)
	}
	return b, nil
}

func leakMatch(re *regexp.Regexp, b []byte, what string) (uint64, error) {
	m := re.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("%s has no line matching %s", what, re)
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

// leakExceeds lists the figures of after that are over their bound.
func leakExceeds(name string, base, after leakFigures, bounds leakBounds) []string {
	var out []string
	check := func(what string, b, a, slack uint64, unit func(uint64) string) {
		if a > b+slack {
			out = append(out, fmt.Sprintf("%s: %s %s → %s (+%s), bound baseline + %s", name, what, unit(b), unit(a), unit(a-b), unit(slack)))
		}
	}
	count := func(v uint64) string { return strconv.FormatUint(v, 10) }
	check("goroutines", uint64(base.Goroutines), uint64(after.Goroutines), bounds.Goroutines, count)
	check("open fds", uint64(base.FDs), uint64(after.FDs), bounds.FDs, count)
	check("HeapAlloc", base.HeapAlloc, after.HeapAlloc, bounds.HeapAlloc, leakMiB)
	check("HeapInuse", base.HeapInuse, after.HeapInuse, bounds.HeapInuse, leakMiB)
	if bounds.RSS > 0 {
		check("RSS", base.RSS, after.RSS, bounds.RSS, leakMiB)
	}
	return out
}

func leakMiB(v uint64) string { return fmt.Sprintf("%.1f MiB", float64(v)/(1<<20)) }

// leakTable prints before and after side by side.
func leakTable(base, after leakFigures) string {
	var b strings.Builder
	row := func(what, before, now, delta string) {
		fmt.Fprintf(&b, "    %-11s %12s %12s %12s\n", what, before, now, delta)
	}
	signed := func(a, b uint64) int64 { return int64(b) - int64(a) }
	row("", "baseline", "after", "delta")
	row("goroutines", strconv.Itoa(base.Goroutines), strconv.Itoa(after.Goroutines), fmt.Sprintf("%+d", after.Goroutines-base.Goroutines))
	row("open fds", strconv.Itoa(base.FDs), strconv.Itoa(after.FDs), fmt.Sprintf("%+d", after.FDs-base.FDs))
	for _, m := range []struct {
		what string
		a, b uint64
	}{{"HeapAlloc", base.HeapAlloc, after.HeapAlloc}, {"HeapInuse", base.HeapInuse, after.HeapInuse},
		{"Go held", base.GoHeld, after.GoHeld}, {"RSS", base.RSS, after.RSS},
		{"  RssAnon", base.RSSAnon, after.RSSAnon}, {"  RssShmem", base.RSSShmem, after.RSSShmem}} {
		row(m.what, leakMiB(m.a), leakMiB(m.b), fmt.Sprintf("%+.1f MiB", float64(signed(m.a, m.b))/(1<<20)))
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// leakSettled measures every process until all figures are within bounds or
// leakSettle passes; it returns the last figures and what is still over.
func leakSettled(t *testing.T, hc *http.Client, procs []leakProc, base []leakFigures, bounds leakBounds) ([]leakFigures, []string) {
	t.Helper()
	deadline := time.Now().Add(leakSettle)
	after := make([]leakFigures, len(procs))
	for {
		var problems []string
		for i, p := range procs {
			f, err := leakMeasure(hc, p)
			if err != nil {
				t.Fatalf("measuring %s: %v", p, err)
			}
			after[i] = f
			problems = append(problems, leakExceeds(p.Name, base[i], f, bounds)...)
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			return after, problems
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leakFDKinds counts the open fds of pid by what they are (socket, pipe,
// anon_inode:[eventfd], a file's folder…), for a failure.
func leakFDKinds(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	kinds := map[string]int{}
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		kind, _, _ := strings.Cut(target, ":[") // socket:[123] → socket
		if strings.HasPrefix(target, "anon_inode:") || strings.HasPrefix(target, "/memfd:") {
			kind = target
		} else if strings.HasPrefix(target, "/") {
			kind = filepath.Dir(target) + "/…"
		}
		kinds[kind]++
	}
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s ×%d; ", k, kinds[k])
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// leakGoroutineHead is the start of p's goroutine profile (stacks grouped,
// the most numerous first), for a failure.
func leakGoroutineHead(hc *http.Client, p leakProc) string {
	b, err := leakGet(hc, p.Pprof, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	if len(b) > 4000 {
		b = append(b[:4000:4000], "\n…"...)
	}
	return string(b)
}

// leakHeapTop lists the n allocation sites of p's heap profile with the most
// bytes in use (as of its last GC, sampled), each with the top of its stack,
// for a failure. The profiler's own allocations are left out.
func leakHeapTop(hc *http.Client, p leakProc, n int) string {
	b, err := leakGet(hc, p.Pprof, "/debug/pprof/heap?debug=1")
	if err != nil {
		return err.Error()
	}
	text, _, _ := strings.Cut(string(b), "\n# runtime.MemStats")
	type site struct {
		bytes uint64
		text  string
	}
	var sites []site
	for rec := range strings.SplitSeq(text, "\n\n") {
		if strings.HasPrefix(rec, "heap profile:") {
			_, rec, _ = strings.Cut(rec, "\n")
		}
		var objs, bytes uint64
		if _, err := fmt.Sscanf(rec, "%d: %d", &objs, &bytes); err != nil || bytes == 0 || strings.Contains(rec, "runtime/pprof.") {
			continue
		}
		lines := strings.Split(rec, "\n")
		if len(lines) > 9 {
			lines = append(lines[:9], "#\t…")
		}
		sites = append(sites, site{bytes, strings.Join(lines, "\n")})
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].bytes > sites[j].bytes })
	var out strings.Builder
	for i, s := range sites {
		if i == n {
			break
		}
		out.WriteString(s.text)
		out.WriteString("\n")
	}
	return out.String()
}

// leakWaitIdle polls until the node lists no connection (and, with worker
// processes, each worker reports none).
func leakWaitIdle(t *testing.T, s *serverProc, workers int) {
	t.Helper()
	eventually(t, 20*time.Second, func() string {
		var out struct {
			Connections []json.RawMessage `json:"connections"`
		}
		apiOK(t, s, "GET", "/api/connections", "", &out)
		if n := len(out.Connections); n > 0 {
			return fmt.Sprintf("GET /api/connections still lists %d connections, e.g. %s", n, out.Connections[0])
		}
		if workers > 0 {
			for _, w := range wkWorkers(t, s) {
				if w.Connections != 0 || w.Subscriptions != 0 {
					return fmt.Sprintf("GET /api/workers: worker %d reports %d connections, %d subscriptions", w.ID, w.Connections, w.Subscriptions)
				}
			}
		}
		return ""
	})
	s.HTTP.CloseIdleConnections()
}

// ---------------------------------------------------------------------------
// The churn.

// leakChurn runs waves first..first+n-1. A wave connects leakWaveClients
// clients (two per channel), waits until all are connected and subscribed,
// then has every pair exchange a message and close; it fails the test on the
// first wave with a failed pair.
func leakChurn(t *testing.T, s *serverProc, token string, first, n int) {
	t.Helper()
	const pairs = leakWaveClients / 2
	for w := first; w < first+n; w++ {
		var ready, done sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, pairs)
		ready.Add(pairs)
		done.Add(pairs)
		for i := range pairs {
			go func() {
				defer done.Done()
				errs[i] = leakPair(s.Addr, w, i, token, &ready, start)
			}()
		}
		ready.Wait()
		close(start)
		done.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("wave %d of %d pairs: %v", w, pairs, firstErrors(errs, 5))
		}
	}
}

// leakPair is pair i of wave w: two clients on one channel. What varies with
// i: a private channel with tokens (one pair in three), tokens on a public
// channel (one in three), the binary protocol on one side or both, an
// unsubscribe before leaving, and the way each client leaves (see leakClose).
func leakPair(addr string, w, i int, token string, ready *sync.WaitGroup, start <-chan struct{}) error {
	var a, b *leakClient
	defer func() {
		for _, c := range []*leakClient{a, b} {
			if c != nil {
				c.c.Close()
			}
		}
	}()
	ch := fmt.Sprintf("leak-%d-%d", w, i)
	tok := ""
	switch i % 3 {
	case 0:
		ch, tok = "private-"+ch, token
	case 1:
		tok = token
	}
	err := func() error {
		var err error
		if a, err = leakDial(addr, tok, i%4 == 1 || i%4 == 3); err != nil {
			return err
		}
		if b, err = leakDial(addr, tok, i%4 == 3); err != nil {
			return err
		}
		if err := a.request(1, "subscribe", ch); err != nil {
			return err
		}
		return b.request(1, "subscribe", ch)
	}()
	ready.Done()
	<-start
	if err != nil {
		return err
	}

	if err := a.request(2, "publish", ch); err != nil {
		return err
	}
	if err := b.expectMessage(ch, a.id); err != nil {
		return err
	}
	if err := b.request(2, "publish", ch); err != nil {
		return err
	}
	if err := a.expectMessage(ch, b.id); err != nil {
		return err
	}
	if i%2 == 0 {
		if err := a.request(3, "unsubscribe", ch); err != nil {
			return err
		}
		if i%4 == 0 {
			if err := b.request(3, "unsubscribe", ch); err != nil {
				return err
			}
		}
	}
	if err := a.leave(i%4, ch); err != nil {
		return err
	}
	return b.leave((i/4+1)%4, ch)
}

// leakClient is a WebSocket client read synchronously by its pair's goroutine.
type leakClient struct {
	c   *websocket.Conn
	bin bool
	id  string // conn id from the welcome
}

// leakMsg is a server message in either protocol.
type leakMsg struct {
	op, id, channel, from, conn string
	raw                         string
}

func leakDial(addr, token string, bin bool) (*leakClient, error) {
	d := websocket.Dialer{HandshakeTimeout: leakIO}
	if bin {
		d.Subprotocols = []string{"zenconn.v1.bin"}
	}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	wc, resp, err := d.Dial("ws://"+addr+"/ws", h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial /ws: %w (status %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial /ws: %w", err)
	}
	c := &leakClient{c: wc, bin: bin}
	m, err := c.read()
	if err != nil {
		wc.Close()
		return nil, fmt.Errorf("reading the welcome: %w", err)
	}
	if m.op != "welcome" || m.conn == "" {
		wc.Close()
		return nil, fmt.Errorf("first message %s, want a welcome", m.raw)
	}
	c.id = m.conn
	return c, nil
}

func (c *leakClient) read() (leakMsg, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(leakIO))
	typ, p, err := c.c.ReadMessage()
	if err != nil {
		return leakMsg{}, fmt.Errorf("conn %s: read: %w", c.id, err)
	}
	if c.bin != (typ == websocket.BinaryMessage) {
		return leakMsg{}, fmt.Errorf("conn %s: message of type %d in the other protocol: %q", c.id, typ, p)
	}
	if !c.bin {
		m, err := ibParseJSON(p)
		if err != nil {
			return leakMsg{}, fmt.Errorf("conn %s: %w", c.id, err)
		}
		return leakMsg{op: m.Op, id: string(m.ID), channel: m.Channel, from: m.From, conn: m.Conn, raw: string(p)}, nil
	}
	m, err := ibDecode(p)
	if err != nil {
		return leakMsg{}, fmt.Errorf("conn %s: % x: %w", c.id, p, err)
	}
	ops := map[byte]string{0x11: "welcome", 0x12: "ack", 0x13: "error", 0x14: "message", 0x15: "pong"}
	return leakMsg{op: ops[m.Op], id: m.ID, channel: m.Channel, from: m.From, conn: m.Conn, raw: m.String()}, nil
}

// send writes a request; op is subscribe, unsubscribe, publish or ping.
func (c *leakClient) send(id int, op, ch string) error {
	typ, p := websocket.TextMessage, []byte(nil)
	data := `{"leak":true}`
	if c.bin {
		typ = websocket.BinaryMessage
		switch op {
		case "subscribe":
			p = ibBinSub(uint64(id), ch)
		case "unsubscribe":
			p = ibBinUnsub(uint64(id), ch)
		case "publish":
			p = ibBinPub(uint64(id), ch, []byte(data), false)
		default:
			p = ibBinPing()
		}
	} else {
		switch op {
		case "publish":
			p = fmt.Appendf(nil, `{"id":%d,"op":"publish","channel":%q,"data":%s}`, id, ch, data)
		case "ping":
			p = []byte(`{"op":"ping"}`)
		default:
			p = fmt.Appendf(nil, `{"id":%d,"op":%q,"channel":%q}`, id, op, ch)
		}
	}
	_ = c.c.SetWriteDeadline(time.Now().Add(leakIO))
	if err := c.c.WriteMessage(typ, p); err != nil {
		return fmt.Errorf("conn %s: %s: %w", c.id, op, err)
	}
	return nil
}

// request sends a request and requires its ack as the next message.
func (c *leakClient) request(id int, op, ch string) error {
	if err := c.send(id, op, ch); err != nil {
		return err
	}
	m, err := c.read()
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, ch, err)
	}
	if m.op != "ack" || m.id != strconv.Itoa(id) {
		return fmt.Errorf("conn %s: %s %s answered %s, want ack id %d", c.id, op, ch, m.raw, id)
	}
	return nil
}

// expectMessage requires the next message to be one on ch from conn from.
func (c *leakClient) expectMessage(ch, from string) error {
	m, err := c.read()
	if err != nil {
		return err
	}
	if m.op != "message" || m.channel != ch || m.from != from {
		return fmt.Errorf("conn %s: got %s, want a message on %s from %s", c.id, m.raw, ch, from)
	}
	return nil
}

// leave ends the connection in one of four ways:
//
//	0  close handshake: close frame 1000, read until the server's close
//	1  TCP close (FIN) without a close frame
//	2  TCP reset (SO_LINGER 0) without a close frame
//	3  a publish (and, with JSON, a ping) sent and the TCP connection reset
//	   without reading the answers: the server writes to a dead peer
func (c *leakClient) leave(mode int, ch string) error {
	switch mode {
	case 0:
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye")
		if err := c.c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(leakIO)); err != nil {
			return fmt.Errorf("conn %s: close frame: %w", c.id, err)
		}
		_ = c.c.SetReadDeadline(time.Now().Add(leakIO))
		for {
			_, _, err := c.c.ReadMessage()
			if err == nil {
				continue
			}
			if closeCode(err) != websocket.CloseNormalClosure {
				return fmt.Errorf("conn %s: after a close frame 1000: %v, want the server's close 1000", c.id, err)
			}
			break
		}
	case 3:
		if err := c.send(4, "publish", ch); err != nil {
			return err
		}
		if err := c.send(0, "ping", ch); err != nil {
			return err
		}
		fallthrough
	case 2:
		if tc, ok := c.c.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	return c.c.Close()
}
