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
// Like the other modes, the connections of a process run on the epoll
// client (client.go), and the generator's CPU is reported next to the
// server's. The orchestrator's side is in churn_orchestrate.go.

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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
	cent    bool            // Centrifugo's client protocol (churn_cent.go), else ZenConn's
	st      *churnStats
	end     int64  // no cycle starts at or after this time (ns)
	body    []byte // the subscribe or publish being written
	subs    []byte // the observer's subscribe frames
}

func newChurnLoop(cfg *config, idx, first, n int) (*churnLoop, error) {
	l := &churnLoop{cfg: cfg, chans: make(map[string]bool, n), st: &churnStats{}, cent: cfg.protocol == "centrifugo"}
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

// onRawData: churn connections are never detached from their TLS bridges.
func (l *churnLoop) onRawData(*cconn, int64) {}

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

func (l *churnLoop) onUpgrade(c *cconn, _ int64) {
	c.state = csWelcome
	if l.cent {
		l.onCentUpgrade(c)
	}
}

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
	if l.cent {
		l.onCentFrame(c, p, now)
		return
	}
	if c.worker < 0 && c.state == csOpen && bytes.Contains(p, opMessageKey) {
		l.onDelivery(p)
		return
	}
	switch {
	case c.state == csWelcome:
		l.onWelcome(c, p, now)
	case c.state == csSubscribe && c.worker < 0:
		var m serverMsg
		if json.Unmarshal(p, &m) != nil || m.Op != "ack" || m.ID == nil || *m.ID < 1 || *m.ID > int64(len(l.workers)) {
			l.protoFail(c, "observer_unexpected", p, now)
			return
		}
		if c.acks++; c.acks == len(l.workers) {
			c.state = csOpen
			c.deadline = 0
		}
	case c.state == csSubscribe:
		l.onSubscribed(c, p, now)
	case c.state == csPublish:
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

// onWelcome checks the welcome and subscribes: the worker to its channel,
// the observer to every worker's.
func (l *churnLoop) onWelcome(c *cconn, p []byte, now int64) {
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
}

// onSubscribed checks a worker's subscribe ack and publishes its welcome
// id to its channel.
func (l *churnLoop) onSubscribed(c *cconn, p []byte, now int64) {
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
		if !l.cent {
			l.subs = l.appendFrame(l.subs, ws.OpText, fmt.Appendf(nil, `{"id":%d,"op":"subscribe","channel":%q}`, i+1, c.channel))
		}
	}
	if l.cent {
		l.subs = l.centObserverSubs()
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

// goroutineSamples is how many scrapes of --metrics-url sampleServer takes
// the goroutine count from.
const goroutineSamples = 5
