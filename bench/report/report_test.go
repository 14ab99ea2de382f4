package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/RESULTS.golden.md")

var fixedNow = time.Date(2026, 11, 27, 2, 0, 0, 0, time.UTC)

func now() time.Time { return fixedNow }

// testdata/results holds envelopes made by report wrap from small real runs
// (ROUNDS=1 DURATION=3s SUBS=500 bash bench/run-fanout.sh, CONNS=1000
// run-idle.sh, DURATION=2s run-static.sh, SUBS=500 run-audit.sh,
// CONNS=2000 WORKERS=2 run-scale.sh, -benchtime 200ms micro-benchmarks),
// ROUNDS=1 DURATION=2s run-churn.sh (while that script was being written),
// CONNS=1500 SUBS=500 DURATION=3s HS_DURATION=3s ROUNDS=1 run-tls.sh,
// STEPS="10000 20000" ONE_PROC_STEPS="10000 18000" run-scale-curve.sh (its
// JSON as the script wrote it),
// a failed fan-out run and a machine description.
func TestGolden(t *testing.T) {
	got, warnings, err := renderDir("testdata/results", "testdata/notes", "", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	golden := filepath.Join("testdata", "RESULTS.golden.md")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./bench/report -update)", err)
	}
	if got != string(want) {
		t.Errorf("rendering differs from %s (go test ./bench/report -update, then review the diff)", golden)
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < len(gl) || i < len(wl); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("first difference at line %d:\n got: %s\nwant: %s", i+1, g, w)
				break
			}
		}
	}
}

func TestRenderContents(t *testing.T) {
	got, _, err := renderDir("testdata/results", "testdata/notes", "", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# Benchmark results",
		"| CPU | Intel(R) Xeon(R) Processor, 2 logical CPUs",
		"| disk for the audit data | ext4 on /dev/vda",
		// idle: 1,000 connections in the sample, 3.432 KiB each.
		"| RSS per subscribed connection at 15,000 connections | 3.43 KiB | baseline 40.9 KiB | 0.084× | ≤ 3 KiB | **MISSED** (measured at 1,000 connections) |",
		"A note about idle connections, kept across regenerations.",
		// fan-out: the max-rate target and the floor targets.
		"| 500 subs: max deliveries/s | 3,604,790 | baseline 261,238 | 13.8× | ≥ 3× baseline | **MET** |",
		"| 500 subs: server CPU µs per delivery at 20,000 deliveries/s | 9.00 | floor 5.83 | 1.54× | ≤ 1.3× floor | **MISSED** |",
		"| 500 subs: p99 latency at 20,000 deliveries/s | 7.55 ms | floor 6.59 ms | 1.15× | ≤ 1.3× floor | **MET** |",
		"| messages lost (all runs) | 0 | 0 | — |",
		"### Fan-out: notes\n\n#### Why",
		// the failed run, with its log, and the subscriber counts never run.
		"**The latest run failed**: `ROUNDS=1 SUBS=15000 PROCS=2 bash bench/run-fanout.sh`, started 2026-11-27 01:20 UTC, exit status 1: it printed no JSON.",
		"load: dial 127.0.0.1:20201: too many open files",
		"No earlier successful run to show.",
		"*Not measured yet.* `SUBS=5000 bash bench/run-fanout.sh`, or `ONLY=fanout-5000 make bench`.",
		// churn: generic tables and the JSON's own verdict.
		"| cycles/s | 8,191 | 2,938 | 2.79× |",
		"| RSS growth, bytes per cycle | 357 | -8.31 | — |",
		"| after − before | no: growth.rss_bytes_per_cycle = 357.248 > 256 | yes |",
		"| churn cycles/s | 8,191 | baseline 2,938 | 2.79× | candidate >= 2x baseline | **MET** |",
		"| no growth after churn (zenconn) | — | — | — | growth within growth_limits | **MISSED** |",
		// static, audit, micro.
		"| static 1 KiB file: requests/s | 8,091 | nginx 72,041 | 0.11× | ≥ 1× nginx | **MISSED** |",
		"| fan-out deliveries/s with the audit log (at most 10% fewer) | 498,600 | audit log off 499,320 | 1.00× | ≥ 0.9× audit log off | **MET** |",
		"| shared-memory ring, 64-byte records one way between two processes | 32,972,737 | — | — | ≥ 5,000,000 records/s | **MET** |",
		"| RSS per connection, all processes summed | 3.10 KiB |",
		// the scale curve: its plot and its points.
		"![Memory per connection and fan-out deliveries/s against the number of connections](scale-curve.svg)",
		"| ZenConn | 20,000 | 20,000 | 5.43 KiB | 2.34 KiB | 2,226,069 | 0 | 0 | 0.60 | 0 |",
		"| Centrifugo (one process) | 18,000 | 17,999 | 52.0 KiB | 49.5 KiB | 9,769 | 1,095,203 | 0 | 1.34 | 0 |",
		"`bash bench/run-scale-curve.sh`: measured 2026-12-07 06:29 UTC (took 5 min 15 s), commit e96a925",
		"`ROUNDS=1 DURATION=3s SUBS=500 bash bench/run-fanout.sh`: measured 2026-11-27 01:13 UTC (took 2 min 20 s), commit af1c80d",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendering lacks %q", want)
		}
	}
}

// Every scenario must render from JSON missing any or all of its fields.
func TestMissingFields(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"idle.json":        `{"medians":{"idle":{"zenconn":{}}}}`,
		"fanout-1000.json": `{"medians":{"max":{"zenconn":{"deliveries_per_sec":5}},"fixed":{}},"runs":[{"test":"max","server":"zenconn"}]}`,
		"fanout-5000.json": `{}`,
		"churn.json":       `{"medians":{"zenconn":{"cycles_per_sec":3}}}`,
		"static.json":      `{"files":{"1k":{}}}`,
		"audit.json":       `{"medians":"wrong type"}`,
		"scale.json":       `{"runs":[{"test":"scale-idle"}]}`,
		"micro.json":       `{"scenario":"micro","status":"ok","result":{"benchmarks":[{"name":"X"}]}}`,
		"other.json":       `{"medians":{"t":{"zenconn":{"x":1}}},"targets":[{"name":"t","met":false}]}`,
		"broken.json":      `{"medians":`,
		"array.json":       `[1,2]`,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, warnings, err := renderDir(dir, filepath.Join(dir, "no-notes"), "", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "broken.json") {
		t.Errorf("warnings = %q, want one about broken.json", warnings)
	}
	for _, want := range []string{
		"| RSS per subscribed connection at 15,000 connections | — | baseline — | — | ≤ 3 KiB | — (no data) |",
		"| deliveries/s | 5 | — | — |",
		"| 1,000 subs: max deliveries/s | 5 | baseline — | — | ≥ 3× baseline | — (no data) |",
		"| cycles/s ≥ 2× baseline with no growth | 3 | baseline — | — | ≥ 2× baseline | — (no data) |",
		"| static 100 KiB file: requests/s | — | nginx — | — | ≥ 0.9× nginx | — (no data) |",
		"| t | — | — | — | — | **MISSED** |",
		"*The results file holds no JSON object.*", // array.json
		"## Files that could not be read",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendering lacks %q", want)
		}
	}
}

func wrapFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runWrap(t *testing.T, args ...string) (*Envelope, int) {
	t.Helper()
	var out bytes.Buffer
	rc := run(append([]string{"wrap"}, args...), &out, now)
	if rc != 0 && rc != wrapFailed {
		t.Fatalf("report wrap %q: exit %d", args, rc)
	}
	e, err := parseEnvelope("x", out.Bytes())
	if err != nil {
		t.Fatalf("report wrap printed %q: %v", out.String(), err)
	}
	return e, rc
}

func TestWrap(t *testing.T) {
	dir := t.TempDir()
	one := wrapFile(t, dir, "one.out", `{"medians":{"idle":{}},"meta":{"git":"abc"}}`+"\n")
	two := wrapFile(t, dir, "two.out", `{"test":"scale-idle","kib_per_conn":1.9}`+"\n"+`{"test":"scale-fanout","deliveries_per_sec":2}`+"\n")
	empty := wrapFile(t, dir, "empty.out", "")
	garbage := wrapFile(t, dir, "garbage.out", "panic: oops\n")
	logf := wrapFile(t, dir, "x.log", "line 1\nline 2\nline 3\n")

	e, rc := runWrap(t, "--name", "idle", "--command", "bash bench/run-idle.sh", "--started", "2026-11-27T01:58:00Z",
		"--exit", "0", "--stdout", one, "--env", "ROUNDS=1")
	if rc != 0 || !e.OK() || e.Seconds != 120 || e.Env["ROUNDS"] != "1" || e.result()["meta"] == nil || e.Finished != "2026-11-27T02:00:00Z" {
		t.Errorf("one object: rc %d, envelope %+v", rc, e)
	}
	good := wrapFile(t, dir, "good.json", mustJSON(t, e))

	e, rc = runWrap(t, "--name", "scale", "--exit", "0", "--stdout", two)
	if rc != 0 || !e.OK() || len(listAt(e.result(), "runs")) != 2 {
		t.Errorf("two objects: rc %d, result %s", rc, e.Result)
	}
	if v := numAt(e.result(), "runs"); v.ok {
		t.Errorf("runs should be a list")
	}

	// A failure keeps the previous successful run and the log's tail.
	e, rc = runWrap(t, "--name", "idle", "--exit", "1", "--stdout", empty, "--log", logf, "--tail", "2", "--previous", good)
	if rc != wrapFailed || e.OK() || e.LastGood == nil || !e.LastGood.OK() || e.LastGood.Command != "bash bench/run-idle.sh" ||
		strings.Join(e.LogTail, "|") != "line 2|line 3" || e.Error != "it printed no JSON" {
		t.Errorf("failure: rc %d, envelope %+v", rc, e)
	}
	failed := wrapFile(t, dir, "failed.json", mustJSON(t, e))

	// A second failure carries the last good run forward.
	e, rc = runWrap(t, "--name", "idle", "--exit", "0", "--stdout", garbage, "--previous", failed)
	if rc != wrapFailed || e.OK() || e.LastGood == nil || e.LastGood.Command != "bash bench/run-idle.sh" || !strings.Contains(e.Error, "not JSON") {
		t.Errorf("second failure: rc %d, envelope %+v", rc, e)
	}

	// A raw script output as previous counts as a successful run.
	e, _ = runWrap(t, "--name", "idle", "--exit", "2", "--stdout", empty, "--previous", one)
	if e.LastGood == nil || e.LastGood.result()["medians"] == nil {
		t.Errorf("raw previous: %+v", e)
	}

	// A missing previous file is no error.
	e, _ = runWrap(t, "--name", "idle", "--exit", "2", "--stdout", empty, "--previous", filepath.Join(dir, "none.json"))
	if e.LastGood != nil {
		t.Errorf("missing previous: %+v", e.LastGood)
	}

	bench := wrapFile(t, dir, "micro.txt", "pkg: example.com/m/shm\nBenchmarkTwoProcesses/64B-2 \t 100\t 30.3 ns/op\t 2111 MB/s\t 32972737 records/s\t 0 B/op\t 0 allocs/op\nPASS\n")
	e, rc = runWrap(t, "--name", "micro", "--exit", "0", "--bench-text", bench)
	if rc != 0 || !e.OK() || len(listAt(e.result(), "benchmarks")) != 1 || strAt(e.result(), "text") != "micro.txt" {
		t.Errorf("bench text: rc %d, %s", rc, e.Result)
	}
	fail := wrapFile(t, dir, "fail.txt", "--- FAIL: BenchmarkX\nFAIL\texample.com/m/x\t0.1s\n")
	if e, rc = runWrap(t, "--name", "micro", "--exit", "1", "--bench-text", fail); rc != wrapFailed || !strings.Contains(e.Error, "FAIL") {
		t.Errorf("failed benchmark: rc %d, %+v", rc, e)
	}

	var out bytes.Buffer
	if rc := run([]string{"wrap", "--exit", "0"}, &out, now); rc != 2 {
		t.Errorf("wrap without --name: exit %d", rc)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A failed run is rendered with its log and the last good figures.
func TestRenderFailedWithLastGood(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile("testdata/results/idle.json")
	if err != nil {
		t.Fatal(err)
	}
	var prev Envelope
	if err := json.Unmarshal(good, &prev); err != nil {
		t.Fatal(err)
	}
	e := Envelope{Scenario: "idle", Command: "bash bench/run-idle.sh", Status: statusFailed, Exit: 1,
		Started: "2026-11-28T08:00:00Z", LogTail: []string{"boom"}, LastGood: &prev}
	wrapFile(t, dir, "idle.json", mustJSON(t, e))
	got, _, err := renderDir(dir, "", "", fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"**The latest run failed**: `bash bench/run-idle.sh`, started 2026-11-28 08:00 UTC, exit status 1.",
		"```\nboom\n```",
		"The figures below are from the last successful run.",
		"`ROUNDS=1 CONNS=1000 bash bench/run-idle.sh`: measured 2026-11-27 01:15 UTC",
		"| 3.43 KiB | baseline 40.9 KiB | 0.084× | ≤ 3 KiB | **MISSED** (measured at 1,000 connections) | 2026-11-27 01:15 UTC (the latest run failed) |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("rendering lacks %q", want)
		}
	}
}

func TestChurnShapes(t *testing.T) {
	meds := `"medians":{"zenconn":{"cycles_per_sec":500,"rss_before_kib":100,"rss_after_kib":100},"baseline":{"cycles_per_sec":200,"rss_before_kib":50,"rss_after_kib":80}}`
	for _, tc := range []struct {
		name, json, want string
	}{
		{"computed", `{` + meds + `}`, "| cycles/s ≥ 2× baseline with no growth | 500 | baseline 200 | 2.50× | ≥ 2× baseline | **MET** |"},
		{"met from the JSON wins", `{` + meds + `,"met":false}`, "| cycles/s ≥ 2× baseline with no growth | 500 | baseline 200 | 2.50× | ≥ 2× baseline | **MISSED** |"},
		{"targets array", `{` + meds + `,"targets":[{"name":"cycles/s","candidate":500,"baseline":200,"ratio":2.5,"goal":"candidate >= 2x baseline","met":true},{"name":"no RSS growth","met":false}]}`,
			"| cycles/s | 500 | baseline 200 | 2.50× | candidate >= 2x baseline | **MET** |\n| no RSS growth | — | — | — | — | **MISSED** |"},
		{"target against another server", `{` + meds + `,"targets":[{"name":"server CPU per cycle vs centrifugo","candidate":62,"baseline":165,"reference":"centrifugo","goal":"candidate <= 0.5x centrifugo","met":true}]}`,
			"| server CPU per cycle vs centrifugo | 62 | centrifugo 165 |"},
		{"target object", `{` + meds + `,"target":{"min_ratio":2,"ratio":2.5,"met":true}}`, "| cycles/s ≥ 2× baseline with no growth | 2.500 | baseline = 1 1.000 | 2.50× | ≥ 2× baseline | **MET** |"},
		{"by test", `{"medians":{"churn":{"zenconn":{"cycles_per_sec":9},"baseline":{"cycles_per_sec":3}}}}`, "`churn`:\n\n| figure | ZenConn | baseline | ZenConn ÷ baseline |\n|---|---:|---:|---:|\n| cycles_per_sec | 9 | 3 | 3.00× |"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res map[string]any
			if err := json.Unmarshal([]byte(tc.json), &res); err != nil {
				t.Fatal(err)
			}
			got, _ := renderChurn(nil, res, nil)
			if !strings.Contains(got, tc.want) {
				t.Errorf("got:\n%s\nwant it to contain:\n%s", got, tc.want)
			}
		})
	}
	// before comes ahead of after.
	res := map[string]any{}
	_ = json.Unmarshal([]byte(`{`+meds+`}`), &res)
	got, _ := renderChurn(nil, res, nil)
	if b, a := strings.Index(got, "rss_before_kib"), strings.Index(got, "rss_after_kib"); b < 0 || a < b {
		t.Errorf("rss_before_kib should come before rss_after_kib:\n%s", got)
	}
}

func TestParseBench(t *testing.T) {
	out := parseBench(`goos: linux
pkg: github.com/zenconn/server/engine
cpu: Intel(R) Xeon(R) Processor
BenchmarkFanoutDeliver/subs=1000-2      	    6014	     40757 ns/op	3042.42 MB/s	        40.76 ns/sub	       0 B/op	       0 allocs/op
BenchmarkServePing                      	  901107	       312.7 ns/op
PASS
ok  	github.com/zenconn/server/engine	30.103s
pkg: github.com/zenconn/server/shm
BenchmarkTwoProcesses/64B-2         	 8117955	        30.32 ns/op	  32972737 records/s
--- FAIL: BenchmarkBroken-2
FAIL	github.com/zenconn/server/x	0.1s
`)
	if out.CPU != "Intel(R) Xeon(R) Processor" || len(out.Benchmarks) != 3 || len(out.Failures) != 2 {
		t.Fatalf("parsed %+v", out)
	}
	b := out.Benchmarks[0]
	if b.Pkg != "github.com/zenconn/server/engine" || b.Name != "FanoutDeliver/subs=1000" || b.Procs != 2 || b.Iterations != 6014 ||
		b.Metrics["ns/op"] != 40757 || b.Metrics["ns/sub"] != 40.76 || b.Metrics["allocs/op"] != 0 || len(b.Metrics) != 5 {
		t.Errorf("first: %+v", b)
	}
	if b := out.Benchmarks[1]; b.Name != "ServePing" || b.Procs != 0 {
		t.Errorf("without GOMAXPROCS suffix: %+v", b)
	}
	if b := out.Benchmarks[2]; shortPkg(b.Pkg) != "shm" || b.Metrics["records/s"] != 32972737 {
		t.Errorf("shm: %+v", b)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{num(3995326.4), "3,995,326"},
		{num(190.4), "190"},
		{num(13.75), "13.8"},
		{num(0.25), "0.25"},
		{num(0), "0"},
		{num(-1234), "-1,234"},
		{num(15000), "15,000"},
		{micros(62500), "62.5 ms"},
		{micros(1590000), "1.59 s"},
		{micros(771), "771 µs"},
		{micros(7.4), "7.40 µs"},
		{kib(1.13), "1.13 KiB"},
		{kib(36557), "35.7 MiB"},
		{kib(1024 * 1024 * 24), "24 GiB"},
		{bytesFmt(1024), "1 KiB"},
		{bytesFmt(102400), "100 KiB"},
		{bytesFmt(64), "64 B"},
		{ratio(21.04), "21.0×"},
		{ratio(0.803), "0.80×"},
		{ratio(0.029), "0.029×"},
		{ratio(150), "150×"},
		{share(0.994), "0.99"},
		{dec(2)(11), "11.00"},
		{took(185), "3 min 5 s"},
		{took(42), "42 s"},
		{took(0), "—"},
		{when("2026-11-27T10:32:05Z"), "2026-11-27 10:32 UTC"},
		{when(""), "—"},
		{val{}.fmt(num), "—"},
		{anchor("Fan-out to 15,000 subscribers"), "fan-out-to-15000-subscribers"},
		{anchor("Idle connections: server RSS"), "idle-connections-server-rss"},
		{cell("a|b\nc"), `a\|b c`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestAt(t *testing.T) {
	var v any
	_ = json.Unmarshal([]byte(`{"a":{"latency_us.p99":5,"b":{"c":7}},"l":[1]}`), &v)
	if x := numAt(v, "a", "latency_us.p99"); !x.ok || x.v != 5 {
		t.Errorf("flat dotted key: %+v", x)
	}
	if x := numAt(v, "a", "b.c"); !x.ok || x.v != 7 {
		t.Errorf("nested through a dotted key: %+v", x)
	}
	for _, keys := range [][]string{{"a", "x"}, {"l", "0"}, {"a", "b"}, {"zz", "y.z"}} {
		if x := numAt(v, keys...); x.ok {
			t.Errorf("numAt %q = %+v, want missing", keys, x)
		}
	}
}

func TestRenderCommandWritesFile(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "RESULTS.md")
	var buf bytes.Buffer
	rc := run([]string{"render", "--results", "testdata/results", "--notes", "testdata/notes", "--scripts", "", "--out", out,
		"--date", "2026-11-27T02:00:00Z"}, &buf, now)
	if rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile("testdata/RESULTS.golden.md")
	if string(b) != string(want) {
		t.Errorf("%s differs from the golden file", out)
	}
	if rc := run([]string{"--results", "testdata/results", "extra"}, &buf, now); rc != 2 {
		t.Errorf("extra argument: exit %d", rc)
	}
}
