package main

// One worker of the idle, fanout and publish modes: it connects its share
// of the connections, reports READY, then publishes (the process holding
// the publishers) and counts deliveries and acks until the orchestrator's
// END, and reports its RESULT.

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

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
	TLSCount    *TLSCountResult     `json:"tls_count,omitempty"`
	SubsShort   int                 `json:"subs_short,omitempty"`  // hold: subscribers that missed deliveries
	ShortIDs    []string            `json:"short_ids,omitempty"`   // hold: the first of them (the server's connection ids)
	ShortAlive  int                 `json:"short_alive,omitempty"` // hold: of them, those that answered a ping since
	Error       string              `json:"error,omitempty"`
}

// runWorker drives this process's share of connections. It talks to the
// orchestrator in lines: it sends READY, PUBLISHED and RESULT, and receives
// GO and END.
func runWorker(cfg *config, idx int, send func(string), down <-chan string) {
	switch cfg.mode {
	case "churn":
		runChurnWorker(cfg, idx, send, down)
		return
	case "hold":
		runHoldWorker(cfg, idx, send, down)
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
	res.Conns = nSubs + nPubs
	l, err := newLoop(cfg, nSubs, nPubs, idx)
	if err != nil {
		res.Error = err.Error()
		return
	}
	defer l.closeAll()
	defer l.fill(res)
	res.Error = l.work(res, nSubs, send, down)
}

// fill copies the loop's counters to res.
func (l *loop) fill(res *workerResult) {
	res.DialErrors, res.ProtoErrors, res.Disconnects = l.dialErrors, l.protoErrors, l.disconnects
	res.OutOfOrder, res.Errors, res.Ready = l.outOfOrder, l.errorsOut(), l.readyCount
	res.Published, res.Acked, res.AckReorder, res.Received = l.published, l.acked, l.ackReorder, l.received
	res.Refused, res.LastAck = l.refused, l.lastAck
	res.FirstSend, res.LastRecv = l.firstSend, l.lastRecv
	res.Hist, res.HistMax, res.FrameBytes = l.hist.sparse(), l.hist.max, l.frameBytes
	res.AckHist, res.AckHistMax = l.ackHist.sparse(), l.ackHist.max
	res.PollCalls, res.PollEvents, res.PollFull = l.polls.calls, l.polls.events, l.polls.full
	res.TLSCount = l.tlsCountResult()
	res.ProtoErrors, res.Errors = l.protoErrors, l.errorsOut()
}

// work connects, reports READY, then waits for END (idle) or runs the
// fan-out from GO; it returns a description of what went wrong, if
// anything.
func (l *loop) work(res *workerResult, nSubs int, send func(string), down <-chan string) string {
	if e := l.connectAll(res); e != "" {
		return e
	}
	for _, c := range l.conns[:nSubs] {
		if c.ready {
			res.ReadySubs++
		}
	}
	for _, p := range l.pubs {
		if !p.ready {
			return "publisher connection failed"
		}
	}
	pubID := "-"
	if l.pub != nil {
		pubID = l.pub.id
	}
	send(fmt.Sprintf("READY %d %s", res.ReadySubs, pubID))
	if l.cfg.mode == "idle" {
		if _, ok := l.waitLine(down, "END"); !ok {
			return "timeout waiting for END"
		}
		return ""
	}
	id, ok := l.waitLine(down, "GO")
	if !ok {
		return "timeout waiting for GO"
	}
	pid, epoch, _ := strings.Cut(id, " ")
	l.pubID = pid
	var err error
	if l.epochNs, err = strconv.ParseInt(epoch, 10, 64); err != nil {
		return "bad GO line"
	}
	cpu0, _ := readCPUus(0)
	e := l.runFanout(len(l.pubs) > 0, res.ReadySubs, send, down, res)
	cpu1, _ := readCPUus(0)
	res.CPUus = cpu1 - cpu0
	l.measure(false)
	if l.cfg.metricsURL != "" && e == "" {
		// Keep the connections open while the orchestrator reads the
		// server's metrics, so that no disconnect is counted in them.
		send(fmt.Sprintf("DONE %d", l.acked))
		if _, ok := l.waitLine(down, "CLOSE"); !ok {
			return "timeout waiting for CLOSE"
		}
	}
	return e
}

// connectAll opens every connection, --dial-concurrency at a time, until
// each is ready or failed.
func (l *loop) connectAll(res *workerResult) string {
	t0 := time.Now()
	for l.readyCount+l.failed < l.total {
		if time.Now().After(l.cfg.deadline) {
			return fmt.Sprintf("timeout while connecting: %d of %d ready", l.readyCount, l.total)
		}
		for l.inflight < l.cfg.dialConc && l.nextDial < l.total {
			l.startDial()
		}
		if err := l.poll(20 * time.Millisecond); err != nil {
			return err.Error()
		}
	}
	res.ConnectMs = float64(time.Since(t0).Microseconds()) / 1000
	return ""
}

// waitLine keeps serving the connections (pings, late frames) until a
// line with prefix arrives; it returns the rest of that line.
func (l *loop) waitLine(down <-chan string, prefix string) (string, bool) {
	for time.Now().Before(l.cfg.deadline) {
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

// runFanout publishes (the process holding the publishers) and counts
// deliveries and acks until every expected delivery and answer arrived, the
// drain time ran out, or the deadline passed.
func (l *loop) runFanout(withPub bool, readySubs int, send func(string), down <-chan string, res *workerResult) string {
	cfg := l.cfg
	l.measure(true)
	p := newPacer(l, readySubs, res)
	publishing := withPub
	endN := int64(-1)
	var drainEnd time.Time
	for {
		now := time.Now()
		if now.After(cfg.deadline) {
			return "timeout during fan-out"
		}
		timeout := 20 * time.Millisecond
		if publishing {
			if !now.Before(p.end) || p.allClosed() {
				publishing = false
				p.finish(now)
				send(fmt.Sprintf("PUBLISHED %d", l.published))
			} else {
				timeout = p.publish(now, timeout)
			}
		}
		select {
		case line, open := <-down:
			if !open {
				return "the orchestrator's lines ended during the fan-out"
			}
			if rest, ok := strings.CutPrefix(line, "END "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
				if err != nil {
					return "bad END line"
				}
				endN, l.endN = n, n
				drainEnd = now.Add(cfg.drain)
			}
		default:
		}
		if endN >= 0 {
			done := l.received >= endN*int64(readySubs) && (!withPub || l.acked+l.refused >= l.published)
			if done || now.After(drainEnd) {
				return ""
			}
		}
		if err := l.poll(timeout); err != nil {
			return err.Error()
		}
	}
}

// pacer decides when the publishers publish.
//
// Publishing waits while a publisher has --window unanswered publishes, or
// while the subscribers of this process are on average more than --max-lag
// messages behind (at any rate). At a fixed rate, publishes that fell due
// while publishing waited are skipped, not made up later (counted in
// res.Skipped; the waiting time in res.HeldNs): the offered rate is a
// ceiling, and what the server can deliver sets the real one.
type pacer struct {
	l         *loop
	res       *workerResult
	subs      int64
	end       time.Time     // publishing ends
	interval  time.Duration // between publishes at a fixed rate
	nextPub   time.Time     // the next publish is due
	heldSince time.Time     // publishing waits since (zero: it does not)
	rr        int           // next publisher, round robin
}

func newPacer(l *loop, readySubs int, res *workerResult) *pacer {
	start := time.Now()
	p := &pacer{l: l, res: res, subs: int64(readySubs), end: start.Add(l.cfg.duration), nextPub: start}
	if l.cfg.rate > 0 {
		p.interval = time.Duration(float64(time.Second) / l.cfg.rate)
	}
	return p
}

func (p *pacer) lagOK() bool {
	l := p.l
	return l.cfg.maxLag <= 0 || p.subs == 0 || l.published*p.subs-l.received <= int64(l.cfg.maxLag)*p.subs
}

func (p *pacer) canPublish(c *conn) bool {
	return c.pubSent-c.pubAnswered < int64(p.l.cfg.window) && len(c.out) == 0 && !c.closed()
}

// nextPublisher returns a publisher that may publish now, or nil.
func (p *pacer) nextPublisher() *conn {
	if !p.lagOK() {
		return nil
	}
	pubs := p.l.pubs
	for range pubs {
		c := pubs[p.rr]
		p.rr = (p.rr + 1) % len(pubs)
		if p.canPublish(c) {
			return c
		}
	}
	return nil
}

func (p *pacer) allClosed() bool {
	for _, c := range p.l.pubs {
		if !c.closed() {
			return false
		}
	}
	return true
}

// finish ends publishing at now.
func (p *pacer) finish(now time.Time) {
	if !p.heldSince.IsZero() {
		p.res.HeldNs += int64(now.Sub(p.heldSince))
	}
	p.res.PubEnd = now.UnixNano()
}

// publish sends what is due at now and returns how long the loop may wait
// for events (at most timeout).
func (p *pacer) publish(now time.Time, timeout time.Duration) time.Duration {
	l := p.l
	switch {
	case l.cfg.rate > 0:
		return p.publishDue(now, timeout)
	case l.cfg.mode == "publish":
		// Every publisher fills its window; one write each.
		for _, c := range l.pubs {
			b := l.pframe[:0]
			for p.canPublish(c) {
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
	default:
		for c := p.nextPublisher(); c != nil; c = p.nextPublisher() {
			l.publish(c, time.Now().UnixNano())
		}
	}
	return timeout
}

// publishDue publishes at the fixed rate: every publish due by now, unless
// publishing has to wait.
func (p *pacer) publishDue(now time.Time, timeout time.Duration) time.Duration {
	for !p.nextPub.After(now) {
		c := p.nextPublisher()
		if c == nil {
			if p.heldSince.IsZero() {
				p.heldSince = now
			}
			break
		}
		if !p.heldSince.IsZero() {
			p.res.HeldNs += int64(now.Sub(p.heldSince))
			p.heldSince = time.Time{}
			if missed := now.Sub(p.nextPub) / p.interval; missed > 0 {
				p.res.Skipped += int64(missed)
				p.nextPub = p.nextPub.Add(missed * p.interval)
			}
		}
		p.l.publish(c, time.Now().UnixNano())
		p.nextPub = p.nextPub.Add(p.interval)
	}
	if p.heldSince.IsZero() {
		timeout = min(max(time.Until(p.nextPub), 0), timeout)
	}
	return timeout
}
