package engine

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
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

// TestDrainRuns posts a batch mixing channels and broadcasts to a loop and
// checks that every subscriber, JSON or binary, gets exactly its messages,
// byte for byte and in the order posted, in one write for the drain, and
// that the loop counts one message out per message and subscriber.
func TestDrainRuns(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	open := func(bin bool, subs ...string) *connDriver {
		d := newConnDriver(t, s, l, e)
		d.feed([]byte(upgradeRequestFor(bin)))
		for _, ch := range subs {
			if bin {
				d.feed(clientFrame(true, ws.OpBinary, append([]byte{proto.BinSubscribe, byte(len(ch))}, ch...)))
			} else {
				d.feed(clientFrame(true, ws.OpText, []byte(`{"op":"subscribe","channel":"`+ch+`"}`)))
			}
		}
		if len(d.c.chans) != len(subs) {
			t.Fatalf("subscribed to %v, want %v", d.c.chans, subs)
		}
		d.t.takeOut()
		d.t.writes = 0
		return d
	}
	roomJSON, roomBin := open(false, "room"), open(true, "room")
	both, other, none := open(false, "room", "other"), open(true, "other"), open(false)

	big := strings.Repeat("y", maxRunBytes/2)
	var batch []*outMsg
	add := func(channel, data string) {
		batch = append(batch, newOutMsg(channel, "api", []byte(`"`+data+`"`), false))
	}
	add("room", "r1")
	add("room", "r2")
	add("other", "o1")
	add("room", "r3")
	add("", "b1")
	add("", "b2")
	add("room", big) // r4, r5 and r6 cannot share one run
	add("room", big)
	add("room", big)
	add("room", "r7")
	for _, m := range batch {
		l.post(delivery{msg: m})
	}
	out0 := l.stats.messagesOut.Load()
	e.run()

	want := func(d *connDriver) []byte {
		var b []byte
		for _, m := range batch {
			if m.channel == "" || d.c.subscribed(m.channel) {
				b = append(b, m.frame(d.c.bin)...)
			}
		}
		return b
	}
	total := 0
	for name, d := range map[string]*connDriver{"room JSON": roomJSON, "room binary": roomBin, "room and other": both, "other binary": other, "none": none} {
		w := want(d)
		total += len(readServerFrames(t, w))
		if got := d.t.takeOut(); !bytes.Equal(got, w) {
			t.Errorf("%s: got %d bytes, want %d:\n got % x\nwant % x", name, len(got), len(w), got[:min(len(got), 96)], w[:min(len(w), 96)])
		}
		if d.t.writes != 1 {
			t.Errorf("%s: %d writes for the drain, want 1", name, d.t.writes)
		}
	}
	if got := l.stats.messagesOut.Load() - out0; got != uint64(total) {
		t.Errorf("messages out: %d, want %d", got, total)
	}
}

// TestPublishBurstRuns: a burst of publishes read at once on a loop
// reaches the loop's other subscribers in order, in one write each, and
// never its publisher, though it is subscribed too; the publisher gets its
// acks.
func TestPublishBurstRuns(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	open := func(bin bool) *connDriver {
		d := newConnDriver(t, s, l, e)
		d.feed([]byte(upgradeRequestFor(bin)))
		if bin {
			d.feed(clientFrame(true, ws.OpBinary, []byte{proto.BinSubscribe, 4, 'r', 'o', 'o', 'm'}))
		} else {
			d.feed(clientFrame(true, ws.OpText, []byte(`{"op":"subscribe","channel":"room"}`)))
		}
		d.t.takeOut()
		d.t.writes = 0
		return d
	}
	pub, subJSON, subBin := open(false), open(false), open(true)
	var in []byte
	var msgs []*outMsg
	for i := range 6 {
		data := `"m` + strconv.Itoa(i) + `"`
		in = append(in, clientFrame(true, ws.OpText, []byte(`{"id":`+strconv.Itoa(i+1)+`,"op":"publish","channel":"room","data":`+data+`}`))...)
		msgs = append(msgs, newOutMsg("room", pub.c.id, []byte(data), false))
	}
	pub.feed(in)
	for name, d := range map[string]*connDriver{"JSON": subJSON, "binary": subBin} {
		var want []byte
		for _, m := range msgs {
			want = append(want, m.frame(d.c.bin)...)
		}
		if got := d.t.takeOut(); !bytes.Equal(got, want) {
			t.Errorf("%s subscriber: got\n%s\nwant\n%s", name, got, want)
		}
		if d.t.writes != 1 {
			t.Errorf("%s subscriber: %d writes, want 1", name, d.t.writes)
		}
	}
	frames := readServerFrames(t, pub.t.takeOut())
	if len(frames) != len(msgs) {
		t.Fatalf("publisher got %d frames, want %d acks", len(frames), len(msgs))
	}
	for i, f := range frames {
		if want := `{"op":"ack","id":` + strconv.Itoa(i+1) + `}`; string(f.Payload) != want {
			t.Errorf("publisher frame %d: %s, want %s", i, f.Payload, want)
		}
	}
}

// TestDirectPassSwitches: a direct pass (an isolated message on a quiet
// loop) that sees a delivery posted meanwhile queues the rest of its
// frames, and the drain sends them with the posted message before it
// ends: subscribers served before the switch get two writes, the others
// one, and every subscriber gets both messages in order.
func TestDirectPassSwitches(t *testing.T) {
	fx, m1, m2 := postDuringWrite(t, 3*switchEvery, switchEvery/2)
	l := fx.l
	time.Sleep(2 * burstGap) // a quiet loop: the pass is direct
	l.post(delivery{msg: m1})
	fx.exec.run()
	want := append(append([]byte(nil), m1.frame(false)...), m2.frame(false)...)
	checkTwoWrites(t, fx.conns, want, switchEvery)
}

// postDuringWrite makes a fixture of n subscribers that record their
// writes, and two messages: the second is posted to the loop during the
// first write to subscriber at.
func postDuringWrite(t *testing.T, n, at int) (fx *fanoutFixture, m1, m2 *outMsg) {
	fx = newFanoutFixture(t, n, 16)
	m1 = newOutMsg("room", "api", []byte(`"first"`), false)
	m2 = newOutMsg("room", "api", []byte(`"second"`), false)
	for i, d := range fx.conns {
		d.t.record, d.t.writes = true, 0
		if i == at {
			d.t.check = func([]byte) {
				if d.t.writes == 0 {
					fx.l.post(delivery{msg: m2})
				}
			}
		}
	}
	return fx, m1, m2
}

// checkTwoWrites checks that every subscriber got want, the first n in two
// writes and the others in one.
func checkTwoWrites(t *testing.T, conns []*connDriver, want []byte, n int) {
	t.Helper()
	for i, d := range conns {
		if got := d.t.takeOut(); !bytes.Equal(got, want) {
			t.Fatalf("subscriber %d got %q, want %q", i, got, want)
		}
		wantWrites := 1
		if i < n {
			wantWrites = 2
		}
		if d.t.writes != wantWrites {
			t.Errorf("subscriber %d: %d writes, want %d", i, d.t.writes, wantWrites)
		}
	}
}

// TestFlushTakesPosted: a delivery posted while a pass is writing is
// queued at once; the subscribers not yet written get it in the same write
// as what the pass was writing, those already written in a second one
// (the next pass, a flush task), and all in order.
func TestFlushTakesPosted(t *testing.T) {
	const at = switchEvery + switchEvery/2
	fx, m1, m2 := postDuringWrite(t, 4*switchEvery, at)
	l := fx.l
	l.lastDeliver = time.Now().UnixNano() // not quiet: the pass is queued, then flushed
	l.post(delivery{msg: m1})
	fx.exec.run()
	want := append(append([]byte(nil), m1.frame(false)...), m2.frame(false)...)
	checkTwoWrites(t, fx.conns, want, at+1)
	if len(l.dirty) != 0 || l.passQueued {
		t.Errorf("after the passes: %d dirty, flush queued %v", len(l.dirty), l.passQueued)
	}
}

// TestFlushTakesBounded: when a delivery is posted at every write of a
// pass, the pass takes them about passTakes times, not once per write
// (the first writes of the pass show as many different contents as there
// were takes); every subscriber still gets every message, in order.
func TestFlushTakesBounded(t *testing.T) {
	const n = 16 * switchEvery
	fx := newFanoutFixture(t, n, 16)
	l := fx.l
	l.slice = time.Hour // one pass, not slices of it
	want := append([]byte(nil), fx.frame...)
	firsts := map[int]bool{} // lengths of the pass's first writes
	for i, d := range fx.conns {
		d.t.record, d.t.writes = true, 0
		d.t.check = func(p []byte) {
			if d.t.writes == 0 {
				firsts[len(p)] = true
				m := newOutMsg("room", "api", []byte(strconv.Itoa(i)), false)
				want = append(want, m.frame(false)...)
				l.post(delivery{msg: m})
			}
		}
	}
	l.lastDeliver = time.Now().UnixNano()
	l.post(delivery{msg: fx.msg})
	fx.exec.run()
	for i, d := range fx.conns {
		if got := d.t.takeOut(); !bytes.Equal(got, want) {
			t.Fatalf("subscriber %d got %d bytes, want %d", i, len(got), len(want))
		}
	}
	if len(firsts) < 2 || len(firsts) > passTakes+2 {
		t.Errorf("the pass's first writes had %d different lengths, want 2 to %d (one more than its takes)", len(firsts), passTakes+2)
	}
}

// TestPassYields: a long pass stops after a slice and lets the loop serve
// its sockets; a publish read meanwhile is queued, not written, and leaves
// with the rest of the pass: the connections the pass had not reached get
// both messages in one write.
func TestPassYields(t *testing.T) {
	const n = 2 * passSliceMin
	fx := newFanoutFixture(t, n, 16)
	l := fx.l
	l.slice = 0
	pub := newConnDriver(t, fx.s, l, fx.exec)
	pub.feed([]byte(upgradeRequest))
	pub.t.takeOut()
	for _, d := range fx.conns {
		d.t.record, d.t.writes = true, 0
	}
	l.lastDeliver = time.Now().UnixNano()
	l.post(delivery{msg: fx.msg})
	fx.exec.runOne() // the drain: one slice of the pass
	if !l.yielded || len(l.dirty) != n-passSliceMin {
		t.Fatalf("after one slice: yielded %v, %d connections left, want %d", l.yielded, len(l.dirty), n-passSliceMin)
	}
	pub.feed(clientFrame(true, ws.OpText, []byte(`{"id":1,"op":"publish","channel":"room","data":"p"}`)))
	if frames := readServerFrames(t, pub.t.takeOut()); len(frames) != 1 {
		t.Fatalf("publisher got %d frames, want its ack", len(frames))
	}
	fx.exec.run()
	m := newOutMsg("room", pub.c.id, []byte(`"p"`), false)
	want := append(append([]byte(nil), fx.frame...), m.frame(false)...)
	checkTwoWrites(t, fx.conns, want, passSliceMin)
	if l.yielded || len(l.dirty) != 0 {
		t.Errorf("after the pass: yielded %v, %d dirty", l.yielded, len(l.dirty))
	}
}

// TestPublishLocalKeepsOrder: a publish read alone, after a burst whose
// messages still wait in the loop's inbox, reaches the subscribers after
// them, not before.
func TestPublishLocalKeepsOrder(t *testing.T) {
	fx := newFanoutFixture(t, 2, 8)
	l, pub := fx.l, fx.conns[0]
	sub := fx.conns[1]
	sub.t.record = true
	var msgs []*outMsg
	for i := range 3 {
		msgs = append(msgs, newOutMsg("room", pub.c.id, []byte(strconv.Itoa(i)), false))
	}
	time.Sleep(2 * burstGap)
	l.publishLocal(msgs[0], pub.c)
	l.publishLocal(msgs[1], pub.c) // a burst: into the inbox
	time.Sleep(2 * burstGap)       // quiet again, the inbox not drained yet
	l.publishLocal(msgs[2], pub.c)
	fx.exec.run()
	var want []byte
	for _, m := range msgs {
		want = append(want, m.frame(false)...)
	}
	if got := sub.t.takeOut(); !bytes.Equal(got, want) {
		t.Fatalf("subscriber got %q, want %q", got, want)
	}
}
