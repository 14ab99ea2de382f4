package main

import (
	"context"
	"encoding/json"
	"fmt"
	"go.uber.org/goleak"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func startServer(t *testing.T, slow time.Duration, raw bool) (*server, string) {
	t.Helper()
	s := newServer(slow, raw)
	go s.hub.run()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.serve(ln) }()
	t.Cleanup(func() {
		_ = ln.Close()
		s.hub.events <- event{kind: evStop}
	})
	return s, "ws://" + ln.Addr().String() + "/ws"
}

// bufConn reads what ws.Dial buffered before the connection itself.
type bufConn struct {
	net.Conn
	r io.Reader
}

func (b bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

type client struct {
	t  *testing.T
	nc net.Conn
	id string
}

type reply struct {
	Op      string          `json:"op"`
	ID      *int64          `json:"id"`
	Conn    string          `json:"conn"`
	Node    string          `json:"node"`
	Proto   string          `json:"proto"`
	Channel string          `json:"channel"`
	From    string          `json:"from"`
	Data    json.RawMessage `json:"data"`
}

func dial(t *testing.T, url string) *client {
	t.Helper()
	nc, br, _, err := ws.Dial(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	if br != nil {
		// The server's first frames came with the handshake response.
		nc = bufConn{nc, io.MultiReader(br, nc)}
	}
	c := &client{t: t, nc: nc}
	w := c.read()
	if w.Op != "welcome" || w.Conn == "" || w.Node != "floor" || w.Proto != "json" {
		t.Fatalf("welcome: %+v", w)
	}
	c.id = w.Conn
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if err := wsutil.WriteClientText(c.nc, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) read() reply {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := wsutil.ReadServerText(c.nc)
	if err != nil {
		c.t.Fatal(err)
	}
	var r reply
	if err := json.Unmarshal(p, &r); err != nil {
		c.t.Fatalf("%v: %s", err, p)
	}
	return r
}

func (c *client) expectAck(id int64) {
	c.t.Helper()
	if r := c.read(); r.Op != "ack" || r.ID == nil || *r.ID != id {
		c.t.Fatalf("want ack %d, got %+v", id, r)
	}
}

func TestProtocol(t *testing.T) {
	t.Run("raw", func(t *testing.T) { testProtocol(t, true) })
	t.Run("syscall", func(t *testing.T) { testProtocol(t, false) })
}

func testProtocol(t *testing.T, raw bool) {
	_, url := startServer(t, time.Second, raw)
	a, b, pub := dial(t, url), dial(t, url), dial(t, url)
	for _, c := range []*client{a, b, pub} {
		c.send(`{"id":1,"op":"subscribe","channel":"c"}`)
		c.expectAck(1)
	}
	pub.send(`{"id":2,"op":"publish","channel":"c","data":"hello"}`)
	pub.expectAck(2)
	for _, c := range []*client{a, b} {
		r := c.read()
		if r.Op != "message" || r.Channel != "c" || r.From != pub.id || string(r.Data) != `"hello"` {
			t.Fatalf("delivery: %+v", r)
		}
	}
	b.send(`{"id":3,"op":"unsubscribe","channel":"c"}`)
	b.expectAck(3)
	pub.send(`{"id":4,"op":"publish","channel":"c","data":{"n":1}}`)
	pub.expectAck(4)
	if r := a.read(); r.Op != "message" || string(r.Data) != `{"n":1}` {
		t.Fatalf("delivery: %+v", r)
	}
	// Neither the publisher nor the unsubscribed client got anything: the
	// next frame each reads is the pong.
	for _, c := range []*client{b, pub} {
		c.send(`{"op":"ping"}`)
		if r := c.read(); r.Op != "pong" {
			t.Fatalf("want pong, got %+v", r)
		}
	}
	a.send(`{"id":5,"op":"nope"}`)
	if r := a.read(); r.Op != "error" {
		t.Fatalf("want error, got %+v", r)
	}
	// WebSocket ping → pong with the same payload.
	if err := wsutil.WriteClientMessage(a.nc, ws.OpPing, []byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = a.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := ws.ReadFrame(a.nc)
	if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "x" || f.Header.Masked {
		t.Fatalf("pong frame: %+v %v", f.Header, err)
	}
}

// TestSlowSubscriber fills the socket of a subscriber that never reads: the
// fan-out falls back to poll(2), gives up after the slow timeout and drops it,
// while a subscriber that reads gets every message intact despite the short
// writes and EAGAINs on the way.
func TestSlowSubscriber(t *testing.T) {
	s, url := startServer(t, 300*time.Millisecond, true)
	slow, fast, pub := dial(t, url), dial(t, url), dial(t, url)
	for _, c := range []*client{slow, fast, pub} {
		c.send(`{"id":1,"op":"subscribe","channel":"c"}`)
		c.expectAck(1)
	}
	const n = 64
	data := strings.Repeat("y", 256<<10)
	got := make(chan error, 1)
	go func() {
		for i := range n {
			_ = fast.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			p, err := wsutil.ReadServerText(fast.nc)
			if err != nil {
				got <- err
				return
			}
			var r reply
			if err := json.Unmarshal(p, &r); err != nil || string(r.Data) != fmt.Sprintf(`"%d%s"`, i, data) {
				got <- fmt.Errorf("message %d: %v, %d bytes", i, err, len(p))
				return
			}
		}
		got <- nil
	}()
	for i := range n {
		pub.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"c","data":"%d%s"}`, i+2, i, data))
		pub.expectAck(int64(i + 2))
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if s.stats.dropped.Load() != 1 || s.stats.polls.Load() == 0 {
		t.Fatalf("dropped %d polls %d, want 1 and > 0", s.stats.dropped.Load(), s.stats.polls.Load())
	}
	// The server closed the slow subscriber's connection: what it had
	// buffered, then EOF.
	_ = slow.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.Copy(io.Discard, slow.nc); err != nil {
		t.Fatalf("slow subscriber: %v, want EOF", err)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
