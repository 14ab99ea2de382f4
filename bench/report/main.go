package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, time.Now))
}

func run(args []string, stdout io.Writer, now func() time.Time) int {
	if len(args) > 0 {
		switch args[0] {
		case "wrap":
			return wrapCmd(args[1:], stdout, now)
		case "machine":
			return machineCmd(args[1:], stdout, now)
		case "render":
			args = args[1:]
		}
	}
	return renderCmd(args, stdout, now)
}

func renderCmd(args []string, stdout io.Writer, now func() time.Time) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	results := fs.String("results", "bench/results", "folder of the results (NAME.json, micro.txt, machine.json)")
	notes := fs.String("notes", "bench/notes", "folder of the hand-written notes (NAME.md)")
	scripts := fs.String("scripts", "bench", "folder of the scenario scripts (run-NAME.sh), to say which do not exist yet")
	out := fs.String("out", "bench/RESULTS.md", "file to write; - for stdout")
	date := fs.String("date", "", "generation date to print, RFC 3339 (default: now)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "report: unexpected arguments %q\n", fs.Args())
		return 2
	}
	t := now()
	if *date != "" {
		var err error
		if t, err = time.Parse(time.RFC3339, *date); err != nil {
			fmt.Fprintln(os.Stderr, "report: --date:", err)
			return 2
		}
	}
	text, files, warnings, err := renderFiles(*results, *notes, *scripts, t)
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "report: warning:", w)
	}
	if *out == "-" {
		_, err = io.WriteString(stdout, text)
		if len(files) > 0 {
			fmt.Fprintln(os.Stderr, "report: --out -: the figures are not written")
		}
	} else {
		err = writeAll(*out, text, files)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		return 1
	}
	return 0
}

// renderDir renders the results of a folder.
func renderDir(resultsDir, notesDir, scriptsDir string, now time.Time) (string, []string, error) {
	text, _, warnings, err := renderFiles(resultsDir, notesDir, scriptsDir, now)
	return text, warnings, err
}

// writeAll writes the page to out and its figures beside it.
func writeAll(out, text string, files map[string][]byte) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(filepath.Dir(out), n)
		if err := writeFileAtomic(p, files[n]); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "report: wrote %s\n", p)
	}
	if err := writeFileAtomic(out, []byte(text)); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "report: wrote %s\n", out)
	return nil
}

// renderFiles renders the results of a folder: the page, and the figures
// to write beside it by file name.
func renderFiles(resultsDir, notesDir, scriptsDir string, now time.Time) (string, map[string][]byte, []string, error) {
	results, warnings, err := loadResults(resultsDir)
	if err != nil {
		return "", nil, nil, err
	}
	r := &renderer{resultsDir: resultsDir, notesDir: notesDir, scriptsDir: scriptsDir, now: now, results: results, warnings: warnings}
	if m, ok := readMachine(resultsDir); ok {
		r.machine = m
	} else {
		r.machine, r.probed = probeMachine(now), true
	}
	return r.render(), r.files, warnings, nil
}

// writeFileAtomic writes through a temporary file in the same folder.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".report-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		os.Remove(f.Name())
		return err
	}
	return os.Rename(f.Name(), path)
}
