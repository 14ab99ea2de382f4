package main

// Connection churn (load churn): --conns workers, each looping until
// --duration over one cycle:
//
//	connect and upgrade → welcome → subscribe to <channel>-<worker> → ack →
//	publish one message there → ack → close frame (1000) → the server's
//	close frame → the server's end of stream (FIN) → close with a reset
//
// A publisher does not receive its own message (PROTOCOL.md), so each
// process also holds one observer connection, subscribed to every worker
// channel of that process for the whole measured churn: every acknowledged
// publish must reach it exactly once, with `from` equal to the publisher's
// welcome id (the publish carries that id as its data). The observer is
// connected after the "before" sample and closed before the "after" one.
//
// Around the churn the orchestrator samples the server: RSS and open
// descriptors from /proc/PID (--server-pid), goroutines and heap in use
// from its Prometheus endpoint (--metrics-url; goroutines the fewest of
// goroutineSamples scrapes), each time after a forced garbage collection
// (--gc-url, e.g. net/http/pprof's /debug/pprof/heap?gc=1).
// The "after" sample waits until every connection is closed and the
// server's descriptors are back to the "before" count (at most --settle).
//
// Like the other modes, one goroutine drives all the connections of a
// process through one epoll set on raw non-blocking sockets, and the
// generator's CPU is reported next to the server's.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// churnOpts are the flags of the churn mode that no other mode has.
type churnOpts struct {
	warmup       time.Duration
	cycleTimeout time.Duration
	settle       time.Duration
	socketSlack  int
	gcURL        string
}

// maxChurnPerProc bounds the workers of one process: its observer holds one
// subscription per worker, and ZenConn allows 1,024 per connection.
const maxChurnPerProc = 1000

func churnFlags(fs *flag.FlagSet, cfg *config) {
	fs.IntVar(&cfg.conns, "conns", 64, "concurrent workers; each holds one connection at a time and cycles until --duration")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "churn time: no cycle starts after it")
	fs.DurationVar(&cfg.drain, "drain", 5*time.Second, "time allowed after --duration for the cycles in flight, and again for the observer's last deliveries")
	fs.StringVar(&cfg.metricsURL, "metrics-url", "", "the server's Prometheus endpoint (http://127.0.0.1:PORT/metrics): goroutines and heap in use before and after")
	fs.StringVar(&cfg.churn.gcURL, "gc-url", "", "GET before each sample to force a garbage collection (e.g. http://127.0.0.1:PPROF/debug/pprof/heap?gc=1)")
	fs.DurationVar(&cfg.churn.warmup, "warmup", 0, "uncounted churn before the \"before\" sample (first-use allocations)")
	fs.DurationVar(&cfg.churn.cycleTimeout, "cycle-timeout", 5*time.Second, "a cycle not finished in this time is counted as an error (timeouts) and its connection reset")
	fs.DurationVar(&cfg.churn.settle, "settle", 10*time.Second, "after the churn, wait at most this long for the server's open sockets to return to the \"before\" count")
	fs.IntVar(&cfg.churn.socketSlack, "socket-slack", 0, "sockets above the \"before\" count that still end the settle wait")
}

func checkChurn(cfg *config) error {
	switch {
	case cfg.conns < 1:
		return errors.New("--conns must be positive")
	case share(cfg.conns, 0, cfg.procs) > maxChurnPerProc:
		return fmt.Errorf("at most %d workers per process (--conns/--procs): each process's observer subscribes to every worker channel", maxChurnPerProc)
	case cfg.duration <= 0 || cfg.drain < 0 || cfg.churn.warmup < 0:
		return errors.New("bad --duration, --drain or --warmup")
	case cfg.churn.cycleTimeout <= 0 || cfg.churn.settle < 0 || cfg.churn.socketSlack < 0:
		return errors.New("bad --cycle-timeout, --settle or --socket-slack")
	case cfg.churn.gcURL != "" && !strings.HasPrefix(cfg.churn.gcURL, "http://"):
		return errors.New("--gc-url must be an http:// URL")
	case cfg.channel == "":
		return errors.New("--channel must not be empty")
	}
	return nil
}

type cstate uint8

const (
	csIdle      cstate = iota // between cycles
	csOpening                 // connecting, or upgrade request sent
	csWelcome                 // 101 received, waiting for the welcome
	csSubscribe               // subscribe sent (observer: every subscribe)
	csPublish                 // publish sent
	csOpen                    // observer: subscribed, receiving
	csClosing                 // close frame sent
	csDraining                // close frame received, waiting for the end of stream
	csDone                    // no more cycles
)

var csNames = [...]string{"idle", "opening", "welcome", "subscribe", "publish", "open", "closing", "draining", "done"}

// The phases of a cycle, each with its own latency histogram.
const (
	phOpen      = iota // socket() to the welcome
	phSubscribe        // subscribe sent to its ack
	phPublish          // publish sent to its ack
	phClose            // close frame sent to the server's end of stream
	nPhases
)

var phaseNames = [nPhases]string{"open", "subscribe", "publish", "close"}

// cconn is one worker (or the observer) and its current connection.
type cconn struct {
	wsConn
	worker   int // global worker index; -1 for the observer
	channel  string
	state    cstate
	id       string // connection id from the welcome
	t0, mark int64  // start of the cycle and of its current phase (ns)
	deadline int64  // the cycle fails after this (ns; 0: none)
	next     int64  // idle: the next cycle may start at this time (ns)
	acks     int    // observer: subscribe acks received
}

func (c *cconn) transport() *wsConn { return &c.wsConn }

// churnStats are the counters of one churn (the warm-up has its own).
type churnStats struct {
	started, cycles, published, acked, received int64
	cycleErrors, dialErrors, protoErrors        int64
	disconnects, timeouts                       int64
	hist                                        hist
	phase                                       [nPhases]hist
	firstStart, lastEnd                         int64
}

// churnLoop drives the churn workers of one process, and its observer, on
// the epoll client (client.go).
type churnLoop struct {
	client[*cconn]
	cfg     *config
	workers []*cconn
	obs     *cconn
	obsErr  string
	chans   map[string]bool // this process's worker channels
	st      *churnStats
	end     int64  // no cycle starts at or after this time (ns)
	body    []byte // the subscribe or publish being written
	subs    []byte // the observer's subscribe frames
}

func newChurnLoop(cfg *config, idx, first, n int) (*churnLoop, error) {
	l := &churnLoop{cfg: cfg, chans: make(map[string]bool, n), st: &churnStats{}}
	if err := l.init(cfg, l, n+1, idx); err != nil {
		return nil, err
	}
	l.counting = true
	for i := range n {
		ch := cfg.channel + "-" + strconv.Itoa(first+i)
		l.workers = append(l.workers, &cconn{worker: first + i, channel: ch, wsConn: wsConn{fd: -1}, state: csIdle})
		l.chans[ch] = true
	}
	return l, nil
}

func (l *churnLoop) close() {
	for _, c := range l.workers {
		l.closeFd(c)
	}
	if l.obs != nil {
		l.closeFd(l.obs)
	}
	l.closeEpoll()
}

func (l *churnLoop) protoErr(kind, example string) {
	l.st.protoErrors++
	if len(example) > 200 {
		example = example[:200] + "..."
	}
	l.note(kind, example)
}

// fail ends c's cycle as an error; the worker starts again after 10 ms.
// Failures before the welcome count as dial errors, after it as
// disconnects (unless counted already, as protocol errors or timeouts).
func (l *churnLoop) fail(c *cconn, now int64, kind, detail string, counted bool) {
	if c.state == csIdle || c.state == csDone {
		return
	}
	if !counted {
		if c.state <= csWelcome {
			l.st.dialErrors++
		} else {
			l.st.disconnects++
		}
	}
	if kind != "" {
		if len(detail) > 200 {
			detail = detail[:200] + "..."
		}
		l.note(kind, detail)
	}
	l.closeFd(c)
	if c.worker < 0 {
		c.state = csDone
		if l.obsErr == "" {
			l.obsErr = fmt.Sprintf("observer: %s: %s", kind, detail)
		}
		return
	}
	l.st.cycleErrors++
	c.state = csIdle
	c.next = now + int64(10*time.Millisecond)
}

// finish ends c's cycle successfully at the server's end of stream.
func (l *churnLoop) finish(c *cconn, now int64) {
	l.closeFd(c)
	if c.worker < 0 {
		c.state = csDone
		return
	}
	l.st.phase[phClose].record((now - c.mark) / 1000)
	l.st.hist.record((now - c.t0) / 1000)
	l.st.cycles++
	l.st.lastEnd = max(l.st.lastEnd, now)
	c.state = csIdle
	c.next = now
}

// phase records the latency of c's current phase and starts the next.
func (l *churnLoop) phase(c *cconn, ph int, now int64) {
	if c.worker >= 0 {
		l.st.phase[ph].record((now - c.mark) / 1000)
	}
	c.mark = now
}

// startCycle starts a cycle: a non-blocking connect.
func (l *churnLoop) startCycle(c *cconn, now int64, timeout time.Duration) {
	c.id, c.acks = "", 0
	c.t0, c.mark, c.deadline = now, now, now+int64(timeout)
	c.state = csOpening
	if c.worker >= 0 {
		l.st.started++
		if l.st.firstStart == 0 {
			l.st.firstStart = now
		}
	}
	l.dial(c)
}

var closeNormal = ws.NewCloseFrameBody(ws.StatusNormalClosure, "")

// startClose sends the close frame (1000) and waits for the server's.
func (l *churnLoop) startClose(c *cconn, now int64) {
	c.state = csClosing
	c.mark = now
	l.send(c, ws.OpClose, closeNormal)
}

func (l *churnLoop) onUpgrade(c *cconn, _ int64) { c.state = csWelcome }

func (l *churnLoop) onEnd(c *cconn, err error, now int64) {
	switch {
	case err != nil && c.state == csDraining && errors.Is(err, unix.ECONNRESET):
		// The close handshake is complete; a reset instead of a FIN is
		// noted but the cycle counts.
		l.note("reset_after_close", err.Error())
		l.finish(c, now)
	case err != nil:
		l.fail(c, now, "read_error", fmt.Sprintf("%v (state %s)", err, csNames[c.state]), false)
	case c.state == csDraining:
		l.finish(c, now)
	case c.state == csClosing:
		l.protoErr("eof_without_close_frame", "the server closed the TCP connection without answering the close frame")
		l.fail(c, now, "", "", true)
	default:
		l.fail(c, now, "closed_by_server", "EOF without close frame in state "+csNames[c.state], false)
	}
}

func (l *churnLoop) onFail(c *cconn, kind, detail string) {
	l.fail(c, time.Now().UnixNano(), kind, detail, false)
}

// onBadFrame counts a protocol error and ends c's cycle.
func (l *churnLoop) onBadFrame(c *cconn, kind, example string, now int64) {
	l.protoErr(kind, example)
	l.fail(c, now, "", "", true)
}

func (l *churnLoop) onCloseFrame(c *cconn, code ws.StatusCode, reason string, now int64) {
	if c.state != csClosing {
		l.fail(c, now, "close_frame", fmt.Sprintf("code %d %q in state %s", code, reason, csNames[c.state]), false)
		return
	}
	if code != ws.StatusNormalClosure {
		l.protoErr("close_code", fmt.Sprintf("sent 1000, got %d %q", code, reason))
	}
	c.state = csDraining
}

var (
	opMessageKey = []byte(`"op":"message"`)
	ackFrames    = [3][]byte{nil, []byte(`{"op":"ack","id":1}`), []byte(`{"op":"ack","id":2}`)}
)

// isAck reports whether p is {"op":"ack","id":id} (id 1 or 2; any field
// order).
func isAck(p []byte, id int64) bool {
	if bytes.Equal(p, ackFrames[id]) {
		return true
	}
	var m serverMsg
	return json.Unmarshal(p, &m) == nil && m.Op == "ack" && m.ID != nil && *m.ID == id
}

// protoFail counts a protocol error and ends c's cycle.
func (l *churnLoop) protoFail(c *cconn, kind string, p []byte, now int64) {
	l.protoErr(kind, fmt.Sprintf("%s (state %s)", p, csNames[c.state]))
	l.fail(c, now, "", "", true)
}

func (l *churnLoop) onMessage(c *cconn, p []byte, now int64) {
	if c.worker < 0 && c.state == csOpen && bytes.Contains(p, opMessageKey) {
		l.onDelivery(p)
		return
	}
	switch c.state {
	case csWelcome:
		op, ok1 := jsonStr(p, "op")
		conn, ok2 := jsonStr(p, "conn")
		node, ok3 := jsonStr(p, "node")
		proto, ok4 := jsonStr(p, "proto")
		if !ok1 || !ok2 || !ok3 || !ok4 {
			var m serverMsg
			if json.Unmarshal(p, &m) != nil {
				l.protoFail(c, "welcome_not_first", p, now)
				return
			}
			op, conn, node, proto = m.Op, m.Conn, m.Node, m.Proto
		}
		if op != "welcome" {
			l.protoFail(c, "welcome_not_first", p, now)
			return
		}
		if conn == "" || node == "" || proto != "json" {
			l.protoFail(c, "bad_welcome", p, now)
			return
		}
		c.id = conn
		l.phase(c, phOpen, now)
		c.state = csSubscribe
		if c.worker < 0 {
			l.write(c, l.subs)
			return
		}
		l.body = fmt.Appendf(l.body[:0], `{"id":1,"op":"subscribe","channel":%q}`, c.channel)
		l.send(c, ws.OpText, l.body)
	case csSubscribe:
		if c.worker < 0 {
			var m serverMsg
			if json.Unmarshal(p, &m) != nil || m.Op != "ack" || m.ID == nil || *m.ID < 1 || *m.ID > int64(len(l.workers)) {
				l.protoFail(c, "observer_unexpected", p, now)
				return
			}
			if c.acks++; c.acks == len(l.workers) {
				c.state = csOpen
				c.deadline = 0
			}
			return
		}
		if !isAck(p, 1) {
			l.protoFail(c, "subscribe_not_acked", p, now)
			return
		}
		l.phase(c, phSubscribe, now)
		c.state = csPublish
		b := append(l.body[:0], `{"id":2,"op":"publish","channel":`...)
		b = strconv.AppendQuote(b, c.channel)
		b = append(b, `,"data":`...)
		b = strconv.AppendQuote(b, c.id)
		b = append(b, '}')
		l.body = b
		l.st.published++
		l.send(c, ws.OpText, b)
	case csPublish:
		if !isAck(p, 2) {
			l.protoFail(c, "publish_not_acked", p, now)
			return
		}
		l.st.acked++
		l.phase(c, phPublish, now)
		l.startClose(c, now)
	default:
		var m serverMsg
		if json.Unmarshal(p, &m) == nil && m.Op == "pong" {
			return
		}
		l.protoFail(c, "unexpected_message", p, now)
	}
}

// jsonStr returns the string value of "key" in the flat JSON object p when
// it has no escapes (else ok is false and the caller decodes p fully).
func jsonStr(p []byte, key string) (string, bool) {
	k := `"` + key + `":"`
	i := bytes.Index(p, []byte(k))
	if i < 0 {
		return "", false
	}
	v := p[i+len(k):]
	j := bytes.IndexByte(v, '"')
	if j < 0 || bytes.IndexByte(v[:j], '\\') >= 0 {
		return "", false
	}
	return string(v[:j]), true
}

// onDelivery checks one message received by the observer: one of this
// process's channels, and from = data (the publisher's welcome id).
func (l *churnLoop) onDelivery(p []byte) {
	ch, ok1 := jsonStr(p, "channel")
	from, ok2 := jsonStr(p, "from")
	data, ok3 := jsonStr(p, "data")
	if !ok1 || !ok2 || !ok3 {
		var m serverMsg
		if err := json.Unmarshal(p, &m); err != nil || m.Op != "message" || m.Channel == nil || json.Unmarshal(m.Data, &data) != nil {
			l.protoErr("bad_message", string(p))
			return
		}
		ch, from = *m.Channel, m.From
	}
	if !l.chans[ch] {
		l.protoErr("message_wrong_channel", string(p))
	}
	if from != data {
		l.protoErr("message_wrong_from", string(p))
	}
	l.st.received++
}

// connectObserver opens the observer and subscribes it to every worker
// channel of this process.
func (l *churnLoop) connectObserver(limit time.Duration) string {
	l.subs = l.subs[:0]
	for i, c := range l.workers {
		l.subs = l.appendFrame(l.subs, ws.OpText, fmt.Appendf(nil, `{"id":%d,"op":"subscribe","channel":%q}`, i+1, c.channel))
	}
	l.obs = &cconn{worker: -1, wsConn: wsConn{fd: -1}}
	l.startCycle(l.obs, time.Now().UnixNano(), limit)
	for l.obs.state != csOpen {
		if l.obs.state == csDone {
			return l.obsErr
		}
		if time.Now().UnixNano() > l.obs.deadline || time.Now().After(l.cfg.deadline) {
			return fmt.Sprintf("observer not subscribed after %v (state %s)", limit, csNames[l.obs.state])
		}
		if err := l.poll(20 * time.Millisecond); err != nil {
			return err.Error()
		}
	}
	return ""
}

// closeObserver waits (at most the drain time) for the deliveries of every
// acknowledged publish, then closes the observer with the close handshake.
func (l *churnLoop) closeObserver() string {
	o := l.obs
	end := time.Now().Add(l.cfg.drain)
	for o.state == csOpen && l.st.received < l.st.acked && time.Now().Before(end) && time.Now().Before(l.cfg.deadline) {
		if err := l.poll(20 * time.Millisecond); err != nil {
			return err.Error()
		}
	}
	if o.state != csOpen {
		if l.obsErr != "" {
			return l.obsErr
		}
		return "observer lost (state " + csNames[o.state] + ")"
	}
	now := time.Now().UnixNano()
	o.deadline = now + int64(2*time.Second)
	l.startClose(o, now)
	for o.state != csDone {
		if time.Now().UnixNano() > o.deadline || time.Now().After(l.cfg.deadline) {
			l.fail(o, time.Now().UnixNano(), "observer_close_timeout", "no end of stream 2 s after the close frame", true)
			break
		}
		if err := l.poll(20 * time.Millisecond); err != nil {
			return err.Error()
		}
	}
	if l.obsErr != "" {
		return l.obsErr
	}
	return ""
}

// churn runs the workers' cycles for d, then waits (at most --drain) for
// the cycles in flight. With observe, the observer is connected first and
// closed last. It returns a description of a failure that stopped it.
func (l *churnLoop) churn(d time.Duration, observe bool) string {
	cfg := l.cfg
	if observe {
		if e := l.connectObserver(10 * time.Second); e != "" {
			return e
		}
	}
	start := time.Now().UnixNano()
	l.end = start + int64(d)
	drainEnd := l.end + int64(cfg.drain)
	for _, c := range l.workers {
		c.state, c.next = csIdle, start
	}
	for {
		now := time.Now().UnixNano()
		if time.Now().After(cfg.deadline) {
			return "timeout during churn"
		}
		wait := int64(20 * time.Millisecond)
		active := 0
		for _, c := range l.workers {
			switch {
			case c.state == csDone:
				continue
			case c.state == csIdle:
				if now >= l.end {
					c.state = csDone
					continue
				}
				if now >= c.next {
					l.startCycle(c, now, cfg.churn.cycleTimeout)
				} else {
					wait = min(wait, c.next-now)
				}
			case now > c.deadline:
				l.st.timeouts++
				l.fail(c, now, "cycle_timeout", fmt.Sprintf("no progress in %v (state %s)", cfg.churn.cycleTimeout, csNames[c.state]), true)
			}
			active++
		}
		if active == 0 {
			break
		}
		if now > drainEnd {
			for _, c := range l.workers {
				if c.state != csDone && c.state != csIdle {
					l.st.timeouts++
					l.fail(c, now, "unfinished_at_drain_end", "state "+csNames[c.state], true)
				}
				c.state = csDone
			}
			break
		}
		if err := l.poll(time.Duration(max(wait, int64(time.Millisecond)))); err != nil {
			return err.Error()
		}
	}
	if observe {
		return l.closeObserver()
	}
	return ""
}

// churnResult is what one worker process reports.
type churnResult struct {
	Index        int                 `json:"index"`
	Workers      int                 `json:"workers"`
	Started      int64               `json:"started"`
	Cycles       int64               `json:"cycles"`
	Published    int64               `json:"published"`
	Acked        int64               `json:"acked"`
	Received     int64               `json:"received"`
	CycleErrors  int64               `json:"cycle_errors"`
	DialErrors   int64               `json:"dial_errors"`
	ProtoErrors  int64               `json:"protocol_errors"`
	Disconnects  int64               `json:"disconnects"`
	Timeouts     int64               `json:"timeouts"`
	Errors       map[string]*errStat `json:"errors,omitempty"`
	Hist         [][2]int64          `json:"hist,omitempty"`
	HistMax      int64               `json:"hist_max"`
	PhaseHist    [nPhases][][2]int64 `json:"phase_hist"`
	PhaseMax     [nPhases]int64      `json:"phase_max"`
	FirstStart   int64               `json:"first_start_ns"`
	LastEnd      int64               `json:"last_end_ns"`
	CPUus        int64               `json:"cpu_us"`
	PollCalls    int64               `json:"poll_calls"`
	PollEvents   int64               `json:"poll_events"`
	WarmupCycles int64               `json:"warmup_cycles"`
	WarmupErrors int64               `json:"warmup_errors"`
	Error        string              `json:"error,omitempty"`
}

// runChurnWorker drives this process's share of the workers. Lines: it
// sends READY (after the warm-up) and RESULT, and receives GO (or STOP).
func runChurnWorker(cfg *config, idx int, send func(string), down <-chan string) {
	res := &churnResult{Index: idx}
	defer func() {
		b, _ := json.Marshal(res)
		send("RESULT " + string(b))
	}()
	first := 0
	for i := range idx {
		first += share(cfg.conns, i, cfg.procs)
	}
	res.Workers = share(cfg.conns, idx, cfg.procs)
	l, err := newChurnLoop(cfg, idx, first, res.Workers)
	if err != nil {
		res.Error = err.Error()
		return
	}
	defer l.close()
	if cfg.churn.warmup > 0 {
		e := l.churn(cfg.churn.warmup, false)
		res.WarmupCycles, res.WarmupErrors = l.st.cycles, l.st.cycleErrors
		if e != "" {
			res.Error = "warm-up: " + e
			return
		}
		// Only the measured churn's errors are reported by kind.
		l.errs = map[string]*errStat{}
		l.st = &churnStats{}
		l.polls = pollStats{}
	}
	send("READY")
	timer := time.NewTimer(time.Until(cfg.deadline))
	defer timer.Stop()
	select {
	case line, ok := <-down:
		if !ok || !strings.HasPrefix(line, "GO") {
			res.Error = "stopped before the churn"
			return
		}
	case <-timer.C:
		res.Error = "timeout waiting for GO"
		return
	}
	cpu0, _ := readCPUus(0)
	e := l.churn(cfg.duration, true)
	cpu1, _ := readCPUus(0)
	st := l.st
	res.CPUus = cpu1 - cpu0
	res.Started, res.Cycles, res.Published, res.Acked, res.Received = st.started, st.cycles, st.published, st.acked, st.received
	res.CycleErrors, res.DialErrors, res.ProtoErrors = st.cycleErrors, st.dialErrors, st.protoErrors
	res.Disconnects, res.Timeouts = st.disconnects, st.timeouts
	res.Errors = l.errorsOut()
	res.Hist, res.HistMax = st.hist.sparse(), st.hist.max
	for i := range nPhases {
		res.PhaseHist[i], res.PhaseMax[i] = st.phase[i].sparse(), st.phase[i].max
	}
	res.FirstStart, res.LastEnd = st.firstStart, st.lastEnd
	res.PollCalls, res.PollEvents = l.polls.calls, l.polls.events
	res.Error = e
}

// fdCount is what a process has open: descriptors other than files on
// disk (sockets, pipes, eventfds, memfds: what connections use), the
// sockets among them, and files on disk (a store's tables and logs, which
// come and go as it flushes and compacts, up to its own bound).
type fdCount struct{ fds, sockets, files int64 }

// countFDs counts the open descriptors of pid.
func countFDs(pid int) (fdCount, error) {
	var n fdCount
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	d, err := os.ReadDir(dir)
	if err != nil {
		return n, err
	}
	for _, e := range d {
		// A descriptor closed meanwhile has no link any more: not counted.
		t, err := os.Readlink(dir + "/" + e.Name())
		switch {
		case err != nil:
		case strings.HasPrefix(t, "/") && !strings.HasPrefix(t, "/memfd:") && !strings.HasPrefix(t, "/dev/"):
			n.files++
		default:
			n.fds++
			if strings.HasPrefix(t, "socket:") {
				n.sockets++
			}
		}
	}
	return n, nil
}

func sumFDs(pids []int) (fdCount, error) {
	var sum fdCount
	for _, p := range pids {
		n, err := countFDs(p)
		if err != nil {
			return fdCount{}, err
		}
		sum.fds += n.fds
		sum.sockets += n.sockets
		sum.files += n.files
	}
	return sum, nil
}

func httpGetDiscard(url string) error {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return nil
}

// goroutineSamples is how many scrapes of --metrics-url sampleServer takes
// the goroutine count from.
const goroutineSamples = 5

// sampleServer reads the server's figures: a forced GC (--gc-url), then
// goroutines and heap in use (--metrics-url), then RSS and descriptors from
// /proc (the metrics' process figures without --server-pid). The pauses let
// the server close the HTTP connections of the first two, so that they are
// not counted.
func sampleServer(cfg *config) (map[string]float64, []string) {
	m := map[string]float64{}
	var errs []string
	if cfg.churn.gcURL != "" {
		if err := httpGetDiscard(cfg.churn.gcURL); err != nil {
			errs = append(errs, "gc: "+err.Error())
		}
		time.Sleep(50 * time.Millisecond)
	}
	var prom promSample
	if cfg.metricsURL != "" {
		// Goroutines: the fewest of goroutineSamples scrapes, so that a
		// background task running at one instant (a store flush or
		// compaction) is not counted as growth; a leak, which grows with
		// the cycles, stays in every sample.
		for i := range goroutineSamples {
			if i > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			s, err := scrape(cfg.metricsURL)
			if err != nil {
				errs = append(errs, "metrics: "+err.Error())
				break
			}
			if v, ok := s["go_goroutines"]; ok {
				if cur, seen := m["goroutines"]; !seen || v < cur {
					m["goroutines"] = v
				}
			}
			if prom == nil {
				prom = s
				if v, ok := s["go_memstats_heap_inuse_bytes"]; ok {
					m["heap_inuse_kib"] = round3(v / 1024)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(cfg.serverPIDs) > 0 {
		if v, err := sumRSS(cfg.serverPIDs); err == nil {
			m["rss_kib"] = float64(v)
		} else {
			errs = append(errs, "rss: "+err.Error())
		}
		if n, err := sumFDs(cfg.serverPIDs); err == nil {
			m["fds"] = float64(n.fds)
			m["sockets"] = float64(n.sockets)
			m["files"] = float64(n.files)
		} else {
			errs = append(errs, "fds: "+err.Error())
		}
	} else if prom != nil {
		if v, ok := prom["process_resident_memory_bytes"]; ok {
			m["rss_kib"] = round3(v / 1024)
		}
		if v, ok := prom["process_open_fds"]; ok {
			m["fds"] = v
		}
	}
	return m, errs
}

// settleSockets polls the server's open sockets every 50 ms until there
// are at most want, or limit passed. It returns the time it took and
// whether the count got there. (Sockets, not every descriptor: the audit
// log's store opens and closes files of its own as it writes.)
func settleSockets(pids []int, want int64, limit time.Duration) (time.Duration, bool) {
	t0 := time.Now()
	for {
		n, err := sumFDs(pids)
		if err == nil && n.sockets <= want {
			return time.Since(t0), true
		}
		if err != nil || time.Since(t0) >= limit {
			return time.Since(t0), false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stableSockets waits (at most limit) until two reads of the server's
// socket count 100 ms apart agree.
func stableSockets(pids []int, limit time.Duration) {
	end := time.Now().Add(limit)
	prev := int64(-1)
	for time.Now().Before(end) {
		n, err := sumFDs(pids)
		if err != nil || n.sockets == prev {
			return
		}
		prev = n.sockets
		time.Sleep(100 * time.Millisecond)
	}
}

// roundSigned rounds to 3 decimals, negative values too (round3 is for
// positive ones).
func roundSigned(v float64) float64 { return math.Round(v*1000) / 1000 }

func quantiles(h *hist) map[string]int64 {
	return map[string]int64{
		"p50": h.quantile(0.50), "p90": h.quantile(0.90), "p99": h.quantile(0.99),
		"p999": h.quantile(0.999), "max": h.max, "samples": h.n,
	}
}

// orchestrateChurn runs the churn mode: workers warm up and report READY;
// the server is sampled; GO; every worker reports its RESULT once its
// connections are all closed; the server's descriptors settle; the server
// is sampled again.
func orchestrateChurn(cfg *config) (map[string]any, error) {
	out := map[string]any{
		"mode": cfg.mode, "server": cfg.server, "url": cfg.url, "procs": cfg.procs,
		"loadavg_start": loadavg(), "server_pids": cfg.serverPIDs,
		"workers": cfg.conns, "duration_s": cfg.duration.Seconds(), "warmup_s": cfg.churn.warmup.Seconds(),
	}
	if cfg.label != "" {
		out["test"] = cfg.label
	}
	workers, up, err := startWorkers(cfg)
	defer stopWorkers(workers)
	if err != nil {
		return out, err
	}
	sink := newResultSink(len(workers), up, cfg.deadline, func(i int) *churnResult {
		return &churnResult{Index: i, Error: "worker exited without a result"}
	})
	defer sink.stop()
	next := sink.next
	broadcast := func(s string) {
		for _, w := range workers {
			w.down <- s
		}
	}
	ready := 0
	for ready+sink.n < len(workers) {
		wl, err := next()
		if err != nil {
			return out, err
		}
		if wl.line == "READY" {
			ready++
		}
	}
	var errs []string
	var before, after map[string]float64
	var cpu0, sys0, cpu1, sys1, busy0, busy1 int64
	var cpuErr error
	measured := sink.n == 0
	if measured {
		if len(cfg.serverPIDs) > 0 {
			// The warm-up's last connections may still be closing.
			stableSockets(cfg.serverPIDs, 2*time.Second)
		}
		var e []string
		before, e = sampleServer(cfg)
		errs = append(errs, e...)
		if len(cfg.serverPIDs) > 0 {
			cpu0, sys0, cpuErr = sumCPU(cfg.serverPIDs)
		}
		busy0, _ = machineBusyUs()
		broadcast("GO")
	} else {
		broadcast("STOP")
	}
	for sink.n < len(workers) {
		if _, err := next(); err != nil {
			return out, err
		}
	}
	if measured {
		if len(cfg.serverPIDs) > 0 && cpuErr == nil {
			cpu1, sys1, cpuErr = sumCPU(cfg.serverPIDs)
		}
		busy1, _ = machineBusyUs()
	}

	var agg churnResult
	var h hist
	var ph [nPhases]hist
	merged := map[string]*errStat{}
	for _, r := range sink.results {
		agg.Started += r.Started
		agg.Cycles += r.Cycles
		agg.Published += r.Published
		agg.Acked += r.Acked
		agg.Received += r.Received
		agg.CycleErrors += r.CycleErrors
		agg.DialErrors += r.DialErrors
		agg.ProtoErrors += r.ProtoErrors
		agg.Disconnects += r.Disconnects
		agg.Timeouts += r.Timeouts
		agg.CPUus += r.CPUus
		agg.PollCalls += r.PollCalls
		agg.PollEvents += r.PollEvents
		agg.WarmupCycles += r.WarmupCycles
		agg.WarmupErrors += r.WarmupErrors
		if r.FirstStart > 0 && (agg.FirstStart == 0 || r.FirstStart < agg.FirstStart) {
			agg.FirstStart = r.FirstStart
		}
		agg.LastEnd = max(agg.LastEnd, r.LastEnd)
		h.merge(r.Hist, r.HistMax)
		for i := range nPhases {
			ph[i].merge(r.PhaseHist[i], r.PhaseMax[i])
		}
		mergeErrors(merged, r.Errors)
		if r.Error != "" {
			errs = append(errs, fmt.Sprintf("worker %d: %s", r.Index, r.Error))
		}
	}
	out["cycles"] = agg.Cycles
	out["cycles_started"] = agg.Started
	out["cycle_errors"] = agg.CycleErrors
	out["dial_errors"] = agg.DialErrors
	out["protocol_errors"] = agg.ProtoErrors
	out["disconnects"] = agg.Disconnects
	out["timeouts"] = agg.Timeouts
	out["published"] = agg.Published
	out["acked"] = agg.Acked
	out["observed"] = agg.Received
	out["missing_deliveries"] = max(0, agg.Acked-agg.Received)
	out["extra_deliveries"] = max(0, agg.Received-agg.Published)
	if cfg.churn.warmup > 0 {
		out["warmup_cycles"] = agg.WarmupCycles
		out["warmup_errors"] = agg.WarmupErrors
	}
	if len(merged) > 0 {
		out["errors"] = merged
	}
	var span float64 // µs
	if agg.FirstStart > 0 && agg.LastEnd > agg.FirstStart {
		span = float64(agg.LastEnd-agg.FirstStart) / 1e3
		out["window_s"] = round3(span / 1e6)
		out["cycles_per_sec"] = round3(float64(agg.Cycles) / (span / 1e6))
	}
	out["cycle_latency_us"] = quantiles(&h)
	phases := map[string]any{}
	for i := range nPhases {
		phases[phaseNames[i]] = map[string]int64{"p50": ph[i].quantile(0.5), "p99": ph[i].quantile(0.99)}
	}
	out["phase_latency_us"] = phases
	out["gen_cpu_us"] = agg.CPUus
	out["gen_epoll"] = map[string]int64{"waits": agg.PollCalls, "events": agg.PollEvents}
	if span > 0 {
		out["gen_cpu_share"] = round3(float64(agg.CPUus) / span)
	}
	if agg.Cycles > 0 {
		out["gen_cpu_us_per_cycle"] = round3(float64(agg.CPUus) / float64(agg.Cycles))
	}
	if measured && len(cfg.serverPIDs) > 0 {
		if cpuErr != nil {
			errs = append(errs, "server cpu: "+cpuErr.Error())
		} else {
			cpu, sys := (cpu1+sys1)-(cpu0+sys0), sys1-sys0
			out["server_cpu_us"] = cpu
			out["server_sys_cpu_us"] = sys
			if span > 0 {
				out["server_cpu_share"] = round3(float64(cpu) / span)
				if busy0 > 0 && busy1 > 0 {
					other := busy1 - busy0 - cpu - agg.CPUus
					out["other_cpu_share"] = round3(max(0, float64(other)) / span)
				}
			}
			if agg.Cycles > 0 {
				out["server_cpu_us_per_cycle"] = round3(float64(cpu) / float64(agg.Cycles))
				out["server_sys_us_per_cycle"] = round3(float64(sys) / float64(agg.Cycles))
			}
		}
	}
	if before != nil {
		// Every connection is closed: wait for the server to close its side.
		if socks, ok := before["sockets"]; ok && len(cfg.serverPIDs) > 0 {
			took, ok := settleSockets(cfg.serverPIDs, int64(socks)+int64(cfg.churn.socketSlack), cfg.churn.settle)
			out["settle_s"] = round3(took.Seconds())
			out["settled"] = ok
		}
		var e []string
		after, e = sampleServer(cfg)
		errs = append(errs, e...)
		out["before"] = before
		out["after"] = after
		growth := map[string]float64{}
		for k, b := range before {
			if a, ok := after[k]; ok {
				growth[k] = roundSigned(a - b)
			}
		}
		if agg.Cycles > 0 {
			if g, ok := growth["rss_kib"]; ok {
				growth["rss_bytes_per_cycle"] = roundSigned(g * 1024 / float64(agg.Cycles))
			}
			if g, ok := growth["heap_inuse_kib"]; ok {
				growth["heap_bytes_per_cycle"] = roundSigned(g * 1024 / float64(agg.Cycles))
			}
		}
		out["growth"] = growth
	}
	out["loadavg_end"] = loadavg()
	if len(errs) > 0 {
		out["worker_errors"] = errs
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// summarizeChurn is `load summarize` for churn results plus the churn
// targets: the candidate's median cycles/s at least --min-ratio times the
// baseline's, and no growth of the candidate (descriptors, goroutines,
// heap in use and RSS, before and after, within the limits given).
func summarizeChurn(args []string) int { return summarizeChurnTo(os.Stdout, args) }

func summarizeChurnTo(w io.Writer, args []string) int {
	fs := flag.NewFlagSet("load summarize-churn", flag.ContinueOnError)
	test := fs.String("test", "churn", "test label of the churn runs")
	cand := fs.String("candidate", "zenconn", "server label of the candidate")
	base := fs.String("baseline", "baseline", "server label of the baseline")
	minRatio := fs.Float64("min-ratio", 2, "target: candidate cycles/s >= this × the baseline's")
	maxOther := fs.String("max-other", "0", "passed to summarize: leave noisy runs out of the medians")
	// The limits tell a leak (growth in proportion to the cycles: tens
	// of thousands per run) from a bounded first use (runtime goroutines
	// started lazily, the audit log's files, memtable and cache filling
	// up): see bench/README.md.
	maxSock := fs.Float64("max-socket-growth", 0, "no growth: at most this many more open sockets after than before")
	maxFDs := fs.Float64("max-fd-growth", 4, "no growth: at most this many more open descriptors other than files on disk after than before")
	maxFiles := fs.Float64("max-file-growth", 256, "no growth: at most this many more open files on disk after than before (ZenConn's store keeps at most 2 x 128)")
	maxGor := fs.Float64("max-goroutine-growth", 4, "no growth: at most this many more goroutines")
	maxHeap := fs.Float64("max-heap-bytes-per-cycle", 32, "no growth: heap in use (after a forced GC) grew by at most this many bytes per cycle")
	maxRSS := fs.Float64("max-rss-bytes-per-cycle", 256, "no growth: RSS grew by at most this many bytes per cycle")
	meta := metaFlag{}
	fs.Var(meta, "meta", "key=value copied to the output (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	sargs := []string{"--candidate", *cand, "--baseline", *base, "--max-other", *maxOther}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sargs = append(sargs, "--meta", k+"="+meta[k])
	}
	var buf bytes.Buffer
	if rc := summarizeTo(&buf, append(sargs, fs.Args()...)); rc != 0 {
		return rc
	}
	var out map[string]any
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		fmt.Fprintln(os.Stderr, "load summarize-churn:", err)
		return 1
	}
	problems, _ := out["problems"].([]any)
	medians, _ := out["medians"].(map[string]any)
	byServer, _ := medians[*test].(map[string]any)
	get := func(srv, field string) (float64, bool) {
		m, _ := byServer[srv].(map[string]any)
		v, ok := m[field].(float64)
		return v, ok
	}
	// The figures that matter, per server, from the medians.
	fields := []string{"cycles_per_sec", "cycle_latency_us.p50", "cycle_latency_us.p99", "cycle_errors",
		"server_cpu_us_per_cycle", "gen_cpu_share", "other_cpu_share",
		"before.rss_kib", "after.rss_kib", "growth.rss_kib", "growth.rss_bytes_per_cycle",
		"before.heap_inuse_kib", "after.heap_inuse_kib", "growth.heap_inuse_kib", "growth.heap_bytes_per_cycle",
		"before.goroutines", "after.goroutines", "growth.goroutines",
		"before.fds", "after.fds", "growth.fds", "before.files", "after.files", "growth.files",
		"before.sockets", "after.sockets", "growth.sockets", "settle_s"}
	servers := map[string]any{}
	srvNames := make([]string, 0, len(byServer))
	for srv := range byServer {
		srvNames = append(srvNames, srv)
	}
	sort.Strings(srvNames)
	growthOK := map[string]bool{}
	for _, srv := range srvNames {
		m := map[string]any{}
		for _, f := range fields {
			if v, ok := get(srv, f); ok {
				m[f] = v
			}
		}
		var over []string
		check := func(field string, limit float64) {
			if v, ok := get(srv, field); ok && v > limit {
				over = append(over, fmt.Sprintf("%s = %v > %v", field, v, limit))
			}
		}
		check("growth.sockets", *maxSock)
		check("growth.fds", *maxFDs)
		check("growth.files", *maxFiles)
		check("growth.goroutines", *maxGor)
		check("growth.heap_bytes_per_cycle", *maxHeap)
		check("growth.rss_bytes_per_cycle", *maxRSS)
		_, has := get(srv, "growth.fds")
		growthOK[srv] = has && len(over) == 0
		m["no_growth"] = growthOK[srv]
		if len(over) > 0 {
			m["growth_over_limits"] = over
		}
		if !has {
			m["growth_over_limits"] = []string{"no before/after figures"}
		}
		servers[srv] = m
	}
	c, ok1 := get(*cand, "cycles_per_sec")
	b, ok2 := get(*base, "cycles_per_sec")
	ratio := 0.0
	if ok1 && ok2 && b > 0 {
		ratio = round3(c / b)
	} else {
		problems = append(problems, fmt.Sprintf("no median cycles_per_sec for %s and %s in test %q", *cand, *base, *test))
	}
	ratioMet := ok1 && ok2 && b > 0 && c >= *minRatio*b
	out["churn"] = servers
	out["ratio"] = ratio
	out["target"] = *minRatio
	out["ratio_met"] = ratioMet
	out["no_growth_met"] = growthOK[*cand]
	out["met"] = ratioMet && growthOK[*cand]
	out["growth_limits"] = map[string]float64{
		"sockets": *maxSock, "fds": *maxFDs, "files": *maxFiles, "goroutines": *maxGor, "heap_bytes_per_cycle": *maxHeap, "rss_bytes_per_cycle": *maxRSS,
	}
	out["targets"] = []map[string]any{{
		"name": "churn cycles/s", "candidate": c, "baseline": b, "ratio_candidate_to_baseline": ratio,
		"goal": fmt.Sprintf("candidate >= %gx baseline", *minRatio), "met": ratioMet,
	}, {
		"name": "no growth after churn (" + *cand + ")", "goal": "growth within growth_limits", "met": growthOK[*cand],
	}}
	if !growthOK[*cand] {
		m, _ := servers[*cand].(map[string]any)
		problems = append(problems, fmt.Sprintf("%s: growth over the limits: %v", *cand, m["growth_over_limits"]))
	}
	if problems != nil {
		out["problems"] = problems
	}
	enc, _ := json.MarshalIndent(out, "", "  ")
	_, _ = fmt.Fprintln(w, string(enc))
	return 0
}
