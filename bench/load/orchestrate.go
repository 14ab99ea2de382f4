package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

func orchestrate(cfg *config) (map[string]any, error) {
	if cfg.mode == "churn" {
		return orchestrateChurn(cfg)
	}
	out := map[string]any{
		"mode": cfg.mode, "server": cfg.server, "url": cfg.url, "procs": cfg.procs,
		"loadavg_start": loadavg(), "server_pids": cfg.serverPIDs,
	}
	if cfg.label != "" {
		out["test"] = cfg.label
	}
	var rssBefore int64
	if cfg.mode == "idle" && len(cfg.serverPIDs) > 0 {
		v, err := sumRSS(cfg.serverPIDs)
		if err != nil {
			return out, err
		}
		rssBefore = v
	}
	workers, up, err := startWorkers(cfg)
	defer stopWorkers(workers)
	if err != nil {
		return out, err
	}
	sink := newResultSink(len(workers), up, cfg.deadline, func(i int) *workerResult {
		return &workerResult{Index: i, Error: "worker exited without a result"}
	})
	defer sink.stop()
	next := sink.next
	broadcast := func(s string) {
		for _, w := range workers {
			w.down <- s
		}
	}
	collect := func() error {
		for sink.n < len(workers) {
			if _, err := next(); err != nil {
				return err
			}
		}
		return nil
	}

	// Phase 1: every worker connected (or failed).
	ready, readySubs, pubID := 0, 0, ""
	for ready+sink.n < len(workers) {
		wl, err := next()
		if err != nil {
			return out, err
		}
		if rest, ok := strings.CutPrefix(wl.line, "READY "); ok {
			ready++
			f := strings.Fields(rest)
			if len(f) == 2 {
				n, _ := strconv.Atoi(f[0])
				readySubs += n
				if f[1] != "-" {
					pubID = f[1]
				}
			}
		}
	}
	failedEarly := sink.n > 0

	var cpu0, cpu1, sys0, sys1, busy0, busy1 int64
	var cpuErr error
	// The server's metrics (--metrics-url): before publishing, when it
	// ends, and after every worker is done (connections still open).
	var m0, m1, m2 promSample
	var t0, t1 time.Time
	var metricErrs []string
	metricsErr := func(when string, err error) {
		metricErrs = append(metricErrs, fmt.Sprintf("metrics %s: %v", when, err))
	}
	if cfg.mode == "idle" {
		if !failedEarly {
			time.Sleep(min(cfg.settle, time.Until(cfg.deadline)))
		}
		if len(cfg.serverPIDs) > 0 {
			after, err := sumRSS(cfg.serverPIDs)
			if err != nil {
				return out, err
			}
			out["rss_before_kib"] = rssBefore
			out["rss_after_kib"] = after
			if readySubs > 0 {
				out["kib_per_conn"] = round3(float64(after-rssBefore) / float64(readySubs))
			}
		}
		broadcast("END 0")
	} else if !failedEarly {
		if cfg.metricsURL != "" {
			// Subscribes and connects were acknowledged; wait until their
			// records are committed so that none counts in the run.
			m, err := scrapeSettled(cfg.metricsURL, 0, 10*time.Second)
			if err != nil {
				metricsErr("before", err)
			}
			m0, t0 = m, time.Now()
		}
		if len(cfg.serverPIDs) > 0 {
			cpu0, sys0, cpuErr = sumCPU(cfg.serverPIDs)
			cpu0 += sys0
		}
		busy0, _ = machineBusyUs()
		broadcast(fmt.Sprintf("GO %s %d", pubID, time.Now().UnixNano()))
		measured := false
		endMeasure := func() {
			if measured {
				return
			}
			measured = true
			if len(cfg.serverPIDs) > 0 && cpuErr == nil {
				cpu1, sys1, cpuErr = sumCPU(cfg.serverPIDs)
				cpu1 += sys1
			}
			busy1, _ = machineBusyUs()
		}
		nDone, ackedDone := 0, int64(0)
		for sink.n < len(workers) {
			wl, err := next()
			if err != nil {
				return out, err
			}
			if rest, ok := strings.CutPrefix(wl.line, "PUBLISHED "); ok {
				broadcast("END " + rest)
				if m0 != nil {
					m, err := scrape(cfg.metricsURL)
					if err != nil {
						metricsErr("at the end of publishing", err)
					}
					m1, t1 = m, time.Now()
				}
			}
			if rest, ok := strings.CutPrefix(wl.line, "DONE "); ok {
				nDone++
				n, _ := strconv.ParseInt(rest, 10, 64)
				ackedDone += n
			}
			if cfg.metricsURL != "" && nDone > 0 && nDone+sink.n == len(workers) {
				// Every worker is done and waits with its connections
				// open: read the server's figures now, then let them close.
				endMeasure()
				nDone = 0
				if m0 != nil {
					// Every acknowledged publish has a record to wait for.
					minRec := m0[metricRecords] + float64(ackedDone)
					m, err := scrapeSettled(cfg.metricsURL, minRec, 10*time.Second)
					if err != nil {
						metricsErr("after", err)
					}
					m2 = m
				}
				broadcast("CLOSE")
			}
		}
		endMeasure()
	} else {
		broadcast("END 0")
	}
	if err := collect(); err != nil {
		return out, err
	}

	// Aggregate.
	var agg workerResult
	var h, ah hist
	errs := metricErrs
	merged := map[string]*errStat{}
	for _, r := range sink.results {
		agg.Conns += r.Conns
		agg.Ready += r.Ready
		agg.DialErrors += r.DialErrors
		agg.ProtoErrors += r.ProtoErrors
		agg.Disconnects += r.Disconnects
		agg.OutOfOrder += r.OutOfOrder
		agg.Published += r.Published
		agg.Acked += r.Acked
		agg.AckReorder += r.AckReorder
		agg.Refused += r.Refused
		agg.HeldNs += r.HeldNs
		agg.Skipped += r.Skipped
		agg.LastAck = max(agg.LastAck, r.LastAck)
		agg.Received += r.Received
		agg.CPUus += r.CPUus
		agg.PollCalls += r.PollCalls
		agg.PollEvents += r.PollEvents
		agg.PollFull += r.PollFull
		agg.ConnectMs = max(agg.ConnectMs, r.ConnectMs)
		agg.LastRecv = max(agg.LastRecv, r.LastRecv)
		if r.FirstSend != 0 {
			agg.FirstSend = r.FirstSend
		}
		if r.PubEnd != 0 {
			agg.PubEnd = r.PubEnd
		}
		if r.FrameBytes != 0 {
			agg.FrameBytes = r.FrameBytes
		}
		h.merge(r.Hist, r.HistMax)
		ah.merge(r.AckHist, r.AckHistMax)
		mergeErrors(merged, r.Errors)
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("worker %d: %s", r.Index, r.Error))
		}
	}
	out["conns"] = agg.Conns
	out["conns_ok"] = agg.Ready
	out["connect_seconds"] = round3(agg.ConnectMs / 1000)
	out["dial_errors"] = agg.DialErrors
	out["protocol_errors"] = agg.ProtoErrors
	out["disconnects"] = agg.Disconnects
	if len(merged) > 0 {
		out["errors"] = merged
	}
	if len(errs) > 0 {
		out["worker_errors"] = errs
	}
	if cfg.mode != "idle" {
		fanout := cfg.mode == "fanout"
		if fanout {
			out["subs"] = cfg.conns
			out["subs_ok"] = readySubs
			out["max_lag"] = cfg.maxLag
		} else {
			out["pubs"] = cfg.pubs
		}
		out["size"] = cfg.size
		if fanout {
			out["delivered_frame_payload_bytes"] = agg.FrameBytes
		}
		out["rate_target"] = cfg.rate
		out["window"] = cfg.window
		out["busy_poll"] = cfg.busyPoll
		out["duration_s"] = cfg.duration.Seconds()
		out["published"] = agg.Published
		out["acked"] = agg.Acked
		out["refused"] = agg.Refused
		out["acks_out_of_order"] = agg.AckReorder
		if cfg.rate > 0 {
			// Time a publish was due but the window or the lag bound held
			// it, and the due publishes skipped for that reason.
			out["publish_held_s"] = round3(float64(agg.HeldNs) / 1e9)
			out["publishes_skipped"] = agg.Skipped
		}
		// last ends the measuring window: the last delivery (fanout) or
		// the last ack (publish).
		last := agg.LastRecv
		if fanout {
			expected := agg.Published * int64(readySubs)
			out["expected_deliveries"] = expected
			out["received_deliveries"] = agg.Received
			out["missing_deliveries"] = expected - agg.Received
			out["gaps_or_reorders"] = agg.OutOfOrder
			if agg.FirstSend > 0 && agg.LastRecv > agg.FirstSend {
				span := float64(agg.LastRecv-agg.FirstSend) / 1e9
				out["window_s"] = round3(span)
				out["deliveries_per_sec"] = round3(float64(agg.Received) / span)
			}
		} else {
			last = agg.LastAck
			out["unanswered"] = agg.Published - agg.Acked - agg.Refused
			if agg.FirstSend > 0 && agg.LastAck > agg.FirstSend {
				span := float64(agg.LastAck-agg.FirstSend) / 1e9
				out["window_s"] = round3(span)
				out["acks_per_sec"] = round3(float64(agg.Acked) / span)
			}
		}
		if agg.FirstSend > 0 && agg.PubEnd > agg.FirstSend {
			out["publishes_per_sec"] = round3(float64(agg.Published) / (float64(agg.PubEnd-agg.FirstSend) / 1e9))
		}
		if fanout {
			out["latency_us"] = map[string]int64{
				"p50": h.quantile(0.50), "p90": h.quantile(0.90), "p99": h.quantile(0.99),
				"p999": h.quantile(0.999), "max": h.max, "samples": h.n,
			}
		}
		out["ack_latency_us"] = map[string]int64{
			"p50": ah.quantile(0.50), "p90": ah.quantile(0.90), "p99": ah.quantile(0.99),
			"p999": ah.quantile(0.999), "max": ah.max, "samples": ah.n,
		}
		if a := auditFigures(m0, m1, m2, t0, t1, agg.Acked); a != nil {
			out["audit"] = a
		}
		if g := goFigures(m0, m2); g != nil {
			out["server_go"] = g
		}
		out["gen_cpu_us"] = agg.CPUus
		span := float64(last-agg.FirstSend) / 1e3
		if span > 0 {
			// Share of one CPU used over the measuring window: near 1 (per
			// process) means that side was saturated.
			out["gen_cpu_share"] = round3(float64(agg.CPUus) / span)
		}
		out["gen_epoll"] = map[string]int64{"waits": agg.PollCalls, "events": agg.PollEvents, "full_batches": agg.PollFull}
		if fanout && agg.Received > 0 {
			out["gen_cpu_us_per_delivery"] = round3(float64(agg.CPUus) / float64(agg.Received))
		}
		if len(cfg.serverPIDs) > 0 {
			if cpuErr != nil {
				errs = append(errs, "server cpu: "+cpuErr.Error())
				out["worker_errors"] = errs
			} else {
				out["server_cpu_us"] = cpu1 - cpu0
				if span > 0 {
					out["server_cpu_share"] = round3(float64(cpu1-cpu0) / span)
					if busy0 > 0 && busy1 > 0 {
						// CPU used by everything else on the machine over
						// the same window: above ~0.1 the run was disturbed.
						other := busy1 - busy0 - (cpu1 - cpu0) - agg.CPUus
						out["other_cpu_share"] = round3(max(0, float64(other)) / span)
					}
				}
				out["server_sys_cpu_us"] = sys1 - sys0
				if fanout && agg.Received > 0 {
					out["server_cpu_us_per_delivery"] = round3(float64(cpu1-cpu0) / float64(agg.Received))
					// The kernel's share (system time) of it.
					out["server_sys_us_per_delivery"] = round3(float64(sys1-sys0) / float64(agg.Received))
					// And the user part (the server's own code).
					out["server_user_us_per_delivery"] = round3(float64((cpu1-sys1)-(cpu0-sys0)) / float64(agg.Received))
				}
				if !fanout && agg.Acked > 0 {
					out["server_cpu_us_per_publish"] = round3(float64(cpu1-cpu0) / float64(agg.Acked))
					out["server_sys_us_per_publish"] = round3(float64(sys1-sys0) / float64(agg.Acked))
				}
			}
		}
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}
