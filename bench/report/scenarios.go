package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// envNum reads a setting recorded in the envelope (missing when absent).
func envNum(e *Envelope, key string) val {
	if e == nil {
		return val{}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(e.Env[key]), 64)
	if err != nil {
		return val{}
	}
	return some(v)
}

// firstOK returns the first present figure.
func firstOK(vs ...val) val {
	for _, v := range vs {
		if v.ok {
			return v
		}
	}
	return val{}
}

var zenconnBaseline = []column{{"zenconn", "ZenConn"}, {"baseline", "baseline"}}

// renderIdle: bench/run-idle.sh (load summarize --targets idle).
func renderIdle(_ *renderer, res map[string]any, e *Envelope) (string, []target) {
	var b strings.Builder
	m := func(f string) func(string) val { return medianOf(res, "idle", f) }
	conns := firstOK(numAt(res, "medians", "idle", "zenconn", "conns"), envNum(e, "CONNS"))
	fmt.Fprintf(&b, "%s WebSocket connections per server, each subscribed to one channel; the server's RSS "+
		"before connecting and once all are subscribed (medians of %s run(s) per server).\n\n",
		conns.fmt(num), numAt(res, "medians", "idle", "zenconn", "runs").fmt(num))
	b.WriteString(figTable(zenconnBaseline, []int{1}, []fig{
		{label: "connections subscribed", get: m("conns_ok"), f: num},
		{label: "RSS before", get: m("rss_before_kib"), f: kib},
		{label: "RSS after", get: m("rss_after_kib"), f: kib},
		{label: "RSS per connection", get: m("kib_per_conn"), f: kib},
		{label: "time to connect and subscribe all", get: m("connect_seconds"), f: seconds},
		{label: "dial errors (all runs)", get: lostOf(res, "idle", "dial_errors"), f: num, noRatio: true},
		{label: "disconnects (all runs)", get: lostOf(res, "idle", "disconnects"), f: num, noRatio: true},
		{label: "protocol errors (all runs)", get: lostOf(res, "idle", "protocol_errors"), f: num, noRatio: true},
	}))
	ours := numAt(res, "medians", "idle", "zenconn", "kib_per_conn")
	t := target{name: "RSS per subscribed connection at 15,000 connections", ours: ours,
		ref: numAt(res, "medians", "idle", "baseline", "kib_per_conn"), refName: "baseline", goal: "≤ 3 KiB", f: kib}
	if ours.ok {
		t.met = boolp(ours.v <= 3)
	}
	if c := numAt(res, "medians", "idle", "zenconn", "conns_ok"); c.ok && c.v != 15000 {
		t.note = "measured at " + num(c.v) + " connections"
	}
	ts := []target{t}
	b.WriteString("\n" + targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// fanoutFor renders the fan-out to n subscribers (0: unknown until read).
func fanoutFor(n int) func(*renderer, map[string]any, *Envelope) (string, []target) {
	return func(r *renderer, res map[string]any, e *Envelope) (string, []target) {
		subs := val{}
		if n > 0 {
			subs = some(float64(n))
		}
		return renderFanout(res, e, subs)
	}
}

// renderFanout: bench/run-fanout.sh (load summarize --targets fanout);
// subs is the expected subscriber count, if known.
func renderFanout(res map[string]any, e *Envelope, subs val) (string, []target) {
	var b strings.Builder
	z := func(test, f string) val { return numAt(res, "medians", test, "zenconn", f) }
	subs = firstOK(z("max", "subs"), z("fixed", "subs"), envNum(e, "SUBS"), subs)
	rate := z("fixed", "rate_target")
	fixed := firstOK(envNum(e, "FIXED_DELIVERIES"), some(20000))
	if rate.ok && subs.ok {
		fixed = some(rate.v * subs.v)
	}
	fmt.Fprintf(&b, "%s subscribers and one publisher, %s-byte publish requests (delivered frames: %s bytes), %s per run, "+
		"medians of %s run(s) per server; %s generator process(es).\n\n",
		subs.fmt(num), firstOK(z("max", "size"), z("fixed", "size")).fmt(num),
		firstOK(z("max", "delivered_frame_payload_bytes"), z("fixed", "delivered_frame_payload_bytes")).fmt(num),
		firstOK(z("max", "duration_s"), z("fixed", "duration_s")).fmt(seconds),
		firstOK(z("max", "runs"), z("fixed", "runs")).fmt(num), firstOK(envNum(e, "PROCS"), some(1)).fmt(num))

	b.WriteString("Maximum rate:\n\n")
	mx := func(f string) func(string) val { return medianOf(res, "max", f) }
	b.WriteString(figTable(zenconnBaseline, []int{1}, []fig{
		{label: "deliveries/s", get: mx("deliveries_per_sec"), f: num},
		{label: "publishes/s", get: mx("publishes_per_sec"), f: num},
		{label: "server CPU (share of one CPU)", get: mx("server_cpu_share"), f: share},
		{label: "server CPU µs per delivery", get: mx("server_cpu_us_per_delivery"), f: dec(3)},
		{label: "generator CPU (share)", get: mx("gen_cpu_share"), f: share, noRatio: true},
		{label: "latency p50", get: mx("latency_us.p50"), f: micros},
		{label: "latency p99", get: mx("latency_us.p99"), f: micros},
		{label: "latency p99.9", get: mx("latency_us.p999"), f: micros},
		{label: "latency max", get: mx("latency_us.max"), f: micros},
		{label: "messages lost (all runs)", get: lostOf(res, "max", "missing_deliveries"), f: num, noRatio: true},
		{label: "reordered (all runs)", get: lostOf(res, "max", "gaps_or_reorders"), f: num, noRatio: true},
		{label: "disconnects (all runs)", get: lostOf(res, "max", "disconnects"), f: num, noRatio: true},
	}))
	fmt.Fprintf(&b, "\nFixed rate: %s deliveries/s (%s publishes/s):\n\n", fixed.fmt(num), rate.fmt(num))
	fx := func(f string) func(string) val { return medianOf(res, "fixed", f) }
	b.WriteString(figTable([]column{{"zenconn", "ZenConn"}, {"baseline", "baseline"}, {"floor", "floor"}}, []int{1, 2}, []fig{
		{label: "deliveries/s", get: fx("deliveries_per_sec"), f: num},
		{label: "server CPU µs per delivery", get: fx("server_cpu_us_per_delivery"), f: dec(2)},
		{label: "of which kernel", get: fx("server_sys_us_per_delivery"), f: dec(2)},
		{label: "of which user", get: fx("server_user_us_per_delivery"), f: dec(2)},
		{label: "server CPU (share)", get: fx("server_cpu_share"), f: share},
		{label: "latency p50", get: fx("latency_us.p50"), f: micros},
		{label: "latency p99", get: fx("latency_us.p99"), f: micros},
		{label: "latency p99.9", get: fx("latency_us.p999"), f: micros},
		{label: "latency max", get: fx("latency_us.max"), f: micros},
		{label: "messages lost (all runs)", get: lostOf(res, "fixed", "missing_deliveries"), f: num, noRatio: true},
		{label: "reordered (all runs)", get: lostOf(res, "fixed", "gaps_or_reorders"), f: num, noRatio: true},
		{label: "other processes' CPU (share)", get: fx("other_cpu_share"), f: share, noRatio: true},
	}))
	n := subs.fmt(num)
	at := " at " + fixed.fmt(num) + " deliveries/s"
	note := ""
	if fixed.ok && fixed.v != 20000 {
		note = "the target is at 20,000 deliveries/s"
	}
	cpu := func(s string) val { return numAt(res, "medians", "fixed", s, "server_cpu_us_per_delivery") }
	p99 := func(s string) val { return numAt(res, "medians", "fixed", s, "latency_us.p99") }
	ts := []target{
		minRatio(n+" subs: max deliveries/s", numAt(res, "medians", "max", "zenconn", "deliveries_per_sec"),
			numAt(res, "medians", "max", "baseline", "deliveries_per_sec"), "baseline", 3, num),
		maxRatio(n+" subs: server CPU µs per delivery"+at, cpu("zenconn"), cpu("baseline"), "baseline", 0.5, dec(2)),
		maxRatio(n+" subs: server CPU µs per delivery"+at, cpu("zenconn"), cpu("floor"), "floor", 1.3, dec(2)),
		maxRatio(n+" subs: p99 latency"+at, p99("zenconn"), p99("baseline"), "baseline", 0.5, micros),
		maxRatio(n+" subs: p99 latency"+at, p99("zenconn"), p99("floor"), "floor", 1.3, micros),
	}
	for i := 1; i < len(ts); i++ {
		ts[i].note = note
	}
	b.WriteString("\n" + targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// renderStatic: bench/run-static.sh (bench/static).
func renderStatic(_ *renderer, res map[string]any, _ *Envelope) (string, []target) {
	var b strings.Builder
	cand, base := strAt(res, "candidate"), strAt(res, "baseline")
	if cand == "" {
		cand = "zenconn"
	}
	if base == "" {
		base = "nginx"
	}
	fmt.Fprintf(&b, "%s against %s serving the same folder on the same core. wrk: %s. %s; %s.\n\n",
		"ZenConn", orDash(strings.TrimPrefix(strAt(res, "meta", "nginx"), "nginx version: ")), code(orDash(strAt(res, "meta", "wrk_command"))),
		orDash(strAt(res, "meta", "files")), orDash(strAt(res, "meta", "encoding")))
	files := strList(res, "file_order")
	if len(files) == 0 {
		for k := range objAt(res, "files") {
			files = append(files, k)
		}
		sort.Strings(files)
	}
	goals := map[string]float64{"1k": 1.0, "100k": 0.9}
	sizes := map[string]float64{"1k": 1024, "100k": 102400}
	for _, f := range []string{"1k", "100k"} {
		found := false
		for _, g := range files {
			found = found || g == f
		}
		if !found {
			files = append(files, f)
		}
	}
	cols := []column{{cand, "ZenConn"}, {base, base}}
	var ts []target
	for _, f := range files {
		m := func(field string) func(string) val {
			return func(srv string) val { return numAt(res, "files", f, "medians", srv, field) }
		}
		size := numAt(res, "files", f, "size_bytes")
		if d, ok := sizes[f]; ok && !size.ok {
			size = some(d)
		}
		if objAt(res, "files", f) != nil {
			fmt.Fprintf(&b, "%s (%s, %s):\n\n", code(orDash(strAt(res, "files", f, "path"))), size.fmt(bytesFmt),
				"runs in the medians: "+runsUsed(objAt(res, "files", f, "runs_in_medians")))
			b.WriteString(figTable(cols, []int{1}, []fig{
				{label: "requests/s", get: m("requests_per_sec"), f: num},
				{label: "transfer MiB/s", get: m("transfer_mib_per_sec"), f: num},
				{label: "bytes per response (head + body)", get: m("response_bytes"), f: num},
				{label: "server CPU µs per request", get: m("server_cpu_us_per_request"), f: dec(2)},
				{label: "server CPU (share)", get: m("server_cpu_share"), f: share},
				{label: "wrk CPU (share)", get: m("wrk_cpu_share"), f: share, noRatio: true},
				{label: "latency p50", get: m("latency_us.p50"), f: micros},
				{label: "latency p99", get: m("latency_us.p99"), f: micros},
				{label: "errors", get: m("errors_total"), f: num, noRatio: true},
				{label: "other processes' CPU (share)", get: m("other_cpu_share"), f: share, noRatio: true},
			}))
			b.WriteString("\n")
		}
		k, ok := goals[f]
		if !ok {
			continue
		}
		name := "static " + f + " requests/s"
		if size.ok {
			name = "static " + bytesFmt(size.v) + " file: requests/s"
		}
		ts = append(ts, minRatio(name, numAt(res, "files", f, "medians", cand, "requests_per_sec"),
			numAt(res, "files", f, "medians", base, "requests_per_sec"), base, k, num))
	}
	b.WriteString(targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

func orDash(s string) string {
	if s == "" {
		return dash
	}
	return s
}

func runsUsed(m map[string]any) string {
	if len(m) == 0 {
		return dash
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %s", k, strAt(m, k)))
	}
	return strings.Join(parts, ", ")
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// renderAudit: bench/run-audit.sh (load summarize --targets audit).
func renderAudit(_ *renderer, res map[string]any, _ *Envelope) (string, []target) {
	var b strings.Builder
	fmt.Fprintf(&b, "Offered: %s; data folders on %s; %s uncommitted file(s) outside `bench/` in the build.\n\n",
		orDash(strAt(res, "meta", "offered")), code(orDash(strAt(res, "meta", "work_fs"))),
		orDash(strAt(res, "meta", "uncommitted_files_outside_bench")))
	f := func(field string) func(string) val { return medianOf(res, "fanout", field) }
	b.WriteString("Fan-out, audit log on (`--audit-sync batch`, the default) and off (`--audit=false`):\n\n")
	b.WriteString(figTable([]column{{"zenconn", "audit log on"}, {"zenconn-noaudit", "audit log off"}}, []int{1}, []fig{
		{label: "deliveries/s", get: f("deliveries_per_sec"), f: num},
		{label: "publishes/s", get: f("publishes_per_sec"), f: num},
		{label: "server CPU (share)", get: f("server_cpu_share"), f: share},
		{label: "server CPU µs per delivery", get: f("server_cpu_us_per_delivery"), f: dec(3)},
		{label: "of which kernel", get: f("server_sys_us_per_delivery"), f: dec(3)},
		{label: "latency p50", get: f("latency_us.p50"), f: micros},
		{label: "latency p99", get: f("latency_us.p99"), f: micros},
		{label: "messages lost (all runs)", get: lostOf(res, "fanout", "missing_deliveries"), f: num, noRatio: true},
		{label: "audit records − acked publishes", get: f("audit.records_minus_acked"), f: num, noRatio: true},
		{label: "GC cycles", get: f("server_go.gc_cycles"), f: num},
		{label: "runs in the medians", get: f("runs"), f: num, noRatio: true},
	}))
	p := func(field string) func(string) val { return medianOf(res, "publish", field) }
	b.WriteString("\nPublishes only (no subscriber), by `--audit-sync`:\n\n")
	b.WriteString(figTable([]column{{"zenconn", "batch"}, {"zenconn-always", "always"}, {"zenconn-noaudit", "off"}}, nil, []fig{
		{label: "publishes acked/s", get: p("acks_per_sec"), f: num},
		{label: "audit records committed/s", get: p("audit.records_per_sec"), f: num},
		{label: "refused (overloaded)", get: p("refused"), f: num},
		{label: "queue at the end (records)", get: p("audit.lag_at_pub_end"), f: num},
		{label: "records per commit (mean)", get: p("audit.batch_mean"), f: num},
		{label: "fsync mean", get: p("audit.fsync_mean_ms"), f: millis},
		{label: "fsync p50", get: p("audit.fsync_p50_ms"), f: millis},
		{label: "fsync p99", get: p("audit.fsync_p99_ms"), f: millis},
		{label: "server CPU µs per publish", get: p("server_cpu_us_per_publish"), f: dec(2)},
		{label: "of which kernel", get: p("server_sys_us_per_publish"), f: dec(2)},
		{label: "ack latency p50", get: p("ack_latency_us.p50"), f: micros},
		{label: "ack latency p99", get: p("ack_latency_us.p99"), f: micros},
		{label: "runs in the medians", get: p("runs"), f: num},
	}))
	ts := []target{minRatio("fan-out deliveries/s with the audit log (at most 10% fewer)",
		numAt(res, "medians", "fanout", "zenconn", "deliveries_per_sec"),
		numAt(res, "medians", "fanout", "zenconn-noaudit", "deliveries_per_sec"), "audit log off", 0.9, num)}
	b.WriteString("\n" + targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// renderScale: bench/run-scale.sh, whose stdout is one raw load result per
// test (scale-idle, scale-fanout), wrapped as {"runs": [...]}; medians
// are used instead if a later version of the script summarizes.
func renderScale(_ *renderer, res map[string]any, e *Envelope) (string, []target) {
	var b strings.Builder
	get := func(test, field string) val {
		if v := numAt(res, "medians", test, "zenconn", field); v.ok {
			return v
		}
		for _, r := range runsOf(res, test, "") {
			if v := numAt(r, field); v.ok {
				return v
			}
		}
		if strAt(res, "test") == test {
			return numAt(res, field)
		}
		return val{}
	}
	workers := firstOK(envNum(e, "WORKERS"), some(4))
	procs := firstOK(envNum(e, "PROCS"), some(4))
	fmt.Fprintf(&b, "`zenconn serve --workers %s` (the agent and %s worker processes, not pinned: both cores are shared by the node "+
		"and %s generator process(es)); RSS summed over all the node's processes. One run.\n\n",
		workers.fmt(num), workers.fmt(num), procs.fmt(num))
	conns := get("scale-idle", "conns")
	ok := get("scale-idle", "conns_ok")
	t := newTable("figure", "value")
	t.add("connections open and subscribed", ok.fmt(num)+" of "+conns.fmt(num)+" ("+get("scale-idle", "dial_errors").fmt(num)+" dial errors), in "+get("scale-idle", "connect_seconds").fmt(seconds))
	t.add("RSS of the node, before", get("scale-idle", "rss_before_kib").fmt(kib))
	t.add("RSS of the node, with the connections", get("scale-idle", "rss_after_kib").fmt(kib))
	t.add("RSS per connection, all processes summed", get("scale-idle", "kib_per_conn").fmt(kib))
	t.add("fan-out to all of them, as fast as the generator allows: deliveries/s", get("scale-fanout", "deliveries_per_sec").fmt(num))
	t.add("deliveries received / expected", get("scale-fanout", "received_deliveries").fmt(num)+" / "+get("scale-fanout", "expected_deliveries").fmt(num))
	t.add("messages lost, reordered, disconnects", get("scale-fanout", "missing_deliveries").fmt(num)+", "+get("scale-fanout", "gaps_or_reorders").fmt(num)+", "+get("scale-fanout", "disconnects").fmt(num))
	t.add("node CPU µs per delivery (of which kernel)", get("scale-fanout", "server_cpu_us_per_delivery").fmt(dec(3))+" ("+get("scale-fanout", "server_sys_us_per_delivery").fmt(dec(3))+")")
	t.add("node CPU (CPUs busy)", get("scale-fanout", "server_cpu_share").fmt(share))
	t.add("generator CPU (CPUs busy)", get("scale-fanout", "gen_cpu_share").fmt(share))
	t.add("latency p50 / p99", get("scale-fanout", "latency_us.p50").fmt(micros)+" / "+get("scale-fanout", "latency_us.p99").fmt(micros))
	b.WriteString(t.String())
	b.WriteString("\nNo target of its own: it shows that the figures above hold on several worker processes.\n\n")
	b.WriteString(problemsBlock(res))
	return b.String(), nil
}

// renderMicro: go test -bench output, as parsed by report wrap, or
// parsed here from the text file it names.
func renderMicro(r *renderer, res map[string]any, _ *Envelope) (string, []target) {
	var benches []Bench
	if raw, ok := res["benchmarks"]; ok {
		if bb, err := json.Marshal(raw); err == nil {
			_ = json.Unmarshal(bb, &benches)
		}
	}
	if len(benches) == 0 && res != nil && r != nil && r.resultsDir != "" {
		name := strAt(res, "text")
		if name == "" {
			name = "micro.txt"
		}
		if text, err := os.ReadFile(filepath.Join(r.resultsDir, filepath.Base(name))); err == nil {
			benches = parseBench(string(text)).Benchmarks
		}
	}
	var b strings.Builder
	b.WriteString("Raw output: [results/micro.txt](results/micro.txt). Not pinned; `-benchtime` 1 s unless the command says otherwise.\n\n")
	t := newTable("package", "benchmark", "ns/op", "MB/s", "B/op", "allocs/op", "other")
	t.right[1], t.right[6] = false, false
	var records val
	for _, x := range benches {
		mt := func(k string) val {
			v, ok := x.Metrics[k]
			return val{v, ok}
		}
		var other []string
		for _, k := range sortedMetricKeys(x.Metrics) {
			switch k {
			case "ns/op", "MB/s", "B/op", "allocs/op":
				continue
			}
			other = append(other, num(x.Metrics[k])+" "+k)
		}
		t.add(shortPkg(x.Pkg), x.Name, mt("ns/op").fmt(num), mt("MB/s").fmt(num), mt("B/op").fmt(num),
			mt("allocs/op").fmt(num), strings.Join(other, ", "))
		if shortPkg(x.Pkg) == "shm" && x.Name == "TwoProcesses/64B" {
			records = mt("records/s")
		}
	}
	if len(benches) == 0 {
		b.WriteString("*No benchmark results.*\n\n")
	} else {
		b.WriteString(t.String() + "\n")
	}
	ts := []target{{name: "shared-memory ring, 64-byte records one way between two processes", ours: records,
		goal: "≥ 5,000,000 records/s", f: num}}
	if records.ok {
		ts[0].met = boolp(records.v >= 5e6)
	}
	b.WriteString(targetsTable(ts) + "\n")
	for _, f := range strList(res, "failures") {
		b.WriteString("- failed: " + f + "\n")
	}
	return b.String(), ts
}

func sortedMetricKeys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// renderChurn: bench/run-churn.sh. Its JSON (load summarize-churn) has
// "churn": the main figures per server, with "no_growth"; "targets"; the
// medians of every field. Without "churn" it is rendered generically. The
// target: at least 2× the baseline's connect/subscribe/publish/close
// cycles per second, and no growth of descriptors, goroutines, heap or RSS.
func renderChurn(r *renderer, res map[string]any, e *Envelope) (string, []target) {
	const goal = "cycles/s ≥ 2× baseline with no growth"
	servers := objAt(res, "churn")
	if servers == nil {
		return renderWith(res, goal, 2)
	}
	cand, base := strAt(res, "candidate"), strAt(res, "baseline")
	if cand == "" {
		cand = "zenconn"
	}
	if base == "" {
		base = "baseline"
	}
	var b strings.Builder
	cols := orderServers(servers, cand, base)
	if len(cols) == 0 {
		return renderWith(res, goal, 2)
	}
	m := func(f string) func(string) val { return func(srv string) val { return numAt(servers, srv, f) } }
	test := "churn"
	if len(objAt(res, "medians")) == 1 {
		test = sortedKeys(objAt(res, "medians"))[0]
	}
	workers, dur := numAt(res, "medians", test, cand, "workers"), numAt(res, "medians", test, cand, "duration_s")
	fmt.Fprintf(&b, "%s connections at a time, each cycling for %s: connect and upgrade, welcome, subscribe, ack, publish, ack, "+
		"close; the server's RSS, heap in use, goroutines and open descriptors sampled before and after the churn "+
		"(medians of %s run(s) per server).\n\n", workers.fmt(num), dur.fmt(seconds), numAt(res, "medians", test, cand, "runs").fmt(num))
	var refs []int
	if len(cols) > 1 && cols[1].key == base {
		refs = []int{1}
	}
	b.WriteString(figTable(cols, refs, churnFigs(res, test, m)))
	b.WriteString("\n" + growthTable(servers, cols))
	if lim := objAt(res, "growth_limits"); lim != nil {
		var parts []string
		for _, k := range sortedKeys(lim) {
			parts = append(parts, k+" "+strAt(lim, k))
		}
		fmt.Fprintf(&b, "\nGrowth limits: %s.\n", strings.Join(parts, ", "))
	}
	ts := jsonTargets(res, base)
	if len(ts) == 0 {
		t := minRatio(goal, numAt(servers, cand, "cycles_per_sec"), numAt(servers, base, "cycles_per_sec"), base, 2, num)
		if met, ok := res["met"].(bool); ok {
			t.met = boolp(met)
		}
		ts = append(ts, t)
	}
	b.WriteString("\n" + targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// churnFigs are the rows of the churn table; m(field) reads a server's
// median of field.
func churnFigs(res map[string]any, test string, m func(string) func(string) val) []fig {
	return []fig{
		{label: "cycles/s", get: m("cycles_per_sec"), f: num},
		{label: "cycle latency p50", get: m("cycle_latency_us.p50"), f: micros},
		{label: "cycle latency p99", get: m("cycle_latency_us.p99"), f: micros},
		{label: "cycle errors", get: m("cycle_errors"), f: num, noRatio: true},
		{label: "messages lost (all runs)", get: lostOf(res, test, "missing_deliveries"), f: num, noRatio: true},
		{label: "server CPU µs per cycle", get: m("server_cpu_us_per_cycle"), f: dec(1)},
		{label: "generator CPU (share)", get: m("gen_cpu_share"), f: share, noRatio: true},
		{label: "RSS before", get: m("before.rss_kib"), f: kib},
		{label: "RSS after", get: m("after.rss_kib"), f: kib},
		{label: "RSS growth, bytes per cycle", get: m("growth.rss_bytes_per_cycle"), f: num, noRatio: true},
		{label: "heap in use before", get: m("before.heap_inuse_kib"), f: kib},
		{label: "heap in use after", get: m("after.heap_inuse_kib"), f: kib},
		{label: "heap growth, bytes per cycle", get: m("growth.heap_bytes_per_cycle"), f: num, noRatio: true},
		{label: "goroutines before", get: m("before.goroutines"), f: num},
		{label: "goroutines after", get: m("after.goroutines"), f: num},
		{label: "open descriptors before (files on disk apart)", get: m("before.fds"), f: num},
		{label: "open descriptors after (files on disk apart)", get: m("after.fds"), f: num},
		{label: "open files on disk before", get: m("before.files"), f: num},
		{label: "open files on disk after", get: m("after.files"), f: num},
		{label: "time for the descriptors to settle", get: m("settle_s"), f: seconds, noRatio: true},
		{label: "other processes' CPU (share)", get: m("other_cpu_share"), f: share, noRatio: true},
	}
}

// growthTable says, per server, whether it grew within the limits.
func growthTable(servers map[string]any, cols []column) string {
	t := newTable(append([]string{"no growth (within the limits)"}, labels(cols)...)...)
	row := []string{"after − before"}
	for _, c := range cols {
		ok, has := at(servers, c.key, "no_growth").(bool)
		cellText := dash
		if has {
			cellText = map[bool]string{true: "yes", false: "no"}[ok]
		}
		if over := strList(servers, c.key, "growth_over_limits"); len(over) > 0 {
			cellText += ": " + strings.Join(over, "; ")
		}
		row = append(row, cellText)
	}
	t.add(row...)
	for i := range t.right {
		t.right[i] = false
	}
	return t.String()
}

func labels(cols []column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.label
	}
	return out
}

// renderGeneric renders a results file of an unknown shape.
func renderGeneric(r *renderer, res map[string]any, e *Envelope) (string, []target) {
	return renderWith(res, "", 0)
}

// renderWith renders any summary: tables of "medians" (by server, or by
// test and server), its "targets" (or top-level ratio/target/met), its
// problems. With minRatio > 0 and no target in the JSON, the candidate's
// first "cycles" figure must be at least minRatio × the baseline's.
func renderWith(res map[string]any, goalName string, minRatioGoal float64) (string, []target) {
	var b strings.Builder
	cand, base := strAt(res, "candidate"), strAt(res, "baseline")
	if cand == "" {
		cand = "zenconn"
	}
	if base == "" {
		base = "baseline"
	}
	meds := objAt(res, "medians")
	groups := medianGroups(meds)
	var firstCycles string
	for _, test := range sortedKeysAny(groups) {
		if f := groupTable(&b, test, groups[test], cand, base); firstCycles == "" && f != "" {
			firstCycles = test + "\x00" + f
		}
	}
	if meds == nil && res != nil {
		b.WriteString("*No `medians` in the JSON.*\n\n")
	}
	ts := jsonTargets(res, base)
	if len(ts) == 0 && minRatioGoal > 0 {
		var ours, ref val
		if firstCycles != "" {
			test, f, _ := strings.Cut(firstCycles, "\x00")
			ours, ref = numAt(groups[test], cand, f), numAt(groups[test], base, f)
		}
		t := minRatio(goalName, ours, ref, base, minRatioGoal, num)
		if met, ok := res["met"].(bool); ok {
			t.met = boolp(met)
		}
		ts = append(ts, t)
	}
	if goalName != "" {
		for i := range ts {
			if ts[i].name == "" {
				ts[i].name = goalName
			}
		}
	}
	if len(ts) > 0 {
		b.WriteString(targetsTable(ts) + "\n")
	}
	b.WriteString(otherFields(res))
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// medianGroups is "medians" by test ("" when the medians are by server
// only): test -> server -> figures.
func medianGroups(meds map[string]any) map[string]map[string]any {
	groups := map[string]map[string]any{}
	byTest := false
	for _, v := range meds {
		if m, ok := v.(map[string]any); ok {
			for _, w := range m {
				if inner, ok := w.(map[string]any); ok && len(numericFields(inner)) > 0 {
					byTest = true
				}
			}
		}
	}
	if byTest {
		for k, v := range meds {
			if m, ok := v.(map[string]any); ok {
				groups[k] = m
			}
		}
	} else if meds != nil {
		groups[""] = meds
	}
	return groups
}

// groupTable writes the table of one test's medians (at most 40 figures)
// and returns its first figure about cycles ("" when none, or when no
// server has figures).
func groupTable(b *strings.Builder, test string, servers map[string]any, cand, base string) string {
	cols := orderServers(servers, cand, base)
	if len(cols) == 0 {
		return ""
	}
	fields := map[string]bool{}
	for _, c := range cols {
		for _, f := range numericFields(objAt(servers, c.key)) {
			fields[f] = true
		}
	}
	names := orderFields(fields)
	var firstCycles string
	for _, f := range names {
		if strings.Contains(f, "cycles") {
			firstCycles = f
			break
		}
	}
	const maxRows = 40
	more := 0
	if len(names) > maxRows {
		names, more = names[:maxRows], len(names)-maxRows
	}
	var figs []fig
	for _, f := range names {
		figs = append(figs, fig{label: f, get: func(srv string) val { return numAt(servers, srv, f) }, f: formatFor(f)})
	}
	if test != "" {
		fmt.Fprintf(b, "%s:\n\n", code(test))
	}
	var refs []int
	if len(cols) > 1 && cols[1].key == base {
		refs = []int{1}
	}
	b.WriteString(figTable(cols, refs, figs))
	if more > 0 {
		fmt.Fprintf(b, "\n… and %d more figures in the JSON.\n", more)
	}
	b.WriteString("\n")
	return firstCycles
}

// otherFields lists the top-level scalars of res that no table shows.
func otherFields(res map[string]any) string {
	var scalars []string
	for _, k := range sortedKeys(res) {
		switch k {
		case "candidate", "baseline", "ratio", "target", "met", "medians", "targets", "meta", "runs", "problems", "excluded_from_medians":
			continue
		}
		switch v := res[k].(type) {
		case bool, float64, string:
			scalars = append(scalars, fmt.Sprintf("%s: %v", code(k), v))
		}
	}
	if len(scalars) == 0 {
		return ""
	}
	return "Other fields: " + strings.Join(scalars, "; ") + ".\n\n"
}

func sortedKeysAny[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// orderServers: candidate, baseline, then the others by name.
func orderServers(servers map[string]any, cand, base string) []column {
	var cols []column
	label := func(k string) string {
		if k == "zenconn" {
			return "ZenConn"
		}
		return k
	}
	if _, ok := servers[cand].(map[string]any); ok {
		cols = append(cols, column{cand, label(cand)})
	}
	if _, ok := servers[base].(map[string]any); ok {
		cols = append(cols, column{base, label(base)})
	}
	for _, k := range sortedKeys(servers) {
		if _, ok := servers[k].(map[string]any); ok && k != cand && k != base {
			cols = append(cols, column{k, label(k)})
		}
	}
	return cols
}

// orderFields: cycles first, then the others by name with "before" ahead
// of "after" for the same figure.
func orderFields(fields map[string]bool) []string {
	names := make([]string, 0, len(fields))
	for f := range fields {
		if f == "runs" {
			continue
		}
		names = append(names, f)
	}
	key := func(f string) string {
		k := f
		rank := "1"
		if strings.Contains(f, "cycles") {
			rank = "0"
		}
		k = strings.ReplaceAll(k, "before", "\x01")
		k = strings.ReplaceAll(k, "after", "\x02")
		return rank + k
	}
	sort.Slice(names, func(i, j int) bool { return key(names[i]) < key(names[j]) })
	if fields["runs"] {
		names = append(names, "runs")
	}
	return names
}

// formatFor picks a format from a field's name.
func formatFor(f string) fmtFn {
	switch {
	case strings.HasSuffix(f, "_kib"):
		return kib
	case strings.HasSuffix(f, "_mib"):
		return mib
	case strings.HasSuffix(f, "_bytes"):
		return bytesFmt
	case strings.HasSuffix(f, "_us") || strings.Contains(f, "latency_us."):
		return micros
	case strings.HasSuffix(f, "_ms"):
		return millis
	case strings.HasSuffix(f, "_share"):
		return share
	}
	return num
}

// jsonTargets reads the targets a script put in its JSON: a "targets"
// array (load summarize, bench/static), else a top-level "target" object,
// else top-level "ratio", "target" (the minimum ratio) and "met".
func jsonTargets(res map[string]any, base string) []target {
	var ts []target
	one := func(m map[string]any) target {
		t := target{name: strAt(m, "name"), f: num, refName: base}
		if _, isLabel := m["reference"].(string); isLabel {
			// The reference server's label (summarize's targets against
			// another server than the baseline, e.g. Centrifugo).
			t.refName = strAt(m, "reference")
		}
		t.ours = firstOK(numAt(m, "candidate"), numAt(m, "ours"))
		t.ref = firstOK(numAt(m, "baseline"), numAt(m, "reference"))
		switch {
		case strAt(m, "goal") != "":
			t.goal = strAt(m, "goal")
		case numAt(m, "min_ratio").ok:
			t.goal = "≥ " + num(numAt(m, "min_ratio").v) + "× " + base
		case numAt(m, "target").ok:
			t.goal = "≥ " + num(numAt(m, "target").v) + "× " + base
		}
		if met, ok := m["met"].(bool); ok {
			t.met = boolp(met)
		}
		if !t.ours.ok || !t.ref.ok {
			// Only the ratio: show it as ours against 1.
			if r := firstOK(numAt(m, "ratio"), numAt(m, "ratio_candidate_to_baseline")); r.ok {
				t.ours, t.ref, t.refName = r, some(1), base+" = 1"
				t.f = dec(3)
			} else if !t.ours.ok && !t.ref.ok {
				t.refName = "" // a check without figures (e.g. no growth)
			}
		}
		return t
	}
	for _, x := range listAt(res, "targets") {
		if m, ok := x.(map[string]any); ok {
			ts = append(ts, one(m))
		}
	}
	if len(ts) > 0 {
		return ts
	}
	if m := objAt(res, "target"); m != nil {
		return []target{one(m)}
	}
	if numAt(res, "ratio").ok || numAt(res, "target").ok {
		if _, ok := res["met"]; ok {
			return []target{one(res)}
		}
	}
	return nil
}
