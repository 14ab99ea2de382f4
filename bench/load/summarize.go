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
)

type metaFlag map[string]string

func (m metaFlag) String() string { return "" }
func (m metaFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want key=value, got %q", s)
	}
	m[k] = v
	return nil
}

// summarize reads result objects (JSON lines), groups them by test and
// server, and prints medians, ratios and the targets as one JSON object.
func summarize(args []string) int { return summarizeTo(os.Stdout, args) }

func summarizeTo(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("load summarize", flag.ContinueOnError)
	targets := fs.String("targets", "", "check the targets of: idle, fanout or audit (audit: --candidate is the node with the audit log, --baseline the one without)")
	cand := fs.String("candidate", "zenconn", "server label of the candidate")
	base := fs.String("baseline", "baseline", "server label of the baseline")
	floor := fs.String("floor", "floor", "server label of the floor server (bench/floor), compared in the fixed-rate test when present")
	maxOther := fs.Float64("max-other", 0, "leave runs where other processes used more than this share of a CPU (other_cpu_share) out of the medians, when their test and server have a quieter run; 0 keeps every run")
	meta := metaFlag{}
	fs.Var(meta, "meta", "key=value copied to the output (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var runs []map[string]any
	for _, name := range fs.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "load summarize:", err)
			return 1
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
				fmt.Fprintf(os.Stderr, "load summarize: %s: %v\n", name, err)
				_ = f.Close()
				return 1
			}
			runs = append(runs, m)
		}
		_ = f.Close()
	}

	// test -> server -> field -> values
	vals := map[string]map[string]map[string][]float64{}
	counts := map[string]map[string]int{}
	var problems []string
	testOf := func(r map[string]any) (test, srv string) {
		test, _ = r["test"].(string)
		if test == "" {
			test, _ = r["mode"].(string)
		}
		srv, _ = r["server"].(string)
		return test, srv
	}
	noisy := func(r map[string]any) bool {
		v, ok := r["other_cpu_share"].(float64)
		return *maxOther > 0 && ok && v > *maxOther
	}
	quiet := map[[2]string]int{} // quiet runs per test and server
	for _, r := range runs {
		if test, srv := testOf(r); !noisy(r) {
			quiet[[2]string{test, srv}]++
		}
	}
	var excluded []string
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
			excluded = append(excluded, fmt.Sprintf("run %d (%s, %s): other processes used %.2f CPU", i+1, test, srv, r["other_cpu_share"]))
		case noisy(r):
			problems = append(problems, fmt.Sprintf("run %d (%s, %s): kept in the medians although noisy: no quieter run", i+1, test, srv))
			fallthrough
		default:
			counts[test][srv]++
			flatten("", r, vals[test][srv])
		}
		for _, k := range []string{"protocol_errors", "dial_errors", "disconnects", "missing_deliveries", "gaps_or_reorders"} {
			if v, ok := r[k].(float64); ok && v != 0 {
				problems = append(problems, fmt.Sprintf("run %d (%s, %s): %s=%v", i+1, test, srv, k, v))
			}
		}
		if a, ok := r["audit"].(map[string]any); ok {
			// Every acknowledged publish must have its audit record, and
			// nothing else may be recorded during the run.
			if v, ok := a["records_minus_acked"].(float64); ok && v != 0 {
				problems = append(problems, fmt.Sprintf("run %d (%s, %s): audit records - acked publishes = %v", i+1, test, srv, v))
			}
		}
		if v, ok := r["other_cpu_share"].(float64); ok && v > 0.15 {
			problems = append(problems, fmt.Sprintf("run %d (%s, %s): other processes used %.2f CPU during the window (noisy)", i+1, test, srv, v))
		}
		if e, ok := r["worker_errors"]; ok {
			problems = append(problems, fmt.Sprintf("run %d (%s, %s): %v", i+1, test, srv, e))
		}
		if e, ok := r["errors"]; ok {
			b, _ := json.Marshal(e)
			problems = append(problems, fmt.Sprintf("run %d (%s, %s): errors %s", i+1, test, srv, b))
		}
	}
	medians := map[string]map[string]map[string]any{}
	for test, bySrv := range vals {
		medians[test] = map[string]map[string]any{}
		for srv, fields := range bySrv {
			m := map[string]any{"runs": counts[test][srv]}
			for k, v := range fields {
				m[k] = round3(median(v))
			}
			medians[test][srv] = m
		}
	}
	get := func(test, srv, field string) (float64, bool) {
		v, ok := medians[test][srv][field].(float64)
		return v, ok
	}
	type target struct {
		Name      string  `json:"name"`
		Candidate float64 `json:"candidate"`
		Baseline  float64 `json:"baseline"`
		Ratio     float64 `json:"ratio_candidate_to_baseline"`
		Goal      string  `json:"goal"`
		Met       bool    `json:"met"`
	}
	var tgs []target
	add := func(name, test, field, goal string, check func(c, b float64) bool) {
		c, ok1 := get(test, *cand, field)
		b, ok2 := get(test, *base, field)
		if !ok1 || !ok2 {
			problems = append(problems, fmt.Sprintf("target %q: no median for %s/%s", name, test, field))
			return
		}
		t := target{Name: name, Candidate: c, Baseline: b, Goal: goal, Met: check(c, b)}
		if b != 0 {
			t.Ratio = round3(c / b)
		}
		tgs = append(tgs, t)
	}
	switch *targets {
	case "idle":
		add("idle RSS per connection", "idle", "kib_per_conn", "candidate <= 3 KiB", func(c, _ float64) bool { return c <= 3 })
	case "fanout":
		add("max deliveries/s", "max", "deliveries_per_sec", "candidate >= 3x baseline", func(c, b float64) bool { return c >= 3*b })
		add("server CPU per delivery at fixed rate", "fixed", "server_cpu_us_per_delivery", "candidate <= baseline/2", func(c, b float64) bool { return c <= b/2 })
		add("p99 latency at fixed rate", "fixed", "latency_us.p99", "candidate <= baseline/2", func(c, b float64) bool { return c <= b/2 })
	case "audit":
		add("fan-out deliveries/s, audit log on vs off", "fanout", "deliveries_per_sec", "candidate >= 0.9 x baseline", func(c, b float64) bool { return c >= 0.9*b })
	case "":
	default:
		fmt.Fprintf(os.Stderr, "load summarize: unknown --targets %q\n", *targets)
		return 2
	}
	// The floor: one write(2) per subscriber socket and nothing else
	// (bench/floor), measured in the fixed-rate test only.
	type floorCmp struct {
		Name          string  `json:"name"`
		Candidate     float64 `json:"candidate"`
		Baseline      float64 `json:"baseline"`
		Floor         float64 `json:"floor"`
		Ratio         float64 `json:"ratio_candidate_to_floor"`
		BaselineRatio float64 `json:"ratio_baseline_to_floor"`
		FloorRatio    float64 `json:"ratio_floor_to_baseline"`
	}
	var vsFloor []floorCmp
	if _, ok := medians["fixed"][*floor]; ok && *targets == "fanout" {
		for _, f := range []struct{ name, field string }{
			{"server CPU per delivery at fixed rate", "server_cpu_us_per_delivery"},
			{"server kernel CPU per delivery at fixed rate", "server_sys_us_per_delivery"},
			{"server user CPU per delivery at fixed rate", "server_user_us_per_delivery"},
			{"p99 latency at fixed rate", "latency_us.p99"},
		} {
			fl, ok := get("fixed", *floor, f.field)
			if !ok {
				problems = append(problems, fmt.Sprintf("floor comparison %q: no median for fixed/%s/%s", f.name, *floor, f.field))
				continue
			}
			fc := floorCmp{Name: f.name, Floor: fl}
			fc.Candidate, _ = get("fixed", *cand, f.field)
			fc.Baseline, _ = get("fixed", *base, f.field)
			if fl != 0 {
				fc.Ratio, fc.BaselineRatio = round3(fc.Candidate/fl), round3(fc.Baseline/fl)
			}
			if fc.Baseline != 0 {
				fc.FloorRatio = round3(fl / fc.Baseline)
			}
			vsFloor = append(vsFloor, fc)
		}
	}
	out := map[string]any{"meta": map[string]string(meta), "medians": medians, "runs": runs}
	if tgs != nil {
		out["targets"] = tgs
	}
	if vsFloor != nil {
		out["vs_floor"] = vsFloor
	}
	if problems != nil {
		out["problems"] = problems
	}
	if excluded != nil {
		out["excluded_from_medians"] = excluded
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	_, _ = fmt.Fprintln(w, string(b))
	return 0
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
