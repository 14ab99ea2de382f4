package main

// The fan-out, publish and idle modes: subscribers and publishers on the
// epoll client (client.go), the protocol checks of every message they
// receive, the publish frames and the delivery latencies.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

type connRole uint8

const (
	roleSub connRole = iota
	rolePub
)

// conn is a subscriber or a publisher of the fan-out, publish or idle mode.
type conn struct {
	wsConn
	role    connRole
	id      string // connection id from the welcome
	frames  int    // data messages received
	welcome bool
	subAck  bool
	ready   bool
	pong    bool  // centrifugo: answer the server's pings ("{}")
	lastOff int64 // send offset of the last delivery, -1 before the first
	sample  bool  // wss:// with --tls-sample: decrypts and checks everything
	counted int64 // detached: deliveries counted from its records so far

	// hold mode: failed attempts since it was last ready, and whether it
	// was lost since the last MARK.
	attempts int
	lostMark bool
	got      int64 // deliveries in the current hold command
	pongs    int   // hold: answers to its pings (op ping)

	// publisher state: publishes sent and answered (ack or error) on this
	// connection, the id expected next, and the send times of the last
	// --window publishes (for the ack latency).
	pubSent, pubAnswered, nextAck int64
	sentAt                        []int64
}

func (c *conn) transport() *wsConn { return &c.wsConn }

// loop drives the connections of one process in the fan-out, publish and
// idle modes.
type loop struct {
	client[*conn]
	cfg   *config
	conns []*conn

	total, nextDial, inflight int
	readyCount, failed        int
	dialErrors                int64
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
	tlsCount   tlsCount // --tls-sample (tlscount.go)
	endN       int64    // fanout: publishes the END line announced (-1 before)
	dataLen    int      // length of a publish's data (fixed for the run)
	pbody      []byte
	pframe     []byte

	cent bool // the client protocol: Centrifugo's (--protocol centrifugo), else ZenConn's

	hold  *holdState // hold mode: reconnection (hold.go); nil in the other modes
	bcast bool       // hold mode: the publishes are broadcasts
}

// firstPubID is the id of a publisher's first publish: the ids below it
// are the handshake's (ZenConn: 1 subscribe; Centrifugo: 1 connect, 2
// subscribe).
func (l *loop) firstPubID() int64 {
	if l.cent {
		return 3
	}
	return 2
}

// newLoop makes the loop of process idx: nSubs subscribers, spread over
// the URLs of --url in turn (counting the subscribers of the processes
// before it), and nPubs publishers on the --pub-url one.
func newLoop(cfg *config, nSubs, nPubs int, idx int) (*loop, error) {
	// Every process measures from the run's epoch, known before the
	// first connection: a delivery may arrive before the GO line that
	// starts the publishing reaches this process.
	l := &loop{cfg: cfg, localSubs: nSubs, cent: cfg.protocol == "centrifugo", endN: -1, epochNs: cfg.epochNs}
	if err := l.init(cfg, l, nSubs+nPubs, idx); err != nil {
		return nil, err
	}
	first := 0
	for i := range idx {
		first += share(cfg.conns, i, cfg.procs)
	}
	for i := range nSubs {
		t := uint8((first + i) % len(cfg.targets))
		l.conns = append(l.conns, &conn{role: roleSub, lastOff: -1, wsConn: wsConn{fd: -1, target: t},
			sample: isSample(cfg, i)})
	}
	for range nPubs {
		t := uint8(cfg.pubTarget)
		c := &conn{role: rolePub, lastOff: -1, wsConn: wsConn{fd: -1, target: t},
			nextAck: l.firstPubID(), sentAt: make([]int64, max(cfg.window, 1))}
		// In publish mode publishers do not subscribe: they are ready at
		// their welcome. Nor do Centrifugo's, which would receive their
		// own messages (ZenConn does not send a publisher its own).
		c.subAck = cfg.mode == "publish" || l.cent
		l.pubs = append(l.pubs, c)
		l.conns = append(l.conns, c)
	}
	if nPubs > 0 {
		l.pub = l.pubs[0]
	}
	if nSubs > 0 {
		// With several URLs, a subscriber of another node than the
		// publisher's, so that what crossed nodes is checked in full.
		l.validator = l.conns[0]
		for _, c := range l.conns[:nSubs] {
			if int(c.target) != cfg.pubTarget {
				l.validator = c
				break
			}
		}
	}
	l.total = len(l.conns)
	return l, nil
}

// measure starts (on) or ends the measured phase: epoll waits are counted,
// and with --busy-poll they never sleep.
func (l *loop) measure(on bool) {
	l.counting = on
	l.busy = on && l.cfg.busyPoll
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
	l.dial(c)
}

// closeConn closes c for good; a connection that was not ready yet counts
// as failed.
func (l *loop) closeConn(c *conn) {
	if c.closed() {
		return
	}
	l.closeFd(c)
	if !c.ready {
		l.inflight--
		l.failed++
	}
}

// lost is a connection closed by the peer or by an error.
func (l *loop) lost(c *conn, kind, detail string) { l.lostCode(c, 1006, kind, detail) }

// lostCode is lost with the close code the connection ended with (1006:
// none, the connection ended without a close frame).
func (l *loop) lostCode(c *conn, code int, kind, detail string) {
	if c.closed() {
		return
	}
	if l.hold != nil {
		l.holdLost(c, code, kind, detail)
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
	l.closeEpoll()
}

// onUpgrade subscribes at once; the welcome must still come first.
func (l *loop) onUpgrade(c *conn, _ int64) {
	if l.cent {
		l.send(c, ws.OpText, centConnect)
		return
	}
	if c.role == rolePub && l.cfg.hold.token != "" {
		// No id: no ack; a refused token is answered with an error.
		l.send(c, ws.OpText, fmt.Appendf(nil, `{"op":"auth","token":%q}`, l.cfg.hold.token))
	}
	if !c.subAck {
		l.send(c, ws.OpText, fmt.Appendf(nil, `{"id":1,"op":"subscribe","channel":%q}`, l.cfg.channel))
	}
}

func (l *loop) onCloseFrame(c *conn, code ws.StatusCode, reason string, _ int64) {
	l.lostCode(c, int(code), "close_frame", fmt.Sprintf("code %d %q", code, reason))
}

func (l *loop) onEnd(c *conn, err error, _ int64) {
	if err != nil {
		l.lost(c, "read_error", err.Error())
		return
	}
	l.lost(c, "closed_by_server", "EOF without close frame")
}

func (l *loop) onFail(c *conn, kind, detail string) { l.lost(c, kind, detail) }

// onBadFrame counts the frame; a binary message is then read as text.
func (l *loop) onBadFrame(_ *conn, kind, example string, _ int64) { l.protoErr(kind, example) }

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
	if l.cent {
		l.onCentFrame(c, p, now)
		return
	}
	c.frames++
	if c.welcome && c != l.validator && bytes.Contains(p, opMessage) {
		l.onDelivery(c, p, now)
		return
	}
	if id, ok := fastAck(c, p); ok {
		l.onPublishAnswer(c, id, true, p, now)
		return
	}
	var m serverMsg
	if err := json.Unmarshal(p, &m); err != nil {
		l.protoErr("bad_json", string(p))
		return
	}
	switch m.Op {
	case "welcome":
		l.onWelcome(c, &m, p)
	case "ack":
		l.onAck(c, &m, p, now)
	case "message":
		if !c.welcome {
			l.protoErr("message_before_welcome", string(p))
		}
		if c == l.validator {
			l.validate(&m, p)
		}
		l.onDelivery(c, p, now)
	case "error":
		l.onErrorReply(c, &m, p, now)
	case "pong":
		c.pongs++
	default:
		l.protoErr("unknown_op", string(p))
	}
}

// fastAck reads a publish ack without encoding/json: {"op":"ack","id":N},
// N >= 2, on a publisher after its welcome.
func fastAck(c *conn, p []byte) (int64, bool) {
	if c.role != rolePub || !c.welcome || !bytes.HasPrefix(p, ackPrefix) {
		return 0, false
	}
	id, n := parseUint(p[len(ackPrefix):])
	return id, n > 0 && len(p) == len(ackPrefix)+n+1 && p[len(p)-1] == '}' && id >= 2
}

// onWelcome checks the welcome: first, once, complete.
func (l *loop) onWelcome(c *conn, m *serverMsg, p []byte) {
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
}

// onAck: the subscribe's ack (id 1) or a publish's (id 2 on).
func (l *loop) onAck(c *conn, m *serverMsg, p []byte, now int64) {
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
}

// onErrorReply: a refused publish (e.g. "overloaded") is answered, so the
// window moves on; any other error reply is a protocol error.
func (l *loop) onErrorReply(c *conn, m *serverMsg, p []byte, now int64) {
	if c.role != rolePub || m.ID == nil || *m.ID < l.firstPubID() || *m.ID >= l.firstPubID()+c.pubSent {
		l.protoErr("error_reply", string(p))
		return
	}
	l.onPublishAnswer(c, *m.ID, false, p, now)
	l.noteRefused(m.Code, p)
}

// noteRefused records a refused publish: a protocol error in fan-out runs,
// a note in publish runs (the node pushing back).
func (l *loop) noteRefused(code string, p []byte) {
	kind := "publish_refused_" + code
	if l.cfg.mode == "publish" {
		l.note(kind, string(p))
	} else {
		l.protoErr(kind, string(p))
	}
}

// onPublishAnswer handles the ack (ok) or error reply to publish id on
// publisher c.
func (l *loop) onPublishAnswer(c *conn, id int64, ok bool, p []byte, now int64) {
	seq := id - l.firstPubID()
	if seq < 0 || seq >= c.pubSent {
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
		if l.hold != nil {
			c.attempts = 0
			l.hold.lastReady = time.Now().UnixNano()
		}
		if c.role == roleSub && !c.sample && c.br != nil {
			l.queueDetach(c)
		}
	}
}

// validate fully checks one subscriber's messages against the contract.
func (l *loop) validate(m *serverMsg, p []byte) {
	l.validateMsg(m.Channel, m.From, m.Data, p)
}

// validateMsg checks a message's channel, sender (the publisher's
// connection id) and data (the send offset and its padding, unchanged).
func (l *loop) validateMsg(channel *string, from string, data json.RawMessage, p []byte) {
	if l.bcast && channel == nil {
		// A broadcast: a message without a channel.
	} else if channel == nil || *channel != l.cfg.channel {
		l.protoErr("message_wrong_channel", string(p))
	}
	if l.pubID != "" && from != l.pubID {
		l.protoErr("message_wrong_from", fmt.Sprintf("from %q, publisher is %q: %s", from, l.pubID, p))
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
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

// publishDataLen is the length of every publish's data in a run: what
// makes the first publish's masked frame size bytes (its JSON without the
// data is fixed bytes long), and at least 10 (a send offset in µs takes up
// to 10 digits). The data keeps that length while the publish ids grow a
// digit (the publish then grows a byte), so that every delivery of a run
// has the same size: --tls-sample counts deliveries by their size.
func publishDataLen(size, fixed int) int {
	hdr := 6
	switch {
	case size-14 > 0xffff:
		hdr = 14
	case size-6 >= 126:
		hdr = 8
	}
	return max(10, size-hdr-fixed)
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
	c.got++
	l.noteFrameSize(len(p))
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
// (strictly increasing), padded with 'x' to the run's fixed length
// (publishDataLen), which makes the first publish's frame --size bytes.
func (l *loop) appendPublish(dst []byte, c *conn, now int64) []byte {
	seq := c.pubSent
	id := seq + l.firstPubID()
	off := (now - l.epochNs) / 1000
	if off <= l.lastPubOff && l.published > 0 {
		off = l.lastPubOff + 1
	}
	l.lastPubOff = off
	body := l.pbody[:0]
	body = append(body, `{"id":`...)
	body = strconv.AppendInt(body, id, 10)
	end := `"}`
	switch {
	case l.bcast:
		body = append(body, `,"op":"broadcast"`...)
	case l.cent:
		body = append(body, `,"publish":{"channel":`...)
		end = `"}}`
		body = strconv.AppendQuote(body, l.cfg.channel)
	default:
		body = append(body, `,"op":"publish","channel":`...)
		body = strconv.AppendQuote(body, l.cfg.channel)
	}
	body = append(body, `,"data":"`...)
	start := len(body)
	body = strconv.AppendInt(body, off, 10)
	if l.dataLen == 0 {
		l.dataLen = publishDataLen(l.cfg.size, start+len(end))
	}
	for range l.dataLen - (len(body) - start) {
		body = append(body, 'x')
	}
	body = append(body, end...)
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
