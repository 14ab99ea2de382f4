package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/zenconn/server/bench/internal/kvflag"
)

// Envelope is what bench/run-all.sh saves as bench/results/NAME.json: the
// scenario script's JSON (Result) with how and when it was produced. A
// file that holds a script's JSON as it is (bash bench/run-idle.sh >
// bench/results/idle.json) is read as a successful envelope with unknown
// times.
type Envelope struct {
	Scenario string            `json:"scenario"`
	Command  string            `json:"command,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	Status   string            `json:"status"` // "ok" or "failed"
	Exit     int               `json:"exit"`
	Error    string            `json:"error,omitempty"` // why it failed, when not only its exit status
	Started  string            `json:"started,omitempty"`
	Finished string            `json:"finished,omitempty"`
	Seconds  float64           `json:"seconds,omitempty"`
	Git      string            `json:"git,omitempty"`
	// LogTail holds the last lines of the scenario's log when it failed.
	LogTail []string `json:"log_tail,omitempty"`
	// Result is the script's JSON object; several objects on its stdout
	// (run-scale.sh prints one per test) become {"runs": [...]}. A failed
	// run keeps whatever it printed, when that parses.
	Result json.RawMessage `json:"result,omitempty"`
	// LastGood is the last successful envelope of the same scenario, kept
	// when a later run fails so its figures are not lost.
	LastGood *Envelope `json:"last_good,omitempty"`
}

const (
	statusOK     = "ok"
	statusFailed = "failed"
)

// OK reports whether the run succeeded.
func (e *Envelope) OK() bool { return e != nil && e.Status == statusOK }

// result decodes Result as a JSON object (nil when absent or not an object).
func (e *Envelope) result() map[string]any {
	if e == nil || len(e.Result) == 0 {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(e.Result, &m); err != nil {
		return nil
	}
	return m
}

// parseEnvelope reads a results file: an envelope, or a script's JSON as it is.
func parseEnvelope(name string, b []byte) (*Envelope, error) {
	vals, err := decodeAll(b)
	if err != nil {
		return nil, err
	}
	if len(vals) == 0 {
		return nil, errors.New("empty file")
	}
	if len(vals) == 1 {
		var probe map[string]json.RawMessage
		if json.Unmarshal(vals[0], &probe) == nil {
			_, hasStatus := probe["status"]
			_, hasScenario := probe["scenario"]
			if hasStatus && hasScenario {
				var e Envelope
				if err := json.Unmarshal(vals[0], &e); err != nil {
					return nil, err
				}
				if e.Scenario == "" {
					e.Scenario = name
				}
				return &e, nil
			}
		}
	}
	return &Envelope{Scenario: name, Status: statusOK, Result: joinResults(vals)}, nil
}

// decodeAll reads every JSON value in b (one object, or JSON lines).
func decodeAll(b []byte) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var out []json.RawMessage
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
}

// joinResults: one value as it is, several as {"runs": [...]}.
func joinResults(vals []json.RawMessage) json.RawMessage {
	switch len(vals) {
	case 0:
		return nil
	case 1:
		return vals[0]
	}
	b, _ := json.Marshal(map[string]any{"runs": vals})
	return b
}

// readEnvelope reads path; a missing file is (nil, nil).
func readEnvelope(path string) (*Envelope, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	name := strings.TrimSuffix(filepath.Base(path), ".json")
	e, err := parseEnvelope(name, b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// kvFlag is a repeatable key=value flag.
type kvFlag = kvflag.Map

// wrapCmd is "report wrap": it builds the envelope of one scenario run and
// prints it. Used by bench/run-all.sh after each script.
func wrapCmd(args []string, stdout io.Writer, now func() time.Time) int {
	fs := flag.NewFlagSet("report wrap", flag.ContinueOnError)
	name := fs.String("name", "", "scenario name (the file's base name: idle, fanout-5000, ...)")
	command := fs.String("command", "", "the command that was run, as a reader would retype it")
	started := fs.String("started", "", "start time, RFC 3339 (default: now)")
	exit := fs.Int("exit", 0, "the script's exit status")
	stdoutFile := fs.String("stdout", "", "file holding the script's stdout (its JSON)")
	benchText := fs.String("bench-text", "", "file holding go test -bench output, instead of --stdout: the result lists its benchmarks")
	logFile := fs.String("log", "", "the script's log (its stderr): its last lines are kept when the run failed")
	tail := fs.Int("tail", 40, "lines of the log kept when the run failed")
	previous := fs.String("previous", "", "the scenario's previous results file: its last successful run is kept when this one failed")
	git := fs.String("git", "", "commit the run measured")
	env := kvFlag{}
	fs.Var(env, "env", "KEY=VALUE setting given to the script (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *name == "" {
		fmt.Fprintln(os.Stderr, "report wrap: --name is required")
		return 2
	}
	end := now().UTC()
	e := &Envelope{Scenario: *name, Command: *command, Exit: *exit, Status: statusOK, Git: *git, Finished: end.Format(time.RFC3339)}
	if len(env) > 0 {
		e.Env = env
	}
	if *started != "" {
		e.Started = *started
		if t, err := time.Parse(time.RFC3339, *started); err == nil {
			e.Seconds = end.Sub(t).Round(time.Second).Seconds()
		}
	} else {
		e.Started = e.Finished
	}
	switch {
	case *benchText != "":
		e.wrapBench(*benchText)
	case *stdoutFile != "":
		e.wrapJSON(*stdoutFile)
	default:
		e.Error = "nothing to wrap: give --stdout or --bench-text"
	}
	if *exit != 0 || e.Error != "" {
		e.failed(*logFile, *tail, *previous)
	}
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "report wrap:", err)
		return 1
	}
	if _, err := fmt.Fprintln(stdout, string(b)); err != nil {
		fmt.Fprintln(os.Stderr, "report wrap:", err)
		return 1
	}
	if !e.OK() {
		return wrapFailed
	}
	return 0
}

// wrapFailed is the exit status of report wrap when the run it wrapped
// failed (its envelope is printed all the same).
const wrapFailed = 3

// tailLines returns the last n lines of a file (nil when unreadable).
func tailLines(path string, n int) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		lines = append(lines, strings.TrimRight(sc.Text(), "\r"))
		if len(lines) > 4*n+64 {
			lines = append(lines[:0:0], lines[len(lines)-n:]...)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// loadResults reads every *.json of dir (machine.json apart) by scenario name.
func loadResults(dir string) (map[string]*Envelope, []string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(paths)
	out := map[string]*Envelope{}
	var warnings []string
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if name == machineFile {
			continue
		}
		e, err := readEnvelope(p)
		if err != nil {
			warnings = append(warnings, err.Error())
			continue
		}
		out[name] = e
	}
	return out, warnings, nil
}

// wrapBench makes the result of go test -bench output (file): its
// benchmarks and any failure it reported.
func (e *Envelope) wrapBench(file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		e.Error = err.Error()
		return
	}
	m := parseBench(string(b))
	res := map[string]any{"text": filepath.Base(file), "benchmarks": m.Benchmarks}
	if len(m.Failures) > 0 {
		res["failures"] = m.Failures
		e.Error = "go test reported: " + strings.Join(m.Failures, "; ")
	}
	e.Result, _ = json.Marshal(res)
	if len(m.Benchmarks) == 0 && e.Error == "" {
		e.Error = "no benchmark results in the output"
	}
}

// wrapJSON makes the result of a script's stdout (file): its JSON object,
// or its objects joined (see joinResults).
func (e *Envelope) wrapJSON(file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		e.Error = err.Error()
		return
	}
	vals, err := decodeAll(b)
	e.Result = joinResults(vals)
	switch {
	case err != nil:
		e.Error = "its stdout is not JSON: " + err.Error()
	case len(vals) == 0:
		e.Error = "it printed no JSON"
	default:
		var probe map[string]any
		if json.Unmarshal(e.Result, &probe) != nil {
			e.Error = "its stdout is not a JSON object"
		}
	}
}

// failed marks a failed run: it keeps the last tail lines of its log and
// the last successful run of the previous results file.
func (e *Envelope) failed(logFile string, tail int, previous string) {
	e.Status = statusFailed
	if logFile != "" {
		e.LogTail = tailLines(logFile, tail)
	}
	if previous == "" {
		return
	}
	prev, err := readEnvelope(previous)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report wrap: previous results unreadable, not kept:", err)
	}
	switch {
	case prev.OK():
		prev.LastGood = nil
		e.LastGood = prev
	case prev != nil:
		e.LastGood = prev.LastGood
	}
}
