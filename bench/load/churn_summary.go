package main

// load summarize-churn: the medians of the churn runs and the churn
// targets.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// summarizeChurn is `load summarize` for churn results plus the churn
// targets: the candidate's median cycles/s at least --min-ratio times the
// baseline's, and no growth of the candidate (descriptors, goroutines,
// heap in use and RSS, before and after, within the limits given).
func summarizeChurn(args []string) int { return summarizeChurnTo(os.Stdout, args) }

func summarizeChurnTo(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("load summarize-churn", flag.ContinueOnError)
	test := fs.String("test", "churn", "test label of the churn runs")
	cand := fs.String("candidate", "zenconn", "server label of the candidate")
	base := fs.String("baseline", "baseline", "server label of the baseline")
	minRatio := fs.Float64("min-ratio", 2, "target: candidate cycles/s >= this × the baseline's")
	comp := fs.String("competitor", "centrifugo", "server label of the competitor: when it ran, candidate server CPU per cycle <= --max-cpu-ratio × its")
	maxCPURatio := fs.Float64("max-cpu-ratio", 0.5, "target: candidate server CPU per cycle <= this × the competitor's")
	maxOther := fs.String("max-other", "0", "passed to summarize: leave noisy runs out of the medians")
	var lim growthLimits
	lim.flags(fs)
	meta := metaFlag{}
	fs.Var(meta, "meta", "key=value copied to the output (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sargs := []string{"--candidate", *cand, "--baseline", *base, "--max-other", *maxOther}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sargs = append(sargs, "--meta", k+"="+meta[k])
	}
	var buf bytes.Buffer
	if rc := summarizeTo(&buf, append(sargs, fs.Args()...)); rc != 0 {
		return rc
	}
	var out map[string]any
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		fmt.Fprintln(os.Stderr, "load summarize-churn:", err)
		return 1
	}
	medians, _ := out["medians"].(map[string]any)
	byServer, _ := medians[*test].(map[string]any)
	servers := map[string]any{}
	growthOK := map[string]bool{}
	for srv := range byServer {
		servers[srv], growthOK[srv] = churnServer(byServer, srv, &lim)
	}
	problems, _ := out["problems"].([]any)
	var targets []map[string]any
	ratio, ratioMet, have := 0.0, true, false
	if _, ok := byServer[*base]; ok || byServer[*comp] == nil {
		var t map[string]any
		ratio, ratioMet, t, problems = churnTarget(byServer, *cand, *base, "cycles_per_sec", problems,
			fmt.Sprintf("candidate >= %gx baseline", *minRatio), func(c, b float64) bool { return c >= *minRatio*b })
		targets, have = append(targets, t), true
		out["ratio"], out["target"], out["ratio_met"] = ratio, *minRatio, ratioMet
	}
	cpuMet := true
	if _, ok := byServer[*comp]; ok {
		var cpuRatio float64
		var t map[string]any
		cpuRatio, cpuMet, t, problems = churnTarget(byServer, *cand, *comp, "server_cpu_us_per_cycle", problems,
			fmt.Sprintf("candidate <= %gx %s", *maxCPURatio, *comp), func(c, b float64) bool { return c <= *maxCPURatio*b })
		t["name"] = "server CPU per cycle vs " + *comp
		targets, have = append(targets, t), true
		out["cpu_ratio_vs_"+*comp], out["cpu_ratio_target"], out["cpu_ratio_met"] = cpuRatio, *maxCPURatio, cpuMet
	}
	if !have {
		ratioMet = false
	}
	out["churn"] = servers
	out["no_growth_met"] = growthOK[*cand]
	out["met"] = ratioMet && cpuMet && growthOK[*cand]
	out["growth_limits"] = lim.asMap()
	out["targets"] = append(targets, map[string]any{
		"name": "no growth after churn (" + *cand + ")", "goal": "growth within growth_limits", "met": growthOK[*cand],
	})
	if !growthOK[*cand] {
		m, _ := servers[*cand].(map[string]any)
		problems = append(problems, fmt.Sprintf("%s: growth over the limits: %v", *cand, m["growth_over_limits"]))
	}
	if problems != nil {
		out["problems"] = problems
	}
	enc, _ := json.MarshalIndent(out, "", "  ")
	_, _ = fmt.Fprintln(w, string(enc))
	return 0
}

// churnTarget compares field of the candidate with the reference's
// medians: the ratio, whether ok holds, the target's JSON and the problems
// (one more when a median is missing).
func churnTarget(byServer map[string]any, cand, ref, field string, problems []any, goal string,
	ok func(c, r float64) bool) (float64, bool, map[string]any, []any) {
	c, ok1 := churnMedian(byServer, cand, field)
	r, ok2 := churnMedian(byServer, ref, field)
	ratio, met := 0.0, false
	if ok1 && ok2 && r > 0 {
		ratio, met = round3(c/r), ok(c, r)
	} else {
		problems = append(problems, fmt.Sprintf("no median %s for %s and %s", field, cand, ref))
	}
	name := "churn cycles/s"
	if field != "cycles_per_sec" {
		name = field
	}
	return ratio, met, map[string]any{
		"name": name, "candidate": c, "baseline": r, "reference": ref, "ratio_candidate_to_baseline": ratio,
		"goal": goal, "met": met,
	}, problems
}

// growthLimits are the most that a server may grow over a churn and still
// count as not growing. They tell a leak (growth in proportion to the
// cycles: tens of thousands per run) from a bounded first use (runtime
// goroutines started lazily, the audit log's files, memtable and cache
// filling up): see bench/README.md.
type growthLimits struct {
	sockets, fds, files, goroutines, heapPerCycle, rssPerCycle float64
}

func (g *growthLimits) flags(fs *flag.FlagSet) {
	fs.Float64Var(&g.sockets, "max-socket-growth", 0, "no growth: at most this many more open sockets after than before")
	fs.Float64Var(&g.fds, "max-fd-growth", 4, "no growth: at most this many more open descriptors other than files on disk after than before")
	fs.Float64Var(&g.files, "max-file-growth", 256, "no growth: at most this many more open files on disk after than before (ZenConn's store keeps at most 2 x 128)")
	fs.Float64Var(&g.goroutines, "max-goroutine-growth", 4, "no growth: at most this many more goroutines")
	fs.Float64Var(&g.heapPerCycle, "max-heap-bytes-per-cycle", 32, "no growth: heap in use (after a forced GC) grew by at most this many bytes per cycle")
	fs.Float64Var(&g.rssPerCycle, "max-rss-bytes-per-cycle", 256, "no growth: RSS grew by at most this many bytes per cycle")
}

func (g *growthLimits) asMap() map[string]float64 {
	return map[string]float64{
		"sockets": g.sockets, "fds": g.fds, "files": g.files, "goroutines": g.goroutines,
		"heap_bytes_per_cycle": g.heapPerCycle, "rss_bytes_per_cycle": g.rssPerCycle,
	}
}

// churnFields are the figures that matter, per server, from the medians.
var churnFields = []string{"cycles_per_sec", "cycle_latency_us.p50", "cycle_latency_us.p99", "cycle_errors",
	"server_cpu_us_per_cycle", "gen_cpu_share", "other_cpu_share",
	"before.rss_kib", "after.rss_kib", "growth.rss_kib", "growth.rss_bytes_per_cycle",
	"before.heap_inuse_kib", "after.heap_inuse_kib", "growth.heap_inuse_kib", "growth.heap_bytes_per_cycle",
	"before.goroutines", "after.goroutines", "growth.goroutines",
	"before.fds", "after.fds", "growth.fds", "before.files", "after.files", "growth.files",
	"before.sockets", "after.sockets", "growth.sockets", "settle_s"}

// churnMedian is the median of field for server srv.
func churnMedian(byServer map[string]any, srv, field string) (float64, bool) {
	m, _ := byServer[srv].(map[string]any)
	v, ok := m[field].(float64)
	return v, ok
}

// churnServer is the churn figures of server srv, and whether it grew
// within the limits.
func churnServer(byServer map[string]any, srv string, lim *growthLimits) (map[string]any, bool) {
	m := map[string]any{}
	for _, f := range churnFields {
		if v, ok := churnMedian(byServer, srv, f); ok {
			m[f] = v
		}
	}
	var over []string
	check := func(field string, limit float64) {
		if v, ok := churnMedian(byServer, srv, field); ok && v > limit {
			over = append(over, fmt.Sprintf("%s = %v > %v", field, v, limit))
		}
	}
	check("growth.sockets", lim.sockets)
	check("growth.fds", lim.fds)
	check("growth.files", lim.files)
	check("growth.goroutines", lim.goroutines)
	check("growth.heap_bytes_per_cycle", lim.heapPerCycle)
	check("growth.rss_bytes_per_cycle", lim.rssPerCycle)
	_, has := churnMedian(byServer, srv, "growth.fds")
	ok := has && len(over) == 0
	m["no_growth"] = ok
	if len(over) > 0 {
		m["growth_over_limits"] = over
	}
	if !has {
		m["growth_over_limits"] = []string{"no before/after figures"}
	}
	return m, ok
}
