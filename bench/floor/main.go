package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/zenconn/server/bench/internal/wire"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// maxPayload bounds one client frame or message.
const maxPayload = 1 << 20

// conn is one WebSocket connection. nc, fd and id are set before the conn is
// first handed to the hub and never change; subs and dead belong to the hub.
// The fd stays open exactly as long as dead is false: only the hub closes nc,
// so a dropped connection's fd number, possibly reused by a new socket, is
// never written to again.
type conn struct {
	nc net.Conn
	fd int
	id string

	subs []*channel // hub only
	dead bool       // hub only
}

// channel is one channel's subscribers: fds[i] is the socket of conns[i].
type channel struct {
	name  string
	fds   []int
	conns []*conn
	index map[*conn]int // position in fds/conns, for O(1) removal
}

type evKind uint8

const (
	evSubscribe   evKind = iota // add c to ch, then send reply (ack)
	evUnsubscribe               // remove c from ch, then send reply (ack)
	evPublish                   // write frame to every subscriber of ch but c, then reply (ack) to c
	evSend                      // write frame to c (pong, error)
	evClose                     // write frame (close) to c, then drop c
	evGone                      // c's reader stopped: drop c
	evStop                      // end run (tests)
)

type event struct {
	kind  evKind
	c     *conn
	ch    string
	frame []byte
	reply []byte
}

// counters are read on exit (and by tests) from other goroutines.
type counters struct {
	deliveries atomic.Int64 // message frames fully written to subscribers
	short      atomic.Int64 // writes that took only part of a frame
	eagain     atomic.Int64 // writes that returned EAGAIN
	polls      atomic.Int64 // poll(2) calls waiting for a socket to drain
	dropped    atomic.Int64 // connections dropped on a write error or timeout
}

type hub struct {
	events      chan event
	channels    map[string]*channel
	slowTimeout time.Duration
	failed      []*conn       // fan-out failures, dropped after the loop
	pfd         []unix.PollFd // reused by waitWritable
	stats       *counters
	write       func(fd int, b []byte) (int, error)
}

// rawWrite is write(2) through unix.RawSyscall: without the runtime's
// entersyscall/exitsyscall. A write to a non-blocking socket never blocks, so
// that bookkeeping only costs: with GOMAXPROCS=1 and back-to-back writes,
// sysmon keeps retaking the P from the writing thread and handing it to
// another thread (a futex wake-up and two context switches each time).
func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}

func newHub(slowTimeout time.Duration, stats *counters, raw bool) *hub {
	write := unix.Write
	if raw {
		write = rawWrite
	}
	return &hub{
		write:       write,
		events:      make(chan event, 4096),
		channels:    make(map[string]*channel),
		slowTimeout: slowTimeout,
		pfd:         make([]unix.PollFd, 1),
		stats:       stats,
	}
}

func (h *hub) run() {
	for e := range h.events {
		c := e.c
		switch e.kind {
		case evStop:
			return
		case evSubscribe:
			if c.dead {
				continue
			}
			h.subscribe(c, e.ch)
			h.send(c, e.reply)
		case evUnsubscribe:
			if c.dead {
				continue
			}
			if ch := h.channels[e.ch]; ch != nil {
				h.unsubscribe(c, ch)
			}
			h.send(c, e.reply)
		case evPublish:
			if ch := h.channels[e.ch]; ch != nil {
				skip := -1
				if !c.dead {
					skip = c.fd
				}
				h.fanout(ch, skip, e.frame)
			}
			h.send(c, e.reply)
		case evSend:
			h.send(c, e.frame)
		case evClose:
			h.send(c, e.frame)
			h.drop(c, false)
		case evGone:
			h.drop(c, false)
		}
	}
}

// fanout is the measured floor: one write(2) of the same frame per subscriber
// socket, in one loop.
func (h *hub) fanout(ch *channel, skip int, frame []byte) {
	fds := ch.fds
	var n int64
	for i, fd := range fds {
		if fd == skip {
			continue
		}
		if w, err := h.write(fd, frame); w != len(frame) {
			if !h.writeRest(fd, frame, w, err) {
				h.failed = append(h.failed, ch.conns[i])
				continue
			}
		}
		n++
	}
	h.stats.deliveries.Add(n)
	if len(h.failed) > 0 {
		for _, c := range h.failed {
			h.drop(c, true)
		}
		clear(h.failed)
		h.failed = h.failed[:0]
	}
}

// send writes one whole frame to c, dropping c if that fails.
func (h *hub) send(c *conn, b []byte) {
	if c.dead || len(b) == 0 {
		return
	}
	if w, err := h.write(c.fd, b); w != len(b) && !h.writeRest(c.fd, b, w, err) {
		h.drop(c, true)
	}
}

// writeRest finishes a write(2) that returned n, err without taking all of b:
// it retries after EINTR, and after EAGAIN or a short write waits with poll(2)
// for the socket to drain, for at most slowTimeout in all. It reports whether
// all of b was written.
func (h *hub) writeRest(fd int, b []byte, n int, err error) bool {
	var deadline time.Time
	for {
		if n > 0 {
			b = b[n:]
			if len(b) == 0 {
				return true
			}
			h.stats.short.Add(1)
		}
		switch {
		case errors.Is(err, unix.EINTR):
		case err == nil || errors.Is(err, unix.EAGAIN):
			if err != nil {
				h.stats.eagain.Add(1)
			}
			if deadline.IsZero() {
				deadline = time.Now().Add(h.slowTimeout)
			}
			if !h.waitWritable(fd, deadline) {
				return false
			}
		default:
			return false
		}
		n, err = h.write(fd, b)
	}
}

// waitWritable blocks in poll(2) until fd is writable (or in error, which the
// next write reports) or the deadline passes.
func (h *hub) waitWritable(fd int, deadline time.Time) bool {
	for {
		ms := int((time.Until(deadline) + time.Millisecond - 1) / time.Millisecond)
		if ms <= 0 {
			return false
		}
		h.pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT}
		h.stats.polls.Add(1)
		n, err := unix.Poll(h.pfd, ms)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false
		}
		if n > 0 {
			return true
		}
	}
}

func (h *hub) subscribe(c *conn, name string) {
	ch := h.channels[name]
	if ch == nil {
		ch = &channel{name: name, index: make(map[*conn]int)}
		h.channels[name] = ch
	}
	if _, ok := ch.index[c]; ok {
		return
	}
	ch.index[c] = len(ch.fds)
	ch.fds = append(ch.fds, c.fd)
	ch.conns = append(ch.conns, c)
	c.subs = append(c.subs, ch)
}

// unsubscribe removes c from ch by moving the last subscriber into its place.
func (h *hub) unsubscribe(c *conn, ch *channel) {
	i, ok := ch.index[c]
	if !ok {
		return
	}
	last := len(ch.fds) - 1
	if i != last {
		ch.fds[i], ch.conns[i] = ch.fds[last], ch.conns[last]
		ch.index[ch.conns[i]] = i
	}
	ch.conns[last] = nil
	ch.fds, ch.conns = ch.fds[:last], ch.conns[:last]
	delete(ch.index, c)
	if i := slices.Index(c.subs, ch); i >= 0 {
		c.subs = slices.Delete(c.subs, i, i+1)
	}
	if len(ch.fds) == 0 {
		delete(h.channels, ch.name)
	}
}

// drop forgets c everywhere, then closes it (the reader goroutine then stops).
func (h *hub) drop(c *conn, failed bool) {
	if c.dead {
		return
	}
	for len(c.subs) > 0 {
		h.unsubscribe(c, c.subs[len(c.subs)-1])
	}
	c.dead = true
	if failed {
		h.stats.dropped.Add(1)
	}
	_ = c.nc.Close()
}

type server struct {
	hub    *hub
	stats  *counters
	nextID atomic.Uint64
}

func newServer(slowTimeout time.Duration, raw bool) *server {
	st := &counters{}
	return &server{hub: newHub(slowTimeout, st, raw), stats: st}
}

// serve accepts connections until ln is closed.
func (s *server) serve(ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			return err
		}
		go s.serveConn(nc)
	}
}

// rawFD returns the socket's descriptor; it stays valid until nc is closed.
func rawFD(nc net.Conn) (int, error) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return -1, fmt.Errorf("%T has no file descriptor", nc)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// frame returns one unmasked, final server frame.
func frame(op ws.OpCode, p []byte) []byte {
	b, err := ws.CompileFrame(ws.NewFrame(op, true, p))
	if err != nil {
		panic(err) // writing to a bytes.Buffer does not fail
	}
	return b
}

func jsonFrame(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only fixed message types are encoded here
	}
	return frame(ws.OpText, b)
}

func (s *server) serveConn(nc net.Conn) {
	// The client sends nothing before the 101 response, so nothing read
	// ahead by Upgrade's own buffer is lost.
	if _, err := ws.Upgrade(nc); err != nil {
		_ = nc.Close()
		return
	}
	fd, err := rawFD(nc)
	if err != nil {
		_ = nc.Close()
		return
	}
	c := &conn{nc: nc, fd: fd, id: "f" + strconv.FormatUint(s.nextID.Add(1), 10)}
	// The hub does not know c yet, so this write cannot interleave with one
	// of its own; every later write to c is the hub's.
	if _, err := nc.Write(jsonFrame(wire.Welcome{Op: "welcome", Conn: c.id, Node: "floor", Proto: "json"})); err != nil {
		_ = nc.Close()
		return
	}
	s.readLoop(c)
	s.hub.events <- event{kind: evGone, c: c}
}

// badHeader is the close code and reason for a client frame header that
// breaks RFC 6455 or the size limit (pending: bytes of the fragmented
// message so far); "" when the header is fine.
func badHeader(h ws.Header, pending int) (ws.StatusCode, string) {
	switch {
	case !h.Masked:
		return ws.StatusProtocolError, "client frames must be masked"
	case h.Rsv != 0:
		return ws.StatusProtocolError, "no extension negotiated"
	case h.Length > maxPayload || int64(pending)+h.Length > maxPayload:
		return ws.StatusMessageTooBig, "message too big"
	case h.OpCode.IsControl() && (!h.Fin || h.Length > 125):
		return ws.StatusProtocolError, "bad control frame"
	}
	return 0, ""
}

func (s *server) readLoop(c *conn) {
	br := bufio.NewReaderSize(c.nc, 1024)
	hdr := make([]byte, 2, ws.MaxHeaderSize)
	var buf, msg []byte
	var msgOp ws.OpCode
	closeWith := func(code ws.StatusCode, reason string) {
		s.hub.events <- event{kind: evClose, c: c, frame: frame(ws.OpClose, ws.NewCloseFrameBody(code, reason))}
	}
	for {
		h, err := ws.ReadHeaderBuffer(br, hdr)
		if err != nil {
			return
		}
		if code, reason := badHeader(h, len(msg)); reason != "" {
			closeWith(code, reason)
			return
		}
		if int64(cap(buf)) < h.Length {
			buf = make([]byte, h.Length)
		}
		p := buf[:h.Length]
		if _, err := io.ReadFull(br, p); err != nil {
			return
		}
		ws.Cipher(p, h.Mask, 0)
		switch h.OpCode {
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(p)
			if code.Empty() {
				code = ws.StatusNormalClosure
			}
			closeWith(code, "")
			return
		case ws.OpPing:
			s.hub.events <- event{kind: evSend, c: c, frame: frame(ws.OpPong, p)}
		case ws.OpPong:
		case ws.OpText, ws.OpBinary:
			if msgOp != 0 {
				closeWith(ws.StatusProtocolError, "expected a continuation frame")
				return
			}
			if !h.Fin {
				msgOp, msg = h.OpCode, append(msg[:0], p...)
				continue
			}
			s.handle(c, h.OpCode, p)
		case ws.OpContinuation:
			if msgOp == 0 {
				closeWith(ws.StatusProtocolError, "unexpected continuation frame")
				return
			}
			msg = append(msg, p...)
			if h.Fin {
				s.handle(c, msgOp, msg)
				msgOp, msg = 0, msg[:0]
			}
		default:
			closeWith(ws.StatusProtocolError, "unknown opcode")
			return
		}
	}
}

// handle answers one request; p is only valid during the call.
func (s *server) handle(c *conn, op ws.OpCode, p []byte) {
	reply := func(v any) { s.hub.events <- event{kind: evSend, c: c, frame: jsonFrame(v)} }
	if op != ws.OpText {
		reply(wire.Error{Op: "error", Code: "bad_request", Message: "text frames only"})
		return
	}
	var in wire.Inbound
	if err := json.Unmarshal(p, &in); err != nil {
		reply(wire.Error{Op: "error", Code: "bad_request", Message: "invalid JSON"})
		return
	}
	switch in.Op {
	case "ping":
		reply(wire.Ack{Op: "pong"})
	case "subscribe", "unsubscribe", "publish":
		if in.Channel == "" {
			reply(wire.Error{Op: "error", ID: in.ID, Code: "bad_request", Message: "channel required"})
			return
		}
		ack := jsonFrame(wire.Ack{Op: "ack", ID: in.ID})
		switch in.Op {
		case "subscribe":
			s.hub.events <- event{kind: evSubscribe, c: c, ch: in.Channel, reply: ack}
		case "unsubscribe":
			s.hub.events <- event{kind: evUnsubscribe, c: c, ch: in.Channel, reply: ack}
		case "publish":
			data := in.Data
			if len(data) == 0 {
				data = json.RawMessage("null")
			}
			b, err := json.Marshal(wire.Message{Op: "message", Channel: in.Channel, From: c.id, Data: data})
			if err != nil {
				reply(wire.Error{Op: "error", ID: in.ID, Code: "bad_request", Message: err.Error()})
				return
			}
			s.hub.events <- event{kind: evPublish, c: c, ch: in.Channel, frame: frame(ws.OpText, b), reply: ack}
		}
	default:
		reply(wire.Error{Op: "error", ID: in.ID, Code: "bad_request", Message: "unknown op"})
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8091", "listen address")
	slow := flag.Duration("slow-timeout", 5*time.Second, "how long a write may wait for a full socket before that subscriber is dropped")
	write := flag.String("write", "raw", "raw: write(2) by unix.RawSyscall; syscall: unix.Write, with the runtime's syscall bookkeeping")
	flag.Parse()
	if *write != "raw" && *write != "syscall" {
		log.Fatalf("floor: --write must be raw or syscall")
	}

	s := newServer(*slow, *write == "raw")
	go s.hub.run()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("floor: %v", err)
	}
	fmt.Fprintf(os.Stderr, "msg=listening addr=%s\n", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = ln.Close()
	}()
	if err := s.serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Fatalf("floor: %v", err)
	}
	st := s.stats
	fmt.Fprintf(os.Stderr, "msg=stopped deliveries=%d short_writes=%d eagain=%d polls=%d dropped=%d\n",
		st.deliveries.Load(), st.short.Load(), st.eagain.Load(), st.polls.Load(), st.dropped.Load())
}
