package engine

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"github.com/gobwas/ws"
)

// TestOutMsgEncodesOncePerProtocol: however many loops ask for a message's
// frame, concurrently, each protocol's frame is built once and every caller
// gets the very same bytes.
func TestOutMsgEncodesOncePerProtocol(t *testing.T) {
	m := newOutMsg("news", "k1", []byte(`{"x":1}`), false)
	const callers = 16
	var wg sync.WaitGroup
	got := make([][2][]byte, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = [2][]byte{m.frame(false), m.frame(true)}
		}()
	}
	wg.Wait()
	for i := 1; i < callers; i++ {
		for p := range 2 {
			if unsafe.SliceData(got[i][p]) != unsafe.SliceData(got[0][p]) || len(got[i][p]) != len(got[0][p]) {
				t.Fatalf("caller %d got a different frame for protocol %d: encoded more than once", i, p)
			}
		}
	}
	if op := ws.OpCode(got[0][0][0] & 0x0f); op != ws.OpText {
		t.Fatalf("JSON frame opcode %v", op)
	}
	if op := ws.OpCode(got[0][1][0] & 0x0f); op != ws.OpBinary {
		t.Fatalf("binary frame opcode %v", op)
	}
}

// TestOutMsgCopiesData: the message owns its data, so the publisher's read
// buffer can be reused while other loops still deliver it.
func TestOutMsgCopiesData(t *testing.T) {
	in := []byte(`{"x":1}`)
	m := newOutMsg("news", "k1", in, false)
	copy(in, `{"y":2}`)
	if string(m.data) != `{"x":1}` {
		t.Fatalf("data aliases the input: %s", m.data)
	}
}

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
