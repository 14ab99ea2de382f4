package agent

import (
	"errors"

	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
)

// forward sends a message published on worker origin (-1 for the API) to
// every other worker with subscribers of channel, or every other worker
// for a broadcast, then to the other nodes of the cluster, if any.
//
// A node whose only worker acknowledges subscriptions itself (in this
// process, without durable acks, alone) may not have applied yet a subscription
// its client already saw acknowledged: there every message goes to that
// worker, which delivers it to its local subscribers, if any.
func (a *Agent) forward(origin int, channel, from string, data []byte, opaque bool) {
	var buf [nodemsg.MaxWorkers]int
	all := a.cfg.InProcess != nil && !a.cfg.DurableAcks && a.cfg.Cluster == nil
	a.mu.Lock()
	targets := a.tab.targets(buf[:0], origin, channel, all)
	a.mu.Unlock()
	if len(targets) == 0 && a.cl == nil {
		return
	}
	rec := nodemsg.AppendDeliver(nil, channel, from, opaque, data)
	for _, w := range targets {
		a.send(a.slots[w], rec)
	}
	if a.cl != nil {
		a.cl.Publish(channel, rec)
	}
}

// kick asks the worker holding conn to close it; false if unknown.
func (a *Agent) kick(conn string) bool {
	a.mu.Lock()
	c := a.tab.conn(conn)
	w := -1
	if c != nil {
		w = c.worker
	}
	a.mu.Unlock()
	if w < 0 {
		return false
	}
	a.send(a.slots[w], nodemsg.AppendKick(nil, conn))
	return true
}

// send passes a record to worker s through its outbox; it never waits on
// the worker. A worker that cannot take it is failed by the outbox
// (logged, counted, killed and restarted): records for a process that is
// down or being replaced go nowhere, as its connections end with it.
func (a *Agent) send(s *slot, rec []byte) { a.put(s, rec, true) }

func (a *Agent) put(s *slot, rec []byte, flush bool) {
	out := s.out.Load()
	if out == nil {
		return
	}
	put := out.enqueue
	if !flush {
		put = out.hold
	}
	if err := put(rec); errors.Is(err, shm.ErrTooLarge) {
		a.log.Error("record too large for the ring to a worker: not sent", "worker", s.id, "bytes", len(rec))
	}
}

// release wakes worker s for what put without flush left on its ring.
func (a *Agent) release(s *slot) {
	if out := s.out.Load(); out != nil {
		out.release()
	}
}
