package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/zenconn/server/bench/internal/kvflag"
)

// metaFlag is a repeatable key=value flag.
type metaFlag = kvflag.Map

// summarize reads result objects (JSON lines), groups them by test and
// server, and prints medians, ratios and the targets as one JSON object.
func summarize(args []string) int { return summarizeTo(os.Stdout, args) }

func summarizeTo(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("load summarize", flag.ContinueOnError)
	targets := fs.String("targets", "", "check the targets of: idle, fanout, audit, tls (--candidate ZenConn with TLS, --baseline plain ZenConn, --competitor Centrifugo with TLS; nginx-tls is nginx terminating TLS) (--candidate is the node with the audit log, --baseline the one without) or cluster (--candidate the cluster, --baseline one node, --competitor the other cluster)")
	cand := fs.String("candidate", "zenconn", "server label of the candidate")
	base := fs.String("baseline", "baseline", "server label of the baseline")
	comp := fs.String("competitor", "centrifugo", "cluster targets: server label of the other cluster")
	floor := fs.String("floor", "floor", "server label of the floor server (bench/floor), compared in the fixed-rate test when present")
	maxOther := fs.Float64("max-other", 0, "leave runs where other processes used more than this share of a CPU (other_cpu_share) out of the medians, when their test and server have a quieter run; 0 keeps every run")
	meta := metaFlag{}
	fs.Var(meta, "meta", "key=value copied to the output (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	runs, err := readRuns(fs.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "load summarize:", err)
		return 1
	}
	sm := summarizeRuns(runs, *maxOther)
	tgs, ok := sm.targets(*targets, *cand, *base)
	switch *targets {
	case "cluster":
		tgs = sm.clusterTargets(*cand, *base, *comp)
	case "tls":
		tgs = sm.tlsTargets(*cand, *base, *comp)
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "load summarize: unknown --targets %q\n", *targets)
		return 2
	}
	var vsFloor []floorCmp
	if _, ok := sm.medians["fixed"][*floor]; ok && *targets == "fanout" {
		vsFloor = sm.vsFloor(*cand, *base, *floor)
	}
	out := map[string]any{"meta": map[string]string(meta), "medians": sm.medians, "runs": runs}
	if tgs != nil {
		out["targets"] = tgs
	}
	if vsFloor != nil {
		out["vs_floor"] = vsFloor
	}
	if sm.problems != nil {
		out["problems"] = sm.problems
	}
	if sm.excluded != nil {
		out["excluded_from_medians"] = sm.excluded
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	_, _ = fmt.Fprintln(w, string(b))
	return 0
}

// readRuns reads the runs of the files given, one JSON object a line.
func readRuns(names []string) ([]map[string]any, error) {
	var runs []map[string]any
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				_ = f.Close()
				return nil, fmt.Errorf("%s: %v", name, err)
			}
			runs = append(runs, m)
		}
		_ = f.Close()
	}
	return runs, nil
}

// summary is the medians of the runs per test and server (every numeric
// field, nested ones as "a.b"), and what was wrong with the runs.
type summary struct {
	medians  map[string]map[string]map[string]any // test -> server -> field -> median
	problems []string
	excluded []string // noisy runs left out of the medians
}

// testOf is the test (or else the mode) and the server of run r.
func testOf(r map[string]any) (test, srv string) {
	test, _ = r["test"].(string)
	if test == "" {
		test, _ = r["mode"].(string)
	}
	srv, _ = r["server"].(string)
	return test, srv
}

// summarizeRuns takes the medians of runs; with maxOther > 0, a run where
// other processes used more than maxOther of a CPU is left out when its
// test and server have a quieter run.
func summarizeRuns(runs []map[string]any, maxOther float64) *summary {
	sm := &summary{}
	vals := map[string]map[string]map[string][]float64{} // test -> server -> field -> values
	counts := map[string]map[string]int{}
	noisy := func(r map[string]any) bool {
		v, ok := r["other_cpu_share"].(float64)
		return maxOther > 0 && ok && v > maxOther
	}
	quiet := map[[2]string]int{} // quiet runs per test and server
	for _, r := range runs {
		if test, srv := testOf(r); !noisy(r) {
			quiet[[2]string{test, srv}]++
		}
	}
	for i, r := range runs {
		test, srv := testOf(r)
		if vals[test] == nil {
			vals[test] = map[string]map[string][]float64{}
			counts[test] = map[string]int{}
		}
		if vals[test][srv] == nil {
			vals[test][srv] = map[string][]float64{}
		}
		switch {
		case noisy(r) && quiet[[2]string{test, srv}] > 0:
			sm.excluded = append(sm.excluded, fmt.Sprintf("run %d (%s, %s): other processes used %.2f CPU", i+1, test, srv, r["other_cpu_share"]))
		case noisy(r):
			sm.problems = append(sm.problems, fmt.Sprintf("run %d (%s, %s): kept in the medians although noisy: no quieter run", i+1, test, srv))
			fallthrough
		default:
			counts[test][srv]++
			flatten("", r, vals[test][srv])
		}
		sm.problems = append(sm.problems, runProblems(fmt.Sprintf("run %d (%s, %s)", i+1, test, srv), r)...)
	}
	sm.medians = map[string]map[string]map[string]any{}
	for test, bySrv := range vals {
		sm.medians[test] = map[string]map[string]any{}
		for srv, fields := range bySrv {
			m := map[string]any{"runs": counts[test][srv]}
			for k, v := range fields {
				m[k] = round3(median(v))
			}
			sm.medians[test][srv] = m
		}
	}
	return sm
}

// runProblems lists what is wrong with run r (named run).
func runProblems(run string, r map[string]any) []string {
	var problems []string
	for _, k := range []string{"protocol_errors", "dial_errors", "disconnects", "missing_deliveries", "gaps_or_reorders"} {
		if v, ok := r[k].(float64); ok && v != 0 {
			problems = append(problems, fmt.Sprintf("%s: %s=%v", run, k, v))
		}
	}
	if a, ok := r["audit"].(map[string]any); ok {
		// Every acknowledged publish must have its audit record, and
		// nothing else may be recorded during the run.
		if v, ok := a["records_minus_acked"].(float64); ok && v != 0 {
			problems = append(problems, fmt.Sprintf("%s: audit records - acked publishes = %v", run, v))
		}
	}
	if v, ok := r["other_cpu_share"].(float64); ok && v > 0.15 {
		problems = append(problems, fmt.Sprintf("%s: other processes used %.2f CPU during the window (noisy)", run, v))
	}
	if e, ok := r["worker_errors"]; ok {
		problems = append(problems, fmt.Sprintf("%s: %v", run, e))
	}
	if e, ok := r["errors"]; ok {
		b, _ := json.Marshal(e)
		problems = append(problems, fmt.Sprintf("%s: errors %s", run, b))
	}
	return problems
}

func (sm *summary) get(test, srv, field string) (float64, bool) {
	v, ok := sm.medians[test][srv][field].(float64)
	return v, ok
}

// target is one goal checked on the medians of the candidate and the
// baseline.
type target struct {
	Name      string   `json:"name"`
	Candidate float64  `json:"candidate"`
	Baseline  float64  `json:"baseline"`
	Ratio     float64  `json:"ratio_candidate_to_baseline"`
	Goal      string   `json:"goal"`
	Met       bool     `json:"met"`
	Reference string   `json:"reference,omitempty"`  // the baseline's server label, when not --baseline
	Diff      *float64 `json:"difference,omitempty"` // candidate - baseline, for a goal on the difference
}

// targets checks the targets of kind (idle, fanout, audit or none); false
// when kind is unknown. A target without both medians is a problem.
func (sm *summary) targets(kind, cand, base string) ([]target, bool) {
	var tgs []target
	add := func(name, test, field, goal string, check func(c, b float64) bool) {
		c, ok1 := sm.get(test, cand, field)
		b, ok2 := sm.get(test, base, field)
		if !ok1 || !ok2 {
			sm.problems = append(sm.problems, fmt.Sprintf("target %q: no median for %s/%s", name, test, field))
			return
		}
		t := target{Name: name, Candidate: c, Baseline: b, Goal: goal, Met: check(c, b)}
		if b != 0 {
			t.Ratio = round3(c / b)
		}
		tgs = append(tgs, t)
	}
	switch kind {
	case "idle":
		add("idle RSS per connection", "idle", "kib_per_conn", "candidate <= 3 KiB", func(c, _ float64) bool { return c <= 3 })
	case "fanout":
		add("max deliveries/s", "max", "deliveries_per_sec", "candidate >= 3x baseline", func(c, b float64) bool { return c >= 3*b })
		add("server CPU per delivery at fixed rate", "fixed", "server_cpu_us_per_delivery", "candidate <= baseline/2", func(c, b float64) bool { return c <= b/2 })
		add("p99 latency at fixed rate", "fixed", "latency_us.p99", "candidate <= baseline/2", func(c, b float64) bool { return c <= b/2 })
	case "audit":
		add("fan-out deliveries/s, audit log on vs off", "fanout", "deliveries_per_sec", "candidate >= 0.9 x baseline", func(c, b float64) bool { return c >= 0.9*b })
	case "", "cluster", "tls":
	default:
		return nil, false
	}
	return tgs, true
}

// floorCmp is one figure of the fixed-rate test against the floor server:
// one write(2) per subscriber socket and nothing else (bench/floor).
type floorCmp struct {
	Name          string  `json:"name"`
	Candidate     float64 `json:"candidate"`
	Baseline      float64 `json:"baseline"`
	Floor         float64 `json:"floor"`
	Ratio         float64 `json:"ratio_candidate_to_floor"`
	BaselineRatio float64 `json:"ratio_baseline_to_floor"`
	FloorRatio    float64 `json:"ratio_floor_to_baseline"`
}

// vsFloor compares the candidate and the baseline with the floor in the
// fixed-rate test.
func (sm *summary) vsFloor(cand, base, floor string) []floorCmp {
	var out []floorCmp
	for _, f := range []struct{ name, field string }{
		{"server CPU per delivery at fixed rate", "server_cpu_us_per_delivery"},
		{"server kernel CPU per delivery at fixed rate", "server_sys_us_per_delivery"},
		{"server user CPU per delivery at fixed rate", "server_user_us_per_delivery"},
		{"p99 latency at fixed rate", "latency_us.p99"},
	} {
		fl, ok := sm.get("fixed", floor, f.field)
		if !ok {
			sm.problems = append(sm.problems, fmt.Sprintf("floor comparison %q: no median for fixed/%s/%s", f.name, floor, f.field))
			continue
		}
		fc := floorCmp{Name: f.name, Floor: fl}
		fc.Candidate, _ = sm.get("fixed", cand, f.field)
		fc.Baseline, _ = sm.get("fixed", base, f.field)
		if fl != 0 {
			fc.Ratio, fc.BaselineRatio = round3(fc.Candidate/fl), round3(fc.Baseline/fl)
		}
		if fc.Baseline != 0 {
			fc.FloorRatio = round3(fl / fc.Baseline)
		}
		out = append(out, fc)
	}
	return out
}

// flatten collects numeric fields, nested objects as "a.b".
func flatten(prefix string, m map[string]any, into map[string][]float64) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := m[k].(type) {
		case float64:
			if k == "server_pids" || k == "procs" {
				continue
			}
			into[prefix+k] = append(into[prefix+k], v)
		case map[string]any:
			if k == "errors" {
				continue
			}
			flatten(prefix+k+".", v, into)
		}
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ratioTarget compares the medians of field in test for cand and ref
// with check (and, with diff, records cand - ref); without both medians
// it notes a problem and returns false.
func (sm *summary) ratioTarget(name, test, field, cand, ref, goal string, check func(c, b float64) bool, diff bool) (target, bool) {
	c, ok1 := sm.get(test, cand, field)
	b, ok2 := sm.get(test, ref, field)
	if !ok1 || !ok2 {
		sm.problems = append(sm.problems, fmt.Sprintf("target %q: no median for %s/%s of %s and %s", name, test, field, cand, ref))
		return target{}, false
	}
	t := target{Name: name, Candidate: c, Baseline: b, Goal: goal, Met: check(c, b), Reference: ref}
	if b != 0 {
		t.Ratio = round3(c / b)
	}
	if diff {
		d := round3(c - b)
		t.Diff = &d
	}
	return t, true
}

// clusterTargets checks the cluster's targets: maximum deliveries/s at
// least 0.75x one node's (base) and 3x the competitor's, and the median
// latency at the fixed rate at most 1 ms above one node's (the cost of the
// NATS hop).
func (sm *summary) clusterTargets(cand, base, comp string) []target {
	var tgs []target
	add := func(name, test, field, ref, goal string, check func(c, b float64) bool, diff bool) {
		if t, ok := sm.ratioTarget(name, test, field, cand, ref, goal, check, diff); ok {
			tgs = append(tgs, t)
		}
	}
	add("max deliveries/s, cluster vs one node", "max", "deliveries_per_sec", base, "candidate >= 0.75x baseline",
		func(c, b float64) bool { return c >= 0.75*b }, false)
	add("max deliveries/s, cluster vs "+comp, "max", "deliveries_per_sec", comp, "candidate >= 3x baseline",
		func(c, b float64) bool { return c >= 3*b }, false)
	add("median latency at fixed rate, cluster vs one node (the NATS hop)", "fixed", "latency_us.p50", base,
		"candidate - baseline <= 1000 us", func(c, b float64) bool { return c-b <= 1000 }, true)
	return tgs
}

// tlsTargets checks the TLS scenario's targets (bench/run-tls.sh): cand is
// ZenConn with TLS, plain ZenConn without, comp Centrifugo with TLS, and
// nginx-tls nginx terminating TLS (in front of the baseline server, or
// serving the static file of the handshake test).
func (sm *summary) tlsTargets(cand, plain, comp string) []target {
	var tgs []target
	add := func(name, test, field, ref, goal string, check func(c, b float64) bool) {
		if t, ok := sm.ratioTarget(name, test, field, cand, ref, goal, check, false); ok {
			tgs = append(tgs, t)
		}
	}
	add("idle RSS per TLS connection", "idle", "kib_per_conn", plain, "candidate <= 6 KiB", func(c, _ float64) bool { return c <= 6 })
	add("max TLS deliveries/s vs plain ZenConn", "max", "deliveries_per_sec", plain, "candidate >= 0.6x plain", func(c, b float64) bool { return c >= 0.6*b })
	add("max TLS deliveries/s vs Centrifugo with TLS", "max", "deliveries_per_sec", comp, "candidate >= 3x Centrifugo", func(c, b float64) bool { return c >= 3*b })
	add("full TLS handshakes/s on one core vs nginx", "handshake", "handshakes_per_core_s", "nginx-tls", "candidate >= nginx", func(c, b float64) bool { return c >= b })
	return tgs
}
