package agent

import (
	"crypto/tls"
	"slices"
	"time"

	"github.com/zenconn/server/cluster"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/store"
)

// The audit hand-off: sessions and records go to the store; the answers
// to durable publishes and subscriptions go back to their worker once the
// store has committed them.

// closeAbnormal is the close code recorded for connections that ended
// without a close frame: a worker that died, or a node that restarted
// (RFC 6455 section 7.4.1).
const closeAbnormal = 1006

// audit appends a record to the store, stamped with the node id. It
// blocks while the store's queue is full, which holds back the ring it is
// called from: backpressure on the worker, never a dropped record.
func (a *Agent) audit(r *store.Record, done func(error)) {
	r.Node = a.cfg.Node
	if done != nil && !a.cfg.DurableAcks {
		// The record is in the agent's hands: that is the promise of the
		// batch and none modes.
		a.st.Append(r, nil)
		done(nil)
		return
	}
	a.st.Append(r, done)
}

// answer returns the callback that sends Done(token) to worker s. The
// store calls it from its writer goroutine, which must not block: send
// only hands the record to the worker's outbox.
func (a *Agent) answer(s *slot, token uint64) func(error) {
	return func(err error) {
		if err != nil {
			a.log.Error("audit record not written", "err", err)
		}
		a.send(s, nodemsg.AppendDone(nil, token, err != nil))
	}
}

// putSession writes the session of connection id: open, or ended at end
// with close code; first says it is the connection's opening (nothing of
// its session stored yet). It returns the session's user.
func (a *Agent) putSession(id string, c *connRec, end time.Time, code int, first bool) string {
	a.mu.Lock()
	se := store.Session{Conn: id, Node: a.cfg.Node, Worker: c.worker, User: c.user, Remote: c.remote,
		UserAgent: c.userAgent, Protocol: c.protocl, Connected: connectedAt(c.connected),
		Disconnected: end, CloseCode: code, Channels: slices.Clone(c.joined), First: first}
	se.Scheme, se.TLSVersion, se.TLSCipher = c.tlsNames()
	a.mu.Unlock()
	// Not under a.mu: PutSession may wait for room in the store's queue.
	a.st.PutSession(&se)
	return se.User
}

// closeGoingAway is the close code of the sessions a node's stop ends:
// its workers close their connections with it (RFC 6455 section 7.4.1).
const closeGoingAway = 1001

// keepTable reports whether the connections that end now stay in the
// table: while a node without a cluster stops, the table goes with the
// agent and the stop mark ends their sessions, so the agent spends
// nothing on each of a million closes (with a cluster, the other nodes
// hear of each one).
func (a *Agent) keepTable() bool { return a.stopping.Load() && a.cl == nil }

// closeSession ends connection id's session and audits the disconnect;
// while the node stops it only counts it (markStopped).
func (a *Agent) closeSession(id string, c *connRec, code int) {
	if a.stopping.Load() {
		a.leftOpen.Add(1)
		return
	}
	user := a.putSession(id, c, time.Now(), code, false)
	a.audit(&store.Record{Worker: c.worker, Conn: id, User: user, Op: store.OpDisconnect, Code: code}, nil)
}

// dropWorker removes a dead worker's connections and interest from the
// table; their sessions end with 1006.
func (a *Agent) dropWorker(w int) {
	if a.keepTable() {
		return
	}
	a.mu.Lock()
	gone := a.tab.dropWorker(w)
	a.mu.Unlock()
	for id, c := range gone {
		a.emit(cluster.KindDisconnect, cluster.Event{Conn: id, User: c.user, Worker: w, Code: closeAbnormal})
		if a.st != nil {
			a.closeSession(id, c, closeAbnormal)
		}
	}
}

// tlsNames returns the connection's scheme and, over TLS, its version and
// cipher suite as crypto/tls names them.
func (c *connRec) tlsNames() (scheme, version, cipher string) {
	if c.tlsVersion == 0 {
		return "ws", "", ""
	}
	return "wss", tls.VersionName(c.tlsVersion), tls.CipherSuiteName(c.tlsCipher)
}

// markStopped ends, with one stop mark in the store, the sessions the
// node's stop closed: a million session ends and disconnect records
// would keep the node from exiting for minutes (its clients waiting to
// reconnect). The store reads them as ended at the mark, with 1001, and
// writes their ends at the next start (store.CloseActive).
func (a *Agent) markStopped() {
	a.mu.Lock()
	n := a.leftOpen.Load() + int64(a.tab.conns.Len())
	a.mu.Unlock()
	if a.st == nil || n == 0 {
		return
	}
	if err := a.st.MarkStopped(time.Now(), closeGoingAway); err != nil {
		a.log.Warn("the sessions ended by the stop stay open until the next start ends them with 1006", "sessions", n, "err", err)
		return
	}
	a.log.Info("the sessions ended by the stop are recorded by one stop mark", "sessions", n)
}
