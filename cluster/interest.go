package cluster

import (
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// flushWait bounds how long a change of interest waits for NATS to
// confirm it; an unconnected client does not wait (its subscriptions are
// sent again when it reconnects).
const flushWait = 2 * time.Second

// interest keeps one NATS subscription per channel with local
// subscribers. The host's changes (want) only mark a channel dirty, under
// a mutex, so the agent never waits on NATS; the run goroutine applies
// them in batches, then confirms them with a flush (a round trip to the
// server: after it the server routes the channel's messages here) and
// answers the subscribers waiting for that (live).
type interest struct {
	nc     *nats.Conn
	prefix string // P.msg.
	msgs   chan *nats.Msg
	log    *slog.Logger
	wake   chan struct{}
	// retire, if set, is called with a subscription before it ends.
	retire func(*nats.Subscription)
	// confirm, if set, returns once the other NATS servers have the
	// subscriptions this server has (see Cluster.syncPeers).
	confirm func()

	mu    sync.Mutex
	chans map[string]*chanState
	dirty []string
}

type chanState struct {
	want, dirty, live bool
	waiters           []func(error)
	sub               *nats.Subscription // only the run goroutine touches it
}

func newInterest(nc *nats.Conn, prefix string, msgs chan *nats.Msg, log *slog.Logger) *interest {
	return &interest{nc: nc, prefix: prefix, msgs: msgs, log: log, wake: make(chan struct{}, 1), chans: map[string]*chanState{}}
}

func (in *interest) want(ch string, on bool) {
	in.mu.Lock()
	st := in.chans[ch]
	if st == nil {
		if !on {
			in.mu.Unlock()
			return
		}
		st = &chanState{}
		in.chans[ch] = st
	}
	st.want = on
	if !on {
		st.live = false
	}
	if !st.dirty {
		st.dirty = true
		in.dirty = append(in.dirty, ch)
	}
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

func (in *interest) live(ch string, done func(error)) {
	in.mu.Lock()
	st := in.chans[ch]
	if st == nil || st.live {
		in.mu.Unlock()
		done(nil)
		return
	}
	st.waiters = append(st.waiters, done)
	in.mu.Unlock()
}

// count is the number of channels subscribed or about to be.
func (in *interest) count() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.chans)
}

func (in *interest) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			in.release()
			return
		case <-in.wake:
		}
		in.apply()
	}
}

// apply takes the dirty channels, subscribes or unsubscribes them,
// confirms with a flush and answers the waiters of the channels now live.
func (in *interest) apply() {
	in.mu.Lock()
	batch := in.dirty
	in.dirty = nil
	wants := make([]bool, len(batch))
	states := make([]*chanState, len(batch))
	for i, ch := range batch {
		st := in.chans[ch]
		st.dirty = false
		wants[i], states[i] = st.want, st
	}
	in.mu.Unlock()
	added := false
	for i, ch := range batch {
		added = in.sync(ch, states[i], wants[i]) || added
	}
	if in.nc.IsConnected() {
		if err := in.nc.FlushTimeout(flushWait); err != nil {
			in.log.Warn("cluster: interest not confirmed by NATS", "err", err)
		} else if added && in.confirm != nil {
			in.confirm()
		}
	}
	in.settle(batch, states)
}

// sync makes channel ch's subscription match want; it reports whether it
// subscribed.
func (in *interest) sync(ch string, st *chanState, want bool) bool {
	switch {
	case want && st.sub == nil:
		sub, err := in.nc.ChanSubscribe(string(AppendToken([]byte(in.prefix), ch)), in.msgs)
		if err != nil {
			in.log.Error("cluster: subscribe", "channel", ch, "err", err)
			return false
		}
		st.sub = sub
		return true
	case !want && st.sub != nil:
		if in.retire != nil {
			in.retire(st.sub)
		}
		_ = st.sub.Unsubscribe()
		st.sub = nil
	}
	return false
}

// settle marks live the channels of batch still wanted and answers their
// waiters; channels no longer wanted leave the map.
func (in *interest) settle(batch []string, states []*chanState) {
	var answer []func(error)
	in.mu.Lock()
	for i, ch := range batch {
		st := states[i]
		if st.dirty || in.chans[ch] != st {
			continue // changed again meanwhile: the next batch settles it
		}
		if st.want && st.sub != nil {
			st.live = true
		}
		if !st.want || st.sub != nil {
			answer = append(answer, st.waiters...)
			st.waiters = nil
		}
		if !st.want && st.sub == nil {
			delete(in.chans, ch)
		}
	}
	in.mu.Unlock()
	for _, done := range answer {
		done(nil)
	}
}

// release answers every waiter when the cluster stops.
func (in *interest) release() {
	in.mu.Lock()
	var answer []func(error)
	for _, st := range in.chans {
		answer = append(answer, st.waiters...)
		st.waiters = nil
		st.live = true
	}
	in.mu.Unlock()
	for _, done := range answer {
		done(nil)
	}
}
