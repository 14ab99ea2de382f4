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

func quantiles(h *hist) map[string]int64 {
	return map[string]int64{
		"p50": h.quantile(0.50), "p90": h.quantile(0.90), "p99": h.quantile(0.99),
		"p999": h.quantile(0.999), "max": h.max, "samples": h.n,
	}
}

// orchestrateChurn runs the churn mode: workers warm up and report READY;
// the server is sampled; GO; every worker reports its RESULT once its
// connections are all closed; the server's descriptors settle; the server
// is sampled again.
func orchestrateChurn(cfg *config) (map[string]any, error) {
	out := map[string]any{
		"mode": cfg.mode, "server": cfg.server, "url": cfg.url, "procs": cfg.procs,
		"loadavg_start": loadavg(), "server_pids": cfg.serverPIDs,
		"workers": cfg.conns, "duration_s": cfg.duration.Seconds(), "warmup_s": cfg.churn.warmup.Seconds(),
	}
	if cfg.label != "" {
		out["test"] = cfg.label
	}
	workers, up, err := startWorkers(cfg)
	defer stopWorkers(workers)
	if err != nil {
		return out, err
	}
	sink := newResultSink(len(workers), up, cfg.deadline, func(i int) *churnResult {
		return &churnResult{Index: i, Error: "worker exited without a result"}
	})
	defer sink.stop()
	next := sink.next
	broadcast := func(s string) {
		for _, w := range workers {
			w.down <- s
		}
	}
	ready := 0
	for ready+sink.n < len(workers) {
		wl, err := next()
		if err != nil {
			return out, err
		}
		if wl.line == "READY" {
			ready++
		}
	}
	var errs []string
	var before, after map[string]float64
	var cpu0, sys0, cpu1, sys1, busy0, busy1 int64
	var cpuErr error
	measured := sink.n == 0
	if measured {
		if len(cfg.serverPIDs) > 0 {
			// The warm-up's last connections may still be closing.
			stableSockets(cfg.serverPIDs, 2*time.Second)
		}
		var e []string
		before, e = sampleServer(cfg)
		errs = append(errs, e...)
		if len(cfg.serverPIDs) > 0 {
			cpu0, sys0, cpuErr = sumCPU(cfg.serverPIDs)
		}
		busy0, _ = machineBusyUs()
		broadcast("GO")
	} else {
		broadcast("STOP")
	}
	for sink.n < len(workers) {
		if _, err := next(); err != nil {
			return out, err
		}
	}
	if measured {
		if len(cfg.serverPIDs) > 0 && cpuErr == nil {
			cpu1, sys1, cpuErr = sumCPU(cfg.serverPIDs)
		}
		busy1, _ = machineBusyUs()
	}

	var agg churnResult
	var h hist
	var ph [nPhases]hist
	merged := map[string]*errStat{}
	for _, r := range sink.results {
		agg.Started += r.Started
		agg.Cycles += r.Cycles
		agg.Published += r.Published
		agg.Acked += r.Acked
		agg.Received += r.Received
		agg.CycleErrors += r.CycleErrors
		agg.DialErrors += r.DialErrors
		agg.ProtoErrors += r.ProtoErrors
		agg.Disconnects += r.Disconnects
		agg.Timeouts += r.Timeouts
		agg.CPUus += r.CPUus
		agg.PollCalls += r.PollCalls
		agg.PollEvents += r.PollEvents
		agg.WarmupCycles += r.WarmupCycles
		agg.WarmupErrors += r.WarmupErrors
		if r.FirstStart > 0 && (agg.FirstStart == 0 || r.FirstStart < agg.FirstStart) {
			agg.FirstStart = r.FirstStart
		}
		agg.LastEnd = max(agg.LastEnd, r.LastEnd)
		h.merge(r.Hist, r.HistMax)
		for i := range nPhases {
			ph[i].merge(r.PhaseHist[i], r.PhaseMax[i])
		}
		mergeErrors(merged, r.Errors)
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("worker %d: %s", r.Index, r.Error))
		}
	}
	out["cycles"] = agg.Cycles
	out["cycles_started"] = agg.Started
	out["cycle_errors"] = agg.CycleErrors
	out["dial_errors"] = agg.DialErrors
	out["protocol_errors"] = agg.ProtoErrors
	out["disconnects"] = agg.Disconnects
	out["timeouts"] = agg.Timeouts
	out["published"] = agg.Published
	out["acked"] = agg.Acked
	out["observed"] = agg.Received
	out["missing_deliveries"] = max(0, agg.Acked-agg.Received)
	out["extra_deliveries"] = max(0, agg.Received-agg.Published)
	if cfg.churn.warmup > 0 {
		out["warmup_cycles"] = agg.WarmupCycles
		out["warmup_errors"] = agg.WarmupErrors
	}
	if len(merged) > 0 {
		out["errors"] = merged
	}
	var span float64 // µs
	if agg.FirstStart > 0 && agg.LastEnd > agg.FirstStart {
		span = float64(agg.LastEnd-agg.FirstStart) / 1e3
		out["window_s"] = round3(span / 1e6)
		out["cycles_per_sec"] = round3(float64(agg.Cycles) / (span / 1e6))
	}
	out["cycle_latency_us"] = quantiles(&h)
	phases := map[string]any{}
	for i := range nPhases {
		phases[phaseNames[i]] = map[string]int64{"p50": ph[i].quantile(0.5), "p99": ph[i].quantile(0.99)}
	}
	out["phase_latency_us"] = phases
	out["gen_cpu_us"] = agg.CPUus
	out["gen_epoll"] = map[string]int64{"waits": agg.PollCalls, "events": agg.PollEvents}
	if span > 0 {
		out["gen_cpu_share"] = round3(float64(agg.CPUus) / span)
	}
	if agg.Cycles > 0 {
		out["gen_cpu_us_per_cycle"] = round3(float64(agg.CPUus) / float64(agg.Cycles))
	}
	if measured && len(cfg.serverPIDs) > 0 {
		if cpuErr != nil {
			errs = append(errs, "server cpu: "+cpuErr.Error())
		} else {
			cpu, sys := (cpu1+sys1)-(cpu0+sys0), sys1-sys0
			out["server_cpu_us"] = cpu
			out["server_sys_cpu_us"] = sys
			if span > 0 {
				out["server_cpu_share"] = round3(float64(cpu) / span)
				if busy0 > 0 && busy1 > 0 {
					other := busy1 - busy0 - cpu - agg.CPUus
					out["other_cpu_share"] = round3(max(0, float64(other)) / span)
				}
			}
			if agg.Cycles > 0 {
				out["server_cpu_us_per_cycle"] = round3(float64(cpu) / float64(agg.Cycles))
				out["server_sys_us_per_cycle"] = round3(float64(sys) / float64(agg.Cycles))
			}
		}
	}
	if before != nil {
		// Every connection is closed: wait for the server to close its side.
		if socks, ok := before["sockets"]; ok && len(cfg.serverPIDs) > 0 {
			took, ok := settleSockets(cfg.serverPIDs, int64(socks)+int64(cfg.churn.socketSlack), cfg.churn.settle)
			out["settle_s"] = round3(took.Seconds())
			out["settled"] = ok
		}
		var e []string
		after, e = sampleServer(cfg)
		errs = append(errs, e...)
		out["before"] = before
		out["after"] = after
		growth := map[string]float64{}
		for k, b := range before {
			if a, ok := after[k]; ok {
				growth[k] = roundSigned(a - b)
			}
		}
		if agg.Cycles > 0 {
			if g, ok := growth["rss_kib"]; ok {
				growth["rss_bytes_per_cycle"] = roundSigned(g * 1024 / float64(agg.Cycles))
			}
			if g, ok := growth["heap_inuse_kib"]; ok {
				growth["heap_bytes_per_cycle"] = roundSigned(g * 1024 / float64(agg.Cycles))
			}
		}
		out["growth"] = growth
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		out["worker_errors"] = errs
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}
