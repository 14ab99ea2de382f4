package main

// The WebSocket client that every mode drives: one goroutine runs all the
// connections of a process through one level-triggered epoll set on raw
// non-blocking sockets. A goroutine per connection would cost a wake-up
// and a scheduler round trip per delivered frame; here a delivery costs one
// read(2) at most (several frames when they queue up), no allocation, and
// the generator's CPU is measured and reported next to the server's.
// gobwas/ws supplies the masking (ws.Cipher) and the frame header layout.
//
// The client owns the sockets: connect, upgrade, writes and their backlog,
// reads, frame parsing, ping answers and the reassembly of fragmented
// messages. What a connection is for (a subscriber, a publisher, a churn
// worker) belongs to the mode, which receives the events through its
// handler.

import (
	"bytes"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// wsPhase is where a connection's transport is.
type wsPhase uint8

const (
	wsDialing   wsPhase = iota // non-blocking connect in progress
	wsUpgrading                // upgrade request sent, waiting for the 101
	wsOpen                     // upgraded: frames both ways
	wsClosed                   // socket closed (or its dial failed)
)

// wsConn is the transport state of one client connection; each mode's
// connection type embeds it.
type wsConn struct {
	fd      int
	phase   wsPhase
	accept  string // expected Sec-WebSocket-Accept
	pending []byte // unparsed input (partial frame or handshake)
	frag    []byte // fragmented message being assembled
	out     []byte // output the socket did not take yet
	pollOut bool
	target  uint8       // index of its URL in the client's targets
	br      *tlsBridge  // wss://: its bridge, until detached
	raw     *rawRecords // detached: its records, counted undecrypted (tlscount.go)
}

// closed reports whether the connection's socket is closed.
func (w *wsConn) closed() bool { return w.phase == wsClosed }

// endpoint is a mode's connection type (a pointer to a struct embedding a
// wsConn).
type endpoint interface {
	transport() *wsConn
}

// handler receives the events of a mode's connections. The client calls it
// from dial, write, flush and poll; any callback may close the connection
// (client.closeFd), after which the client does nothing more with it.
type handler[C endpoint] interface {
	// onUpgrade: the server accepted the upgrade.
	onUpgrade(c C, now int64)
	// onMessage: a complete text message (p is valid until it returns).
	onMessage(c C, p []byte, now int64)
	// onCloseFrame: the server's close frame.
	onCloseFrame(c C, code ws.StatusCode, reason string, now int64)
	// onEnd: end of stream (err nil) or a read error other than EAGAIN.
	onEnd(c C, err error, now int64)
	// onFail: the dial, the upgrade or a write failed ("dial_connect",
	// "handshake_status", "write", ...), or a frame was too large
	// ("protocol"). The handler closes c.
	onFail(c C, kind, detail string)
	// onBadFrame: a frame the client does not expect (kind
	// "frame_too_large" or "binary_frame"). Unless the handler closes c,
	// a binary message is then handled as text, and a frame too large
	// ends the connection with onFail.
	onBadFrame(c C, kind, example string, now int64)
	// protoErr: a protocol error that does not stop the connection
	// (masked frame, reserved bits, unknown opcode).
	protoErr(kind, example string)
	// onRawData: complete TLS records arrived on a connection detached from
	// its bridge (c.raw counts them).
	onRawData(c C, now int64)
}

// pollStats count epoll waits: a large share of full batches means the
// generator, not the server, was the bottleneck.
type pollStats struct{ calls, events, full int64 }

// client is the epoll set of one process with its buffers, destination,
// source addresses and error notes. Not safe for concurrent use: one
// goroutine drives it.
type client[C endpoint] struct {
	h       handler[C]
	epfd    int
	byFd    map[int]C
	rbuf    []byte
	wbuf    []byte
	events  []unix.EpollEvent
	dsts    []unix.SockaddrInet4 // one per URL of --url
	srcs    []unix.SockaddrInet4
	srcN    int           // dials bound so far (round robin over srcs)
	request [][]byte      // per URL: handshake request without its key line
	tlsAddr []string      // per URL: host:port of a wss:// URL ("" for ws://)
	tlsCfg  []*tls.Config // per URL: its TLS configuration (nil for ws://)
	tlsErrs *tlsFails
	detachQ []C // connections to detach from their TLS bridges
	timeout time.Duration
	rnd     uint64
	errs    map[string]*errStat

	busy     bool // poll never sleeps (--busy-poll while measuring)
	counting bool // polls are counted in polls
	polls    pollStats
}

type errStat struct {
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

// init opens the epoll set for about n connections of cfg's destination;
// srcOffset rotates cfg's source addresses (one offset per process).
func (cl *client[C]) init(cfg *config, h handler[C], n, srcOffset int) error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	cl.h = h
	cl.epfd = epfd
	cl.byFd = make(map[int]C, n)
	cl.rbuf = make([]byte, max(64<<10, 4*cfg.size+4096))
	cl.wbuf = make([]byte, 0, cfg.size+256)
	cl.events = make([]unix.EpollEvent, 1024)
	cl.errs = make(map[string]*errStat)
	cl.rnd = uint64(time.Now().UnixNano()) | 1
	cl.tlsErrs, cl.timeout = newTLSFails(), min(cfg.timeout, 30*time.Second)
	for _, t := range cfg.targets {
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], t.ip.To4())
		sa.Port = t.port
		cl.dsts = append(cl.dsts, sa)
		addr, tc := "", (*tls.Config)(nil)
		if t.tls {
			addr, tc = sa2addr(sa), cfg.tls.Clone()
			if tc.ServerName == "" {
				tc.ServerName = t.ip.String()
				if h, _, err := net.SplitHostPort(t.host); err == nil {
					tc.ServerName = h
				}
			}
		}
		cl.tlsAddr = append(cl.tlsAddr, addr)
		cl.tlsCfg = append(cl.tlsCfg, tc)
		cl.request = append(cl.request, fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", t.path, t.host))
	}
	for i := range cfg.srcIPs {
		ip := cfg.srcIPs[(i+srcOffset)%len(cfg.srcIPs)]
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], ip.To4())
		cl.srcs = append(cl.srcs, sa)
	}
	return nil
}

// closeEpoll closes the epoll set (the connections are the mode's to close).
func (cl *client[C]) closeEpoll() { _ = unix.Close(cl.epfd) }

func (cl *client[C]) rand32() uint32 {
	cl.rnd ^= cl.rnd << 13
	cl.rnd ^= cl.rnd >> 7
	cl.rnd ^= cl.rnd << 17
	return uint32(cl.rnd >> 16)
}

// note counts one error of kind, keeping its first example; past 32 kinds
// they are counted as "other".
func (cl *client[C]) note(kind, example string) {
	e := cl.errs[kind]
	if e == nil {
		if len(cl.errs) >= 32 {
			kind = "other"
			if e = cl.errs[kind]; e == nil {
				e = &errStat{Example: example}
				cl.errs[kind] = e
			}
		} else {
			e = &errStat{Example: example}
			cl.errs[kind] = e
		}
	}
	e.Count++
}

// errorsOut returns the noted errors (nil when none).
func (cl *client[C]) errorsOut() map[string]*errStat {
	if len(cl.errs) == 0 {
		return nil
	}
	return cl.errs
}

// dial opens c without blocking. On loopback the connection is usually
// established at once: the upgrade request is sent right away, and
// EPOLLOUT is awaited only while the socket is still connecting (EAGAIN).
// That saves an epoll round, a getsockopt and an epoll_ctl per connection.
func (cl *client[C]) dial(c C) {
	w := c.transport()
	w.pending, w.frag, w.out, w.pollOut = w.pending[:0], w.frag[:0], nil, false
	w.phase, w.br, w.raw = wsDialing, nil, nil
	if cl.tlsAddr[w.target] != "" {
		cl.dialTLS(c)
		return
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		cl.h.onFail(c, "dial_socket", err.Error())
		return
	}
	w.fd = fd
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(cl.srcs) > 0 {
		// Choose the port at connect time (4-tuple unique), not at bind
		// time, so one source address serves many destinations.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		src := cl.srcs[cl.srcN%len(cl.srcs)]
		cl.srcN++
		if err := unix.Bind(fd, &src); err != nil {
			cl.h.onFail(c, "dial_bind", err.Error())
			return
		}
	}
	if err := unix.Connect(fd, &cl.dsts[w.target]); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		cl.h.onFail(c, "dial_connect", err.Error())
		return
	}
	cl.sendUpgrade(c, fd)
}

// dialTLS opens c through a TLS bridge (tlsbridge.go): the socketpair is
// connected at once, so the upgrade request goes out right away.
func (cl *client[C]) dialTLS(c C) {
	w := c.transport()
	if err := cl.tlsErrs.first(); err != nil {
		cl.note("tls_handshake", err.Error())
	}
	fd, br, err := dialTLSPair(cl.tlsAddr[w.target], cl.tlsCfg[w.target], cl.timeout, cl.tlsErrs)
	if err != nil {
		cl.h.onFail(c, "dial_socket", err.Error())
		return
	}
	w.fd, w.br = fd, br
	cl.sendUpgrade(c, fd)
}

// sendUpgrade writes the upgrade request on c's new descriptor fd and adds
// it to the epoll set (with EPOLLOUT while the connect is in progress).
func (cl *client[C]) sendUpgrade(c C, fd int) {
	w := c.transport()
	events := uint32(unix.EPOLLIN | unix.EPOLLRDHUP)
	req := cl.upgradeRequest(w)
	n, err := unix.Write(fd, req)
	switch {
	case err == nil:
		w.phase = wsUpgrading
		if n < len(req) {
			w.out = append(w.out[:0], req[n:]...)
			w.pollOut = true
			events |= unix.EPOLLOUT
		}
	case errors.Is(err, unix.EAGAIN):
		events |= unix.EPOLLOUT
	default:
		cl.h.onFail(c, "dial_connect", err.Error())
		return
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(cl.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		cl.h.onFail(c, "dial_epoll", err.Error())
		return
	}
	cl.byFd[fd] = c
}

// upgradeRequest returns the HTTP upgrade request (in cl.wbuf), with a new
// key whose expected answer goes to w.accept.
func (cl *client[C]) upgradeRequest(w *wsConn) []byte {
	var nonce [16]byte
	for i := 0; i < 16; i += 4 {
		binary.LittleEndian.PutUint32(nonce[i:], cl.rand32())
	}
	key := base64.StdEncoding.EncodeToString(nonce[:])
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	w.accept = base64.StdEncoding.EncodeToString(h[:])
	req := append(cl.wbuf[:0], cl.request[w.target]...)
	req = append(req, "Sec-WebSocket-Key: "...)
	req = append(req, key...)
	req = append(req, "\r\n\r\n"...)
	cl.wbuf = req
	return req
}

// onConnected completes a connect that was in progress: the upgrade
// request goes out.
func (cl *client[C]) onConnected(c C, events uint32) {
	w := c.transport()
	soerr, err := unix.GetsockoptInt(w.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soerr != 0 {
		err = unix.Errno(soerr)
	}
	if err != nil {
		cl.h.onFail(c, "dial_connect", err.Error())
		return
	}
	if events&unix.EPOLLOUT == 0 {
		return
	}
	req := cl.upgradeRequest(w)
	w.phase = wsUpgrading
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(w.fd)}
	if err := unix.EpollCtl(cl.epfd, unix.EPOLL_CTL_MOD, w.fd, &ev); err != nil {
		cl.h.onFail(c, "dial_epoll", err.Error())
		return
	}
	cl.write(c, req)
}

// closeFd closes c's socket with a reset (SO_LINGER 0), so that no
// TIME_WAIT is left behind to exhaust ports across runs.
func (cl *client[C]) closeFd(c C) {
	w := c.transport()
	w.phase = wsClosed
	if w.fd < 0 {
		return
	}
	// No EPOLL_CTL_DEL: closing the only descriptor of the socket removes
	// it from the epoll set.
	delete(cl.byFd, w.fd)
	_ = unix.SetsockoptLinger(w.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	_ = unix.Close(w.fd)
	w.fd = -1
	w.pending, w.frag, w.out, w.pollOut = w.pending[:0], w.frag[:0], nil, false
}

func (cl *client[C]) setPollOut(w *wsConn, on bool) {
	if w.pollOut == on || w.fd < 0 {
		return
	}
	w.pollOut = on
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(w.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	_ = unix.EpollCtl(cl.epfd, unix.EPOLL_CTL_MOD, w.fd, &ev)
}

// write sends b on c, keeping what the socket does not take for EPOLLOUT.
func (cl *client[C]) write(c C, b []byte) {
	w := c.transport()
	if w.fd < 0 {
		return
	}
	if len(w.out) > 0 {
		w.out = append(w.out, b...)
		return
	}
	n, err := unix.Write(w.fd, b)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			cl.h.onFail(c, "write", err.Error())
			return
		}
		n = 0
	}
	if n < len(b) {
		w.out = append(w.out, b[n:]...)
		cl.setPollOut(w, true)
	}
}

// flush writes c's backlog.
func (cl *client[C]) flush(c C) {
	w := c.transport()
	n, err := unix.Write(w.fd, w.out)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			cl.h.onFail(c, "write", err.Error())
		}
		return
	}
	w.out = w.out[n:]
	if len(w.out) == 0 {
		w.out = nil
		cl.setPollOut(w, false)
	}
}

// appendFrame appends a masked client frame carrying payload.
func (cl *client[C]) appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	dst = append(dst, 0x80|byte(op))
	switch {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n <= 0xffff:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	var mask [4]byte
	binary.LittleEndian.PutUint32(mask[:], cl.rand32())
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

// send writes one frame to c.
func (cl *client[C]) send(c C, op ws.OpCode, payload []byte) {
	cl.wbuf = cl.appendFrame(cl.wbuf[:0], op, payload)
	cl.write(c, cl.wbuf)
}

// poll waits up to timeout (forever when negative) for events and handles
// them.
func (cl *client[C]) poll(timeout time.Duration) error {
	ms := int((timeout + time.Millisecond - 1) / time.Millisecond)
	if timeout < 0 {
		ms = -1
	}
	if cl.busy {
		// Never sleep: the server's writes then find no sleeping reader to
		// wake, which on loopback it would otherwise pay for.
		ms = 0
	}
	n, err := unix.EpollWait(cl.epfd, cl.events, ms)
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return nil
		}
		return err
	}
	now := time.Now().UnixNano()
	if cl.counting {
		cl.polls.calls++
		cl.polls.events += int64(n)
		if n == len(cl.events) {
			cl.polls.full++
		}
	}
	for i := range n {
		ev := cl.events[i]
		c, ok := cl.byFd[int(ev.Fd)]
		if !ok {
			continue
		}
		w := c.transport()
		if w.phase == wsDialing {
			cl.onConnected(c, ev.Events)
			continue
		}
		if ev.Events&unix.EPOLLOUT != 0 && len(w.out) > 0 {
			cl.flush(c)
			if w.closed() {
				continue
			}
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
			if w.raw != nil {
				cl.readRaw(c, now)
			} else {
				cl.readConn(c, now)
			}
		}
	}
	cl.detachQueued()
	return nil
}

var headEnd = []byte("\r\n\r\n")

// readConn reads what c has: the upgrade response, then frames.
func (cl *client[C]) readConn(c C, now int64) {
	w := c.transport()
	if len(w.pending) > len(cl.rbuf)/2 {
		cl.rbuf = make([]byte, 2*len(cl.rbuf)+len(w.pending))
	}
	n0 := copy(cl.rbuf, w.pending)
	n, err := unix.Read(w.fd, cl.rbuf[n0:])
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			cl.h.onEnd(c, err, now)
		}
		return
	}
	if n == 0 {
		cl.h.onEnd(c, nil, now)
		return
	}
	data := cl.rbuf[:n0+n]
	used := 0
	if w.phase == wsUpgrading {
		i := bytes.Index(data, headEnd)
		if i < 0 {
			if len(data) > 16<<10 {
				cl.h.onFail(c, "handshake", "response header too large")
				return
			}
			w.pending = append(w.pending[:0], data...)
			return
		}
		if kind, detail := checkUpgrade(data[:i], w.accept); kind != "" {
			cl.h.onFail(c, kind, detail)
			return
		}
		used = i + 4
		w.phase = wsOpen
		cl.h.onUpgrade(c, now)
		if w.closed() {
			return
		}
	}
	used += cl.parseFrames(c, data[used:], now)
	if w.closed() {
		return
	}
	if rest := data[used:]; len(rest) > 0 {
		w.pending = append(w.pending[:0], rest...)
	} else {
		w.pending = w.pending[:0]
	}
}

// checkUpgrade checks the handshake response head: a kind and a detail
// when it is not a 101 with the expected accept key.
func checkUpgrade(hdr []byte, accept string) (kind, detail string) {
	lines := bytes.Split(hdr, []byte("\r\n"))
	if !bytes.HasPrefix(lines[0], []byte("HTTP/1.1 101")) {
		return "handshake_status", string(lines[0])
	}
	var upgrade, acceptOK bool
	for _, ln := range lines[1:] {
		k, v, ok := bytes.Cut(ln, []byte(":"))
		if !ok {
			continue
		}
		k, v = bytes.TrimSpace(k), bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Upgrade")):
			upgrade = bytes.EqualFold(v, []byte("websocket"))
		case bytes.EqualFold(k, []byte("Sec-WebSocket-Accept")):
			acceptOK = string(v) == accept
		}
	}
	if !upgrade || !acceptOK {
		return "handshake_headers", fmt.Sprintf("upgrade=%v accept_ok=%v: %q", upgrade, acceptOK, hdr)
	}
	return "", ""
}

// parseFrames handles every complete frame in d and returns the bytes
// used. It stops when the connection was closed.
func (cl *client[C]) parseFrames(c C, d []byte, now int64) int {
	w := c.transport()
	used := 0
	for {
		f, ok := nextFrame(d)
		if !ok {
			if f.length > maxServerFrame {
				cl.h.onBadFrame(c, "frame_too_large", strconv.FormatUint(f.length, 10), now)
				if !w.closed() {
					cl.h.onFail(c, "protocol", "frame too large")
				}
			}
			return used
		}
		if f.masked {
			cl.h.protoErr("masked_server_frame", "server frames must not be masked (RFC 6455 5.1)")
		}
		if f.rsv != 0 {
			cl.h.protoErr("rsv_bits", fmt.Sprintf("first byte %#x", d[0]))
		}
		cl.onFrame(c, f.op, f.fin, f.payload, now)
		if w.closed() {
			return used
		}
		used += f.size
		d = d[f.size:]
	}
}

func (cl *client[C]) onFrame(c C, op ws.OpCode, fin bool, p []byte, now int64) {
	w := c.transport()
	switch op {
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		cl.h.onCloseFrame(c, code, reason, now)
	case ws.OpPing:
		cl.send(c, ws.OpPong, p)
	case ws.OpPong:
	case ws.OpText, ws.OpBinary:
		if op == ws.OpBinary {
			cl.h.onBadFrame(c, "binary_frame", "binary frame on a JSON connection", now)
			if w.closed() {
				return
			}
		}
		if !fin {
			w.frag = append(w.frag[:0], p...)
			return
		}
		cl.h.onMessage(c, p, now)
	case ws.OpContinuation:
		w.frag = append(w.frag, p...)
		if fin {
			m := w.frag
			w.frag = w.frag[:0]
			cl.h.onMessage(c, m, now)
		}
	default:
		cl.h.protoErr("bad_opcode", fmt.Sprintf("opcode %d", op))
	}
}

// sa2addr is the host:port of an IPv4 socket address.
func sa2addr(sa unix.SockaddrInet4) string {
	return net.JoinHostPort(net.IP(sa.Addr[:]).String(), strconv.Itoa(sa.Port))
}
