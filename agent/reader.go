package agent

import (
	"time"

	"github.com/zenconn/server/cluster"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
	"github.com/zenconn/server/store"
)

// busyPoll is how often a reader polls its ring while records keep
// coming. Woken per record, the reader costs the worker an eventfd write
// and the core a thread switch for every connection, subscription and
// publish; when wake-ups come closer than busyPoll apart, the reader
// sleeps busyPoll between reads instead, without announcing it, so the
// worker does not wake it, and goes back to wake-ups once a read finds
// nothing. A record then waits up to busyPoll to be applied (a
// subscription acknowledged by the agent, a query's settle).
const busyPoll = 500 * time.Microsecond

// readWorker applies the records of one ring from worker s until stop.
func (a *Agent) readWorker(s *slot, r *shm.Ring, stop <-chan struct{}) {
	c := r.Consumer()
	var m nodemsg.Msg
	var (
		busy     bool
		lastWake time.Time
		tick     *time.Timer
	)
	for {
		if busy {
			if tick == nil {
				tick = time.NewTimer(busyPoll)
			} else {
				tick.Reset(busyPoll)
			}
			select {
			case <-tick.C:
			case <-stop:
			}
		} else {
			c.Wait(-1) // returns at once after Interrupt
		}
		stopped := false
		select {
		case <-stop:
			// The process is gone: this Read takes its last records.
			stopped = true
		default:
		}
		n, err := c.Read(func(rec []byte) {
			if err := nodemsg.Decode(rec, &m); err != nil {
				a.log.Error("bad record from a worker", "worker", s.id, "err", err)
				return
			}
			a.apply(s, &m)
		})
		if err != nil {
			a.log.Error("ring from a worker", "worker", s.id, "err", err)
			return
		}
		if stopped {
			return
		}
		switch now := time.Now(); {
		case n == 0:
			busy = false
		case !busy:
			busy = now.Sub(lastWake) < busyPoll
			lastWake = now
		}
	}
}

// apply handles one record from worker s.
func (a *Agent) apply(s *slot, m *nodemsg.Msg) {
	switch m.Kind {
	case nodemsg.KindReady:
		a.onReady(s, m)
	case nodemsg.KindStats:
		s.mu.Lock()
		s.stats = m.Stats
		s.mu.Unlock()
	case nodemsg.KindOpened:
		a.onOpened(s, m)
	case nodemsg.KindClosed:
		a.onClosed(s, m)
	case nodemsg.KindUser:
		a.onUser(s, m)
	case nodemsg.KindSub:
		a.onSub(s, m)
	case nodemsg.KindUnsub:
		a.onUnsub(s, m)
	case nodemsg.KindPublish:
		a.onPublish(s, m)
	case nodemsg.KindRefused:
		a.onRefused(s, m)
	}
}

func (a *Agent) onReady(s *slot, m *nodemsg.Msg) {
	s.mu.Lock()
	s.up = true
	s.mu.Unlock()
	a.log.Info("worker ready", "worker", s.id, "pid", m.PID)
	a.mu.Lock()
	a.readyN++
	all := a.readyN >= len(a.slots)
	a.mu.Unlock()
	if all && a.cfg.Ready != nil {
		a.readyOnce.Do(a.cfg.Ready)
	}
}

func (a *Agent) onOpened(s *slot, m *nodemsg.Msg) {
	c := &connRec{worker: s.id, user: intern(m.User), remote: m.Remote, protocl: intern(m.Proto), tlsVersion: m.TLSVersion, tlsCipher: m.TLSCipher}
	if a.st != nil {
		c.userAgent, c.connected = intern(m.Agent), time.Now().UnixNano()
	}
	a.mu.Lock()
	a.tab.open(m.Conn, c)
	over := a.overUserLimitLocked(m.User)
	a.mu.Unlock()
	if over {
		a.evictForUser(s, m.Conn, m.User)
	}
	a.emit(cluster.KindConnect, cluster.Event{Conn: m.Conn, User: m.User, Worker: s.id, Remote: m.Remote, Protocol: m.Proto})
	if a.st != nil {
		a.putSession(m.Conn, c, time.Time{}, 0, true)
		r := &store.Record{Worker: s.id, Conn: m.Conn, User: m.User, Op: store.OpConnect, Remote: m.Remote}
		r.Scheme, r.TLSVersion, r.TLSCipher = c.tlsNames()
		a.audit(r, nil)
	}
}

func (a *Agent) onClosed(_ *slot, m *nodemsg.Msg) {
	if a.keepTable() {
		return
	}
	a.mu.Lock()
	c := a.tab.close(m.Conn)
	a.mu.Unlock()
	if c != nil {
		a.emit(cluster.KindDisconnect, cluster.Event{Conn: m.Conn, User: c.user, Worker: c.worker, Code: int(m.Status)})
	}
	if c != nil && a.st != nil {
		a.closeSession(m.Conn, c, int(m.Status))
	}
}

func (a *Agent) onUser(s *slot, m *nodemsg.Msg) {
	a.mu.Lock()
	c := a.tab.conn(m.Conn)
	over := false
	if c != nil {
		a.tab.setUser(c, intern(m.User))
		over = a.overUserLimitLocked(m.User)
	}
	a.mu.Unlock()
	if over {
		a.evictForUser(s, m.Conn, m.User)
	}
	if c != nil && a.st != nil {
		a.putSession(m.Conn, c, time.Time{}, 0, false)
		a.audit(&store.Record{Worker: s.id, Conn: m.Conn, User: m.User, Op: store.OpAuth}, nil)
	}
}

func (a *Agent) onSub(s *slot, m *nodemsg.Msg) {
	a.mu.Lock()
	c, added := a.tab.subscribe(m.Conn, m.Channel, a.st != nil)
	a.mu.Unlock()
	// The interest is recorded before the answer: a publish read after
	// this point, from any worker, reaches the subscriber.
	var done func(error)
	if m.Token != 0 {
		done = a.whenLive(m.Channel, a.answer(s, m.Token))
	}
	if added {
		a.emit(cluster.KindSubscribe, cluster.Event{Conn: m.Conn, User: c.user, Worker: s.id, Channel: m.Channel})
	}
	if a.st == nil || !added {
		if done != nil {
			done(nil)
		}
		return
	}
	user := a.putSession(m.Conn, c, time.Time{}, 0, false)
	a.audit(&store.Record{Worker: s.id, Conn: m.Conn, User: user, Op: store.OpSubscribe, Channel: m.Channel}, done)
}

func (a *Agent) onUnsub(s *slot, m *nodemsg.Msg) {
	a.mu.Lock()
	c, removed := a.tab.unsubscribe(m.Conn, m.Channel)
	user := ""
	if removed {
		user = c.user
	}
	a.mu.Unlock()
	if removed {
		a.emit(cluster.KindUnsubscribe, cluster.Event{Conn: m.Conn, User: user, Worker: s.id, Channel: m.Channel})
	}
	if removed && a.st != nil {
		a.audit(&store.Record{Worker: s.id, Conn: m.Conn, User: user, Op: store.OpUnsubscribe, Channel: m.Channel}, nil)
	}
}

func (a *Agent) onPublish(s *slot, m *nodemsg.Msg) {
	opaque := m.Flags&nodemsg.FlagOpaque != 0
	a.forward(s.id, m.Channel, m.From, m.Data, opaque)
	if a.st == nil {
		if m.Token != 0 {
			a.send(s, nodemsg.AppendDone(nil, m.Token, false))
		}
		return
	}
	op := store.OpPublish
	if m.Channel == "" {
		op = store.OpBroadcast
	}
	a.mu.Lock()
	user := ""
	if c := a.tab.conn(m.From); c != nil {
		user = c.user
	}
	a.mu.Unlock()
	var done func(error)
	if m.Token != 0 {
		done = a.answer(s, m.Token)
	}
	a.audit(&store.Record{Worker: s.id, Conn: m.From, User: user, Op: op, Channel: m.Channel, Data: m.Data, Opaque: opaque}, done)
}

func (a *Agent) onRefused(s *slot, m *nodemsg.Msg) {
	if a.st != nil {
		a.audit(&store.Record{Worker: s.id, Conn: m.Conn, User: m.User, Op: store.OpRefused, Attempt: m.Op,
			Channel: m.Channel, Error: m.Code, Remote: m.Remote, Data: m.Data, Opaque: m.Flags&nodemsg.FlagOpaque != 0}, nil)
	}
}
