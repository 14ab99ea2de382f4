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
