package main

// The client side of the load generator: one goroutine drives every
// connection of this process through a single level-triggered epoll set on
// raw non-blocking sockets. A goroutine per connection would cost a wake-up
// and a scheduler round trip per delivered frame; here a delivery costs one
// read(2) at most (several frames when they queue up), no allocation, and
// the generator's CPU is measured and reported next to the server's.
// gobwas/ws supplies the masking (ws.Cipher) and the frame header layout.

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

type connRole uint8

const (
	roleSub connRole = iota
	rolePub
)

type connState uint8

const (
	stConnecting connState = iota
	stHandshake
	stOpen
	stClosed
)

type conn struct {
	fd      int
	role    connRole
	state   connState
	accept  string // expected Sec-WebSocket-Accept
	pending []byte // unparsed input (partial frame or handshake)
	frag    []byte // fragmented message being assembled
	out     []byte // output the socket did not take yet
	pollOut bool
	id      string // connection id from the welcome
	frames  int    // data messages received
	welcome bool
	subAck  bool
	ready   bool
	lastOff int64 // send offset of the last delivery, -1 before the first

	// publisher state: publishes sent and answered (ack or error) on this
	// connection, the id expected next, and the send times of the last
	// --window publishes (for the ack latency).
	pubSent, pubAnswered, nextAck int64
	sentAt                        []int64
}

type errStat struct {
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

type loop struct {
	cfg     *config
	epfd    int
	fdTab   map[int]*conn
	conns   []*conn
	rbuf    []byte
	wbuf    []byte
	events  []unix.EpollEvent
	dst     unix.SockaddrInet4
	srcs    []unix.SockaddrInet4
	request []byte // handshake request without key line
	rnd     uint64

	total, nextDial, inflight int
	readyCount, failed        int
	dialErrors                int64
	errs                      map[string]*errStat
	protoErrors               int64
	disconnects               int64
	outOfOrder                int64

	// fan-out state
	pub        *conn   // the first publisher (fanout: the only one)
	pubs       []*conn // every publisher of this process
	localSubs  int
	validator  *conn
	pubID      string
	epochNs    int64 // publish timestamps are µs offsets from this
	lastPubOff int64
	measuring  bool
	published  int64
	acked      int64
	refused    int64 // publishes answered with an error
	ackReorder int64
	lastAck    int64
	ackHist    hist // µs from a publish's send to its ack
	received   int64
	firstSend  int64
	lastRecv   int64
	hist       hist
	frameBytes int
	// epoll statistics during the measured phase: a large share of full
	// batches means the generator, not the server, was the bottleneck.
	pollCalls, pollEvents, pollFull int64
	pbody                           []byte
	pframe                          []byte
	channelBytes                    []byte
}

func newLoop(cfg *config, nSubs, nPubs int, srcOffset int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	l := &loop{
		cfg:          cfg,
		epfd:         epfd,
		fdTab:        make(map[int]*conn, nSubs+1),
		rbuf:         make([]byte, max(64<<10, 4*cfg.size+4096)),
		wbuf:         make([]byte, 0, cfg.size+256),
		events:       make([]unix.EpollEvent, 1024),
		errs:         make(map[string]*errStat),
		rnd:          uint64(time.Now().UnixNano()) | 1,
		localSubs:    nSubs,
		channelBytes: []byte(cfg.channel),
	}
	copy(l.dst.Addr[:], cfg.dstIP.To4())
	l.dst.Port = cfg.dstPort
	for i := range cfg.srcIPs {
		ip := cfg.srcIPs[(i+srcOffset)%len(cfg.srcIPs)]
		var sa unix.SockaddrInet4
		copy(sa.Addr[:], ip.To4())
		l.srcs = append(l.srcs, sa)
	}
	l.request = fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", cfg.path, cfg.host)
	for range nSubs {
		l.conns = append(l.conns, &conn{role: roleSub, lastOff: -1, fd: -1})
	}
	for range nPubs {
		c := &conn{role: rolePub, lastOff: -1, fd: -1, nextAck: 2, sentAt: make([]int64, max(cfg.window, 1))}
		// In publish mode publishers do not subscribe: they are ready at
		// their welcome.
		c.subAck = cfg.mode == "publish"
		l.pubs = append(l.pubs, c)
		l.conns = append(l.conns, c)
	}
	if nPubs > 0 {
		l.pub = l.pubs[0]
	}
	if nSubs > 0 {
		l.validator = l.conns[0]
	}
	l.total = len(l.conns)
	return l, nil
}

func (l *loop) rand32() uint32 {
	l.rnd ^= l.rnd << 13
	l.rnd ^= l.rnd >> 7
	l.rnd ^= l.rnd << 17
	return uint32(l.rnd >> 16)
}

func (l *loop) note(kind, example string) {
	e := l.errs[kind]
	if e == nil {
		if len(l.errs) >= 32 {
			kind = "other"
			if e = l.errs[kind]; e == nil {
				e = &errStat{Example: example}
				l.errs[kind] = e
			}
		} else {
			e = &errStat{Example: example}
			l.errs[kind] = e
		}
	}
	e.Count++
}

func (l *loop) protoErr(kind, example string) {
	l.protoErrors++
	if len(example) > 200 {
		example = example[:200] + "..."
	}
	l.note(kind, example)
}

// startDial opens the next connection without blocking.
func (l *loop) startDial() {
	c := l.conns[l.nextDial]
	l.nextDial++
	l.inflight++
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		l.dialFailed(c, "socket", err)
		return
	}
	c.fd = fd
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if len(l.srcs) > 0 {
		// Choose the port at connect time (4-tuple unique), not at bind
		// time, so one source address serves many destinations.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		src := l.srcs[(l.nextDial-1)%len(l.srcs)]
		if err := unix.Bind(fd, &src); err != nil {
			l.dialFailed(c, "bind", err)
			return
		}
	}
	err = unix.Connect(fd, &l.dst)
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		l.dialFailed(c, "connect", err)
		return
	}
	l.fdTab[fd] = c
	ev := unix.EpollEvent{Events: unix.EPOLLOUT | unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(l.fdTab, fd)
		l.dialFailed(c, "epoll", err)
		return
	}
}

func (l *loop) dialFailed(c *conn, what string, err error) {
	l.dialErrors++
	l.note("dial_"+what, err.Error())
	l.closeConn(c)
}

// closeConn closes with a reset (SO_LINGER 0) so that no TIME_WAIT is left
// behind to exhaust ports across rounds.
func (l *loop) closeConn(c *conn) {
	if c.state == stClosed {
		return
	}
	wasReady := c.ready
	c.state = stClosed
	if c.fd >= 0 {
		delete(l.fdTab, c.fd)
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		_ = unix.SetsockoptLinger(c.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		_ = unix.Close(c.fd)
		c.fd = -1
	}
	c.pending, c.frag, c.out = nil, nil, nil
	if !wasReady {
		l.inflight--
		l.failed++
	}
}

// lost is a connection closed by the peer or by an error.
func (l *loop) lost(c *conn, kind, detail string) {
	if c.state == stClosed {
		return
	}
	if c.ready {
		l.disconnects++
	} else {
		l.dialErrors++
	}
	l.note(kind, detail)
	l.closeConn(c)
}

func (l *loop) closeAll() {
	for _, c := range l.conns {
		l.closeConn(c)
	}
	_ = unix.Close(l.epfd)
}

// poll waits up to timeout for events and handles them.
func (l *loop) poll(timeout time.Duration) error {
	ms := int((timeout + time.Millisecond - 1) / time.Millisecond)
	if timeout < 0 {
		ms = -1
	}
	if l.cfg.busyPoll && l.measuring {
		// Never sleep: the server's writes then find no sleeping reader to
		// wake, which on loopback it would otherwise pay for.
		ms = 0
	}
	n, err := unix.EpollWait(l.epfd, l.events, ms)
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return nil
		}
		return err
	}
	now := time.Now().UnixNano()
	if l.measuring {
		l.pollCalls++
		l.pollEvents += int64(n)
		if n == len(l.events) {
			l.pollFull++
		}
	}
	for i := range n {
		ev := l.events[i]
		c := l.fdTab[int(ev.Fd)]
		if c == nil {
			continue
		}
		if c.state == stConnecting {
			l.onConnected(c, ev.Events)
			continue
		}
		if ev.Events&unix.EPOLLOUT != 0 && len(c.out) > 0 {
			l.flush(c)
			if c.state == stClosed {
				continue
			}
		}
		if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
			l.readConn(c, now)
		}
	}
	return nil
}

func (l *loop) onConnected(c *conn, events uint32) {
	soerr, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err == nil && soerr != 0 {
		err = unix.Errno(soerr)
	}
	if err != nil {
		l.lost(c, "dial_connect", err.Error())
		return
	}
	if events&unix.EPOLLOUT == 0 {
		return
	}
	var nonce [16]byte
	for i := 0; i < 16; i += 4 {
		binary.LittleEndian.PutUint32(nonce[i:], l.rand32())
	}
	key := base64.StdEncoding.EncodeToString(nonce[:])
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	c.accept = base64.StdEncoding.EncodeToString(h[:])
	req := append(l.wbuf[:0], l.request...)
	req = append(req, "Sec-WebSocket-Key: "...)
	req = append(req, key...)
	req = append(req, "\r\n\r\n"...)
	c.state = stHandshake
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev); err != nil {
		l.lost(c, "dial_epoll", err.Error())
		return
	}
	l.write(c, req)
}

func (l *loop) setPollOut(c *conn, on bool) {
	if c.pollOut == on {
		return
	}
	c.pollOut = on
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

func (l *loop) write(c *conn, b []byte) {
	if c.state == stClosed {
		return
	}
	if len(c.out) > 0 {
		c.out = append(c.out, b...)
		return
	}
	n, err := unix.Write(c.fd, b)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			l.lost(c, "write", err.Error())
			return
		}
		n = 0
	}
	if n < len(b) {
		c.out = append(c.out, b[n:]...)
		l.setPollOut(c, true)
	}
}

func (l *loop) flush(c *conn) {
	n, err := unix.Write(c.fd, c.out)
	if err != nil {
		if !errors.Is(err, unix.EAGAIN) {
			l.lost(c, "write", err.Error())
		}
		return
	}
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = nil
		l.setPollOut(c, false)
	}
}

// appendFrame appends a masked client frame carrying payload.
func (l *loop) appendFrame(dst []byte, op ws.OpCode, payload []byte) []byte {
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
	binary.LittleEndian.PutUint32(mask[:], l.rand32())
	dst = append(dst, mask[:]...)
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

func (l *loop) sendFrame(c *conn, op ws.OpCode, payload []byte) {
	l.wbuf = l.appendFrame(l.wbuf[:0], op, payload)
	l.write(c, l.wbuf)
}

func (l *loop) readConn(c *conn, now int64) {
	if len(c.pending) > len(l.rbuf)/2 {
		l.rbuf = make([]byte, 2*len(l.rbuf)+len(c.pending))
	}
	n0 := copy(l.rbuf, c.pending)
	n, err := unix.Read(c.fd, l.rbuf[n0:])
	if err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return
		}
		l.lost(c, "read_error", err.Error())
		return
	}
	if n == 0 {
		l.lost(c, "closed_by_server", "EOF without close frame")
		return
	}
	data := l.rbuf[:n0+n]
	used := 0
	if c.state == stHandshake {
		i := bytes.Index(data, []byte("\r\n\r\n"))
		if i < 0 {
			if len(data) > 16<<10 {
				l.lost(c, "handshake", "response header too large")
				return
			}
			c.pending = append(c.pending[:0], data...)
			return
		}
		if !l.checkHandshake(c, data[:i]) {
			return
		}
		used = i + 4
		c.state = stOpen
		// Subscribe at once; the welcome must still come first.
		if !c.subAck {
			l.sendFrame(c, ws.OpText, fmt.Appendf(nil, `{"id":1,"op":"subscribe","channel":%q}`, l.cfg.channel))
			if c.state == stClosed {
				return
			}
		}
	}
	used += l.parseFrames(c, data[used:], now)
	if c.state == stClosed {
		return
	}
	if rest := data[used:]; len(rest) > 0 {
		c.pending = append(c.pending[:0], rest...)
	} else if c.pending != nil {
		c.pending = c.pending[:0]
	}
}

func (l *loop) checkHandshake(c *conn, hdr []byte) bool {
	lines := bytes.Split(hdr, []byte("\r\n"))
	if !bytes.HasPrefix(lines[0], []byte("HTTP/1.1 101")) {
		l.lost(c, "handshake_status", string(lines[0]))
		return false
	}
	var upgrade, accept bool
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
			accept = string(v) == c.accept
		}
	}
	if !upgrade || !accept {
		l.lost(c, "handshake_headers", fmt.Sprintf("upgrade=%v accept_ok=%v: %q", upgrade, accept, hdr))
		return false
	}
	return true
}

// parseFrames handles every complete frame in d and returns the bytes used.
func (l *loop) parseFrames(c *conn, d []byte, now int64) int {
	used := 0
	for {
		f, ok := nextFrame(d)
		if !ok {
			if f.length > maxServerFrame {
				l.protoErr("frame_too_large", strconv.FormatUint(f.length, 10))
				l.lost(c, "protocol", "frame too large")
			}
			return used
		}
		if f.masked {
			l.protoErr("masked_server_frame", "server frames must not be masked (RFC 6455 5.1)")
		}
		if f.rsv != 0 {
			l.protoErr("rsv_bits", fmt.Sprintf("first byte %#x", d[0]))
		}
		l.onFrame(c, f.op, f.fin, f.payload, now)
		if c.state == stClosed {
			return used
		}
		used += f.size
		d = d[f.size:]
	}
}

func (l *loop) onFrame(c *conn, op ws.OpCode, fin bool, p []byte, now int64) {
	switch op {
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		l.lost(c, "close_frame", fmt.Sprintf("code %d %q", code, reason))
	case ws.OpPing:
		l.sendFrame(c, ws.OpPong, p)
	case ws.OpPong:
	case ws.OpText, ws.OpBinary:
		if op == ws.OpBinary {
			l.protoErr("binary_frame", "binary frame on a JSON connection")
		}
		if !fin {
			c.frag = append(c.frag[:0], p...)
			return
		}
		l.onMessage(c, p, now)
	case ws.OpContinuation:
		c.frag = append(c.frag, p...)
		if fin {
			m := c.frag
			c.frag = nil
			l.onMessage(c, m, now)
		}
	default:
		l.protoErr("bad_opcode", fmt.Sprintf("opcode %d", op))
	}
}

var (
	opMessage = []byte(`"op":"message"`)
	dataKey   = []byte(`"data":"`)
	ackPrefix = []byte(`{"op":"ack","id":`)
)

type serverMsg struct {
	Op      string          `json:"op"`
	ID      *int64          `json:"id"`
	Conn    string          `json:"conn"`
	Node    string          `json:"node"`
	Proto   string          `json:"proto"`
	Channel *string         `json:"channel"`
	From    string          `json:"from"`
	Data    json.RawMessage `json:"data"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
}

func (l *loop) onMessage(c *conn, p []byte, now int64) {
	c.frames++
	if c.welcome && c != l.validator && bytes.Contains(p, opMessage) {
		l.onDelivery(c, p, now)
		return
	}
	if c.role == rolePub && c.welcome && bytes.HasPrefix(p, ackPrefix) {
		// Publish acks without encoding/json: {"op":"ack","id":N}.
		if id, n := parseUint(p[len(ackPrefix):]); n > 0 && len(p) == len(ackPrefix)+n+1 && p[len(p)-1] == '}' && id >= 2 {
			l.onPublishAnswer(c, id, true, p, now)
			return
		}
	}
	var m serverMsg
	if err := json.Unmarshal(p, &m); err != nil {
		l.protoErr("bad_json", string(p))
		return
	}
	switch m.Op {
	case "welcome":
		switch {
		case c.welcome:
			l.protoErr("duplicate_welcome", string(p))
		case c.frames != 1:
			l.protoErr("welcome_not_first", string(p))
		case m.Conn == "" || m.Proto != "json" || m.Node == "":
			l.protoErr("bad_welcome", string(p))
		}
		c.welcome = true
		c.id = m.Conn
		l.checkReady(c)
	case "ack":
		if !c.welcome {
			l.protoErr("ack_before_welcome", string(p))
		}
		switch {
		case m.ID == nil:
			l.protoErr("ack_without_id", string(p))
		case *m.ID == 1 && !c.subAck:
			c.subAck = true
			l.checkReady(c)
		case c.role == rolePub && *m.ID >= 2:
			l.onPublishAnswer(c, *m.ID, true, p, now)
		default:
			l.protoErr("unexpected_ack", string(p))
		}
	case "message":
		if !c.welcome {
			l.protoErr("message_before_welcome", string(p))
		}
		if c == l.validator {
			l.validate(&m, p)
		}
		l.onDelivery(c, p, now)
	case "error":
		if c.role == rolePub && m.ID != nil && *m.ID >= 2 && *m.ID < 2+c.pubSent {
			// A refused publish (e.g. "overloaded"): it is answered, so the
			// window moves on.
			l.onPublishAnswer(c, *m.ID, false, p, now)
			kind := "publish_refused_" + m.Code
			if l.cfg.mode == "publish" {
				l.note(kind, string(p))
			} else {
				l.protoErr(kind, string(p))
			}
			return
		}
		l.protoErr("error_reply", string(p))
	case "pong":
	default:
		l.protoErr("unknown_op", string(p))
	}
}

// onPublishAnswer handles the ack (ok) or error reply to publish id on
// publisher c.
func (l *loop) onPublishAnswer(c *conn, id int64, ok bool, p []byte, now int64) {
	seq := id - 2
	if seq >= c.pubSent {
		l.protoErr("unexpected_ack", string(p))
		return
	}
	if ok {
		l.acked++
	} else {
		l.refused++
	}
	c.pubAnswered++
	if id != c.nextAck {
		l.ackReorder++
	}
	c.nextAck = id + 1
	if seq >= c.pubSent-int64(len(c.sentAt)) {
		l.ackHist.record((now - c.sentAt[seq%int64(len(c.sentAt))]) / 1000)
	}
	if now > l.lastAck {
		l.lastAck = now
	}
}

func (l *loop) checkReady(c *conn) {
	if c.welcome && c.subAck && !c.ready {
		c.ready = true
		l.readyCount++
		l.inflight--
	}
}

// validate fully checks one subscriber's messages against the contract.
func (l *loop) validate(m *serverMsg, p []byte) {
	if m.Channel == nil || *m.Channel != l.cfg.channel {
		l.protoErr("message_wrong_channel", string(p))
	}
	if l.pubID != "" && m.From != l.pubID {
		l.protoErr("message_wrong_from", fmt.Sprintf("from %q, publisher is %q: %s", m.From, l.pubID, p))
	}
	var s string
	if err := json.Unmarshal(m.Data, &s); err != nil {
		l.protoErr("message_data_changed", string(p))
		return
	}
	off, n := parseUint([]byte(s))
	if n == 0 || off < 0 || strings.Trim(s[n:], "x") != "" {
		l.protoErr("message_data_changed", string(p))
	}
	if l.frameBytes == 0 {
		l.frameBytes = len(p)
	}
}

func parseUint(p []byte) (int64, int) {
	var v int64
	i := 0
	for i < len(p) && p[i] >= '0' && p[i] <= '9' {
		v = v*10 + int64(p[i]-'0')
		i++
	}
	return v, i
}

func (l *loop) onDelivery(c *conn, p []byte, now int64) {
	if c.role == rolePub {
		l.protoErr("publisher_got_own_message", string(p))
		return
	}
	i := bytes.Index(p, dataKey)
	if i < 0 {
		l.protoErr("message_without_data", string(p))
		return
	}
	q := p[i+len(dataKey):]
	off, n := parseUint(q)
	if n == 0 || n >= len(q) || (q[n] != 'x' && q[n] != '"') {
		l.protoErr("message_bad_data", string(p))
		return
	}
	if off <= c.lastOff {
		l.outOfOrder++
		if l.outOfOrder <= 5 {
			l.note("reordered_or_duplicate", fmt.Sprintf("send offset %d after %d", off, c.lastOff))
		}
	}
	c.lastOff = off
	l.received++
	if now > l.lastRecv {
		l.lastRecv = now
	}
	l.hist.record((now-l.epochNs)/1000 - off)
}

// publish sends the next publish of publisher c.
func (l *loop) publish(c *conn, now int64) {
	l.pframe = l.appendPublish(l.pframe[:0], c, now)
	l.write(c, l.pframe)
}

// appendPublish appends the frame of publisher c's next publish to dst and
// counts it as sent. Its data is the send time in µs since epochNs
// (strictly increasing), padded with 'x' to the frame size asked for.
func (l *loop) appendPublish(dst []byte, c *conn, now int64) []byte {
	seq := c.pubSent
	id := seq + 2
	off := (now - l.epochNs) / 1000
	if off <= l.lastPubOff && l.published > 0 {
		off = l.lastPubOff + 1
	}
	l.lastPubOff = off
	body := l.pbody[:0]
	body = append(body, `{"id":`...)
	body = strconv.AppendInt(body, id, 10)
	body = append(body, `,"op":"publish","channel":`...)
	body = strconv.AppendQuote(body, l.cfg.channel)
	body = append(body, `,"data":"`...)
	body = strconv.AppendInt(body, off, 10)
	// Pad so that the whole masked frame is cfg.size bytes.
	base := len(body) + 2
	hdr := 6
	switch {
	case l.cfg.size-14 > 0xffff:
		hdr = 14
	case l.cfg.size-6 >= 126:
		hdr = 8
	}
	for range max(0, l.cfg.size-hdr-base) {
		body = append(body, 'x')
	}
	body = append(body, `"}`...)
	l.pbody = body
	dst = l.appendFrame(dst, ws.OpText, body)
	if l.published == 0 {
		l.firstSend = now
	}
	if len(c.sentAt) > 0 {
		c.sentAt[seq%int64(len(c.sentAt))] = now
	}
	c.pubSent++
	l.published++
	return dst
}

// errorsOut returns the noted errors.
func (l *loop) errorsOut() map[string]*errStat {
	if len(l.errs) == 0 {
		return nil
	}
	return l.errs
}
