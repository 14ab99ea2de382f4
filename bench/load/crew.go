package main

// The orchestrator's side of the workers: each runs a share of the
// connections, in a goroutine (--procs 1) or in a child process (the same
// binary with --child-index), and talks to the orchestrator in lines
// (READY, GO, PUBLISHED, END, DONE, CLOSE, RESULT; see runWorker and
// runChurnWorker). The crew starts them, broadcasts lines to them and
// collects their results.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runChild is a worker in its own process: lines go to stdout, come from stdin.
func runChild(cfg *config) {
	down := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			down <- sc.Text()
		}
		close(down)
	}()
	w := bufio.NewWriter(os.Stdout)
	runWorker(cfg, cfg.childIndex, func(s string) {
		_, _ = w.WriteString(s + "\n")
		_ = w.Flush()
	}, down)
}

type workerLine struct {
	idx  int
	line string
}

type workerHandle struct {
	down chan string
	cmd  *exec.Cmd
}

// startWorkers starts cfg.procs workers (goroutine when 1, else child
// processes) whose lines all arrive on the returned channel.
func startWorkers(cfg *config) ([]*workerHandle, chan workerLine, error) {
	up := make(chan workerLine, 64)
	var ws []*workerHandle
	if cfg.procs == 1 {
		h := &workerHandle{down: make(chan string, 16)}
		ws = append(ws, h)
		go runWorker(cfg, 0, func(s string) { up <- workerLine{0, s} }, h.down)
		return ws, up, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	for i := range cfg.procs {
		args := append([]string{cfg.mode}, os.Args[2:]...)
		args = append(args, "--child-index", strconv.Itoa(i), "--epoch-ns", strconv.FormatInt(cfg.epochNs, 10),
			"--timeout", time.Until(cfg.deadline).Round(time.Millisecond).String())
		cmd := exec.Command(self, args...)
		cmd.Stderr = os.Stderr
		// A generator process ends with its orchestrator, however that
		// ends (a TERM from a script that gives up, a crash).
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return ws, up, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return ws, up, err
		}
		if err := cmd.Start(); err != nil {
			return ws, up, err
		}
		h := &workerHandle{down: make(chan string, 16), cmd: cmd}
		ws = append(ws, h)
		go func(i int) {
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			for sc.Scan() {
				up <- workerLine{i, sc.Text()}
			}
			up <- workerLine{i, "EXIT"}
		}(i)
		go func() {
			for s := range h.down {
				if _, err := fmt.Fprintln(stdin, s); err != nil {
					break
				}
			}
			_ = stdin.Close()
		}()
	}
	return ws, up, nil
}

// stopWorkers closes the workers' input and waits (5 s at most) for the
// child processes.
func stopWorkers(workers []*workerHandle) {
	for _, w := range workers {
		close(w.down)
		if w.cmd != nil {
			done := make(chan struct{})
			go func() { _ = w.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = w.cmd.Process.Kill()
				<-done
			}
		}
	}
}

// mergeErrors adds a worker's error counts to merged, keeping the first
// example of each kind.
func mergeErrors(merged, add map[string]*errStat) {
	for k, v := range add {
		m := merged[k]
		if m == nil {
			m = &errStat{Example: v.Example}
			merged[k] = m
		}
		m.Count += v.Count
	}
}

// resultSink collects the workers' RESULT lines (and an error result for
// a worker that exits without one) until the run's deadline, plus 5 s.
type resultSink[R any] struct {
	results []*R
	n       int // results collected
	up      <-chan workerLine
	timer   *time.Timer
	missing func(idx int) *R
}

func newResultSink[R any](workers int, up <-chan workerLine, deadline time.Time, missing func(int) *R) *resultSink[R] {
	return &resultSink[R]{results: make([]*R, workers), up: up,
		timer: time.NewTimer(time.Until(deadline) + 5*time.Second), missing: missing}
}

func (s *resultSink[R]) stop() { s.timer.Stop() }

// next waits for one line from any worker; RESULT and EXIT lines are
// recorded.
func (s *resultSink[R]) next() (workerLine, error) {
	select {
	case wl := <-s.up:
		if rest, ok := strings.CutPrefix(wl.line, "RESULT "); ok && s.results[wl.idx] == nil {
			r := new(R)
			if err := json.Unmarshal([]byte(rest), r); err != nil {
				return wl, fmt.Errorf("worker %d: %v", wl.idx, err)
			}
			s.results[wl.idx] = r
			s.n++
		}
		if wl.line == "EXIT" && s.results[wl.idx] == nil {
			s.results[wl.idx] = s.missing(wl.idx)
			s.n++
		}
		return wl, nil
	case <-s.timer.C:
		return workerLine{}, errors.New("timeout waiting for workers")
	}
}

// crew is the workers of one run and the results they sent.
type crew[R any] struct {
	workers []*workerHandle
	*resultSink[R]
}

// startCrew starts cfg.procs workers; missing makes the result of a worker
// that exits without one. close the crew when done, after an error too.
func startCrew[R any](cfg *config, missing func(int) *R) (*crew[R], error) {
	workers, up, err := startWorkers(cfg)
	c := &crew[R]{workers: workers}
	if err != nil {
		return c, err
	}
	c.resultSink = newResultSink(len(workers), up, cfg.deadline, missing)
	return c, nil
}

// close stops the result timer and the workers.
func (c *crew[R]) close() {
	if c.resultSink != nil {
		c.stop()
	}
	stopWorkers(c.workers)
}

// broadcast sends a line to every worker.
func (c *crew[R]) broadcast(s string) {
	for _, w := range c.workers {
		w.down <- s
	}
}

// done reports whether every worker sent its result.
func (c *crew[R]) done() bool { return c.n >= len(c.workers) }

// collect waits for every worker's result.
func (c *crew[R]) collect() error {
	for !c.done() {
		if _, err := c.next(); err != nil {
			return err
		}
	}
	return nil
}
