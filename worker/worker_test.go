package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/engine"
	"github.com/zenconn/server/internal/leaktest"
	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// node is a worker under test with the test playing its agent: the test
// reads the worker's rings itself and writes the agent's records.
type node struct {
	t       *testing.T
	addr    string
	toAgent []*shm.Ring
	from    *shm.Producer
	cons    []*shm.Consumer
	seen    []nodemsg.Msg // records read so far, with their bytes copied
}

// startWorker runs worker.Run with real rings and a real engine on
// loopback, and waits for its Ready record.
func startWorker(t *testing.T, durable, alone bool) *node {
	t.Helper()
	n := &node{t: t}
	rings, err := link.Create(3, 1, 1<<20) // one loop
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rings.Close() })
	n.toAgent, n.from = rings.ToAgent(), rings.FromAgent().Producer()
	for _, r := range n.toAgent {
		n.cons = append(n.cons, r.Consumer())
	}
	resolved, placeholder, err := engine.ReservePort("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = resolved
	ecfg := engine.Config{Addr: resolved, PublicDir: t.TempDir(), Node: "n1", DurableAcks: durable,
		Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, ecfg, Config{ID: 3, Rings: rings, Alone: alone, Log: slog.New(slog.DiscardHandler)})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	n.waitFor(nodemsg.KindReady, "")
	// The engine listens now; the placeholder must not take connections.
	_ = placeholder.Close()
	return n
}

// poll reads whatever the worker wrote so far.
func (n *node) poll() {
	var m nodemsg.Msg
	for _, c := range n.cons {
		_, _ = c.Read(func(rec []byte) {
			if err := nodemsg.Decode(rec, &m); err != nil {
				n.t.Errorf("bad record %x: %v", rec, err)
				return
			}
			m.Data = append([]byte(nil), m.Data...)
			n.seen = append(n.seen, m)
		})
	}
}

// waitFor polls until a record of kind (and conn or channel, when not "")
// arrived, and returns it.
func (n *node) waitFor(kind byte, key string) nodemsg.Msg {
	n.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		n.poll()
		for _, m := range n.seen {
			if m.Kind == kind && (key == "" || m.Conn == key || m.Channel == key) {
				return m
			}
		}
		time.Sleep(time.Millisecond)
	}
	n.t.Fatalf("no record of kind %d (%q) from the worker; seen %+v", kind, key, n.seen)
	return nodemsg.Msg{}
}

func (n *node) sendAgent(rec []byte) {
	n.t.Helper()
	if err := n.from.Write(rec, time.Second); err != nil {
		n.t.Fatal(err)
	}
}

type client struct {
	t    *testing.T
	c    *websocket.Conn
	conn string
	mu   sync.Mutex
}

func (n *node) dial(t *testing.T) *client {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+n.addr+"/ws", map[string][]string{"User-Agent": {"worker-test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	cl := &client{t: t, c: c}
	w := cl.read(time.Second)
	cl.conn, _ = w["conn"].(string)
	if w["op"] != "welcome" || cl.conn == "" || w["node"] != "n1" {
		t.Fatalf("welcome %v", w)
	}
	return cl
}

// read returns the next message, or {"err": …} when none came within d
// (the connection is unusable afterwards).
func (c *client) read(d time.Duration) map[string]any {
	c.t.Helper()
	_ = c.c.SetReadDeadline(time.Now().Add(d))
	_, b, err := c.c.ReadMessage()
	if err != nil {
		return map[string]any{"err": err}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("%s: %v", b, err)
	}
	return m
}

func (c *client) send(s string) {
	c.t.Helper()
	if err := c.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func isAck(m map[string]any, id float64) bool { return m["op"] == "ack" && m["id"] == id }

// TestBridge: the worker reports a connection and its subscription to the
// agent, acknowledges the subscription only once the agent answers,
// acknowledges a publish only after its record is in the ring, delivers
// the agent's messages and closes a kicked connection with 4100.
func TestBridge(t *testing.T) {
	n := startWorker(t, false, false)
	c := n.dial(t)
	o := n.waitFor(nodemsg.KindOpened, c.conn)
	if o.Agent != "worker-test" || o.Proto != "json" || o.Remote == "" {
		t.Fatalf("opened record %+v", o)
	}

	c.send(`{"op":"subscribe","channel":"news","id":1}`)
	sub := n.waitFor(nodemsg.KindSub, "news")
	// A ping sent now is answered before the subscription: its ack waits
	// for the agent.
	c.send(`{"op":"ping"}`)
	if m := c.read(5 * time.Second); m["op"] != "pong" {
		t.Fatalf("got %v before the agent answered the subscription, want the pong", m)
	}
	n.sendAgent(nodemsg.AppendDone(nil, sub.Token, false))
	if m := c.read(5 * time.Second); !isAck(m, 1) {
		t.Fatalf("subscribe: got %v, want ack 1", m)
	}

	// The ack of a publish follows its record into the ring: once the
	// client has it, the record is there even though the agent has not
	// read yet.
	c.send(`{"op":"publish","channel":"news","data":{"k":1},"id":2}`)
	if m := c.read(5 * time.Second); !isAck(m, 2) {
		t.Fatalf("publish: got %v, want ack 2", m)
	}
	if n.toAgent[0].Published() == n.toAgent[0].Consumed() {
		t.Fatal("publish acknowledged before its record was in the ring")
	}
	if p := n.waitFor(nodemsg.KindPublish, "news"); p.From != c.conn || string(p.Data) != `{"k":1}` || p.Token != 0 {
		t.Fatalf("publish record %+v", p)
	}

	// A forbidden op is reported as refused.
	c.send(`{"op":"subscribe","channel":"private-x","id":3}`)
	if m := c.read(5 * time.Second); m["op"] != "error" {
		t.Fatalf("private subscribe: %v", m)
	}
	if r := n.waitFor(nodemsg.KindRefused, "private-x"); r.Op != "subscribe" || r.Code != "unauthorized" || r.Conn != c.conn {
		t.Fatalf("refused record %+v", r)
	}

	n.sendAgent(nodemsg.AppendDeliver(nil, "news", "other", false, []byte(`"from afar"`)))
	if m := c.read(5 * time.Second); m["op"] != "message" || m["data"] != "from afar" || m["from"] != "other" {
		t.Fatalf("deliver: got %v", m)
	}

	n.sendAgent(nodemsg.AppendKick(nil, c.conn))
	if m := c.read(5 * time.Second); !websocket.IsCloseError(m["err"].(error), 4100) {
		t.Fatalf("kick: got %v, want close 4100", m)
	}
	if cl := n.waitFor(nodemsg.KindClosed, c.conn); cl.Status != 4100 {
		t.Fatalf("closed record %+v", cl)
	}
}

// TestDurablePublish: with durable acks the ack waits for the agent's
// Done for the publish's token; a failed Done gives the client an error.
func TestDurablePublish(t *testing.T) {
	n := startWorker(t, true, false)
	c := n.dial(t)
	c.send(`{"op":"publish","channel":"news","data":1,"id":1}`)
	p := n.waitFor(nodemsg.KindPublish, "news")
	if p.Token == 0 {
		t.Fatalf("durable publish without a token: %+v", p)
	}
	c.send(`{"op":"ping"}`)
	if m := c.read(5 * time.Second); m["op"] != "pong" {
		t.Fatalf("got %v before the record was durable, want the pong", m)
	}
	n.sendAgent(nodemsg.AppendDone(nil, p.Token, false))
	if m := c.read(5 * time.Second); !isAck(m, 1) {
		t.Fatalf("got %v, want ack 1", m)
	}
	c.send(`{"op":"broadcast","data":2,"id":2}`) // refused: anonymous
	if m := c.read(5 * time.Second); m["op"] != "error" {
		t.Fatalf("anonymous broadcast: %v", m)
	}
	c.send(`{"op":"publish","channel":"other","data":3,"id":3}`)
	p = n.waitFor(nodemsg.KindPublish, "other")
	n.sendAgent(nodemsg.AppendDone(nil, p.Token, true))
	if m := c.read(5 * time.Second); m["op"] != "error" || m["code"] != "internal" || m["id"] != float64(3) {
		t.Fatalf("failed durable publish: got %v, want an internal error for id 3", m)
	}
	// A publish without an id asks for no ack: no token.
	c.send(`{"op":"publish","channel":"third","data":4}`)
	if p := n.waitFor(nodemsg.KindPublish, "third"); p.Token != 0 {
		t.Fatalf("publish without id carries token %d", p.Token)
	}
}

// TestAloneSubscribe: the node's only worker acknowledges a subscription
// without waiting for the agent, and tells the agent with token 0 (no
// answer wanted); with durable acks it still waits.
func TestAloneSubscribe(t *testing.T) {
	n := startWorker(t, false, true)
	c := n.dial(t)
	c.send(`{"op":"subscribe","channel":"news","id":1}`)
	if m := c.read(5 * time.Second); !isAck(m, 1) {
		t.Fatalf("got %v, want ack 1 at once", m)
	}
	if sub := n.waitFor(nodemsg.KindSub, "news"); sub.Token != 0 || sub.Conn != c.conn {
		t.Fatalf("sub record %+v, want token 0", sub)
	}

	d := startWorker(t, true, true)
	c = d.dial(t)
	c.send(`{"op":"subscribe","channel":"news","id":1}`)
	sub := d.waitFor(nodemsg.KindSub, "news")
	if sub.Token == 0 {
		t.Fatal("durable acks: the subscription asks for no answer")
	}
	c.send(`{"op":"ping"}`)
	if m := c.read(5 * time.Second); m["op"] != "pong" {
		t.Fatalf("durable acks: got %v before the agent answered, want the pong", m)
	}
	d.sendAgent(nodemsg.AppendDone(nil, sub.Token, false))
	if m := c.read(5 * time.Second); !isAck(m, 1) {
		t.Fatalf("got %v, want ack 1", m)
	}
}

// TestTickSendsBacklog: table events that found the loop's ring full go
// out at the loop's next Tick, in order, without waiting for its next
// record.
func TestTickSendsBacklog(t *testing.T) {
	rings, err := link.Create(0, 1, shm.MinCapacity)
	if err != nil {
		t.Fatal(err)
	}
	defer rings.Close()
	b := newBridge(rings)
	sent := 0
	for len(b.backlog[0]) < 3 {
		b.Closed(0, fmt.Sprintf("conn-%d", sent), 1000)
		sent++
	}
	c := rings.Loop(0).Consumer()
	read := func() int {
		n, err := c.Read(func([]byte) {})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	got := read()
	if got != sent-3 || read() != 0 {
		t.Fatalf("%d records on the ring of %d sent, with 3 in the backlog", got, sent)
	}
	b.Tick(0)
	if n := read(); n != 3 || len(b.backlog[0]) != 0 {
		t.Fatalf("after Tick: %d records read, %d still in the backlog; want 3, 0", n, len(b.backlog[0]))
	}
}
