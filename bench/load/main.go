// Command load is ZenConn's WebSocket load generator. Modes:
//
//	load idle     --url ws://127.0.0.1:8090/ws --conns 15000 --server-pid PID
//	load fanout   --url ... --subs 5000 --size 64 --rate 0 --duration 10s --server-pid PID
//	load publish  --url ... --pubs 8 --size 64 --window 64 --duration 10s --server-pid PID
//	load churn    --url ... --conns 64 --duration 10s --server-pid PID [--metrics-url URL] [--gc-url URL]
//	load summarize [--targets idle|fanout|audit] [--meta k=v ...] FILE...
//	load summarize-churn [--min-ratio 2] [--meta k=v ...] FILE...
//
// idle, fanout, publish and churn print one JSON object on stdout;
// summarize turns a file of such objects (JSON lines) into medians per test
// and server (summarize-churn adds the churn targets). See bench/README.md
// for what each figure means.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

type config struct {
	mode       string
	url        string
	host, path string
	dstIP      net.IP
	dstPort    int
	server     string
	label      string
	serverPIDs []int
	procs      int
	srcIPs     []net.IP
	timeout    time.Duration
	dialConc   int
	channel    string
	conns      int
	settle     time.Duration
	size       int
	rate       float64
	duration   time.Duration
	drain      time.Duration
	window     int
	maxLag     int
	busyPoll   bool
	pubs       int
	metricsURL string
	childIndex int
	churn      churnOpts

	deadline time.Time
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: load idle|fanout|publish|churn [flags]   or   load summarize|summarize-churn [flags] FILE...   (load MODE -h for flags)")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode := os.Args[1]
	switch mode {
	case "idle", "fanout", "publish", "churn":
	case "summarize":
		os.Exit(summarize(os.Args[2:]))
	case "summarize-churn":
		os.Exit(summarizeChurn(os.Args[2:]))
	default:
		usage()
	}
	cfg, err := parseFlags(mode, os.Args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", err)
		os.Exit(2)
	}
	if cfg.childIndex >= 0 {
		runChild(cfg)
		return
	}
	out, err := orchestrate(cfg)
	if out != nil {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(mode string, args []string) (*config, error) {
	cfg := &config{mode: mode}
	fs := flag.NewFlagSet("load "+mode, flag.ContinueOnError)
	fs.StringVar(&cfg.url, "url", "ws://127.0.0.1:8090/ws", "WebSocket URL of the server (IPv4 literal or name)")
	fs.StringVar(&cfg.server, "server", "", "label of the server under test, copied to the output")
	fs.StringVar(&cfg.label, "label", "", "label of the test, copied to the output as \"test\"")
	pid := fs.Int("server-pid", 0, "server process id, for RSS and CPU sampling")
	pids := fs.String("server-pids", "", "more server process ids, comma-separated (summed)")
	fs.IntVar(&cfg.procs, "procs", 1, "number of generator processes the connections are split across")
	srcs := fs.String("source-ips", "", "comma-separated local addresses to bind (e.g. 127.0.0.2,127.0.0.3)")
	fs.DurationVar(&cfg.timeout, "timeout", 120*time.Second, "hard limit for the whole run")
	fs.IntVar(&cfg.dialConc, "dial-concurrency", 256, "connection handshakes in flight per process")
	chanDefault := "c"
	if mode == "churn" {
		chanDefault = "churn" // the workers' channels are churn-0, churn-1, ...
	}
	fs.StringVar(&cfg.channel, "channel", chanDefault, "channel to subscribe to (churn: prefix of the workers' channels)")
	fs.IntVar(&cfg.childIndex, "child-index", -1, "internal: index of a child process")
	if mode == "churn" {
		churnFlags(fs, cfg)
	} else if mode == "idle" {
		fs.IntVar(&cfg.conns, "conns", 1000, "connections to open")
		fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "wait after the last ack before sampling RSS")
	} else {
		if mode == "fanout" {
			fs.IntVar(&cfg.conns, "subs", 1000, "subscriber connections (the publisher is one more)")
			fs.IntVar(&cfg.maxLag, "max-lag", 128, "maximum undelivered messages per subscriber (average) before publishing waits, at any --rate; 0 = no limit")
			fs.IntVar(&cfg.window, "window", 64, "maximum unacknowledged publishes")
		} else {
			fs.IntVar(&cfg.pubs, "pubs", 8, "publisher connections (no subscribers)")
			fs.IntVar(&cfg.window, "window", 64, "maximum unacknowledged publishes per publisher")
		}
		fs.IntVar(&cfg.size, "size", 64, "size in bytes of each published WebSocket frame, header and mask included")
		fs.Float64Var(&cfg.rate, "rate", 0, "publishes per second (all publishers together); 0 = as fast as the window allows")
		fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "publishing time")
		fs.DurationVar(&cfg.drain, "drain", 5*time.Second, "time allowed after publishing for the last deliveries and acks")
		fs.BoolVar(&cfg.busyPoll, "busy-poll", false, "spin on epoll instead of sleeping while measuring (uses a whole CPU; see README)")
		fs.StringVar(&cfg.metricsURL, "metrics-url", "", "the server's Prometheus endpoint (http://127.0.0.1:PORT/metrics): audit-log figures are read from it before, at the end of publishing and after the run")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.deadline = time.Now().Add(cfg.timeout)
	if *pid > 0 {
		cfg.serverPIDs = append(cfg.serverPIDs, *pid)
	}
	for f := range strings.SplitSeq(*pids, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		cfg.serverPIDs = append(cfg.serverPIDs, p)
	}
	for f := range strings.SplitSeq(*srcs, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		ip := net.ParseIP(f).To4()
		if ip == nil {
			return nil, fmt.Errorf("bad source ip %q (IPv4 only)", f)
		}
		cfg.srcIPs = append(cfg.srcIPs, ip)
	}
	u, err := url.Parse(cfg.url)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("url scheme must be ws")
	}
	cfg.host = u.Host
	cfg.path = u.RequestURI()
	port := u.Port()
	if port == "" {
		port = "80"
	}
	ta, err := net.ResolveTCPAddr("tcp4", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return nil, err
	}
	cfg.dstIP, cfg.dstPort = ta.IP.To4(), ta.Port
	pubMode := mode == "fanout" || mode == "publish"
	switch {
	case cfg.conns < 0 || (mode == "idle" && cfg.conns == 0):
		return nil, fmt.Errorf("connection count must be positive")
	case cfg.procs < 1 || cfg.procs > 64:
		return nil, fmt.Errorf("--procs must be 1..64")
	case cfg.dialConc < 1:
		return nil, fmt.Errorf("--dial-concurrency must be positive")
	case pubMode && (cfg.size < 1 || cfg.size > 16<<20):
		return nil, fmt.Errorf("--size must be 1..16MiB")
	case pubMode && (cfg.window < 1 || cfg.rate < 0 || cfg.duration <= 0):
		return nil, fmt.Errorf("bad --window, --rate or --duration")
	case mode == "publish" && (cfg.pubs < 1 || cfg.pubs > 10000):
		return nil, fmt.Errorf("--pubs must be 1..10000")
	case mode == "publish" && cfg.procs != 1:
		return nil, fmt.Errorf("publish mode runs in one process (--procs 1)")
	case cfg.metricsURL != "" && !strings.HasPrefix(cfg.metricsURL, "http://"):
		return nil, fmt.Errorf("--metrics-url must be an http:// URL")
	}
	if mode == "churn" {
		if err := checkChurn(cfg); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// share is the number of connections of worker i out of n.
func share(total, i, n int) int {
	s := total / n
	if i < total%n {
		s++
	}
	return s
}

// workerResult is what one worker (process) reports.
type workerResult struct {
	Index       int                 `json:"index"`
	Conns       int                 `json:"conns"`
	Ready       int                 `json:"ready"`
	ReadySubs   int                 `json:"ready_subs"`
	ConnectMs   float64             `json:"connect_ms"`
	DialErrors  int64               `json:"dial_errors"`
	ProtoErrors int64               `json:"protocol_errors"`
	Disconnects int64               `json:"disconnects"`
	OutOfOrder  int64               `json:"out_of_order"`
	Errors      map[string]*errStat `json:"errors,omitempty"`
	Published   int64               `json:"published"`
	Acked       int64               `json:"acked"`
	AckReorder  int64               `json:"ack_reorder"`
	Refused     int64               `json:"refused"`
	LastAck     int64               `json:"last_ack_ns"`
	AckHist     [][2]int64          `json:"ack_hist,omitempty"`
	AckHistMax  int64               `json:"ack_hist_max"`
	HeldNs      int64               `json:"held_ns"`
	Skipped     int64               `json:"skipped"`
	Received    int64               `json:"received"`
	FirstSend   int64               `json:"first_send_ns"`
	LastRecv    int64               `json:"last_recv_ns"`
	PubEnd      int64               `json:"pub_end_ns"`
	Hist        [][2]int64          `json:"hist,omitempty"`
	HistMax     int64               `json:"hist_max"`
	CPUus       int64               `json:"cpu_us"`
	FrameBytes  int                 `json:"frame_bytes"`
	PollCalls   int64               `json:"poll_calls"`
	PollEvents  int64               `json:"poll_events"`
	PollFull    int64               `json:"poll_full"`
	Error       string              `json:"error,omitempty"`
}

// runWorker drives this process's share of connections. It talks to the
// orchestrator in lines: it sends READY, PUBLISHED and RESULT, and receives
// GO and END.
func runWorker(cfg *config, idx int, send func(string), down <-chan string) {
	if cfg.mode == "churn" {
		runChurnWorker(cfg, idx, send, down)
		return
	}
	res := &workerResult{Index: idx}
	defer func() {
		b, _ := json.Marshal(res)
		send("RESULT " + string(b))
	}()
	nSubs := share(cfg.conns, idx, cfg.procs)
	nPubs := 0
	switch {
	case cfg.mode == "fanout" && idx == 0:
		nPubs = 1
	case cfg.mode == "publish":
		nPubs = cfg.pubs
	}
	withPub := nPubs > 0
	res.Conns = nSubs + nPubs
	l, err := newLoop(cfg, nSubs, nPubs, idx)
	if err != nil {
		res.Error = err.Error()
		return
	}
	defer l.closeAll()
	fill := func() {
		res.DialErrors, res.ProtoErrors, res.Disconnects = l.dialErrors, l.protoErrors, l.disconnects
		res.OutOfOrder, res.Errors, res.Ready = l.outOfOrder, l.errorsOut(), l.readyCount
		res.Published, res.Acked, res.AckReorder, res.Received = l.published, l.acked, l.ackReorder, l.received
		res.Refused, res.LastAck = l.refused, l.lastAck
		res.FirstSend, res.LastRecv = l.firstSend, l.lastRecv
		res.Hist, res.HistMax, res.FrameBytes = l.hist.sparse(), l.hist.max, l.frameBytes
		res.AckHist, res.AckHistMax = l.ackHist.sparse(), l.ackHist.max
		res.PollCalls, res.PollEvents, res.PollFull = l.polls.calls, l.polls.events, l.polls.full
	}
	defer fill()

	t0 := time.Now()
	for l.readyCount+l.failed < l.total {
		if time.Now().After(cfg.deadline) {
			res.Error = fmt.Sprintf("timeout while connecting: %d of %d ready", l.readyCount, l.total)
			return
		}
		for l.inflight < cfg.dialConc && l.nextDial < l.total {
			l.startDial()
		}
		if err := l.poll(20 * time.Millisecond); err != nil {
			res.Error = err.Error()
			return
		}
	}
	res.ConnectMs = float64(time.Since(t0).Microseconds()) / 1000
	for _, c := range l.conns[:nSubs] {
		if c.ready {
			res.ReadySubs++
		}
	}
	for _, p := range l.pubs {
		if !p.ready {
			res.Error = "publisher connection failed"
			return
		}
	}
	pubID := "-"
	if withPub {
		pubID = l.pub.id
	}
	send(fmt.Sprintf("READY %d %s", res.ReadySubs, pubID))

	// wait keeps serving the connections (pings, late frames) until a line
	// with prefix arrives.
	wait := func(prefix string) (string, bool) {
		for time.Now().Before(cfg.deadline) {
			select {
			case line, ok := <-down:
				if !ok {
					return "", false
				}
				if rest, found := strings.CutPrefix(line, prefix); found {
					return strings.TrimSpace(rest), true
				}
			default:
				if err := l.poll(20 * time.Millisecond); err != nil {
					return "", false
				}
			}
		}
		return "", false
	}
	if cfg.mode == "idle" {
		if _, ok := wait("END"); !ok {
			res.Error = "timeout waiting for END"
		}
		return
	}
	id, ok := wait("GO")
	if !ok {
		res.Error = "timeout waiting for GO"
		return
	}
	pid, epoch, _ := strings.Cut(id, " ")
	l.pubID = pid
	if l.epochNs, err = strconv.ParseInt(epoch, 10, 64); err != nil {
		res.Error = "bad GO line"
		return
	}
	cpu0, _ := readCPUus(0)
	res.Error = l.runFanout(withPub, res.ReadySubs, send, down, res)
	cpu1, _ := readCPUus(0)
	res.CPUus = cpu1 - cpu0
	l.measure(false)
	if cfg.metricsURL != "" && res.Error == "" {
		// Keep the connections open while the orchestrator reads the
		// server's metrics, so that no disconnect is counted in them.
		send(fmt.Sprintf("DONE %d", l.acked))
		if _, ok := wait("CLOSE"); !ok {
			res.Error = "timeout waiting for CLOSE"
		}
	}
}

// runFanout publishes (the process holding the publishers) and counts
// deliveries and acks until every expected delivery and answer arrived, the
// drain time ran out, or the deadline passed.
//
// Publishing waits while a publisher has --window unanswered publishes, or
// while the subscribers of this process are on average more than --max-lag
// messages behind (at any rate). At a fixed rate, publishes that fell due
// while publishing waited are skipped, not made up later (counted in
// res.Skipped; the waiting time in res.HeldNs): the offered rate is a
// ceiling, and what the server can deliver sets the real one.
func (l *loop) runFanout(withPub bool, readySubs int, send func(string), down <-chan string, res *workerResult) string {
	cfg := l.cfg
	l.measure(true)
	start := time.Now()
	pubEnd := start.Add(cfg.duration)
	var interval time.Duration
	if cfg.rate > 0 {
		interval = time.Duration(float64(time.Second) / cfg.rate)
	}
	nextPub := start
	var heldSince time.Time
	publishing := withPub
	endN := int64(-1)
	var drainEnd time.Time
	subs := int64(readySubs)
	lagOK := func() bool {
		return cfg.maxLag <= 0 || subs == 0 || l.published*subs-l.received <= int64(cfg.maxLag)*subs
	}
	canPublish := func(c *conn) bool {
		return c.pubSent-c.pubAnswered < int64(cfg.window) && len(c.out) == 0 && !c.closed()
	}
	rr := 0 // next publisher, round robin
	// nextPublisher returns a publisher that may publish now, or nil.
	nextPublisher := func() *conn {
		if !lagOK() {
			return nil
		}
		for range l.pubs {
			c := l.pubs[rr]
			rr = (rr + 1) % len(l.pubs)
			if canPublish(c) {
				return c
			}
		}
		return nil
	}
	allClosed := func() bool {
		for _, c := range l.pubs {
			if !c.closed() {
				return false
			}
		}
		return true
	}
	for {
		now := time.Now()
		if now.After(cfg.deadline) {
			return "timeout during fan-out"
		}
		timeout := 20 * time.Millisecond
		if publishing {
			if !now.Before(pubEnd) || allClosed() {
				publishing = false
				if !heldSince.IsZero() {
					res.HeldNs += int64(now.Sub(heldSince))
				}
				res.PubEnd = now.UnixNano()
				send(fmt.Sprintf("PUBLISHED %d", l.published))
			} else if cfg.rate > 0 {
				for !nextPub.After(now) {
					c := nextPublisher()
					if c == nil {
						if heldSince.IsZero() {
							heldSince = now
						}
						break
					}
					if !heldSince.IsZero() {
						res.HeldNs += int64(now.Sub(heldSince))
						heldSince = time.Time{}
						if missed := now.Sub(nextPub) / interval; missed > 0 {
							res.Skipped += int64(missed)
							nextPub = nextPub.Add(missed * interval)
						}
					}
					l.publish(c, time.Now().UnixNano())
					nextPub = nextPub.Add(interval)
				}
				if heldSince.IsZero() {
					timeout = min(max(time.Until(nextPub), 0), timeout)
				}
			} else if cfg.mode == "publish" {
				// Every publisher fills its window; one write each.
				for _, c := range l.pubs {
					b := l.pframe[:0]
					for canPublish(c) {
						b = l.appendPublish(b, c, time.Now().UnixNano())
						if len(b) >= 64<<10 {
							break
						}
					}
					l.pframe = b
					if len(b) > 0 {
						l.write(c, b)
					}
				}
			} else {
				for c := nextPublisher(); c != nil; c = nextPublisher() {
					l.publish(c, time.Now().UnixNano())
				}
			}
		}
		select {
		case line := <-down:
			if rest, ok := strings.CutPrefix(line, "END "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
				if err != nil {
					return "bad END line"
				}
				endN = n
				drainEnd = now.Add(cfg.drain)
			}
		default:
		}
		if endN >= 0 {
			done := l.received >= endN*subs && (!withPub || l.acked+l.refused >= l.published)
			if done || now.After(drainEnd) {
				return ""
			}
		}
		if err := l.poll(timeout); err != nil {
			return err.Error()
		}
	}
}

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
		args = append(args, "--child-index", strconv.Itoa(i),
			"--timeout", time.Until(cfg.deadline).Round(time.Millisecond).String())
		cmd := exec.Command(self, args...)
		cmd.Stderr = os.Stderr
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

func orchestrate(cfg *config) (map[string]any, error) {
	if cfg.mode == "churn" {
		return orchestrateChurn(cfg)
	}
	out := map[string]any{
		"mode": cfg.mode, "server": cfg.server, "url": cfg.url, "procs": cfg.procs,
		"loadavg_start": loadavg(), "server_pids": cfg.serverPIDs,
	}
	if cfg.label != "" {
		out["test"] = cfg.label
	}
	var rssBefore int64
	if cfg.mode == "idle" && len(cfg.serverPIDs) > 0 {
		v, err := sumRSS(cfg.serverPIDs)
		if err != nil {
			return out, err
		}
		rssBefore = v
	}
	workers, up, err := startWorkers(cfg)
	defer stopWorkers(workers)
	if err != nil {
		return out, err
	}
	sink := newResultSink(len(workers), up, cfg.deadline, func(i int) *workerResult {
		return &workerResult{Index: i, Error: "worker exited without a result"}
	})
	defer sink.stop()
	next := sink.next
	broadcast := func(s string) {
		for _, w := range workers {
			w.down <- s
		}
	}
	collect := func() error {
		for sink.n < len(workers) {
			if _, err := next(); err != nil {
				return err
			}
		}
		return nil
	}

	// Phase 1: every worker connected (or failed).
	ready, readySubs, pubID := 0, 0, ""
	for ready+sink.n < len(workers) {
		wl, err := next()
		if err != nil {
			return out, err
		}
		if rest, ok := strings.CutPrefix(wl.line, "READY "); ok {
			ready++
			f := strings.Fields(rest)
			if len(f) == 2 {
				n, _ := strconv.Atoi(f[0])
				readySubs += n
				if f[1] != "-" {
					pubID = f[1]
				}
			}
		}
	}
	failedEarly := sink.n > 0

	var cpu0, cpu1, sys0, sys1, busy0, busy1 int64
	var cpuErr error
	// The server's metrics (--metrics-url): before publishing, when it
	// ends, and after every worker is done (connections still open).
	var m0, m1, m2 promSample
	var t0, t1 time.Time
	var metricErrs []string
	metricsErr := func(when string, err error) {
		metricErrs = append(metricErrs, fmt.Sprintf("metrics %s: %v", when, err))
	}
	if cfg.mode == "idle" {
		if !failedEarly {
			time.Sleep(min(cfg.settle, time.Until(cfg.deadline)))
		}
		if len(cfg.serverPIDs) > 0 {
			after, err := sumRSS(cfg.serverPIDs)
			if err != nil {
				return out, err
			}
			out["rss_before_kib"] = rssBefore
			out["rss_after_kib"] = after
			if readySubs > 0 {
				out["kib_per_conn"] = round3(float64(after-rssBefore) / float64(readySubs))
			}
		}
		broadcast("END 0")
	} else if !failedEarly {
		if cfg.metricsURL != "" {
			// Subscribes and connects were acknowledged; wait until their
			// records are committed so that none counts in the run.
			m, err := scrapeSettled(cfg.metricsURL, 0, 10*time.Second)
			if err != nil {
				metricsErr("before", err)
			}
			m0, t0 = m, time.Now()
		}
		if len(cfg.serverPIDs) > 0 {
			cpu0, sys0, cpuErr = sumCPU(cfg.serverPIDs)
			cpu0 += sys0
		}
		busy0, _ = machineBusyUs()
		broadcast(fmt.Sprintf("GO %s %d", pubID, time.Now().UnixNano()))
		measured := false
		endMeasure := func() {
			if measured {
				return
			}
			measured = true
			if len(cfg.serverPIDs) > 0 && cpuErr == nil {
				cpu1, sys1, cpuErr = sumCPU(cfg.serverPIDs)
				cpu1 += sys1
			}
			busy1, _ = machineBusyUs()
		}
		nDone, ackedDone := 0, int64(0)
		for sink.n < len(workers) {
			wl, err := next()
			if err != nil {
				return out, err
			}
			if rest, ok := strings.CutPrefix(wl.line, "PUBLISHED "); ok {
				broadcast("END " + rest)
				if m0 != nil {
					m, err := scrape(cfg.metricsURL)
					if err != nil {
						metricsErr("at the end of publishing", err)
					}
					m1, t1 = m, time.Now()
				}
			}
			if rest, ok := strings.CutPrefix(wl.line, "DONE "); ok {
				nDone++
				n, _ := strconv.ParseInt(rest, 10, 64)
				ackedDone += n
			}
			if cfg.metricsURL != "" && nDone > 0 && nDone+sink.n == len(workers) {
				// Every worker is done and waits with its connections
				// open: read the server's figures now, then let them close.
				endMeasure()
				nDone = 0
				if m0 != nil {
					// Every acknowledged publish has a record to wait for.
					minRec := m0[metricRecords] + float64(ackedDone)
					m, err := scrapeSettled(cfg.metricsURL, minRec, 10*time.Second)
					if err != nil {
						metricsErr("after", err)
					}
					m2 = m
				}
				broadcast("CLOSE")
			}
		}
		endMeasure()
	} else {
		broadcast("END 0")
	}
	if err := collect(); err != nil {
		return out, err
	}

	// Aggregate.
	var agg workerResult
	var h, ah hist
	errs := metricErrs
	merged := map[string]*errStat{}
	for _, r := range sink.results {
		agg.Conns += r.Conns
		agg.Ready += r.Ready
		agg.DialErrors += r.DialErrors
		agg.ProtoErrors += r.ProtoErrors
		agg.Disconnects += r.Disconnects
		agg.OutOfOrder += r.OutOfOrder
		agg.Published += r.Published
		agg.Acked += r.Acked
		agg.AckReorder += r.AckReorder
		agg.Refused += r.Refused
		agg.HeldNs += r.HeldNs
		agg.Skipped += r.Skipped
		agg.LastAck = max(agg.LastAck, r.LastAck)
		agg.Received += r.Received
		agg.CPUus += r.CPUus
		agg.PollCalls += r.PollCalls
		agg.PollEvents += r.PollEvents
		agg.PollFull += r.PollFull
		agg.ConnectMs = max(agg.ConnectMs, r.ConnectMs)
		agg.LastRecv = max(agg.LastRecv, r.LastRecv)
		if r.FirstSend != 0 {
			agg.FirstSend = r.FirstSend
		}
		if r.PubEnd != 0 {
			agg.PubEnd = r.PubEnd
		}
		if r.FrameBytes != 0 {
			agg.FrameBytes = r.FrameBytes
		}
		h.merge(r.Hist, r.HistMax)
		ah.merge(r.AckHist, r.AckHistMax)
		mergeErrors(merged, r.Errors)
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("worker %d: %s", r.Index, r.Error))
		}
	}
	out["conns"] = agg.Conns
	out["conns_ok"] = agg.Ready
	out["connect_seconds"] = round3(agg.ConnectMs / 1000)
	out["dial_errors"] = agg.DialErrors
	out["protocol_errors"] = agg.ProtoErrors
	out["disconnects"] = agg.Disconnects
	if len(merged) > 0 {
		out["errors"] = merged
	}
	if len(errs) > 0 {
		out["worker_errors"] = errs
	}
	if cfg.mode != "idle" {
		fanout := cfg.mode == "fanout"
		if fanout {
			out["subs"] = cfg.conns
			out["subs_ok"] = readySubs
			out["max_lag"] = cfg.maxLag
		} else {
			out["pubs"] = cfg.pubs
		}
		out["size"] = cfg.size
		if fanout {
			out["delivered_frame_payload_bytes"] = agg.FrameBytes
		}
		out["rate_target"] = cfg.rate
		out["window"] = cfg.window
		out["busy_poll"] = cfg.busyPoll
		out["duration_s"] = cfg.duration.Seconds()
		out["published"] = agg.Published
		out["acked"] = agg.Acked
		out["refused"] = agg.Refused
		out["acks_out_of_order"] = agg.AckReorder
		if cfg.rate > 0 {
			// Time a publish was due but the window or the lag bound held
			// it, and the due publishes skipped for that reason.
			out["publish_held_s"] = round3(float64(agg.HeldNs) / 1e9)
			out["publishes_skipped"] = agg.Skipped
		}
		// last ends the measuring window: the last delivery (fanout) or
		// the last ack (publish).
		last := agg.LastRecv
		if fanout {
			expected := agg.Published * int64(readySubs)
			out["expected_deliveries"] = expected
			out["received_deliveries"] = agg.Received
			out["missing_deliveries"] = expected - agg.Received
			out["gaps_or_reorders"] = agg.OutOfOrder
			if agg.FirstSend > 0 && agg.LastRecv > agg.FirstSend {
				span := float64(agg.LastRecv-agg.FirstSend) / 1e9
				out["window_s"] = round3(span)
				out["deliveries_per_sec"] = round3(float64(agg.Received) / span)
			}
		} else {
			last = agg.LastAck
			out["unanswered"] = agg.Published - agg.Acked - agg.Refused
			if agg.FirstSend > 0 && agg.LastAck > agg.FirstSend {
				span := float64(agg.LastAck-agg.FirstSend) / 1e9
				out["window_s"] = round3(span)
				out["acks_per_sec"] = round3(float64(agg.Acked) / span)
			}
		}
		if agg.FirstSend > 0 && agg.PubEnd > agg.FirstSend {
			out["publishes_per_sec"] = round3(float64(agg.Published) / (float64(agg.PubEnd-agg.FirstSend) / 1e9))
		}
		if fanout {
			out["latency_us"] = map[string]int64{
				"p50": h.quantile(0.50), "p90": h.quantile(0.90), "p99": h.quantile(0.99),
				"p999": h.quantile(0.999), "max": h.max, "samples": h.n,
			}
		}
		out["ack_latency_us"] = map[string]int64{
			"p50": ah.quantile(0.50), "p90": ah.quantile(0.90), "p99": ah.quantile(0.99),
			"p999": ah.quantile(0.999), "max": ah.max, "samples": ah.n,
		}
		if a := auditFigures(m0, m1, m2, t0, t1, agg.Acked); a != nil {
			out["audit"] = a
		}
		if g := goFigures(m0, m2); g != nil {
			out["server_go"] = g
		}
		out["gen_cpu_us"] = agg.CPUus
		span := float64(last-agg.FirstSend) / 1e3
		if span > 0 {
			// Share of one CPU used over the measuring window: near 1 (per
			// process) means that side was saturated.
			out["gen_cpu_share"] = round3(float64(agg.CPUus) / span)
		}
		out["gen_epoll"] = map[string]int64{"waits": agg.PollCalls, "events": agg.PollEvents, "full_batches": agg.PollFull}
		if fanout && agg.Received > 0 {
			out["gen_cpu_us_per_delivery"] = round3(float64(agg.CPUus) / float64(agg.Received))
		}
		if len(cfg.serverPIDs) > 0 {
			if cpuErr != nil {
				errs = append(errs, "server cpu: "+cpuErr.Error())
				out["worker_errors"] = errs
			} else {
				out["server_cpu_us"] = cpu1 - cpu0
				if span > 0 {
					out["server_cpu_share"] = round3(float64(cpu1-cpu0) / span)
					if busy0 > 0 && busy1 > 0 {
						// CPU used by everything else on the machine over
						// the same window: above ~0.1 the run was disturbed.
						other := busy1 - busy0 - (cpu1 - cpu0) - agg.CPUus
						out["other_cpu_share"] = round3(max(0, float64(other)) / span)
					}
				}
				out["server_sys_cpu_us"] = sys1 - sys0
				if fanout && agg.Received > 0 {
					out["server_cpu_us_per_delivery"] = round3(float64(cpu1-cpu0) / float64(agg.Received))
					// The kernel's share (system time) of it.
					out["server_sys_us_per_delivery"] = round3(float64(sys1-sys0) / float64(agg.Received))
					// And the user part (the server's own code).
					out["server_user_us_per_delivery"] = round3(float64((cpu1-sys1)-(cpu0-sys0)) / float64(agg.Received))
				}
				if !fanout && agg.Acked > 0 {
					out["server_cpu_us_per_publish"] = round3(float64(cpu1-cpu0) / float64(agg.Acked))
					out["server_sys_us_per_publish"] = round3(float64(sys1-sys0) / float64(agg.Acked))
				}
			}
		}
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}
