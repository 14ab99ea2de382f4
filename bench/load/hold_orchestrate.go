package main

// The orchestrator of the hold mode: it opens --conns subscribers (and one
// publisher) over the workers once, then reads commands from its input, one
// a line, and answers each with one JSON object on its output:
//
//	idle                          the server's memory per held connection
//	kernel                        the kernel's memory for the sockets, growth since the start
//	fanout RATE DURATION DRAIN    a fan-out at a fixed rate to every held subscriber
//	broadcast DRAIN               one broadcast to every held connection
//	churn PCT DURATION INTERVAL   PCT % closed and reopened a second; the server sampled every INTERVAL
//	mark                          before a restart of the server: losses are tracked from here
//	restart-wait PIDS TIMEOUT NS  until every connection is back (PIDS: the new server's, NS: when it listened)
//	quit
//
// Progress goes to stderr.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/zenconn/server/internal/memtrim"
)

// holder is the hold mode's orchestrator.
type holder struct {
	cfg       *config
	cr        *crew[workerResult]
	alive     []bool
	kBefore   kernelSample
	memBefore memSample
	ready     []holdReady // the workers' HREADY
	pubID     string
}

func holdLog(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[hold %s] %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// runHold runs the hold mode; in carries the commands, out gets the JSON
// objects. It returns the exit status: 1 when the connections could not
// be opened or a command failed.
func runHold(cfg *config, in io.Reader, out io.Writer) int {
	h := &holder{cfg: cfg}
	var err error
	if h.kBefore, err = sampleKernel(); err != nil {
		holdLog("kernel sample: %v", err)
	}
	if len(cfg.serverPIDs) > 0 {
		if h.memBefore, err = sampleMem(cfg.serverPIDs); err != nil {
			holdLog("server memory: %v", err)
			return 1
		}
	}
	cr, err := startCrew(cfg, func(i int) *workerResult { return &workerResult{Index: i} })
	defer func() { cr.close() }()
	if err != nil {
		holdLog("%v", err)
		return 1
	}
	h.cr, h.alive = cr, make([]bool, len(cr.workers))
	for i := range h.alive {
		h.alive[i] = true
	}
	if err := h.waitReady(); err != nil {
		holdLog("%v", err)
		return 1
	}
	return h.commands(in, out)
}

// commands answers the commands of in until quit or its end.
func (h *holder) commands(in io.Reader, out io.Writer) int {
	status := 0
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			break
		}
		t0 := time.Now()
		holdLog("%s", strings.Join(f, " "))
		res, err := h.command(f)
		holdLog("%s: answered after %.1f s", f[0], time.Since(t0).Seconds())
		if err != nil {
			res["error"] = err.Error()
			status = 1
		}
		b, _ := json.Marshal(res)
		if _, err := fmt.Fprintln(out, string(b)); err != nil {
			return 1
		}
	}
	h.cr.broadcast("QUIT")
	return status
}

func (h *holder) command(f []string) (map[string]any, error) {
	switch {
	case f[0] == "idle" && len(f) == 1:
		return h.idle()
	case f[0] == "kernel" && len(f) == 1:
		return h.kernel()
	case f[0] == "fanout" && len(f) == 4:
		return h.fanout("fanout", f[1], f[2], f[3])
	case f[0] == "broadcast" && len(f) == 2:
		return h.fanout("broadcast", "1", "1ms", f[1])
	case f[0] == "churn" && len(f) == 4:
		return h.churn(f[1], f[2], f[3])
	case f[0] == "mark" && len(f) == 1:
		_, err := h.gather("MARK", "MARKED", nil)
		return map[string]any{"cmd": "mark"}, err
	case f[0] == "restart-wait" && len(f) == 4:
		return h.restartWait(f[1], f[2], f[3])
	}
	return map[string]any{"cmd": strings.Join(f, " ")}, errors.New("unknown command or wrong arguments")
}

// header starts the JSON object of phase.
func (h *holder) header(phase string) map[string]any {
	out := runHeader(h.cfg)
	label := h.cfg.label
	if label == "" {
		label = "hold"
	}
	out["test"], out["phase"] = label+"-"+phase, phase
	out["held_conns"] = h.cfg.conns + 1
	return out
}

// next waits for a line of any worker until the run's deadline; a worker
// that exits is no longer waited for.
func (h *holder) next() (workerLine, error) {
	t := time.NewTimer(time.Until(h.cfg.deadline) + 5*time.Second)
	defer t.Stop()
	select {
	case wl := <-h.cr.up:
		if wl.line == "EXIT" {
			h.alive[wl.idx] = false
		}
		return wl, nil
	case <-t.C:
		return workerLine{}, errors.New("timeout waiting for the workers")
	}
}

// gather sends cmd to every worker and waits for each living worker's line
// starting with prefix (returned by worker; the rest of the line); other
// lines go to other (when not nil).
func (h *holder) gather(cmd, prefix string, other func(workerLine)) (map[int]string, error) {
	if cmd != "" {
		h.cr.broadcast(cmd)
	}
	got := map[int]string{}
	for {
		pending := 0
		for i, a := range h.alive {
			if _, ok := got[i]; a && !ok {
				pending++
			}
		}
		if pending == 0 {
			break
		}
		wl, err := h.next()
		if err != nil {
			return got, err
		}
		if rest, ok := strings.CutPrefix(wl.line, prefix); ok {
			got[wl.idx] = strings.TrimSpace(rest)
		} else if other != nil {
			other(wl)
		}
	}
	if n := len(h.alive) - len(got); n > 0 {
		return got, fmt.Errorf("%d worker(s) exited", n)
	}
	return got, nil
}

// waitReady waits for every worker's HREADY, logging the progress.
func (h *holder) waitReady() error {
	t0 := time.Now()
	progress := map[int]int{}
	last := time.Now()
	got, err := h.gather("", "HREADY", func(wl workerLine) {
		if rest, ok := strings.CutPrefix(wl.line, "PROGRESS "); ok {
			progress[wl.idx], _ = strconv.Atoi(rest)
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				n := 0
				for _, v := range progress {
					n += v
				}
				holdLog("%d of %d connected and subscribed after %.0f s", n, h.cfg.conns+1, time.Since(t0).Seconds())
			}
		}
	})
	if err != nil {
		return err
	}
	ready := 0
	for i := range h.alive {
		var r holdReady
		if err := json.Unmarshal([]byte(got[i]), &r); err != nil {
			return fmt.Errorf("worker %d: %v", i, err)
		}
		h.ready = append(h.ready, r)
		ready += r.Ready
		if r.PubID != "" {
			h.pubID = r.PubID
		}
	}
	holdLog("%d of %d connected and subscribed in %.1f s", ready, h.cfg.conns+1, time.Since(t0).Seconds())
	if h.pubID == "" {
		return errors.New("the publisher did not connect")
	}
	return nil
}

// connected is the sum of the workers' HREADY.
func (h *holder) connected() (conns, ready, readySubs int, dialFails int64, connectMs float64, errs map[string]*errStat) {
	errs = map[string]*errStat{}
	for _, r := range h.ready {
		conns += r.Conns
		ready += r.Ready
		readySubs += r.ReadySubs
		dialFails += r.DialFails
		connectMs = max(connectMs, r.ConnectMs)
		mergeErrors(errs, r.Errors)
	}
	return
}

// idle waits --settle and reports the server's memory per connection, as
// load idle does.
func (h *holder) idle() (map[string]any, error) {
	out := h.header("idle")
	conns, ready, subs, fails, ms, errs := h.connected()
	out["conns"], out["conns_ok"], out["subs_ok"] = conns, ready, subs
	out["connect_seconds"] = round3(ms / 1000)
	out["dial_errors"] = fails
	if len(errs) > 0 {
		out["errors"] = errs
	}
	time.Sleep(min(h.cfg.settle, time.Until(h.cfg.deadline)))
	if len(h.cfg.serverPIDs) == 0 {
		return out, nil
	}
	after, err := sampleMem(h.cfg.serverPIDs)
	if err != nil {
		return out, err
	}
	b := h.memBefore
	out["rss_before_kib"], out["rss_after_kib"] = b.rss, after.rss
	out["pss_before_kib"], out["pss_after_kib"] = b.pss, after.pss
	if ready > 0 {
		n := float64(ready)
		out["kib_per_conn"] = round3(float64(after.rss-b.rss) / n)
		out["pss_kib_per_conn"] = round3(float64(after.pss-b.pss) / n)
		out["pss_kib_per_conn_total"] = round3(float64(after.pss) / n)
	}
	out["loadavg_end"] = loadavg()
	return out, nil
}

// kernel reports the kernel's memory growth since before the first
// connection, per connection and per socket, and the whole cost of a
// connection to the server: its PSS per connection plus the kernel's
// memory for one socket.
func (h *holder) kernel() (map[string]any, error) {
	out := h.header("kernel")
	_, ready, _, _, _, _ := h.connected()
	k, err := sampleKernel()
	if err != nil {
		return out, err
	}
	out["conns_ok"] = ready
	kernelFigures(out, h.kBefore, k, ready)
	out["note"] = "both ends of every connection are sockets of this machine: a server holds one socket per connection"
	if len(h.cfg.serverPIDs) > 0 && ready > 0 {
		m, err := sampleMem(h.cfg.serverPIDs)
		if err != nil {
			return out, err
		}
		pss := float64(m.pss) / float64(ready)
		out["pss_kib_per_conn_total"] = round3(pss)
		if ps, ok := out["slab_kib_per_socket"].(float64); ok {
			tm, _ := out["tcp_mem_kib_per_socket"].(float64)
			out["server_kib_per_conn_whole"] = round3(pss + ps + tm)
		}
	}
	return out, nil
}

// fanout runs a fan-out (or a broadcast: one publish, rate 1 for 1 ms)
// over the held subscribers and reports it as load fanout does, plus lost
// (expected deliveries not arrived after the drain).
func (h *holder) fanout(phase, rate, dur, drain string) (map[string]any, error) {
	out := h.header(phase)
	c := *h.cfg
	c.mode = "fanout"
	var err1, err2, err3 error
	c.rate, err1 = strconv.ParseFloat(rate, 64)
	c.duration, err2 = time.ParseDuration(dur)
	c.drain, err3 = time.ParseDuration(drain)
	if err := errors.Join(err1, err2, err3); err != nil || c.rate < 0 || c.duration <= 0 {
		return out, fmt.Errorf("bad rate, duration or drain: %v", err)
	}
	bcast := map[bool]string{true: "1", false: "0"}[phase == "broadcast"]
	m := &measurement{}
	m.cpu.start(c.serverPIDs)
	if _, err := h.gather(fmt.Sprintf("FANOUT %s %s %s %s %s", h.pubID, rate, dur, drain, bcast), "FANREADY", nil); err != nil {
		return out, err
	}
	got, err := h.gather("FANGO", "FANDONE", func(wl workerLine) {
		if rest, ok := strings.CutPrefix(wl.line, "PUBLISHED "); ok {
			h.cr.broadcast("END " + rest)
		}
	})
	m.cpu.end()
	if err != nil {
		return out, err
	}
	var results []*workerResult
	var short []string
	readySubs, nShort, nAlive := 0, 0, 0
	for _, line := range got {
		r := &workerResult{}
		if err := json.Unmarshal([]byte(line), r); err != nil {
			return out, err
		}
		readySubs += r.ReadySubs
		nShort += r.SubsShort
		nAlive += r.ShortAlive
		short = append(short, r.ShortIDs...)
		results = append(results, r)
	}
	t := tallyResults(results)
	connFigures(out, t)
	errs := trafficFigures(out, &c, t, readySubs, m, t.errs)
	out["lost"] = out["missing_deliveries"]
	out["subs_short"], out["subs_short_alive"] = nShort, nAlive
	if len(short) > 0 {
		out["subs_short_examples"] = short
	}
	if phase == "broadcast" && t.Received == t.Published*int64(readySubs) && t.Published > 0 {
		out["seconds_until_all_arrived"] = out["window_s"]
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		out["worker_errors"] = errs
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// serverSample is the server and the kernel at one moment of a churn.
type serverSample struct {
	T       float64 `json:"t_s"`
	RSS     int64   `json:"rss_kib"`
	PSS     int64   `json:"pss_kib"`
	Agent   int64   `json:"agent_pss_kib,omitempty"` // the first server process's share of PSS
	FDs     int64   `json:"fds"`
	Sockets int64   `json:"sockets,omitempty"`
	TCP     int64   `json:"tcp_inuse"`
	TCPMem  int64   `json:"tcp_mem_pages"`
	Slab    int64   `json:"slab_kib"`
	Unrec   int64   `json:"sunreclaim_kib"`
	Error   string  `json:"error,omitempty"`
}

func (h *holder) sampleServer(t0 time.Time) serverSample {
	s := serverSample{T: round3(time.Since(t0).Seconds())}
	var errs []error
	pids := h.cfg.serverPIDs
	rss, err := sumRSS(pids)
	errs = append(errs, err)
	// Each process's smaps is read once: the first one's PSS alone, then
	// the others'.
	first, err := sumPSS(pids[:min(len(pids), 1)])
	errs = append(errs, err)
	rest, err := sumPSS(pids[min(len(pids), 1):])
	errs = append(errs, err)
	fd, err := sumOpen(pids)
	errs = append(errs, err)
	k, err := sampleKernel()
	errs = append(errs, err)
	s.RSS, s.PSS, s.FDs, s.Sockets = rss, first+rest, fd.fds, fd.sockets
	if len(pids) > 1 {
		s.Agent = first
	}
	s.TCP, s.TCPMem, s.Slab, s.Unrec = k.tcpInuse, k.tcpMemPages, k.slabKiB, k.sunreclaimKiB
	if err := errors.Join(errs...); err != nil {
		s.Error = err.Error()
	}
	return s
}

// churn closes and reopens pct % of the subscribers a second for dur,
// samples the server every interval, and reports the growth from the
// first sample to the last (taken once every connection is back and the
// server has settled), and the peak PSS meanwhile.
func (h *holder) churn(pct, dur, interval string) (map[string]any, error) {
	out := h.header("churn")
	d, err1 := time.ParseDuration(dur)
	iv, err2 := time.ParseDuration(interval)
	p, err3 := strconv.ParseFloat(pct, 64)
	if err := errors.Join(err1, err2, err3); err != nil || iv <= 0 || p < 0 || p > 100 {
		return out, fmt.Errorf("bad churn arguments: %v", err)
	}
	out["churn_pct_per_sec"], out["duration_s"], out["sample_interval_s"] = p, d.Seconds(), iv.Seconds()
	t0 := time.Now()
	samples := []serverSample{h.sampleServer(t0)}
	tick := time.NewTicker(iv)
	defer tick.Stop()
	h.cr.broadcast(fmt.Sprintf("CHURN %s %s", pct, dur))
	got, err := h.gatherTicking("CHURNDONE", tick.C, func() {
		samples = append(samples, h.sampleServer(t0))
		s := samples[len(samples)-1]
		holdLog("churn %.0f s: server PSS %d KiB, fds %d, TCP sockets %d", s.T, s.PSS, s.FDs, s.TCP)
	})
	if err != nil {
		return out, err
	}
	// The end sample waits until the server has closed what the last
	// reopened connections replaced (2 s), and then as long as the idle
	// phase does (--settle) and the processes' trimmers need to see them
	// quiet (memtrim), so that what the churn left is measured on settled
	// processes, as the start was. The peak during the churn is reported
	// beside it.
	time.Sleep(2*time.Second + h.cfg.settle + memtrim.DefaultQuiet)
	samples = append(samples, h.sampleServer(t0))
	if peak := peakPSS(samples); samples[0].PSS > 0 {
		out["pss_peak_kib"] = peak
		out["pss_peak_growth_pct"] = round3(100 * float64(peak-samples[0].PSS) / float64(samples[0].PSS))
	}
	var closed, reopened, fails, lost int64
	notReady := 0
	errs := map[string]*errStat{}
	for _, line := range got {
		var r holdChurnResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return out, err
		}
		closed, reopened, fails, lost = closed+r.Closed, reopened+r.Reopened, fails+r.DialFails, lost+r.Lost
		notReady += r.NotReady
		mergeErrors(errs, r.Errors)
	}
	out["closed"], out["reopened"], out["dial_failures"], out["disconnects"], out["not_ready_at_end"] = closed, reopened, fails, lost, notReady
	if d > 0 {
		out["closed_per_sec"] = round3(float64(closed) / d.Seconds())
	}
	if len(errs) > 0 {
		out["errors"] = errs
	}
	out["samples"] = samples
	flags := churnGrowth(out, samples[0], samples[len(samples)-1], h.cfg.conns, h.cfg.hold.privateNetns)
	out["growth_flags"] = flags
	out["ok"] = len(flags) == 0 && notReady == 0
	return out, nil
}

// peakPSS is the largest PSS of samples.
func peakPSS(samples []serverSample) int64 {
	var peak int64
	for _, s := range samples {
		peak = max(peak, s.PSS)
	}
	return peak
}

// gatherTicking is gather (the command already sent) with onTick called at
// every tick.
func (h *holder) gatherTicking(prefix string, tick <-chan time.Time, onTick func()) (map[int]string, error) {
	res := make(chan error, 1)
	var got map[int]string
	go func() {
		var err error
		got, err = h.gather("", prefix, nil)
		res <- err
	}()
	for {
		select {
		case err := <-res:
			return got, err
		case <-tick:
			onTick()
		}
	}
}

// churnGrowth adds the growth from a to b to out and returns what grew
// more than a churn may leave behind: descriptors or TCP sockets by more
// than 1 % of the connections (64 at least), PSS by more than 10 %. The
// TCP sockets in use count every process of the network namespace: they
// are checked only when it is the run's own (ownNetns).
func churnGrowth(out map[string]any, a, b serverSample, conns int, ownNetns bool) []string {
	g := map[string]int64{"rss_kib": b.RSS - a.RSS, "pss_kib": b.PSS - a.PSS, "fds": b.FDs - a.FDs,
		"sockets": b.Sockets - a.Sockets, "tcp_inuse": b.TCP - a.TCP, "slab_kib": b.Slab - a.Slab,
		"sunreclaim_kib": b.Unrec - a.Unrec, "tcp_mem_pages": b.TCPMem - a.TCPMem}
	out["growth"] = g
	if a.PSS > 0 {
		out["pss_growth_pct"] = round3(100 * float64(b.PSS-a.PSS) / float64(a.PSS))
	}
	var flags []string
	limit := max(64, int64(conns)/100)
	for _, k := range []string{"fds", "sockets", "tcp_inuse"} {
		if g[k] > limit && (k != "tcp_inuse" || ownNetns) {
			flags = append(flags, fmt.Sprintf("%s grew by %d (limit %d)", k, g[k], limit))
		}
	}
	if a.PSS > 0 && g["pss_kib"]*10 > a.PSS {
		flags = append(flags, fmt.Sprintf("PSS grew by %d KiB, over 10 %% of %d", g["pss_kib"], a.PSS))
	}
	if flags == nil {
		flags = []string{}
	}
	return flags
}

// restartWait waits until every held connection was lost and is back,
// after the script restarted the server (its new processes: pids).
func (h *holder) restartWait(pids, timeout, listenNs string) (map[string]any, error) {
	out := h.header("restart")
	ps, err := parsePIDs(pids)
	if err != nil {
		return out, err
	}
	h.cfg.serverPIDs = ps
	out["server_pids"] = h.cfg.serverPIDs
	listen, _ := strconv.ParseInt(listenNs, 10, 64)
	got, err := h.gather("RWAIT "+timeout, "RDONE", nil)
	if err != nil {
		return out, err
	}
	var sum restartResult
	sum.Codes = map[string]int64{}
	errs := map[string]*errStat{}
	for _, line := range got {
		var r restartResult
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return out, err
		}
		sum.Conns, sum.Lost, sum.Ready = sum.Conns+r.Conns, sum.Lost+r.Lost, sum.Ready+r.Ready
		sum.DialFails, sum.Redials = sum.DialFails+r.DialFails, sum.Redials+r.Redials
		if r.FirstLoss > 0 && (sum.FirstLoss == 0 || r.FirstLoss < sum.FirstLoss) {
			sum.FirstLoss = r.FirstLoss
		}
		sum.LastReady = max(sum.LastReady, r.LastReady)
		for k, v := range r.Codes {
			sum.Codes[k] += v
		}
		if r.PubID != "" {
			h.pubID = r.PubID
		}
		mergeErrors(errs, r.Errors)
	}
	restartFigures(out, &sum, listen)
	if len(errs) > 0 {
		out["errors"] = errs
	}
	return out, nil
}

// restartFigures: who came back and when, and the close codes seen (only
// 1001, the server going away, and 1006, no close frame, are expected).
func restartFigures(out map[string]any, s *restartResult, listenNs int64) {
	out["conns"], out["lost"], out["reconnected"] = s.Conns, s.Lost, s.Ready
	out["never_back"] = s.Conns - s.Ready
	out["reconnect_attempts"], out["failed_attempts"] = s.Redials, s.DialFails
	out["close_codes"] = s.Codes
	var unexpected []string
	n := int64(0)
	for k, v := range s.Codes {
		if k != "1001" && k != "1006" {
			unexpected = append(unexpected, fmt.Sprintf("%s×%d", k, v))
			n += v
		}
	}
	sort.Strings(unexpected)
	out["unexpected_close_codes"] = n
	if n > 0 {
		out["unexpected_close_codes_seen"] = unexpected
		holdLog("unexpected close codes: %s", strings.Join(unexpected, ", "))
	}
	if s.Conns == s.Ready && s.Lost == s.Conns && s.FirstLoss > 0 {
		out["seconds_until_all_back"] = round3(float64(s.LastReady-s.FirstLoss) / 1e9)
		if listenNs > 0 {
			out["seconds_after_listening"] = round3(float64(s.LastReady-listenNs) / 1e9)
		}
	}
	out["ok"] = s.Conns == s.Ready && n == 0
}

// parsePIDs parses a comma-separated list of process ids.
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for f := range strings.SplitSeq(s, ",") {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p <= 0 {
			return nil, fmt.Errorf("bad pid %q", f)
		}
		pids = append(pids, p)
	}
	return pids, nil
}

// sumOpen is sumFDs for a node of many connections: the descriptors are
// counted from the names in /proc/PID/fd, and sorted into sockets and files
// (one readlink each) only below 50,000 of them: a readlink per descriptor
// of a million takes minutes on a busy machine, and the kernel's count of
// TCP sockets is sampled beside it anyway.
func sumOpen(pids []int) (fdCount, error) {
	var sum fdCount
	for _, p := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			return fdCount{}, err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fdCount{}, err
		}
		sum.fds += int64(len(names))
	}
	if sum.fds < 50000 {
		return sumFDs(pids)
	}
	return sum, nil
}
