package engine

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/proto"
)

// Input held by the engine. A transport hands Conn.Serve what the kernel
// gave it, and Serve always consumes all of it: whatever cannot be handled
// yet (a partial request head or body, a partial frame) is copied into the
// connection's own buffer (Conn.in), which grows with the bytes received,
// never with a declared length. Those bytes, and the fragments of a
// message in progress (Conn.frag), are charged to the process's input
// budget (Config.InputBudget); a connection whose partial input would take
// the budget past its limit is refused (HTTP 503, WebSocket close 1013).
//
// Every phase of input has a deadline that bytes trickling in do not
// extend: a new connection's first request head (Config.HandshakeTimeout,
// from the accept), a later request head (HeaderTimeout, from its first
// byte), a request body (BodyTimeout, from the end of its head) and a
// WebSocket message (MessageTimeout, from its first byte to its last
// fragment). The loop's periodic scan enforces them (phaseExpired).

// inPhase is what a connection's input is waiting for.
type inPhase uint8

const (
	phaseNone    inPhase = iota // nothing started (idle time applies)
	phaseFirst                  // a new connection's first request head
	phaseHead                   // a request head, started
	phaseBody                   // a request body, head received
	phaseMessage                // a WebSocket message, started
	numPhases
)

var phaseNames = [numPhases]string{"", "handshake", "head", "body", "message"}

// inputBudget is a process's account of the bytes held in partial input.
type inputBudget struct {
	limit    int64
	held     atomic.Int64
	refused  atomic.Uint64
	timeouts [numPhases]atomic.Uint64
	// reclaimed counts connections ended at MaxConnections to make room
	// (loop.reclaimSlot).
	reclaimed atomic.Uint64
	lastLog   atomic.Int64 // ns; refusals and timeouts are logged at most once a second
}

// take charges n bytes and reports whether they fit the budget.
func (b *inputBudget) take(n int) bool {
	if b.held.Add(int64(n)) > b.limit {
		b.held.Add(-int64(n))
		return false
	}
	return true
}

func (b *inputBudget) give(n int) { b.held.Add(-int64(n)) }

// logAllowed reports whether a limit-reached line may be logged now: at
// most one a second for the whole process.
func (b *inputBudget) logAllowed(now int64) bool {
	last := b.lastLog.Load()
	return now-last >= int64(time.Second) && b.lastLog.CompareAndSwap(last, now)
}

// minHeld is the smallest buffer a connection holds partial input in.
const minHeld = 512

// heldCap is the capacity to grow a buffer of capacity old to, to hold
// need bytes: double while small, then a quarter more, so that what is
// held stays within a small factor of what was received.
func heldCap(old, need int) int {
	c := old * 2
	if old >= 64<<10 {
		c = old + old/4
	}
	return max(c, need, minHeld)
}

// reserve returns buf with room for extra more bytes, charging the growth
// to the budget; ok is false (and buf unchanged) when it does not fit.
func (c *Conn) reserve(buf []byte, extra int) (_ []byte, ok bool) {
	need := len(buf) + extra
	if need <= cap(buf) {
		return buf, true
	}
	newCap := heldCap(cap(buf), need)
	if !c.srv.input.take(newCap - cap(buf)) {
		return buf, false
	}
	nb := make([]byte, len(buf), newCap)
	copy(nb, buf) // buf's bytes are now nb's, charged above
	return nb, true
}

// release gives a held buffer's bytes back to the budget.
func (c *Conn) release(buf []byte) {
	if cap(buf) > 0 {
		c.srv.input.give(cap(buf))
	}
}

// hold appends p to the connection's held input; past the budget the
// connection is refused and hold reports false. A connection that
// pipelines more than a whole request behind one answered off the loop is
// cut.
func (c *Conn) hold(p []byte) bool {
	if c.busy && len(c.in)+len(p) > maxHeadSize+maxBodySize {
		c.dropIn()
		c.state = stateClosing
		c.reschedule()
		c.t.Close()
		return false
	}
	in, ok := c.reserve(c.in, len(p))
	if !ok {
		c.dropIn()
		c.refuseInput()
		return false
	}
	c.in = append(in, p...)
	return true
}

// keepRest keeps the unconsumed end of buf (buf[n:]) for the next read;
// buf is either new input or the held input itself.
func (c *Conn) keepRest(buf []byte, n int, fromHeld bool) {
	rest := buf[n:]
	switch {
	case len(rest) == 0 || c.state != stateHTTP && c.state != stateWS:
		c.dropIn()
	case !fromHeld:
		c.hold(rest)
	default:
		m := copy(c.in, rest)
		c.in = c.in[:m]
		if cap(c.in) > 64<<10 && cap(c.in) > 4*m {
			// A large message ended: keep only what the next one holds.
			small := make([]byte, m, heldCap(0, m))
			copy(small, c.in)
			c.release(c.in)
			c.srv.input.held.Add(int64(cap(small)))
			c.in = small
		}
	}
}

// dropIn lets go of the held input.
func (c *Conn) dropIn() {
	c.release(c.in)
	c.in = nil
}

// dropFrag lets go of the fragments of the message in progress.
func (c *Conn) dropFrag() {
	c.release(c.frag)
	c.frag = nil
}

// refuseInput answers a connection whose partial input does not fit the
// input budget: 503 to an HTTP request, close 1013 to a WebSocket.
func (c *Conn) refuseInput() {
	b := &c.srv.input
	b.refused.Add(1)
	if now := time.Now().UnixNano(); b.logAllowed(now) {
		c.srv.log.Warn("input budget reached: partial input refused", "remote", c.remoteIP(),
			"held_bytes", b.held.Load(), "budget_bytes", b.limit, "refused_total", b.refused.Load())
	}
	switch c.state {
	case stateWS:
		c.fail(proto.CloseTryAgainLater, "server busy, try again later")
	case stateHTTP:
		c.respondSimple(&requestInfo{method: []byte("-")}, 503, "server busy, retry\n", false, false, []byte("Retry-After: 1\r\n"))
	}
}

// setPhase records that input now waits for p; the deadline of a phase
// already under way keeps its start.
func (c *Conn) setPhase(p inPhase, now int64) {
	if c.phase != p {
		c.phase = p
		c.phaseStart = now
		c.reschedule()
	}
}

// phaseExpired enforces the deadline of the connection's input phase at
// time now and reports whether it ended the connection.
func (c *Conn) phaseExpired(now int64) bool {
	if now < c.phaseDue() {
		return false
	}
	c.srv.input.timeouts[c.phase].Add(1)
	c.endInput(now, "input deadline passed: connection closed")
	return true
}

// endInput ends a connection whose input phase did not complete: close
// 4004 for a WebSocket message, 408 for a request (a silent new
// connection is closed without an answer).
func (c *Conn) endInput(now int64, why string) {
	if b := &c.srv.input; b.logAllowed(now) {
		c.srv.log.Info(why, "phase", phaseNames[c.phase], "remote", c.remoteIP(),
			"after", time.Duration(now-c.phaseStart).Round(time.Millisecond))
	}
	switch {
	case c.state == stateWS:
		c.fail(proto.CloseMessageTimeout, "message not completed in time")
	case c.phase == phaseFirst && len(c.in) == 0:
		// Nothing was sent: there is no request to answer.
		c.state = stateClosing
		c.reschedule()
		c.t.Close()
	default:
		c.dropIn()
		c.writeNow(canned408)
		c.srv.countStatus(408)
		c.srv.accessLog(c, &requestInfo{method: []byte("-")}, 408, len(canned408Body))
		c.state = stateClosing
		c.reschedule()
		c.t.Close()
	}
}

// minReclaimAge is how long a request head must have been under way (or a
// new connection silent) before its slot may be reclaimed for a new
// connection at MaxConnections.
const minReclaimAge = int64(time.Second)

// reclaimSlot makes room for a new connection when the process is at
// MaxConnections: the loop's connection whose first or later request head
// has been under way the longest, at least minReclaimAge, is ended as if
// its deadline had passed (408, or closed if it sent nothing), and counted
// in zenconn_input_reclaimed_total. It reports whether one was. A client
// that sends its request head at once is never chosen, so connections
// trickling heads cannot keep it out.
func (l *loop) reclaimSlot(now int64) bool {
	var victim *Conn
	for c := range l.conns {
		if c.state != stateHTTP || c.busy || c.phase != phaseFirst && c.phase != phaseHead || now-c.phaseStart < minReclaimAge {
			continue
		}
		if victim == nil || c.phaseStart < victim.phaseStart {
			victim = c
		}
	}
	if victim == nil {
		return false
	}
	l.srv.input.reclaimed.Add(1)
	victim.endInput(now, "slot reclaimed for a new connection")
	return true
}

const canned408Body = "request not completed in time\n"

var canned408 = []byte("HTTP/1.1 408 Request Timeout\r\nServer: zenconn\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 30\r\nConnection: close\r\n\r\n" + canned408Body)

// inputMetrics are the collectors of the input budget and deadlines.
func (s *Server) inputMetrics() []prometheus.Collector {
	b := &s.input
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_input_held_bytes",
			Help: "Bytes held in partial request heads, bodies and WebSocket messages (this process)."},
			func() float64 { return float64(b.held.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_input_budget_bytes",
			Help: "This process's share of --max-pending-input."},
			func() float64 { return float64(b.limit) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_input_reclaimed_total",
			Help: "Connections with an incomplete request head ended at --max-connections to make room for a new connection."},
			func() float64 { return float64(b.reclaimed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_input_budget_refusals_total",
			Help: "Connections refused (HTTP 503, WebSocket close 1013) because their partial input would exceed --max-pending-input."},
			func() float64 { return float64(b.refused.Load()) }),
	}
	for p := phaseFirst; p < numPhases; p++ {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_input_timeouts_total",
			Help:        "Connections closed because a request head, body or WebSocket message was not completed in time (--handshake-timeout, --header-timeout, --body-timeout, --message-timeout).",
			ConstLabels: prometheus.Labels{"phase": phaseNames[p]}},
			func() float64 { return float64(b.timeouts[p].Load()) }))
	}
	return cs
}
