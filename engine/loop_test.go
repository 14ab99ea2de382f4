package engine

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSubscriberListsModel drives random subscribes, unsubscribes and
// closes against a reference model and checks after each step that every
// channel's subscriber list holds exactly its subscribers, that each
// connection's positions point at itself, and that the subscription
// counter and the hub's interest agree.
func TestSubscriberListsModel(t *testing.T) {
	fx := newFanoutFixture(t, 40, 8) // 40 connections subscribed to "room"
	l := fx.l
	model := map[string]map[*Conn]bool{"room": {}}
	for _, d := range fx.conns {
		model["room"][d.c] = true
	}
	channels := []string{"room", "a", "b", "c"}
	rng := rand.New(rand.NewPCG(1, 2))
	open := slices.Clone(fx.conns)
	for step := range 5000 {
		if len(open) == 0 {
			break
		}
		d := open[rng.IntN(len(open))]
		ch := channels[rng.IntN(len(channels))]
		switch op := rng.IntN(10); {
		case op < 5:
			want := !model[ch][d.c]
			if got := l.subscribe(d.c, ch); got != want {
				t.Fatalf("step %d: subscribe(%s) = %v, want %v", step, ch, got, want)
			}
			if model[ch] == nil {
				model[ch] = map[*Conn]bool{}
			}
			model[ch][d.c] = true
		case op < 9:
			want := model[ch][d.c]
			if got := l.unsubscribe(d.c, ch); got != want {
				t.Fatalf("step %d: unsubscribe(%s) = %v, want %v", step, ch, got, want)
			}
			delete(model[ch], d.c)
		default:
			d.c.Closed()
			for _, set := range model {
				delete(set, d.c)
			}
			open = slices.DeleteFunc(open, func(x *connDriver) bool { return x == d })
		}
		total := 0
		for _, ch := range channels {
			sl := l.subs[ch]
			total += len(model[ch])
			if len(model[ch]) == 0 {
				if sl != nil {
					t.Fatalf("step %d: channel %s has an empty list left", step, ch)
				}
				if l.srv.hub.interest[ch]&(1<<l.idx) != 0 {
					t.Fatalf("step %d: hub still interested in %s", step, ch)
				}
				continue
			}
			if sl == nil || len(sl.conns) != len(model[ch]) || l.srv.hub.interest[ch]&(1<<l.idx) == 0 {
				t.Fatalf("step %d: channel %s list %v, want %d subscribers", step, ch, sl, len(model[ch]))
			}
			for pos, c := range sl.conns {
				i := slices.Index(c.chans, ch)
				if !model[ch][c] || i < 0 || int(c.subPos[i]) != pos {
					t.Fatalf("step %d: channel %s position %d: subscribed %v, chans %v, positions %v", step, ch, pos, model[ch][c], c.chans, c.subPos)
				}
			}
		}
		if got := l.stats.subscriptions.Load(); got != int64(total) {
			t.Fatalf("step %d: subscriptions counter %d, want %d", step, got, total)
		}
	}
}
