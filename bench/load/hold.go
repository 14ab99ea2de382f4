package main

// One worker of the hold mode: it keeps its share of the subscribers (and,
// in worker 0, the publisher) connected for the whole run, as real clients
// do: a connection the server ends is reconnected after an exponential
// backoff with full jitter, and subscribes again. Between the
// orchestrator's commands it only serves its connections; the commands
// (hold_orchestrate.go) measure over that one population:
//
//	FANOUT rate duration drain bcast  a fan-out (or a broadcast) over the held subscribers
//	CHURN pct duration                pct % of the subscribers closed and reopened per second
//	MARK                              close codes counted from here (before a restart)
//	RWAIT timeout                     until every connection was lost and is back
//	QUIT                              close everything

import (
	"container/heap"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// holdOpts are the flags of the hold mode.
type holdOpts struct {
	backoffBase    time.Duration
	backoffCap     time.Duration
	connectTimeout time.Duration
	jwtSecret      string
	privateNetns   bool
	token          string // the publisher's token (broadcast grant), made from jwtSecret
}

func holdFlags(fs *flag.FlagSet, cfg *config) {
	fs.IntVar(&cfg.conns, "conns", 1000, "subscriber connections to hold (the publisher is one more)")
	fs.DurationVar(&cfg.settle, "settle", 3*time.Second, "idle command: wait before sampling the server's memory")
	fs.DurationVar(&cfg.hold.backoffBase, "backoff-base", 100*time.Millisecond, "reconnection: first backoff ceiling (doubles per failed attempt; the delay is uniform below it)")
	fs.DurationVar(&cfg.hold.backoffCap, "backoff-cap", 10*time.Second, "reconnection: largest backoff ceiling")
	fs.DurationVar(&cfg.hold.connectTimeout, "connect-timeout", 300*time.Second, "time allowed to connect and subscribe every connection at the start")
	fs.StringVar(&cfg.hold.jwtSecret, "jwt-secret", "", "the server's --jwt-secret (default: $ZENCONN_JWT_SECRET): the publisher authenticates with a token granting broadcast (needed by the broadcast command)")
	fs.IntVar(&cfg.size, "size", 64, "size in bytes of the first published WebSocket frame (as in fanout mode)")
	fs.IntVar(&cfg.window, "window", 64, "maximum unacknowledged publishes")
	fs.BoolVar(&cfg.hold.privateNetns, "private-netns", false, "the run has a network namespace of its own: the churn flags a growth of the namespace's TCP sockets too")
	fs.IntVar(&cfg.maxLag, "max-lag", 128, "maximum undelivered messages per subscriber (average) before publishing waits")
}

func checkHold(cfg *config) error {
	if cfg.hold.jwtSecret == "" {
		cfg.hold.jwtSecret = os.Getenv("ZENCONN_JWT_SECRET")
	}
	switch {
	case cfg.conns < 1:
		return fmt.Errorf("--conns must be positive")
	case len(cfg.targets) != 1 || cfg.targets[0].tls:
		return fmt.Errorf("hold mode: one ws:// URL")
	case cfg.protocol != "zenconn":
		return fmt.Errorf("hold mode: --protocol zenconn only")
	case cfg.hold.backoffBase <= 0 || cfg.hold.backoffCap < cfg.hold.backoffBase:
		return fmt.Errorf("--backoff-base must be positive and at most --backoff-cap")
	case cfg.hold.connectTimeout <= 0:
		return fmt.Errorf("--connect-timeout must be positive")
	case cfg.hold.jwtSecret != "" && len(cfg.hold.jwtSecret) < 32:
		return fmt.Errorf("--jwt-secret: at least 32 bytes")
	case cfg.size < 1 || cfg.size > 16<<20 || cfg.window < 1:
		return fmt.Errorf("bad --size or --window")
	}
	if cfg.hold.jwtSecret != "" {
		cfg.hold.token = broadcastToken(cfg.hold.jwtSecret, time.Now().Add(cfg.timeout+time.Hour))
	}
	return nil
}

// redial is a connection waiting for its (re)connection at due (Unix ns).
type redial struct {
	c   *conn
	due int64
}

// redialHeap orders the waiting connections by due time.
type redialHeap []redial

func (h redialHeap) Len() int           { return len(h) }
func (h redialHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h redialHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *redialHeap) Push(x any)        { *h = append(*h, x.(redial)) }
func (h *redialHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// holdState is what a hold worker keeps beside its loop: the connections
// waiting to be dialled, and what happened to them since the last MARK.
type holdState struct {
	queue       redialHeap
	rnd         *rand.Rand
	codes       map[int]int64 // close codes of ready connections lost (1006: no close frame)
	dialFails   int64         // (re)connection attempts that failed before ready
	redials     int64         // (re)connection attempts
	marked      bool          // a MARK was received: losses are tracked
	lostMarked  int           // connections lost since the MARK (or not ready at it)
	firstLoss   int64         // Unix ns of the first loss since the MARK
	lastReady   int64         // Unix ns of the last connection ready again
	churnClosed int64         // connections closed by CHURN
	dialFails0  int64         // dialFails at the MARK
	redials0    int64         // redials at the MARK
}

// holdLost ends c (lost with close code code: the server's close frame,
// or 1006 when the connection ended without one) and queues its
// reconnection: at once after a close, then after a backoff that doubles
// with every failed attempt, the delay drawn uniformly below it.
func (l *loop) holdLost(c *conn, code int, kind, detail string) {
	h := l.hold
	now := time.Now().UnixNano()
	if c.ready {
		c.ready = false
		l.readyCount--
		l.disconnects++
		h.codes[code]++
		c.attempts = 0
		if h.marked && !c.lostMark {
			c.lostMark = true
			h.lostMarked++
			if h.firstLoss == 0 {
				h.firstLoss = now
			}
		}
	} else {
		l.inflight--
		h.dialFails++
		c.attempts++
	}
	l.note(kind, detail)
	l.closeFd(c)
	h.schedule(c, now+int64(h.backoff(l.cfg, c.attempts)))
}

// backoff is the delay before attempt n+1 (n failed attempts so far):
// uniform in [0, min(cap, base·2^n)).
func (h *holdState) backoff(cfg *config, n int) time.Duration {
	ceil := float64(cfg.hold.backoffBase) * math.Pow(2, float64(min(n, 30)))
	ceil = min(ceil, float64(cfg.hold.backoffCap))
	return time.Duration(h.rnd.Float64() * ceil)
}

func (h *holdState) schedule(c *conn, due int64) {
	heap.Push(&h.queue, redial{c: c, due: due})
}

// resetConn clears what a connection learnt on its last connection.
func (c *conn) resetConn(firstPubID int64) {
	c.id, c.frames, c.welcome, c.ready = "", 0, false, false
	c.subAck = false
	if c.role == rolePub {
		c.pubSent, c.pubAnswered, c.nextAck = 0, 0, firstPubID
	}
}

// dialDue dials the queued connections that are due, --dial-concurrency
// in flight at most.
func (l *loop) dialDue() {
	h := l.hold
	now := time.Now().UnixNano()
	for len(h.queue) > 0 && h.queue[0].due <= now && l.inflight < l.cfg.dialConc {
		r := heap.Pop(&h.queue).(redial)
		r.c.resetConn(l.firstPubID())
		h.redials++
		l.inflight++
		l.dial(r.c)
	}
}

// holdStep dials what is due and serves the connections for up to d.
func (l *loop) holdStep(d time.Duration) error {
	l.dialDue()
	if len(l.hold.queue) > 0 && l.inflight < l.cfg.dialConc {
		d = min(d, max(time.Duration(l.hold.queue[0].due-time.Now().UnixNano()), time.Millisecond))
	}
	return l.poll(d)
}

// holdWait serves the connections (reconnecting the lost ones) until a line
// comes from the orchestrator; false when the input ended or the deadline
// passed.
func (l *loop) holdWait(down <-chan string) (string, bool) {
	for time.Now().Before(l.cfg.deadline) {
		select {
		case line, ok := <-down:
			return line, ok
		default:
			if err := l.holdStep(20 * time.Millisecond); err != nil {
				return "", false
			}
		}
	}
	return "", false
}

// holdReady is a hold worker's HREADY line: its connections after the
// first connect.
type holdReady struct {
	Index     int                 `json:"index"`
	Conns     int                 `json:"conns"`
	Ready     int                 `json:"ready"`
	ReadySubs int                 `json:"ready_subs"`
	PubID     string              `json:"pub_id,omitempty"`
	ConnectMs float64             `json:"connect_ms"`
	DialFails int64               `json:"dial_failures"`
	Errors    map[string]*errStat `json:"errors,omitempty"`
}

// runHoldWorker connects this worker's share, reports HREADY, then runs
// the orchestrator's commands until QUIT (or the end of its input).
func runHoldWorker(cfg *config, idx int, send func(string), down <-chan string) {
	nSubs, nPubs := share(cfg.conns, idx, cfg.procs), 0
	if idx == 0 {
		nPubs = 1
	}
	l, err := newLoop(cfg, nSubs, nPubs, idx)
	if err != nil {
		send(fmt.Sprintf(`HREADY {"index":%d,"conns":%d,"errors":{"init":{"count":1,"example":%q}}}`, idx, nSubs+nPubs, err.Error()))
		return
	}
	defer l.closeAll()
	l.hold = &holdState{codes: map[int]int64{}, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(idx)))}
	for _, c := range l.conns {
		l.hold.schedule(c, 0)
	}
	send("HREADY " + mustJSON(l.holdConnect(idx, send)))
	l.errs = map[string]*errStat{}
	for {
		line, ok := l.holdWait(down)
		if !ok {
			return
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if f[0] == "QUIT" {
			return
		}
		send(l.holdCommand(f, send, down))
	}
}

// holdConnect connects every connection (retrying with the backoff) until
// all are ready or --connect-timeout passed.
func (l *loop) holdConnect(idx int, send func(string)) holdReady {
	t0 := time.Now()
	end, report := t0.Add(l.cfg.hold.connectTimeout), t0.Add(5*time.Second)
	for l.readyCount < l.total && time.Now().Before(end) && time.Now().Before(l.cfg.deadline) {
		if time.Now().After(report) {
			report = report.Add(5 * time.Second)
			send(fmt.Sprintf("PROGRESS %d", l.readyCount))
		}
		if err := l.holdStep(20 * time.Millisecond); err != nil {
			l.note("epoll", err.Error())
			break
		}
	}
	r := holdReady{Index: idx, Conns: l.total, Ready: l.readyCount, DialFails: l.hold.dialFails,
		ConnectMs: float64(time.Since(t0).Microseconds()) / 1000, Errors: l.errorsOut()}
	for _, c := range l.conns {
		if c.ready && c.role == roleSub {
			r.ReadySubs++
		}
	}
	if l.pub != nil && l.pub.ready {
		r.PubID = l.pub.id
	}
	return r
}

// holdCommand runs one command and returns the line that answers it.
func (l *loop) holdCommand(f []string, send func(string), down <-chan string) string {
	l.errs = map[string]*errStat{}
	switch f[0] {
	case "FANOUT":
		return "FANDONE " + mustJSON(l.holdFanout(f[1:], send, down))
	case "CHURN":
		return "CHURNDONE " + mustJSON(l.holdChurn(f[1:], down))
	case "MARK":
		l.holdMark()
		return "MARKED"
	case "RWAIT":
		return "RDONE " + mustJSON(l.holdRestartWait(f[1:]))
	}
	return fmt.Sprintf(`ERROR {"error":"unknown command %q"}`, f[0])
}

// readySubs counts the subscribers ready now.
func (l *loop) readySubs() int {
	n := 0
	for _, c := range l.conns {
		if c.ready && c.role == roleSub {
			n++
		}
	}
	return n
}

// resetTraffic clears the counters of the last traffic command.
func (l *loop) resetTraffic() {
	l.published, l.acked, l.refused, l.ackReorder, l.lastAck = 0, 0, 0, 0, 0
	l.received, l.firstSend, l.lastRecv, l.endN = 0, 0, 0, -1
	l.hist, l.ackHist = hist{}, hist{}
	l.disconnects, l.protoErrors, l.outOfOrder, l.dialErrors = 0, 0, 0, 0
	l.polls = pollStats{}
}

// holdFanout runs a fan-out (bcast 0) or a broadcast (bcast 1) over the
// held connections: FANOUT pubID rate duration drain bcast. It clears its
// counts, answers FANREADY and waits for FANGO, which the orchestrator
// sends once every worker is ready: then the publisher publishes. The
// connections lost meanwhile are reconnected after it.
func (l *loop) holdFanout(args []string, send func(string), down <-chan string) *workerResult {
	res := &workerResult{Index: l.cfg.childIndex}
	l.resetTraffic()
	for _, sc := range l.conns {
		sc.got = 0
	}
	// Every worker has cleared its counts before anything is published:
	// a delivery read before this worker's reset would be forgotten.
	send("FANREADY")
	if line, ok := l.holdWait(down); !ok || line != "FANGO" {
		res.Error = fmt.Sprintf("expected FANGO, got %q", line)
		return res
	}
	if len(args) != 5 {
		res.Error = "bad FANOUT line"
		return res
	}
	c := *l.cfg
	base := l.cfg
	defer func() { l.cfg, l.bcast = base, false }()
	c.rate, _ = strconv.ParseFloat(args[1], 64)
	c.duration, _ = time.ParseDuration(args[2])
	c.drain, _ = time.ParseDuration(args[3])
	l.cfg, l.bcast, l.pubID = &c, args[4] == "1", args[0]
	if l.pubID == "-" {
		l.pubID = ""
	}
	res.ReadySubs = l.readySubs()
	res.Conns = l.total
	withPub := l.pub != nil && l.pub.ready
	cpu0, _ := readCPUus(0)
	res.Error = l.runFanout(withPub, res.ReadySubs, send, down, res)
	cpu1, _ := readCPUus(0)
	res.CPUus = cpu1 - cpu0
	l.measure(false)
	l.fill(res)
	res.Ready = l.readyCount
	l.noteShort(res)
	return res
}

// noteShort counts the subscribers that received fewer deliveries than
// were published (the END line's count), keeping the first ids, and sends
// each a ping: one that answers (within 5 s) is alive, and its stream,
// in order, had no delivery missing on the way.
func (l *loop) noteShort(res *workerResult) {
	if l.endN < 0 {
		return
	}
	var short []*conn
	for _, c := range l.conns {
		if c.role == roleSub && c.got < l.endN {
			res.SubsShort++
			if len(res.ShortIDs) < 5 {
				res.ShortIDs = append(res.ShortIDs, fmt.Sprintf("%s (%d of %d, ready %v, %d bytes unparsed, %d of a fragmented message)",
					c.id, c.got, l.endN, c.ready, len(c.pending), len(c.frag)))
			}
			if c.ready && len(short) < 1000 {
				c.pongs = 0
				l.send(c, ws.OpText, []byte(`{"op":"ping"}`))
				short = append(short, c)
			}
		}
	}
	end := time.Now().Add(5 * time.Second)
	for len(short) > 0 && time.Now().Before(end) {
		if l.poll(20*time.Millisecond) != nil {
			break
		}
		n := 0
		for _, c := range short {
			if c.pongs > 0 {
				n++
			}
		}
		if n == len(short) {
			break
		}
	}
	for _, c := range short {
		if c.pongs > 0 {
			res.ShortAlive++
		}
	}
}

// holdChurnResult is a hold worker's answer to CHURN.
type holdChurnResult struct {
	Closed    int64               `json:"closed"`
	Reopened  int64               `json:"reopened"`
	NotReady  int                 `json:"not_ready_at_end"`
	DialFails int64               `json:"dial_failures"`
	Lost      int64               `json:"disconnects"`
	Errors    map[string]*errStat `json:"errors,omitempty"`
	Error     string              `json:"error,omitempty"`
}

// holdChurn closes pct % of this worker's subscribers every second and
// reopens them at once (CHURN pct duration), then waits (up to 60 s) until
// every connection is ready again.
func (l *loop) holdChurn(args []string, down <-chan string) *holdChurnResult {
	res := &holdChurnResult{}
	if len(args) != 2 {
		res.Error = "bad CHURN line"
		return res
	}
	pct, err1 := strconv.ParseFloat(args[0], 64)
	dur, err2 := time.ParseDuration(args[1])
	if err1 != nil || err2 != nil || pct < 0 || pct > 100 {
		res.Error = "bad CHURN line"
		return res
	}
	fails0, disc0, redials0 := l.hold.dialFails, l.disconnects, l.hold.redials
	perSec := float64(l.localSubs) * pct / 100
	start := time.Now()
	next, owed, rr := start, 0.0, 0
	for time.Since(start) < dur && time.Now().Before(l.cfg.deadline) {
		if now := time.Now(); !now.Before(next) {
			owed += perSec
			n := int(owed)
			owed -= float64(n)
			rr = l.churnSome(n, rr)
			next = next.Add(time.Second)
		}
		if err := l.holdStep(min(20*time.Millisecond, max(time.Until(next), time.Millisecond))); err != nil {
			res.Error = err.Error()
			break
		}
	}
	l.settleAll(60 * time.Second)
	res.Closed = l.hold.churnClosed
	l.hold.churnClosed = 0
	res.Reopened = l.hold.redials - redials0
	res.NotReady = l.total - l.readyCount
	res.DialFails = l.hold.dialFails - fails0
	res.Lost = l.disconnects - disc0
	res.Errors = l.errorsOut()
	return res
}

// churnSome closes n ready subscribers, from index rr on, and queues their
// reconnection at once; it returns the next index.
func (l *loop) churnSome(n, rr int) int {
	if l.localSubs == 0 {
		return rr
	}
	now := time.Now().UnixNano()
	for tries := 0; n > 0 && tries < l.localSubs; tries++ {
		c := l.conns[rr]
		rr = (rr + 1) % l.localSubs
		if !c.ready {
			continue
		}
		c.ready = false
		l.readyCount--
		l.closeFd(c)
		l.hold.churnClosed++
		l.hold.schedule(c, now)
		n--
	}
	return rr
}

// settleAll serves the connections until every one is ready or d passed.
func (l *loop) settleAll(d time.Duration) {
	end := time.Now().Add(d)
	for l.readyCount < l.total && time.Now().Before(end) && time.Now().Before(l.cfg.deadline) {
		if l.holdStep(20*time.Millisecond) != nil {
			return
		}
	}
}

// holdMark starts counting losses and close codes (before a restart).
func (l *loop) holdMark() {
	h := l.hold
	h.marked, h.lostMarked, h.firstLoss, h.lastReady = true, 0, 0, 0
	h.codes = map[int]int64{}
	l.disconnects = 0
	h.dialFails0, h.redials0 = h.dialFails, h.redials
	for _, c := range l.conns {
		c.lostMark = !c.ready
		if c.lostMark {
			h.lostMarked++
		}
	}
}

// restartResult is a hold worker's answer to RWAIT.
type restartResult struct {
	Conns     int                 `json:"conns"`
	Lost      int                 `json:"lost"`
	Ready     int                 `json:"ready"`
	FirstLoss int64               `json:"first_loss_ns"`
	LastReady int64               `json:"last_ready_ns"`
	Codes     map[string]int64    `json:"close_codes"`
	DialFails int64               `json:"dial_failures"`
	Redials   int64               `json:"redials"`
	PubID     string              `json:"pub_id,omitempty"`
	Errors    map[string]*errStat `json:"errors,omitempty"`
}

// holdRestartWait serves the connections until every one was lost since
// the MARK and is ready again, or the timeout (RWAIT timeout) passed.
func (l *loop) holdRestartWait(args []string) *restartResult {
	h := l.hold
	d := time.Minute
	if len(args) == 1 {
		if v, err := time.ParseDuration(args[0]); err == nil {
			d = v
		}
	}
	end := time.Now().Add(d)
	for (h.lostMarked < l.total || l.readyCount < l.total) && time.Now().Before(end) && time.Now().Before(l.cfg.deadline) {
		if l.holdStep(20*time.Millisecond) != nil {
			break
		}
	}
	r := &restartResult{Conns: l.total, Lost: h.lostMarked, Ready: l.readyCount, FirstLoss: h.firstLoss,
		LastReady: h.lastReady, Codes: map[string]int64{}, DialFails: h.dialFails - h.dialFails0,
		Redials: h.redials - h.redials0, Errors: l.errorsOut()}
	for code, n := range h.codes {
		r.Codes[strconv.Itoa(code)] = n
	}
	if l.pub != nil && l.pub.ready {
		r.PubID = l.pub.id
	}
	h.marked = false
	return r
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
}

// broadcastToken is an HS256 JWT signed with secret that grants broadcast
// (and subscribing to any channel), valid until exp.
func broadcastToken(secret string, exp time.Time) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims := enc.EncodeToString(fmt.Appendf(nil, `{"sub":"load-publisher","exp":%d,"grants":{"subscribe":["*"],"publish":["*"],"broadcast":true}}`, exp.Unix()))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(head + "." + claims))
	return head + "." + claims + "." + enc.EncodeToString(mac.Sum(nil))
}
