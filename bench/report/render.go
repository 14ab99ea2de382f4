package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// target is one goal with its figures.
type target struct {
	name    string // what is measured
	ours    val    // ZenConn's figure
	ref     val    // the reference's figure
	refName string // baseline, nginx, audit log off, floor
	goal    string // "≥ 3× baseline"
	met     *bool  // nil: cannot tell (a figure is missing)
	f       fmtFn  // formats ours and ref
	note    string // appended to the result (e.g. measured at another size)
}

// ratioVal is ours/ref.
func (t target) ratioVal() val { return div(t.ours, t.ref) }

func (t target) result() string {
	r := dash + " (no data)"
	if t.met != nil {
		if *t.met {
			r = "**MET**"
		} else {
			r = "**MISSED**"
		}
	}
	if t.note != "" {
		r += " (" + t.note + ")"
	}
	return r
}

func (t target) refCell() string {
	if t.refName == "" {
		return t.ref.fmt(t.f)
	}
	return t.refName + " " + t.ref.fmt(t.f)
}

func boolp(b bool) *bool { return &b }

// minRatio: ours ≥ k × ref.
func minRatio(name string, ours, ref val, refName string, k float64, f fmtFn) target {
	t := target{name: name, ours: ours, ref: ref, refName: refName, f: f,
		goal: "≥ " + strconv.FormatFloat(k, 'f', -1, 64) + "× " + refName}
	if ours.ok && ref.ok && ref.v > 0 {
		t.met = boolp(ours.v >= k*ref.v)
	}
	return t
}

// maxRatio: ours ≤ k × ref.
func maxRatio(name string, ours, ref val, refName string, k float64, f fmtFn) target {
	t := target{name: name, ours: ours, ref: ref, refName: refName, f: f,
		goal: "≤ " + strconv.FormatFloat(k, 'f', -1, 64) + "× " + refName}
	if ours.ok && ref.ok && ref.v > 0 {
		t.met = boolp(ours.v <= k*ref.v)
	}
	return t
}

// targetsTable renders targets.
func targetsTable(ts []target) string {
	t := newTable("target", "ZenConn", "reference", "ratio", "goal", "result")
	t.right[4], t.right[5] = false, false
	for _, x := range ts {
		t.add(x.name, x.ours.fmt(x.f), x.refCell(), x.ratioVal().fmt(ratio), x.goal, x.result())
	}
	return t.String()
}

// column is one server in a figures table.
type column struct{ key, label string }

// fig is one row of a figures table.
type fig struct {
	label   string
	get     func(server string) val
	f       fmtFn
	noRatio bool
}

// figTable renders figures by server, with the ratio of the first server
// to each server of refs (indexes into cols).
func figTable(cols []column, refs []int, figs []fig) string {
	head := []string{"figure"}
	for _, c := range cols {
		head = append(head, c.label)
	}
	for _, r := range refs {
		head = append(head, cols[0].label+" ÷ "+cols[r].label)
	}
	t := newTable(head...)
	for _, f := range figs {
		row := []string{f.label}
		vals := make([]val, len(cols))
		for i, c := range cols {
			vals[i] = f.get(c.key)
			row = append(row, vals[i].fmt(f.f))
		}
		for _, r := range refs {
			if f.noRatio {
				row = append(row, "")
				continue
			}
			row = append(row, div(vals[0], vals[r]).fmt(ratio))
		}
		t.add(row...)
	}
	return t.String()
}

// medianOf reads medians[test][server][field] of a load summarize result.
func medianOf(res map[string]any, test, field string) func(string) val {
	return func(srv string) val { return numAt(res, "medians", test, srv, field) }
}

// lostOf sums a counter over every run of test and server (a loss in one
// run must not hide behind a median), or takes the median without runs.
func lostOf(res map[string]any, test, field string) func(string) val {
	return func(srv string) val {
		if runs := runsOf(res, test, srv); len(runs) > 0 {
			return sumRuns(runs, field)
		}
		return numAt(res, "medians", test, srv, field)
	}
}

// problemsBlock lists what the script reported as problems and the runs
// left out of the medians.
func problemsBlock(res map[string]any) string {
	var b strings.Builder
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s (%d):\n\n", title, len(items))
		const max = 12
		for i, p := range items {
			if i == max {
				fmt.Fprintf(&b, "- … and %d more (in the JSON)\n", len(items)-max)
				break
			}
			fmt.Fprintf(&b, "- %s\n", strings.NewReplacer("\n", " ", "<", "&lt;").Replace(p))
		}
		b.WriteString("\n")
	}
	list("Problems the script reported", strList(res, "problems"))
	list("Runs left out of the medians", strList(res, "excluded_from_medians"))
	return b.String()
}

// scenario is one section of RESULTS.md.
type scenario struct {
	key     string // results file base name
	family  string // notes file and ONLY= word
	title   string
	command string // what make bench runs, without ROUNDS/DURATION
	script  string // its script, to tell "not written yet" from "not run yet"
	render  func(r *renderer, res map[string]any, e *Envelope) (string, []target)
	byHand  bool // not part of make bench: its script is run by hand
}

var fanoutKey = regexp.MustCompile(`^fanout-(\d+)$`)

// defaultFanouts are the subscriber counts make bench measures.
var defaultFanouts = []int{1000, 5000, 15000}

// fanoutCommand is what run-all.sh runs for N subscribers.
func fanoutCommand(n int) string {
	if n > 10000 {
		return fmt.Sprintf("SUBS=%d PROCS=2 bash bench/run-fanout.sh", n)
	}
	return fmt.Sprintf("SUBS=%d bash bench/run-fanout.sh", n)
}

// scenarios lists the sections in order: the known ones, fan-out for each
// subscriber count measured (the default ones at least), then any other
// results file, rendered generically.
func scenarios(results map[string]*Envelope) []scenario {
	var fan []int
	seen := map[int]bool{}
	for _, n := range defaultFanouts {
		fan, seen[n] = append(fan, n), true
	}
	for k := range results {
		if m := fanoutKey.FindStringSubmatch(k); m != nil {
			n, _ := strconv.Atoi(m[1])
			if !seen[n] {
				fan, seen[n] = append(fan, n), true
			}
		}
	}
	sort.Ints(fan)
	out := []scenario{{key: "idle", family: "idle", title: "Idle connections: server RSS per subscribed connection",
		command: "bash bench/run-idle.sh", script: "run-idle.sh", render: renderIdle}}
	if _, ok := results["fanout"]; ok { // saved by hand
		out = append(out, scenario{key: "fanout", family: "fanout", title: "Fan-out",
			command: "bash bench/run-fanout.sh", script: "run-fanout.sh", render: fanoutFor(0)})
	}
	for _, n := range fan {
		out = append(out, scenario{key: fmt.Sprintf("fanout-%d", n), family: "fanout",
			title:   fmt.Sprintf("Fan-out to %s subscribers", thousands(int64(n))),
			command: fanoutCommand(n), script: "run-fanout.sh", render: fanoutFor(n)})
	}
	out = append(out,
		scenario{key: "churn", family: "churn", title: "Connection churn",
			command: "bash bench/run-churn.sh", script: "run-churn.sh", render: renderChurn},
		scenario{key: "static", family: "static", title: "Static files against nginx",
			command: "bash bench/run-static.sh", script: "run-static.sh", render: renderStatic},
		scenario{key: "audit", family: "audit", title: "Audit log",
			command: "bash bench/run-audit.sh", script: "run-audit.sh", render: renderAudit},
		scenario{key: "scale", family: "scale", title: "Scale: many connections on several worker processes",
			command: "bash bench/run-scale.sh", script: "run-scale.sh", render: renderScale},
		scenario{key: "scale-curve", family: "scale-curve", title: "Scale curve: memory and fan-out from 10,000 to 1,000,000 connections",
			command: "bash bench/run-scale-curve.sh", script: "run-scale-curve.sh", render: renderScaleCurve, byHand: true},
		scenario{key: "cluster", family: "cluster", title: "Cluster over NATS against one node and Centrifugo",
			command: "bash bench/run-cluster.sh", script: "run-cluster.sh", render: renderCluster},
		scenario{key: "tls", family: "tls", title: "TLS against plain ZenConn, nginx and Centrifugo",
			command: "bash bench/run-tls.sh", script: "run-tls.sh", render: renderTLS},
		scenario{key: "micro", family: "micro", title: "Micro-benchmarks",
			command: "go test -run '^$' -bench . -benchmem ./proto/ ./engine/ ./shm/ ./store/", render: renderMicro},
	)
	known := map[string]bool{}
	for _, s := range out {
		known[s.key] = true
	}
	var other []string
	for k := range results {
		if !known[k] {
			other = append(other, k)
		}
	}
	sort.Strings(other)
	for _, k := range other {
		out = append(out, scenario{key: k, family: k, title: k, command: "bash bench/run-" + k + ".sh",
			script: "run-" + k + ".sh", render: renderGeneric})
	}
	return out
}

// renderer builds RESULTS.md.
type renderer struct {
	resultsDir string
	notesDir   string
	scriptsDir string // bench/: to tell whether a scenario's script exists
	now        time.Time
	results    map[string]*Envelope
	machine    Machine
	probed     bool // machine described at render time (no machine.json)
	warnings   []string
	files      map[string][]byte // written beside RESULTS.md (figures), by name
}

// addFile adds a file to write beside RESULTS.md.
func (r *renderer) addFile(name string, b []byte) {
	if r.files == nil {
		r.files = map[string][]byte{}
	}
	r.files[name] = b
}

// startedOf is when a result was measured: the envelope's start, else the
// "started" the script itself recorded.
func startedOf(e *Envelope, res map[string]any) string {
	if e.Started != "" {
		return e.Started
	}
	return strAt(res, "started")
}

// summaryRow is one line of the table of every target.
type summaryRow struct {
	scenario string
	anchor   string
	t        *target // nil: no target (figures only, or not measured)
	measured string
}

// notes returns bench/notes/NAME.md, or "".
func (r *renderer) notes(name string) string {
	if r.notesDir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(r.notesDir, name+".md"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// commandOf: the command the envelope records, else the default one with
// the settings it records.
func commandOf(s scenario, e *Envelope) string {
	if e != nil && e.Command != "" {
		return e.Command
	}
	return s.command
}

// measuredLine says how and when a result was measured.
func (r *renderer) measuredLine(s scenario, e *Envelope, res map[string]any) string {
	var parts []string
	if started := startedOf(e, res); started != "" {
		p := "measured " + when(started)
		secs := e.Seconds
		if t0, t1, err := timeSpan(started, strAt(res, "finished")); e.Started == "" && err == nil {
			secs = t1.Sub(t0).Seconds()
		}
		if secs > 0 {
			p += " (took " + took(secs) + ")"
		}
		parts = append(parts, p)
	} else {
		parts = append(parts, "measurement time unknown (saved without bench/run-all.sh)")
	}
	git := e.Git
	if git == "" {
		git = strAt(res, "meta", "git")
	}
	if git != "" {
		parts = append(parts, "commit "+git)
	}
	if la, lb := strAt(res, "meta", "loadavg_start"), strAt(res, "meta", "loadavg_end"); la != "" || lb != "" {
		parts = append(parts, "loadavg "+firstField(la)+" at start, "+firstField(lb)+" at end")
	}
	if cpu := strAt(res, "meta", "cpu"); cpu != "" && r.machine.CPU != "" && cpu != r.machine.CPU {
		parts = append(parts, "on another machine (CPU "+cpu+")")
	}
	return code(commandOf(s, e)) + ": " + strings.Join(parts, ", ") + "."
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return dash
}

// section renders one scenario; it returns the text and the summary rows.
func (r *renderer) section(s scenario, level string) (string, []summaryRow) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n\n", level, s.title)
	e := r.results[s.key]
	show := e
	measured := "not measured"
	switch {
	case e == nil:
		b.WriteString(r.notMeasured(s) + "\n\n")
		show = nil
	case e.OK():
		measured = when(startedOf(e, e.result()))
		if measured == dash {
			measured = "unknown date"
		}
	default:
		fmt.Fprintf(&b, "**The latest run failed**: %s, started %s, exit status %d", code(commandOf(s, e)), when(e.Started), e.Exit)
		if e.Error != "" {
			b.WriteString(": " + e.Error)
		}
		b.WriteString(".")
		if len(e.LogTail) > 0 {
			fmt.Fprintf(&b, " The end of its log (`bench/results/%s.log`):\n\n```\n%s\n```\n\n", s.key, strings.Join(e.LogTail, "\n"))
		} else {
			b.WriteString("\n\n")
		}
		switch {
		case e.LastGood != nil && e.LastGood.result() != nil:
			show = e.LastGood
			b.WriteString("The figures below are from the last successful run.\n\n")
			measured = when(show.Started) + " (the latest run failed)"
		case e.result() != nil:
			b.WriteString("No earlier successful run; the figures below are what the failed run printed, possibly incomplete.\n\n")
			measured = when(e.Started) + " (failed)"
		default:
			b.WriteString("No earlier successful run to show.\n\n")
			show = nil
			measured = "failed"
		}
	}
	res := show.result()
	body, ts := s.render(r, res, show)
	if show != nil {
		if res == nil {
			b.WriteString("*The results file holds no JSON object.*\n\n")
		} else {
			b.WriteString(r.measuredLine(s, show, res) + "\n\n")
			b.WriteString(body)
		}
	}
	if n := r.notes(s.key); n != "" && !(s.key == "fanout" && s.family == "fanout") {
		b.WriteString(n + "\n\n")
	}
	var rows []summaryRow
	for i := range ts {
		rows = append(rows, summaryRow{scenario: s.key, anchor: anchor(s.title), t: &ts[i], measured: measured})
	}
	if len(ts) == 0 {
		rows = append(rows, summaryRow{scenario: s.key, anchor: anchor(s.title), measured: measured})
	}
	return b.String(), rows
}

// notMeasured says how to measure a scenario without results.
func (r *renderer) notMeasured(s scenario) string {
	if s.script != "" && r.scriptsDir != "" {
		if _, err := os.Stat(filepath.Join(r.scriptsDir, s.script)); err != nil {
			return fmt.Sprintf("*Not measured yet*: `bench/%s` does not exist yet (`make bench` skips it).", s.script)
		}
	}
	if s.byHand {
		return fmt.Sprintf("*Not measured yet.* %s (not part of `make bench`).", code(s.command))
	}
	return fmt.Sprintf("*Not measured yet.* %s, or `ONLY=%s make bench`.", code(s.command), s.key)
}

// anchor is GitHub's anchor of a heading.
func anchor(title string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(title) {
		switch {
		case c == ' ':
			b.WriteByte('-')
		case c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'):
			b.WriteRune(c)
		case c > 127:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// render builds the whole of RESULTS.md.
func (r *renderer) render() string {
	var body strings.Builder
	var summary []summaryRow
	all := scenarios(r.results)
	for i := 0; i < len(all); i++ {
		s := all[i]
		if s.family == "fanout" {
			// One section for every subscriber count, then its notes.
			j := i
			for j < len(all) && all[j].family == "fanout" {
				j++
			}
			body.WriteString("## Fan-out\n\n")
			body.WriteString("One publisher and S subscribers on one channel, 64-byte publishes: first as fast as " +
				"the ack window (64) and the delivery lag (128 messages per subscriber) allow, then at a fixed " +
				"20,000 deliveries/s, where the floor server (`bench/floor`: one `write(2)` per subscriber and " +
				"nothing else) runs too. \"Messages lost\" adds up every run's missing deliveries.\n\n")
			for _, fs := range all[i:j] {
				text, rows := r.section(fs, "###")
				body.WriteString(text)
				summary = append(summary, rows...)
			}
			if n := r.notes("fanout"); n != "" {
				body.WriteString("### Fan-out: notes\n\n" + n + "\n\n")
			}
			i = j - 1
			continue
		}
		text, rows := r.section(s, "##")
		body.WriteString(text)
		summary = append(summary, rows...)
	}

	var b strings.Builder
	b.WriteString("# Benchmark results\n\n")
	fmt.Fprintf(&b, "Generated by `make bench` (`bench/run-all.sh`, then `bench/report`) on %s from the JSON files in "+
		"[results/](results/): do not edit by hand. The analysis under each scenario comes from "+
		"`bench/notes/<scenario>.md` and is kept when the file is generated again. Each scenario alternates "+
		"ZenConn and its reference (the baseline server, nginx, ZenConn without the audit log) in ABBA order "+
		"and reports medians; how each figure is computed is in [README.md](README.md).\n\n",
		r.now.UTC().Format("2006-01-02 15:04 UTC"))
	if n := r.notes("intro"); n != "" {
		b.WriteString(n + "\n\n")
	}
	b.WriteString(r.machineSection())
	b.WriteString(summaryTable(summary))
	b.WriteString(body.String())
	b.WriteString(r.reproduce(all))
	if len(r.warnings) > 0 {
		b.WriteString("## Files that could not be read\n\n")
		for _, w := range r.warnings {
			fmt.Fprintf(&b, "- %s\n", w)
		}
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n") + "\n"
}

func summaryTable(rows []summaryRow) string {
	var b strings.Builder
	b.WriteString("## Targets\n\n")
	t := newTable("scenario", "target", "ZenConn", "reference", "ratio", "goal", "result", "measured")
	t.right[1], t.right[5], t.right[6], t.right[7] = false, false, false, false
	met, missed, unknown := 0, 0, 0
	for _, r := range rows {
		sc := "[" + r.scenario + "](#" + r.anchor + ")"
		if r.t == nil {
			t.add(sc, "(figures only)", "", "", "", "", "", r.measured)
			continue
		}
		x := r.t
		switch {
		case x.met == nil:
			unknown++
		case *x.met:
			met++
		default:
			missed++
		}
		t.add(sc, x.name, x.ours.fmt(x.f), x.refCell(), x.ratioVal().fmt(ratio), x.goal, x.result(), r.measured)
	}
	fmt.Fprintf(&b, "%d met, %d missed, %d without data.\n\n", met, missed, unknown)
	b.WriteString(t.String())
	b.WriteString("\n")
	return b.String()
}

func (r *renderer) machineSection() string {
	m := r.machine
	var b strings.Builder
	b.WriteString("## Machine\n\n")
	if r.probed {
		b.WriteString("No `results/machine.json` (written by `bench/run-all.sh` when a run starts): this describes the machine that rendered the file.\n\n")
	} else {
		fmt.Fprintf(&b, "As described by `bench/run-all.sh` when its last run started (%s", when(m.Date))
		if m.Scenarios != "" {
			fmt.Fprintf(&b, ", measuring: %s", m.Scenarios)
		}
		b.WriteString(").\n\n")
	}
	t := newTable("", "")
	t.right[1] = false
	cpu := m.CPU
	if cpu == "" {
		cpu = dash
	}
	topo := fmt.Sprintf("%d logical CPUs", m.CPUs)
	if m.Sockets > 0 && m.CoresPer > 0 {
		topo += fmt.Sprintf(" (%d socket(s) × %d core(s))", m.Sockets, m.CoresPer)
	}
	t.add("CPU", cpu+", "+topo)
	t.add("memory", val{float64(m.MemKiB), m.MemKiB > 0}.fmt(kib))
	t.add("kernel", m.Kernel)
	t.add("OS", m.OS)
	t.add("Go", m.Go)
	disk := m.DataFS
	if m.DataDisk != "" {
		disk += " (" + m.DataDisk + ")"
	}
	if disk != "" && m.DataDir != "" {
		disk += "; the scripts' work folders (and the audit log's data) are under " + code(m.DataDir)
	}
	if a := r.results["audit"]; a != nil {
		ae := a
		if !a.OK() && a.LastGood != nil {
			ae = a.LastGood
		}
		if fs := strAt(ae.result(), "meta", "work_fs"); fs != "" {
			disk += "; the audit run recorded " + code(fs)
		}
	}
	t.add("disk for the audit data", disk)
	sc, lc := "1", "0"
	for _, e := range r.results {
		if res := e.result(); res != nil && strAt(res, "meta", "server_cpu") != "" {
			sc, lc = strAt(res, "meta", "server_cpu"), strAt(res, "meta", "load_cpu")
			break
		}
	}
	t.add("pinning", fmt.Sprintf("server `taskset -c %s` (ZenConn: one event loop, and the Go runtime one processor more, its default; "+
		"baseline and floor: `GOMAXPROCS=1`); "+
		"load generator (or wrk) `taskset -c %s`; the scale run is not pinned", sc, lc))
	codeLine := dash
	if m.Git != "" {
		codeLine = "commit " + m.Git
		if m.GitDirty > 0 {
			codeLine += fmt.Sprintf(" with %d uncommitted file(s)", m.GitDirty)
		}
		codeLine += " (each scenario below names the commit it measured)"
	}
	t.add("code", codeLine)
	b.WriteString(t.String())
	b.WriteString("\n")
	if n := r.notes("machine"); n != "" {
		b.WriteString(n + "\n\n")
	}
	return b.String()
}

func (r *renderer) reproduce(all []scenario) string {
	var b strings.Builder
	b.WriteString("## Reproduce\n\n```sh\n")
	b.WriteString("make bench                        # every scenario (about 30 minutes), then this file\n")
	b.WriteString("ONLY=\"idle fanout\" make bench     # some of them; the others keep their JSON in bench/results/\n")
	b.WriteString("ROUNDS=3 DURATION=10s make bench  # passed to every scenario script\n")
	b.WriteString("go run ./bench/report             # this file again from bench/results/, measuring nothing\n")
	b.WriteString("```\n\nEach scenario alone (what `make bench` runs; its JSON goes to stdout):\n\n```sh\n")
	seen := map[string]bool{}
	var byHand []string
	for _, s := range all {
		if seen[s.command] {
			continue
		}
		seen[s.command] = true
		if s.byHand {
			byHand = append(byHand, s.command)
			continue
		}
		fmt.Fprintf(&b, "%s\n", s.command)
	}
	b.WriteString("```\n")
	if len(byHand) > 0 {
		b.WriteString("\nNot part of `make bench` (long, run by hand; each writes its own file in `bench/results/`):\n\n```sh\n")
		b.WriteString(strings.Join(byHand, "\n") + "\n```\n")
	}
	return b.String()
}
