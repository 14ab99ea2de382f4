package main

// The orchestrator of the churn mode: the server's samples before and
// after the churn (descriptors, RSS, goroutines, heap in use), the wait for
// its sockets to settle, and the churn's JSON object.

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"time"
)

// fdCount is what a process has open: descriptors other than files on
// disk (sockets, pipes, eventfds, memfds: what connections use), the
// sockets among them, and files on disk (a store's tables and logs, which
// come and go as it flushes and compacts, up to its own bound).
type fdCount struct{ fds, sockets, files int64 }

// countFDs counts the open descriptors of pid.
func countFDs(pid int) (fdCount, error) {
	var n fdCount
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	d, err := os.ReadDir(dir)
	if err != nil {
		return n, err
	}
	for _, e := range d {
		// A descriptor closed meanwhile has no link any more: not counted.
		t, err := os.Readlink(dir + "/" + e.Name())
		switch {
		case err != nil:
		case strings.HasPrefix(t, "/") && !strings.HasPrefix(t, "/memfd:") && !strings.HasPrefix(t, "/dev/"):
			n.files++
		default:
			n.fds++
			if strings.HasPrefix(t, "socket:") {
				n.sockets++
			}
		}
	}
	return n, nil
}

func sumFDs(pids []int) (fdCount, error) {
	var sum fdCount
	for _, p := range pids {
		n, err := countFDs(p)
		if err != nil {
			return fdCount{}, err
		}
		sum.fds += n.fds
		sum.sockets += n.sockets
		sum.files += n.files
	}
	return sum, nil
}

func httpGetDiscard(url string) error {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}

// sampleServer reads the server's figures: a forced GC (--gc-url), then
// goroutines and heap in use (--metrics-url), then RSS and descriptors from
// /proc (the metrics' process figures without --server-pid). The pauses let
// the server close the HTTP connections of the first two, so that they are
// not counted.
func sampleServer(cfg *config) (map[string]float64, []string) {
	m := map[string]float64{}
	var errs []string
	if cfg.churn.gcURL != "" {
		if err := httpGetDiscard(cfg.churn.gcURL); err != nil {
			errs = append(errs, "gc: "+err.Error())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var prom promSample
	if cfg.metricsURL != "" {
		// Goroutines: the fewest of goroutineSamples scrapes, so that a
		// background task running at one instant (a store flush or
		// compaction) is not counted as growth; a leak, which grows with
		// the cycles, stays in every sample.
		for i := range goroutineSamples {
			if i > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			s, err := scrape(cfg.metricsURL)
			if err != nil {
				errs = append(errs, "metrics: "+err.Error())
				break
			}
			if v, ok := s["go_goroutines"]; ok {
				if cur, seen := m["goroutines"]; !seen || v < cur {
					m["goroutines"] = v
				}
			}
			if prom == nil {
				prom = s
				if v, ok := s["go_memstats_heap_inuse_bytes"]; ok {
					m["heap_inuse_kib"] = round3(v / 1024)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(cfg.serverPIDs) > 0 {
		if v, err := sumRSS(cfg.serverPIDs); err == nil {
			m["rss_kib"] = float64(v)
		} else {
			errs = append(errs, "rss: "+err.Error())
		}
		if n, err := sumFDs(cfg.serverPIDs); err == nil {
			m["fds"] = float64(n.fds)
			m["sockets"] = float64(n.sockets)
			m["files"] = float64(n.files)
		} else {
			errs = append(errs, "fds: "+err.Error())
		}
	} else if prom != nil {
		if v, ok := prom["process_resident_memory_bytes"]; ok {
			m["rss_kib"] = round3(v / 1024)
		}
		if v, ok := prom["process_open_fds"]; ok {
			m["fds"] = v
		}
	}
	return m, errs
}

// settleSockets polls the server's open sockets every 50 ms until there
// are at most want, or limit passed. It returns the time it took and
// whether the count got there. (Sockets, not every descriptor: the audit
// log's store opens and closes files of its own as it writes.)
func settleSockets(pids []int, want int64, limit time.Duration) (time.Duration, bool) {
	t0 := time.Now()
	for {
		n, err := sumFDs(pids)
		if err == nil && n.sockets <= want {
			return time.Since(t0), true
		}
		if err != nil || time.Since(t0) >= limit {
			return time.Since(t0), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stableSockets waits (at most limit) until two reads of the server's
// socket count 100 ms apart agree.
func stableSockets(pids []int, limit time.Duration) {
	end := time.Now().Add(limit)
	prev := int64(-1)
	for time.Now().Before(end) {
		n, err := sumFDs(pids)
		if err != nil || n.sockets == prev {
			return
		}
		prev = n.sockets
		time.Sleep(100 * time.Millisecond)
	}
}

// roundSigned rounds to 3 decimals, negative values too (round3 is for
// positive ones).
func roundSigned(v float64) float64 { return math.Round(v*1000) / 1000 }

// orchestrateChurn runs the churn mode: the workers warm up, the server is
// sampled, the workers churn (GO), and the server is sampled again once its
// sockets settled.
func orchestrateChurn(cfg *config) (map[string]any, error) {
	out := runHeader(cfg)
	out["workers"], out["duration_s"], out["warmup_s"] = cfg.conns, cfg.duration.Seconds(), cfg.churn.warmup.Seconds()
	cr, err := startCrew(cfg, func(i int) *churnResult {
		return &churnResult{Index: i, Error: "worker exited without a result"}
	})
	defer cr.close()
	if err != nil {
		return out, err
	}
	ready := 0
	for ready+cr.n < len(cr.workers) {
		wl, err := cr.next()
		if err != nil {
			return out, err
		}
		if wl.line == "READY" {
			ready++
		}
	}
	var errs []string
	var before map[string]float64
	var cpu cpuWindow
	measured := cr.n == 0
	if measured {
		if len(cfg.serverPIDs) > 0 {
			// The warm-up's last connections may still be closing.
			stableSockets(cfg.serverPIDs, 2*time.Second)
		}
		var e []string
		before, e = sampleServer(cfg)
		errs = append(errs, e...)
		cpu.start(cfg.serverPIDs)
		cr.broadcast("GO")
	} else {
		cr.broadcast("STOP")
	}
	if err := cr.collect(); err != nil {
		return out, err
	}
	if measured {
		cpu.end()
	}
	t := tallyChurn(cr.results)
	errs = append(errs, t.errs...)
	span := churnFigures(out, cfg, t)
	if measured && len(cfg.serverPIDs) > 0 {
		if cpu.err != nil {
			errs = append(errs, "server cpu: "+cpu.err.Error())
		} else {
			cpu.addTo(out, span, t.CPUus)
			if t.Cycles > 0 {
				out["server_cpu_us_per_cycle"] = round3(float64(cpu.total()) / float64(t.Cycles))
				out["server_sys_us_per_cycle"] = round3(float64(cpu.sys()) / float64(t.Cycles))
			}
		}
	}
	if before != nil {
		errs = append(errs, growthFigures(out, cfg, before, t.Cycles)...)
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		out["worker_errors"] = errs
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// churnTally is the sum of the churn workers' results.
type churnTally struct {
	churnResult
	h      hist
	ph     [nPhases]hist
	merged map[string]*errStat
	errs   []string // the workers' errors
}

func tallyChurn(results []*churnResult) *churnTally {
	t := &churnTally{merged: map[string]*errStat{}}
	for _, r := range results {
		t.Started += r.Started
		t.Cycles += r.Cycles
		t.Published += r.Published
		t.Acked += r.Acked
		t.Received += r.Received
		t.CycleErrors += r.CycleErrors
		t.DialErrors += r.DialErrors
		t.ProtoErrors += r.ProtoErrors
		t.Disconnects += r.Disconnects
		t.Timeouts += r.Timeouts
		t.CPUus += r.CPUus
		t.PollCalls += r.PollCalls
		t.PollEvents += r.PollEvents
		t.WarmupCycles += r.WarmupCycles
		t.WarmupErrors += r.WarmupErrors
		if r.FirstStart > 0 && (t.FirstStart == 0 || r.FirstStart < t.FirstStart) {
			t.FirstStart = r.FirstStart
		}
		t.LastEnd = max(t.LastEnd, r.LastEnd)
		t.h.merge(r.Hist, r.HistMax)
		for i := range nPhases {
			t.ph[i].merge(r.PhaseHist[i], r.PhaseMax[i])
		}
		mergeErrors(t.merged, r.Errors)
		if r.Error != "" {
			t.errs = append(t.errs, fmt.Sprintf("worker %d: %s", r.Index, r.Error))
		}
	}
	return t
}

// churnFigures adds the cycles, their errors, rate and latencies and the
// generator's CPU to out, and returns the measuring window in µs (0 when
// no cycle ended).
func churnFigures(out map[string]any, cfg *config, t *churnTally) float64 {
	out["cycles"] = t.Cycles
	out["cycles_started"] = t.Started
	out["cycle_errors"] = t.CycleErrors
	out["dial_errors"] = t.DialErrors
	out["protocol_errors"] = t.ProtoErrors
	out["disconnects"] = t.Disconnects
	out["timeouts"] = t.Timeouts
	out["published"] = t.Published
	out["acked"] = t.Acked
	out["observed"] = t.Received
	out["missing_deliveries"] = max(0, t.Acked-t.Received)
	out["extra_deliveries"] = max(0, t.Received-t.Published)
	if cfg.churn.warmup > 0 {
		out["warmup_cycles"] = t.WarmupCycles
		out["warmup_errors"] = t.WarmupErrors
	}
	if len(t.merged) > 0 {
		out["errors"] = t.merged
	}
	var span float64 // µs
	if t.FirstStart > 0 && t.LastEnd > t.FirstStart {
		span = float64(t.LastEnd-t.FirstStart) / 1e3
		out["window_s"] = round3(span / 1e6)
		out["cycles_per_sec"] = round3(float64(t.Cycles) / (span / 1e6))
	}
	out["cycle_latency_us"] = latencies(&t.h)
	phases := map[string]any{}
	for i := range nPhases {
		phases[phaseNames[i]] = map[string]int64{"p50": t.ph[i].quantile(0.5), "p99": t.ph[i].quantile(0.99)}
	}
	out["phase_latency_us"] = phases
	out["gen_cpu_us"] = t.CPUus
	out["gen_epoll"] = map[string]int64{"waits": t.PollCalls, "events": t.PollEvents}
	if span > 0 {
		out["gen_cpu_share"] = round3(float64(t.CPUus) / span)
	}
	if t.Cycles > 0 {
		out["gen_cpu_us_per_cycle"] = round3(float64(t.CPUus) / float64(t.Cycles))
	}
	return span
}

// growthFigures waits for the server to close its side of every
// connection (at most --settle), samples it again, and adds before, after
// and their difference (also per cycle for RSS and heap) to out. It
// returns the sampling errors.
func growthFigures(out map[string]any, cfg *config, before map[string]float64, cycles int64) []string {
	if socks, ok := before["sockets"]; ok && len(cfg.serverPIDs) > 0 {
		took, ok := settleSockets(cfg.serverPIDs, int64(socks)+int64(cfg.churn.socketSlack), cfg.churn.settle)
		out["settle_s"] = round3(took.Seconds())
		out["settled"] = ok
	}
	after, errs := sampleServer(cfg)
	out["before"] = before
	out["after"] = after
	growth := map[string]float64{}
	for k, b := range before {
		if a, ok := after[k]; ok {
			growth[k] = roundSigned(a - b)
		}
	}
	if cycles > 0 {
		if g, ok := growth["rss_kib"]; ok {
			growth["rss_bytes_per_cycle"] = roundSigned(g * 1024 / float64(cycles))
		}
		if g, ok := growth["heap_inuse_kib"]; ok {
			growth["heap_bytes_per_cycle"] = roundSigned(g * 1024 / float64(cycles))
		}
	}
	out["growth"] = growth
	return errs
}
