package main

// The orchestrator of the idle, fanout and publish modes: it starts the
// workers, samples the server (RSS, CPU, /metrics) around the measured
// phase, and turns the workers' results into the mode's JSON object.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// runHeader is the start of every mode's JSON object.
func runHeader(cfg *config) map[string]any {
	out := map[string]any{
		"mode": cfg.mode, "server": cfg.server, "url": cfg.url, "procs": cfg.procs,
		"loadavg_start": loadavg(), "server_pids": cfg.serverPIDs,
	}
	if cfg.label != "" {
		out["test"] = cfg.label
	}
	if cfg.protocol != "zenconn" {
		out["protocol"] = cfg.protocol
	}
	if len(cfg.targets) > 1 {
		// The subscribers are spread over the URLs in turn.
		out["urls"], out["pub_url"] = len(cfg.targets), cfg.pubTarget
	}
	return out
}

// orchestrate runs one test of any mode and returns its JSON object (with
// an error when a worker or a sample failed; the object is printed all the
// same).
func orchestrate(cfg *config) (map[string]any, error) {
	if cfg.mode == "churn" {
		return orchestrateChurn(cfg)
	}
	out := runHeader(cfg)
	var err error
	var before memSample
	if cfg.mode == "idle" && len(cfg.serverPIDs) > 0 {
		if before, err = sampleMem(cfg.serverPIDs); err != nil {
			return out, err
		}
	}
	cr, err := startCrew(cfg, func(i int) *workerResult {
		return &workerResult{Index: i, Error: "worker exited without a result"}
	})
	defer cr.close()
	if err != nil {
		return out, err
	}
	rd, err := waitReady(cr)
	if err != nil {
		return out, err
	}
	m := &measurement{}
	switch {
	case cfg.mode == "idle":
		err = measureIdle(cfg, cr, out, before, rd.subs)
	case cr.n > 0: // a worker failed while connecting
		cr.broadcast("END 0")
	default:
		m, err = measureTraffic(cfg, cr, rd.pubID)
	}
	if err == nil {
		err = cr.collect()
	}
	if err != nil {
		return out, err
	}
	t := tallyResults(cr.results)
	errs := append(m.errs, t.errs...)
	connFigures(out, t)
	if tc := sumTLSCount(cr.results); tc != nil {
		out["tls_count"] = tc
	}
	if cfg.mode != "idle" {
		errs = trafficFigures(out, cfg, t, rd.subs, m, errs)
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		out["worker_errors"] = errs
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// readiness is what the workers' READY lines said.
type readiness struct {
	subs  int    // subscribers ready, all workers together
	pubID string // the publisher's connection id ("" when none)
}

// waitReady waits until every worker is connected (READY) or has failed.
func waitReady(cr *crew[workerResult]) (readiness, error) {
	var rd readiness
	ready := 0
	for ready+cr.n < len(cr.workers) {
		wl, err := cr.next()
		if err != nil {
			return rd, err
		}
		rest, ok := strings.CutPrefix(wl.line, "READY ")
		if !ok {
			continue
		}
		ready++
		if f := strings.Fields(rest); len(f) == 2 {
			n, _ := strconv.Atoi(f[0])
			rd.subs += n
			if f[1] != "-" {
				rd.pubID = f[1]
			}
		}
	}
	return rd, nil
}

// memSample is the server's memory at one moment, summed over its
// processes: RSS (shared pages counted in every process) and PSS (counted
// once).
type memSample struct{ rss, pss int64 }

func sampleMem(pids []int) (memSample, error) {
	rss, err := sumRSS(pids)
	if err != nil {
		return memSample{}, err
	}
	pss, err := sumPSS(pids)
	return memSample{rss, pss}, err
}

// measureIdle waits --settle with every connection open (unless a worker
// failed), adds the server's memory before and after to out, and ends the
// workers. kib_per_conn is the growth of the summed RSS per connection;
// pss_kib_per_conn_total is the whole PSS after (the processes' own memory
// included, shared pages once) per connection.
func measureIdle(cfg *config, cr *crew[workerResult], out map[string]any, before memSample, readySubs int) error {
	if cr.n == 0 {
		time.Sleep(min(cfg.settle, time.Until(cfg.deadline)))
	}
	if len(cfg.serverPIDs) > 0 {
		after, err := sampleMem(cfg.serverPIDs)
		if err != nil {
			return err
		}
		out["rss_before_kib"] = before.rss
		out["rss_after_kib"] = after.rss
		out["pss_before_kib"] = before.pss
		out["pss_after_kib"] = after.pss
		if readySubs > 0 {
			out["kib_per_conn"] = round3(float64(after.rss-before.rss) / float64(readySubs))
			out["pss_kib_per_conn"] = round3(float64(after.pss-before.pss) / float64(readySubs))
			out["pss_kib_per_conn_total"] = round3(float64(after.pss) / float64(readySubs))
		}
	}
	cr.broadcast("END 0")
	return nil
}

// measurement is what the orchestrator read from the server around the
// measured phase: its CPU, and its metrics (--metrics-url) before
// publishing (m0 at t0), when publishing ends (m1 at t1) and after every
// worker is done with its connections still open (m2).
type measurement struct {
	cpu        cpuWindow
	m0, m1, m2 promSample
	t0, t1     time.Time
	errs       []string // failed scrapes
}

func (m *measurement) metricsErr(when string, err error) {
	if err != nil {
		m.errs = append(m.errs, fmt.Sprintf("metrics %s: %v", when, err))
	}
}

// measureTraffic starts the workers' publishing (GO), relays the end of
// publishing (PUBLISHED) to every worker as END, and samples the server
// around it, until every worker sent its result.
func measureTraffic(cfg *config, cr *crew[workerResult], pubID string) (*measurement, error) {
	m := &measurement{}
	if cfg.metricsURL != "" {
		// Subscribes and connects were acknowledged; wait until their
		// records are committed so that none counts in the run.
		s, err := scrapeSettled(cfg.metricsURL, 0, 10*time.Second)
		m.metricsErr("before", err)
		m.m0, m.t0 = s, time.Now()
	}
	m.cpu.start(cfg.serverPIDs)
	cr.broadcast(fmt.Sprintf("GO %s %d", pubID, cfg.epochNs))
	nDone, ackedDone := 0, int64(0)
	for !cr.done() {
		wl, err := cr.next()
		if err != nil {
			return m, err
		}
		if rest, ok := strings.CutPrefix(wl.line, "PUBLISHED "); ok {
			cr.broadcast("END " + rest)
			if m.m0 != nil {
				s, err := scrape(cfg.metricsURL)
				m.metricsErr("at the end of publishing", err)
				m.m1, m.t1 = s, time.Now()
			}
		}
		if rest, ok := strings.CutPrefix(wl.line, "DONE "); ok {
			nDone++
			n, _ := strconv.ParseInt(rest, 10, 64)
			ackedDone += n
		}
		if cfg.metricsURL != "" && nDone > 0 && nDone+cr.n == len(cr.workers) {
			// Every worker is done and waits with its connections open:
			// read the server's figures now, then let them close.
			m.cpu.end()
			nDone = 0
			if m.m0 != nil {
				// Every acknowledged publish has a record to wait for.
				s, err := scrapeSettled(cfg.metricsURL, m.m0[metricRecords]+float64(ackedDone), 10*time.Second)
				m.metricsErr("after", err)
				m.m2 = s
			}
			cr.broadcast("CLOSE")
		}
	}
	m.cpu.end()
	return m, nil
}

// cpuWindow is the server's CPU time (user and system, µs) and the
// machine's busy time at the start and at the end of the measured phase.
type cpuWindow struct {
	pids                     []int
	user0, sys0, user1, sys1 int64
	busy0, busy1             int64
	err                      error
	ended                    bool
}

func (w *cpuWindow) start(pids []int) {
	w.pids = pids
	if len(pids) > 0 {
		w.user0, w.sys0, w.err = sumCPU(pids)
	}
	w.busy0, _ = machineBusyUs()
}

// end reads the counters again (once; later calls do nothing).
func (w *cpuWindow) end() {
	if w.ended {
		return
	}
	w.ended = true
	if len(w.pids) > 0 && w.err == nil {
		w.user1, w.sys1, w.err = sumCPU(w.pids)
	}
	w.busy1, _ = machineBusyUs()
}

func (w *cpuWindow) total() int64 { return (w.user1 + w.sys1) - (w.user0 + w.sys0) }
func (w *cpuWindow) user() int64  { return w.user1 - w.user0 }
func (w *cpuWindow) sys() int64   { return w.sys1 - w.sys0 }

// addTo adds the server's CPU over the measuring window of span µs to out,
// and the share of a CPU that everything else used (the generator used gen
// µs): above ~0.1 the run was disturbed.
func (w *cpuWindow) addTo(out map[string]any, span float64, gen int64) {
	out["server_cpu_us"] = w.total()
	out["server_sys_cpu_us"] = w.sys()
	if span <= 0 {
		return
	}
	out["server_cpu_share"] = round3(float64(w.total()) / span)
	if w.busy0 > 0 && w.busy1 > 0 {
		other := w.busy1 - w.busy0 - w.total() - gen
		out["other_cpu_share"] = round3(max(0, float64(other)) / span)
	}
}

// tally is the sum of the workers' results.
type tally struct {
	workerResult
	h, ah  hist // delivery and ack latencies
	merged map[string]*errStat
	errs   []string // the workers' errors
}

func tallyResults(results []*workerResult) *tally {
	t := &tally{merged: map[string]*errStat{}}
	for _, r := range results {
		t.Conns += r.Conns
		t.Ready += r.Ready
		t.DialErrors += r.DialErrors
		t.ProtoErrors += r.ProtoErrors
		t.Disconnects += r.Disconnects
		t.OutOfOrder += r.OutOfOrder
		t.Published += r.Published
		t.Acked += r.Acked
		t.AckReorder += r.AckReorder
		t.Refused += r.Refused
		t.HeldNs += r.HeldNs
		t.Skipped += r.Skipped
		t.LastAck = max(t.LastAck, r.LastAck)
		t.Received += r.Received
		t.CPUus += r.CPUus
		t.PollCalls += r.PollCalls
		t.PollEvents += r.PollEvents
		t.PollFull += r.PollFull
		t.ConnectMs = max(t.ConnectMs, r.ConnectMs)
		t.LastRecv = max(t.LastRecv, r.LastRecv)
		if r.FirstSend != 0 {
			t.FirstSend = r.FirstSend
		}
		if r.PubEnd != 0 {
			t.PubEnd = r.PubEnd
		}
		if r.FrameBytes != 0 {
			t.FrameBytes = r.FrameBytes
		}
		t.h.merge(r.Hist, r.HistMax)
		t.ah.merge(r.AckHist, r.AckHistMax)
		mergeErrors(t.merged, r.Errors)
		if r.Error != "" {
			t.errs = append(t.errs, fmt.Sprintf("worker %d: %s", r.Index, r.Error))
		}
	}
	return t
}

// connFigures are every mode's: connections and their errors.
func connFigures(out map[string]any, t *tally) {
	out["conns"] = t.Conns
	out["conns_ok"] = t.Ready
	out["connect_seconds"] = round3(t.ConnectMs / 1000)
	out["dial_errors"] = t.DialErrors
	out["protocol_errors"] = t.ProtoErrors
	out["disconnects"] = t.Disconnects
	if len(t.merged) > 0 {
		out["errors"] = t.merged
	}
}

// trafficFigures are the fanout and publish modes' figures; errs, with a
// failure to read the server's CPU added, is returned.
func trafficFigures(out map[string]any, cfg *config, t *tally, readySubs int, m *measurement, errs []string) []string {
	fanout := cfg.mode == "fanout"
	publishFigures(out, cfg, t, readySubs)
	// last ends the measuring window: the last delivery (fanout) or the
	// last ack (publish).
	last := t.LastRecv
	if fanout {
		deliveryFigures(out, t, readySubs)
	} else {
		last = t.LastAck
		ackFigures(out, t)
	}
	if t.FirstSend > 0 && t.PubEnd > t.FirstSend {
		out["publishes_per_sec"] = round3(float64(t.Published) / (float64(t.PubEnd-t.FirstSend) / 1e9))
	}
	out["ack_latency_us"] = latencies(&t.ah)
	if a := auditFigures(m.m0, m.m1, m.m2, m.t0, m.t1, t.Acked); a != nil {
		out["audit"] = a
	}
	if g := goFigures(m.m0, m.m2); g != nil {
		out["server_go"] = g
	}
	span := float64(last-t.FirstSend) / 1e3 // µs
	genFigures(out, t, span, fanout)
	if len(cfg.serverPIDs) == 0 {
		return errs
	}
	if m.cpu.err != nil {
		return append(errs, "server cpu: "+m.cpu.err.Error())
	}
	m.cpu.addTo(out, span, t.CPUus)
	perUnitCPU(out, &m.cpu, fanout, t)
	return errs
}

// publishFigures: the settings and the publishes' counts.
func publishFigures(out map[string]any, cfg *config, t *tally, readySubs int) {
	if cfg.mode == "fanout" {
		out["subs"] = cfg.conns
		out["subs_ok"] = readySubs
		out["max_lag"] = cfg.maxLag
		out["delivered_frame_payload_bytes"] = t.FrameBytes
	} else {
		out["pubs"] = cfg.pubs
	}
	out["size"] = cfg.size
	out["rate_target"] = cfg.rate
	out["window"] = cfg.window
	out["busy_poll"] = cfg.busyPoll
	out["duration_s"] = cfg.duration.Seconds()
	out["published"] = t.Published
	out["acked"] = t.Acked
	out["refused"] = t.Refused
	out["acks_out_of_order"] = t.AckReorder
	if cfg.rate > 0 {
		// Time a publish was due but the window or the lag bound held
		// it, and the due publishes skipped for that reason.
		out["publish_held_s"] = round3(float64(t.HeldNs) / 1e9)
		out["publishes_skipped"] = t.Skipped
	}
}

// deliveryFigures: the fan-out's deliveries, their rate and latency.
func deliveryFigures(out map[string]any, t *tally, readySubs int) {
	expected := t.Published * int64(readySubs)
	out["expected_deliveries"] = expected
	out["received_deliveries"] = t.Received
	out["missing_deliveries"] = expected - t.Received
	out["gaps_or_reorders"] = t.OutOfOrder
	if t.FirstSend > 0 && t.LastRecv > t.FirstSend {
		span := float64(t.LastRecv-t.FirstSend) / 1e9
		out["window_s"] = round3(span)
		out["deliveries_per_sec"] = round3(float64(t.Received) / span)
	}
	out["latency_us"] = latencies(&t.h)
}

// ackFigures: the publish mode's acks and their rate.
func ackFigures(out map[string]any, t *tally) {
	out["unanswered"] = t.Published - t.Acked - t.Refused
	if t.FirstSend > 0 && t.LastAck > t.FirstSend {
		span := float64(t.LastAck-t.FirstSend) / 1e9
		out["window_s"] = round3(span)
		out["acks_per_sec"] = round3(float64(t.Acked) / span)
	}
}

// latencies are the quantiles of h (µs), its maximum and its sample count.
func latencies(h *hist) map[string]int64 {
	return map[string]int64{
		"p50": h.quantile(0.50), "p90": h.quantile(0.90), "p99": h.quantile(0.99),
		"p999": h.quantile(0.999), "max": h.max, "samples": h.n,
	}
}

// genFigures: the generator's own CPU and epoll use over span µs.
func genFigures(out map[string]any, t *tally, span float64, fanout bool) {
	out["gen_cpu_us"] = t.CPUus
	if span > 0 {
		// Share of one CPU used over the measuring window: near 1 (per
		// process) means that side was saturated.
		out["gen_cpu_share"] = round3(float64(t.CPUus) / span)
	}
	out["gen_epoll"] = map[string]int64{"waits": t.PollCalls, "events": t.PollEvents, "full_batches": t.PollFull}
	if fanout && t.Received > 0 {
		out["gen_cpu_us_per_delivery"] = round3(float64(t.CPUus) / float64(t.Received))
	}
}

// perUnitCPU: the server's CPU per delivery (fanout) or per acknowledged
// publish, with the kernel's share (system time) and, per delivery, the
// server's own code (user time).
func perUnitCPU(out map[string]any, w *cpuWindow, fanout bool, t *tally) {
	if fanout && t.Received > 0 {
		n := float64(t.Received)
		out["server_cpu_us_per_delivery"] = round3(float64(w.total()) / n)
		out["server_sys_us_per_delivery"] = round3(float64(w.sys()) / n)
		out["server_user_us_per_delivery"] = round3(float64(w.user()) / n)
	}
	if !fanout && t.Acked > 0 {
		n := float64(t.Acked)
		out["server_cpu_us_per_publish"] = round3(float64(w.total()) / n)
		out["server_sys_us_per_publish"] = round3(float64(w.sys()) / n)
	}
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}
