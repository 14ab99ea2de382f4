package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/zenconn/server/bench/internal/wire"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type client struct {
	id   string
	ws   *websocket.Conn
	send chan *websocket.PreparedMessage
	done chan struct{}
	once sync.Once
	// channels this client subscribed to; touched only by its reader goroutine.
	subs map[string]struct{}
}

func (c *client) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.ws.Close()
	})
}

type hub struct {
	mu       sync.RWMutex
	channels map[string]map[*client]struct{}
	nextID   atomic.Uint64
	dropped  atomic.Uint64
}

func (h *hub) subscribe(c *client, ch string) {
	h.mu.Lock()
	m := h.channels[ch]
	if m == nil {
		m = make(map[*client]struct{})
		h.channels[ch] = m
	}
	m[c] = struct{}{}
	h.mu.Unlock()
}

func (h *hub) unsubscribe(c *client, ch string) {
	h.mu.Lock()
	if m := h.channels[ch]; m != nil {
		delete(m, c)
		if len(m) == 0 {
			delete(h.channels, ch)
		}
	}
	h.mu.Unlock()
}

// publish queues pm for every subscriber of ch except from. A subscriber whose
// queue is full is a slow consumer and is disconnected.
func (h *hub) publish(from *client, ch string, pm *websocket.PreparedMessage) {
	var slow []*client
	h.mu.RLock()
	for c := range h.channels[ch] {
		if c == from {
			continue
		}
		select {
		case c.send <- pm:
		case <-c.done:
		default:
			slow = append(slow, c)
		}
	}
	h.mu.RUnlock()
	for _, c := range slow {
		h.dropped.Add(1)
		c.close()
	}
}

type server struct {
	hub      *hub
	upgrader websocket.Upgrader
	queue    int
}

func (s *server) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &client{
		id:   "b" + strconv.FormatUint(s.hub.nextID.Add(1), 10),
		ws:   ws,
		send: make(chan *websocket.PreparedMessage, s.queue),
		done: make(chan struct{}),
		subs: make(map[string]struct{}),
	}
	go c.writeLoop()
	c.sendJSON(wire.Welcome{Op: "welcome", Conn: c.id, Node: "baseline", Proto: "json"})
	s.readLoop(c)
}

// sendJSON encodes v and queues it for c, dropping c when its queue is full.
func (c *client) sendJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
	if err != nil {
		return
	}
	select {
	case c.send <- pm:
	case <-c.done:
	default:
		c.close()
	}
}

func (c *client) writeLoop() {
	defer c.close()
	for {
		select {
		case pm := <-c.send:
			if err := c.ws.WritePreparedMessage(pm); err != nil {
				return
			}
		case <-c.done:
			return
		}
	}
}

func (s *server) readLoop(c *client) {
	defer func() {
		for ch := range c.subs {
			s.hub.unsubscribe(c, ch)
		}
		c.close()
	}()
	for {
		mt, p, err := c.ws.ReadMessage()
		if err != nil {
			return
		}
		if mt != websocket.TextMessage {
			c.sendJSON(wire.Error{Op: "error", Code: "bad_request", Message: "text frames only"})
			continue
		}
		var in wire.Inbound
		if err := json.Unmarshal(p, &in); err != nil {
			c.sendJSON(wire.Error{Op: "error", Code: "bad_request", Message: "invalid JSON"})
			continue
		}
		switch in.Op {
		case "ping":
			c.sendJSON(wire.Ack{Op: "pong"})
		case "subscribe", "unsubscribe", "publish":
			if in.Channel == "" {
				c.sendJSON(wire.Error{Op: "error", ID: in.ID, Code: "bad_request", Message: "channel required"})
				continue
			}
			switch in.Op {
			case "subscribe":
				if _, ok := c.subs[in.Channel]; !ok {
					c.subs[in.Channel] = struct{}{}
					s.hub.subscribe(c, in.Channel)
				}
			case "unsubscribe":
				if _, ok := c.subs[in.Channel]; ok {
					delete(c.subs, in.Channel)
					s.hub.unsubscribe(c, in.Channel)
				}
			case "publish":
				data := in.Data
				if len(data) == 0 {
					data = json.RawMessage("null")
				}
				b, err := json.Marshal(wire.Message{Op: "message", Channel: in.Channel, From: c.id, Data: data})
				if err != nil {
					c.sendJSON(wire.Error{Op: "error", ID: in.ID, Code: "bad_request", Message: err.Error()})
					continue
				}
				pm, err := websocket.NewPreparedMessage(websocket.TextMessage, b)
				if err != nil {
					continue
				}
				s.hub.publish(c, in.Channel, pm)
			}
			c.sendJSON(wire.Ack{Op: "ack", ID: in.ID})
		default:
			c.sendJSON(wire.Error{Op: "error", ID: in.ID, Code: "bad_request", Message: "unknown op"})
		}
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	queue := flag.Int("queue", 1024, "outbound messages queued per connection before it is dropped as a slow consumer")
	flag.Parse()

	s := &server{
		hub:   &hub{channels: make(map[string]map[*client]struct{})},
		queue: *queue,
		upgrader: websocket.Upgrader{
			ReadBufferSize:  1024,
			WriteBufferSize: 1024,
			// Idle connections hold no write buffer (gorilla's documented
			// setting for servers with many connections).
			WriteBufferPool: &sync.Pool{},
			CheckOrigin:     func(*http.Request) bool { return true },
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/debug/pprof/heap", pprof.Handler("heap"))

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("baseline: %v", err)
	}
	fmt.Fprintf(os.Stderr, "msg=listening addr=%s\n", ln.Addr())

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatalf("baseline: %v", err)
	}
	fmt.Fprintf(os.Stderr, "msg=stopped dropped_slow=%d\n", s.hub.dropped.Load())
}
