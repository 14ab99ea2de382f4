package main

import (
	"regexp"
	"strconv"
	"strings"
)

// Bench is one line of go test -bench output.
type Bench struct {
	Pkg        string             `json:"pkg"`
	Name       string             `json:"name"` // without the Benchmark prefix and the -GOMAXPROCS suffix
	Procs      int                `json:"procs,omitempty"`
	Iterations int64              `json:"iterations"`
	Metrics    map[string]float64 `json:"metrics"` // by unit: ns/op, B/op, allocs/op, MB/s, records/s, ...
}

// benchOutput is what parseBench found.
type benchOutput struct {
	CPU        string
	Benchmarks []Bench
	Failures   []string // "FAIL pkg" lines and --- FAIL: lines
}

var benchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-(\d+))?\s+(\d+)\s+(.*)$`)

// parseBench reads the text of go test -bench (several packages).
func parseBench(text string) benchOutput {
	var out benchOutput
	pkg := ""
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimSpace(strings.TrimPrefix(line, "pkg: "))
		case strings.HasPrefix(line, "cpu: ") && out.CPU == "":
			out.CPU = strings.TrimSpace(strings.TrimPrefix(line, "cpu: "))
		case strings.HasPrefix(line, "--- FAIL:"), strings.HasPrefix(line, "FAIL\t"), strings.HasPrefix(line, "FAIL "):
			out.Failures = append(out.Failures, strings.TrimSpace(line))
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n, err := strconv.ParseInt(m[3], 10, 64)
		if err != nil {
			continue
		}
		b := Bench{Pkg: pkg, Name: m[1], Iterations: n, Metrics: map[string]float64{}}
		if m[2] != "" {
			b.Procs, _ = strconv.Atoi(m[2])
		}
		f := strings.Fields(m[4])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			b.Metrics[f[i+1]] = v
		}
		out.Benchmarks = append(out.Benchmarks, b)
	}
	return out
}

// shortPkg: the last element of an import path.
func shortPkg(p string) string {
	if i := strings.LastIndex(p, "/"); i >= 0 {
		return p[i+1:]
	}
	return p
}
