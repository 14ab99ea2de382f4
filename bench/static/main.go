package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/zenconn/server/bench/internal/kvflag"
)

// rawRun is one line written by run-static.sh.
type rawRun struct {
	Server    string  `json:"server"`
	File      string  `json:"file"`
	Path      string  `json:"path"`
	SizeBytes int64   `json:"size_bytes"`
	Round     int     `json:"round"`
	Port      int     `json:"port"`
	Conns     int     `json:"conns"`
	Threads   int     `json:"threads"`
	Profiled  bool    `json:"profiled"`
	WallNS    int64   `json:"wall_ns"`
	Wrk       *wrkOut `json:"wrk"`
	WrkExit   int     `json:"wrk_exit"`
	WrkCPU    struct {
		User float64 `json:"user"`
		Sys  float64 `json:"sys"`
	} `json:"wrk_cpu_s"`
	ServerTicks struct {
		Before int64 `json:"before"`
		After  int64 `json:"after"`
	} `json:"server_ticks"`
	ClkTck   int64 `json:"clk_tck"`
	ProcStat struct {
		Before cpuLines `json:"before"`
		After  cpuLines `json:"after"`
	} `json:"procstat"`
}

// wrkOut is what report.lua prints after "WRKJSON ".
type wrkOut struct {
	DurationUS int64 `json:"duration_us"`
	Requests   int64 `json:"requests"`
	Bytes      int64 `json:"bytes"`
	Errors     struct {
		Connect int64 `json:"connect"`
		Read    int64 `json:"read"`
		Write   int64 `json:"write"`
		Timeout int64 `json:"timeout"`
		Status  int64 `json:"status"`
	} `json:"errors"`
	LatencyUS map[string]float64 `json:"latency_us"`
}

// cpuLines holds the numbers of /proc/stat's "cpu" line (all CPUs) and of
// the lines of the server's and the load generator's CPUs, in jiffies.
type cpuLines struct {
	All        []int64 `json:"all"`
	ServerCore []int64 `json:"server_core"`
	LoadCore   []int64 `json:"load_core"`
}

// busy returns the jiffies one /proc/stat line spent running something:
// user, nice, system, irq and softirq (guest time is already in user; idle,
// iowait and steal are left out).
func busy(f []int64) int64 {
	var sum int64
	for i, v := range f {
		if i == 3 || i == 4 || i >= 7 { // idle, iowait, steal, guest, guest_nice
			continue
		}
		sum += v
	}
	return sum
}

// noiseWarn: above this share of a CPU used by other processes during a
// run, problems says the run was noisy.
const noiseWarn = 0.2

// Run is one measured wrk run, as printed.
type Run struct {
	Server       string             `json:"server"`
	File         string             `json:"file"`
	Path         string             `json:"path"`
	SizeBytes    int64              `json:"size_bytes"`
	Round        int                `json:"round"`
	Port         int                `json:"port"`
	Conns        int                `json:"conns"`
	Threads      int                `json:"threads"`
	Profiled     bool               `json:"profiled,omitempty"`
	OK           bool               `json:"ok"`
	WrkExit      int                `json:"wrk_exit"`
	DurationS    float64            `json:"duration_s"`
	Requests     int64              `json:"requests"`
	RPS          float64            `json:"requests_per_sec"`
	MiBPerSec    float64            `json:"transfer_mib_per_sec"`
	RespBytes    float64            `json:"response_bytes"`
	LatencyUS    map[string]float64 `json:"latency_us,omitempty"`
	Errors       map[string]int64   `json:"errors,omitempty"`
	ErrorsTotal  int64              `json:"errors_total"`
	Non2xx3xx    int64              `json:"non_2xx_3xx"`
	WallS        float64            `json:"wall_s"`
	ServerCPUS   float64            `json:"server_cpu_s"`
	ServerShare  float64            `json:"server_cpu_share"`
	ServerUSReq  float64            `json:"server_cpu_us_per_request"`
	WrkCPUS      float64            `json:"wrk_cpu_s"`
	WrkShare     float64            `json:"wrk_cpu_share"`
	WrkUSReq     float64            `json:"wrk_cpu_us_per_request"`
	ServerCore   float64            `json:"server_core_busy"`
	LoadCore     float64            `json:"load_core_busy"`
	OtherShare   float64            `json:"other_cpu_share"`
	ExcludedNote string             `json:"excluded_from_medians,omitempty"`
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// derive computes a run's figures from its raw counters.
func derive(r rawRun) Run {
	out := Run{
		Server: r.Server, File: r.File, Path: r.Path, SizeBytes: r.SizeBytes, Round: r.Round,
		Port: r.Port, Conns: r.Conns, Threads: r.Threads, Profiled: r.Profiled, WrkExit: r.WrkExit,
	}
	wall := float64(r.WallNS) / 1e9
	out.WallS = round(wall, 3)
	tck := float64(r.ClkTck)
	if tck <= 0 {
		tck = 100
	}
	out.ServerCPUS = round(float64(r.ServerTicks.After-r.ServerTicks.Before)/tck, 3)
	out.WrkCPUS = round(r.WrkCPU.User+r.WrkCPU.Sys, 3)
	if wall > 0 {
		out.ServerShare = round(out.ServerCPUS/wall, 3)
		out.WrkShare = round(out.WrkCPUS/wall, 3)
		b, a := r.ProcStat.Before, r.ProcStat.After
		if len(a.All) > 0 && len(b.All) > 0 {
			all := float64(busy(a.All)-busy(b.All)) / tck
			out.OtherShare = round(math.Max(0, all-out.ServerCPUS-out.WrkCPUS)/wall, 3)
		}
		if len(a.ServerCore) > 0 && len(b.ServerCore) > 0 {
			out.ServerCore = round(float64(busy(a.ServerCore)-busy(b.ServerCore))/tck/wall, 3)
		}
		if len(a.LoadCore) > 0 && len(b.LoadCore) > 0 {
			out.LoadCore = round(float64(busy(a.LoadCore)-busy(b.LoadCore))/tck/wall, 3)
		}
	}
	w := r.Wrk
	if w == nil || w.DurationUS <= 0 {
		return out
	}
	out.OK = true
	d := float64(w.DurationUS) / 1e6
	out.DurationS = round(d, 3)
	out.Requests = w.Requests
	out.RPS = round(float64(w.Requests)/d, 1)
	out.MiBPerSec = round(float64(w.Bytes)/d/(1<<20), 2)
	if w.Requests > 0 {
		out.RespBytes = round(float64(w.Bytes)/float64(w.Requests), 1)
		out.ServerUSReq = round(out.ServerCPUS*1e6/float64(w.Requests), 2)
		out.WrkUSReq = round(out.WrkCPUS*1e6/float64(w.Requests), 2)
	}
	out.LatencyUS = w.LatencyUS
	e := w.Errors
	out.Errors = map[string]int64{"connect": e.Connect, "read": e.Read, "write": e.Write, "timeout": e.Timeout, "status": e.Status}
	out.ErrorsTotal = e.Connect + e.Read + e.Write + e.Timeout + e.Status
	out.Non2xx3xx = e.Status
	return out
}

// flatten adds every numeric field of v (nested ones as "a.b") to dst.
func flatten(prefix string, v any, dst map[string][]float64) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			flatten(name, e, dst)
		}
	case float64:
		if prefix != "round" && prefix != "port" && prefix != "size_bytes" && prefix != "conns" && prefix != "threads" && prefix != "wrk_exit" {
			dst[prefix] = append(dst[prefix], x)
		}
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Target is the requests/s target of one file.
type Target struct {
	Name      string   `json:"name"`
	Metric    string   `json:"metric"`
	Candidate *float64 `json:"candidate"`
	Baseline  *float64 `json:"baseline"`
	Ratio     *float64 `json:"ratio"`
	MinRatio  float64  `json:"min_ratio"`
	Met       bool     `json:"met"`
}

// FileResult is everything about one file.
type FileResult struct {
	Path      string                        `json:"path"`
	SizeBytes int64                         `json:"size_bytes"`
	RunsUsed  map[string]int                `json:"runs_in_medians"`
	Medians   map[string]map[string]float64 `json:"medians"`
	Ratio     *float64                      `json:"ratio"`
	// CPURatio is the baseline's median server CPU per request over the
	// candidate's: what the requests/s ratio would be with both servers
	// using their whole core (a cross-check: softirq time is charged to
	// whatever runs, so other processes on the core shift it too).
	CPURatio *float64 `json:"cpu_per_request_ratio"`
	Target   *Target  `json:"target,omitempty"`
	Runs     []Run    `json:"runs"`
}

// Summary is the printed object.
type Summary struct {
	Meta       map[string]string      `json:"meta"`
	Candidate  string                 `json:"candidate"`
	Baseline   string                 `json:"baseline"`
	Files      map[string]*FileResult `json:"files"`
	FileOrder  []string               `json:"file_order"`
	Targets    []Target               `json:"targets"`
	AllMet     bool                   `json:"all_targets_met"`
	Problems   []string               `json:"problems"`
	Excluded   []string               `json:"excluded_from_medians"`
	RawRunsLen int                    `json:"runs_total"`
}

// kvFlag is a repeatable key=value flag.
type kvFlag = kvflag.Map

// summarize reads raw runs from in and builds the summary.
func summarize(in io.Reader, cand, base string, targets map[string]float64, maxOther float64, meta map[string]string) (*Summary, error) {
	runs, err := readRuns(in)
	if err != nil {
		return nil, err
	}
	s := &Summary{
		Meta: meta, Candidate: cand, Baseline: base, Files: map[string]*FileResult{},
		Problems: []string{}, Excluded: []string{}, Targets: []Target{}, RawRunsLen: len(runs), AllMet: true,
	}
	s.medians(runs, maxOther)
	for _, file := range s.FileOrder {
		s.checkFile(file, targets)
	}
	for file := range targets {
		if _, ok := s.Files[file]; !ok {
			s.Problems = append(s.Problems, fmt.Sprintf("%s: target given but no run", file))
			s.AllMet = false
		}
	}
	return s, nil
}

// readRuns reads the raw runs, one JSON object a line.
func readRuns(in io.Reader) ([]Run, error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var runs []Run
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		var r rawRun
		if err := json.Unmarshal([]byte(t), &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		runs = append(runs, derive(r))
	}
	return runs, sc.Err()
}

// medians files the runs by file and takes the medians per server. With
// maxOther > 0, a run where other processes used more than maxOther of a
// CPU is left out when its file and server have a quieter run.
func (s *Summary) medians(runs []Run, maxOther float64) {
	noisy := func(r Run) bool { return maxOther > 0 && r.OtherShare > maxOther }
	quiet := map[[2]string]int{}
	for _, r := range runs {
		if r.OK && !noisy(r) {
			quiet[[2]string{r.File, r.Server}]++
		}
	}
	vals := map[string]map[string]map[string][]float64{} // file -> server -> field -> values
	for i, r := range runs {
		id := fmt.Sprintf("run %d (%s, %s, round %d)", i+1, r.File, r.Server, r.Round)
		fr := s.Files[r.File]
		if fr == nil {
			fr = &FileResult{Path: r.Path, SizeBytes: r.SizeBytes, RunsUsed: map[string]int{}, Medians: map[string]map[string]float64{}}
			s.Files[r.File] = fr
			s.FileOrder = append(s.FileOrder, r.File)
			vals[r.File] = map[string]map[string][]float64{}
		}
		use := r.OK
		switch {
		case !r.OK:
			s.Problems = append(s.Problems, fmt.Sprintf("%s: wrk gave no result (exit %d)", id, r.WrkExit))
		case noisy(r) && quiet[[2]string{r.File, r.Server}] > 0:
			use = false
			r.ExcludedNote = fmt.Sprintf("other processes used %.2f CPU", r.OtherShare)
			s.Excluded = append(s.Excluded, id+": "+r.ExcludedNote)
		case noisy(r):
			s.Problems = append(s.Problems, fmt.Sprintf("%s: kept in the medians although other processes used %.2f CPU: no quieter run", id, r.OtherShare))
		}
		if r.OK {
			s.Problems = append(s.Problems, runProblems(id, r, noisy(r))...)
		}
		fr.Runs = append(fr.Runs, r)
		if !use {
			continue
		}
		fr.RunsUsed[r.Server]++
		// Through JSON, so nested fields flatten the same way as printed.
		b, _ := json.Marshal(r)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		if vals[r.File][r.Server] == nil {
			vals[r.File][r.Server] = map[string][]float64{}
		}
		flatten("", m, vals[r.File][r.Server])
	}
	for file, bySrv := range vals {
		fr := s.Files[file]
		for srv, fields := range bySrv {
			med := map[string]float64{}
			for k, v := range fields {
				med[k] = round(median(v), 3)
			}
			fr.Medians[srv] = med
		}
	}
}

// runProblems lists what is wrong with a run that gave a result.
func runProblems(id string, r Run, noisy bool) []string {
	var problems []string
	if r.ErrorsTotal > 0 {
		problems = append(problems, fmt.Sprintf("%s: wrk errors %v", id, r.Errors))
	}
	if r.Requests > 0 && r.RespBytes < float64(r.SizeBytes) {
		problems = append(problems, fmt.Sprintf("%s: %.0f bytes per response, less than the file's %d (compressed or cut short?)", id, r.RespBytes, r.SizeBytes))
	}
	if r.OtherShare > noiseWarn && r.ExcludedNote == "" && !noisy {
		problems = append(problems, fmt.Sprintf("%s: other processes used %.2f CPU during the run (noisy)", id, r.OtherShare))
	}
	if r.WrkShare >= 0.9 {
		problems = append(problems, fmt.Sprintf("%s: wrk used %.2f of its CPU: the load generator may have been the limit", id, r.WrkShare))
	}
	return problems
}

// checkFile sets file's ratios (requests/s and CPU per request, candidate
// to baseline) and checks its target, if one was given.
func (s *Summary) checkFile(file string, targets map[string]float64) {
	cand, base := s.Candidate, s.Baseline
	fr := s.Files[file]
	var c, b *float64
	if m, ok := fr.Medians[cand]; ok {
		v := m["requests_per_sec"]
		c = &v
	}
	if m, ok := fr.Medians[base]; ok {
		v := m["requests_per_sec"]
		b = &v
	}
	if c != nil && b != nil && *b > 0 {
		r := round(*c / *b, 3)
		fr.Ratio = &r
	}
	if mc, ok := fr.Medians[cand]; ok {
		if mb, ok := fr.Medians[base]; ok && mc["server_cpu_us_per_request"] > 0 {
			r := round(mb["server_cpu_us_per_request"]/mc["server_cpu_us_per_request"], 3)
			fr.CPURatio = &r
		}
	}
	minRatio, ok := targets[file]
	if !ok {
		return
	}
	t := Target{
		Name:      fmt.Sprintf("static %s (%d bytes): %s requests/s >= %s x %s's", file, fr.SizeBytes, cand, strconv.FormatFloat(minRatio, 'f', -1, 64), base),
		Metric:    "requests_per_sec",
		Candidate: c, Baseline: b, Ratio: fr.Ratio, MinRatio: minRatio,
	}
	t.Met = fr.Ratio != nil && *fr.Ratio >= minRatio
	if fr.Ratio == nil {
		s.Problems = append(s.Problems, fmt.Sprintf("%s: no ratio (a server has no usable run)", file))
	}
	fr.Target = &t
	s.Targets = append(s.Targets, t)
	s.AllMet = s.AllMet && t.Met
}

func main() { os.Exit(run(os.Args[1:], os.Stdout)) }

func run(args []string, w io.Writer) int {
	fs := flag.NewFlagSet("static", flag.ContinueOnError)
	cand := fs.String("candidate", "zenconn", "server label of the candidate")
	base := fs.String("baseline", "nginx", "server label of the baseline")
	maxOther := fs.Float64("max-other", 0, "leave runs during which other processes used more than this share of a CPU out of the medians, when the same file and server has a quieter run; 0 keeps every run")
	meta := kvFlag{}
	fs.Var(meta, "meta", "key=value copied to the output's meta (repeatable)")
	tflag := kvFlag{}
	fs.Var(tflag, "target", "FILE=RATIO: the candidate's median requests/s for FILE must be at least RATIO x the baseline's (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	targets := map[string]float64{}
	for k, v := range tflag {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "static: --target %s=%s: %v\n", k, v, err)
			return 2
		}
		targets[k] = f
	}
	var in io.Reader = os.Stdin
	if fs.NArg() > 0 {
		var readers []io.Reader
		for _, name := range fs.Args() {
			f, err := os.Open(name)
			if err != nil {
				fmt.Fprintln(os.Stderr, "static:", err)
				return 1
			}
			defer f.Close()
			readers = append(readers, f, strings.NewReader("\n"))
		}
		in = io.MultiReader(readers...)
	}
	s, err := summarize(in, *cand, *base, targets, *maxOther, meta)
	if err != nil {
		fmt.Fprintln(os.Stderr, "static:", err)
		return 1
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		fmt.Fprintln(os.Stderr, "static:", err)
		return 1
	}
	return 0
}
