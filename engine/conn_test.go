package engine

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// upgrade drives d through the handshake and returns the welcome envelope.
func upgrade(t *testing.T, d *connDriver) map[string]string {
	t.Helper()
	writes := d.t.writes
	d.feed([]byte(upgradeRequest))
	if n := d.t.writes - writes; n != 1 {
		t.Fatalf("the handshake took %d writes, want the 101 response and the welcome in one", n)
	}
	out := d.t.takeOut()
	head, rest, ok := bytes.Cut(out, []byte("\r\n\r\n"))
	if !ok || !bytes.HasPrefix(head, []byte("HTTP/1.1 101 ")) {
		t.Fatalf("handshake response: %q", out)
	}
	if d.c.state != stateWS {
		t.Fatalf("state = %d after the handshake", d.c.state)
	}
	frames := readServerFrames(t, rest)
	if len(frames) != 1 || frames[0].Header.OpCode != ws.OpText {
		t.Fatalf("want one welcome text frame, got %+v", frames)
	}
	return jsonObject(t, frames[0].Payload)
}

func jsonObject(t *testing.T, b []byte) map[string]string {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	m := make(map[string]string, len(raw))
	for k, v := range raw {
		m[k] = string(v)
	}
	return m
}

// sendText sends one masked text message and returns the text frames the
// server wrote back to this connection.
func sendText(t *testing.T, d *connDriver, msg string) []map[string]string {
	t.Helper()
	d.feed(clientFrame(true, ws.OpText, []byte(msg)))
	return textReplies(t, d)
}

func textReplies(t *testing.T, d *connDriver) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, f := range readServerFrames(t, d.t.takeOut()) {
		if f.Header.OpCode != ws.OpText {
			t.Fatalf("unexpected frame %+v %q", f.Header, f.Payload)
		}
		out = append(out, jsonObject(t, f.Payload))
	}
	return out
}

// closeCode returns the status code of the single close frame in b.
func closeCode(t *testing.T, b []byte) (ws.StatusCode, string) {
	t.Helper()
	frames := readServerFrames(t, b)
	if len(frames) == 0 || frames[len(frames)-1].Header.OpCode != ws.OpClose {
		t.Fatalf("want a close frame last, got %+v", frames)
	}
	return ws.ParseCloseFrameData(frames[len(frames)-1].Payload)
}

func TestConnWelcome(t *testing.T) {
	s := newTestServer(t, Config{Node: "n1"})
	l, e := newTestLoop(t, s)
	d := newConnDriver(t, s, l, e)
	w := upgrade(t, d)
	if w["op"] != `"welcome"` || w["node"] != `"n1"` || w["proto"] != `"json"` || w["conn"] != `"`+d.c.id+`"` {
		t.Errorf("welcome = %v", w)
	}
	if got := l.stats.websockets.Load(); got != 1 {
		t.Errorf("websockets = %d", got)
	}
	d.close()
	if got := l.stats.websockets.Load(); got != 0 {
		t.Errorf("websockets after close = %d", got)
	}
	if got := l.stats.connections.Load(); got != 0 {
		t.Errorf("connections after close = %d", got)
	}
}

func TestConnRequests(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want []map[string]string
	}{
		{"ping", `{"op":"ping"}`, []map[string]string{{"op": `"pong"`}}},
		{"subscribe acks", `{"id":1,"op":"subscribe","channel":"c"}`, []map[string]string{{"op": `"ack"`, "id": "1"}}},
		{"subscribe without id is silent", `{"op":"subscribe","channel":"c"}`, nil},
		{"unsubscribe acks", `{"id":"u","op":"unsubscribe","channel":"c"}`, []map[string]string{{"op": `"ack"`, "id": `"u"`}}},
		{"publish acks", `{"id":2,"op":"publish","channel":"c","data":{}}`, []map[string]string{{"op": `"ack"`, "id": "2"}}},
		{"bad json", `{"op":`, []map[string]string{{"op": `"error"`, "code": `"bad_request"`, "message": `"invalid JSON"`}}},
		{"error echoes id", `{"id":5,"op":"nope"}`, []map[string]string{{"op": `"error"`, "id": "5", "code": `"bad_request"`, "message": `"unknown op"`}}},
		{"anonymous broadcast refused", `{"id":6,"op":"broadcast","data":1}`,
			[]map[string]string{{"op": `"error"`, "id": "6", "code": `"unauthorized"`, "message": `"broadcast needs a token with the broadcast grant"`}}},
		{"auth without a verifier", `{"id":7,"op":"auth","token":"x.y.z"}`,
			[]map[string]string{{"op": `"error"`, "id": "7", "code": `"unauthorized"`, "message": `"this server accepts no tokens"`}}},
		{"anonymous private subscribe refused", `{"id":8,"op":"subscribe","channel":"private-x"}`,
			[]map[string]string{{"op": `"error"`, "id": "8", "code": `"unauthorized"`, "message": `"private channels need a token"`}}},
		{"wrong field type keeps the id", `{"id":9,"op":"subscribe","channel":5}`,
			[]map[string]string{{"op": `"error"`, "id": "9", "code": `"bad_request"`, "message": `"a field has the wrong type"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{})
			l, e := newTestLoop(t, s)
			d := newConnDriver(t, s, l, e)
			upgrade(t, d)
			got := sendText(t, d, tt.msg)
			if len(got) != len(tt.want) {
				t.Fatalf("replies = %v, want %v", got, tt.want)
			}
			for i := range got {
				if len(got[i]) != len(tt.want[i]) {
					t.Errorf("reply %d = %v, want %v", i, got[i], tt.want[i])
					continue
				}
				for k, v := range tt.want[i] {
					if got[i][k] != v {
						t.Errorf("reply %d field %s = %s, want %s", i, k, got[i][k], v)
					}
				}
			}
			if d.c.state != stateWS {
				t.Errorf("state = %d, want the connection open", d.c.state)
			}
			d.close()
		})
	}
}

func TestConnPublishFanout(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	pub := newConnDriver(t, s, l, e)
	upgrade(t, pub)
	subs := make([]*connDriver, 3)
	for i := range subs {
		subs[i] = newConnDriver(t, s, l, e)
		upgrade(t, subs[i])
		sendText(t, subs[i], `{"op":"subscribe","channel":"room"}`)
	}
	// The publisher is subscribed too: it does not get its own message.
	sendText(t, pub, `{"op":"subscribe","channel":"room"}`)
	got := sendText(t, pub, `{"id":1,"op":"publish","channel":"room","data":{"t":"hi"}}`)
	if len(got) != 1 || got[0]["op"] != `"ack"` {
		t.Fatalf("publisher got %v, want only its ack", got)
	}
	for i, d := range subs {
		msgs := textReplies(t, d)
		if len(msgs) != 1 {
			t.Fatalf("subscriber %d got %v", i, msgs)
		}
		m := msgs[0]
		if m["op"] != `"message"` || m["channel"] != `"room"` || m["from"] != `"`+pub.c.id+`"` || m["data"] != `{"t":"hi"}` {
			t.Errorf("subscriber %d got %v", i, m)
		}
	}
	// Unsubscribe, then a second publish reaches the other two only.
	sendText(t, subs[0], `{"op":"unsubscribe","channel":"room"}`)
	sendText(t, pub, `{"op":"publish","channel":"room","data":2}`)
	if msgs := textReplies(t, subs[0]); len(msgs) != 0 {
		t.Errorf("unsubscribed connection got %v", msgs)
	}
	for _, d := range subs[1:] {
		if msgs := textReplies(t, d); len(msgs) != 1 || msgs[0]["data"] != "2" {
			t.Errorf("subscriber got %v", msgs)
		}
	}
	for _, d := range append(subs, pub) {
		d.close()
	}
	if len(l.subs) != 0 || l.stats.subscriptions.Load() != 0 {
		t.Errorf("subscriptions left after every close: %v, %d", l.subs, l.stats.subscriptions.Load())
	}
	s.hub.mu.RLock()
	defer s.hub.mu.RUnlock()
	if len(s.hub.interest) != 0 {
		t.Errorf("hub interest left: %v", s.hub.interest)
	}
}

func TestConnFragmentedMessage(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	d := newConnDriver(t, s, l, e)
	upgrade(t, d)
	msg := []byte(`{"id":3,"op":"ping"}`)
	in := clientFrame(false, ws.OpText, msg[:5])
	in = append(in, clientFrame(true, ws.OpPing, []byte("p"))...) // control frames may interleave
	in = append(in, clientFrame(false, ws.OpContinuation, msg[5:10])...)
	in = append(in, clientFrame(true, ws.OpContinuation, msg[10:])...)
	d.feed(in)
	frames := readServerFrames(t, d.t.takeOut())
	if len(frames) != 2 || frames[0].Header.OpCode != ws.OpPong || string(frames[0].Payload) != "p" ||
		frames[1].Header.OpCode != ws.OpText || string(frames[1].Payload) != `{"op":"pong"}` {
		t.Fatalf("frames = %+v", frames)
	}
}

func TestConnFailures(t *testing.T) {
	big := strings.Repeat("x", 200)
	tests := []struct {
		name string
		in   []byte
		code ws.StatusCode
	}{
		{"unmasked frame", rawFrame(true, ws.OpText, false, [4]byte{}, []byte(`{"op":"ping"}`)), proto.CloseProtocolError},
		{"rsv bit", append([]byte{0xc1}, clientFrame(true, ws.OpText, nil)[1:]...), proto.CloseProtocolError},
		{"reserved opcode", clientFrame(true, 0x3, nil), proto.CloseProtocolError},
		{"unexpected continuation", clientFrame(true, ws.OpContinuation, []byte("x")), proto.CloseProtocolError},
		{"control not final", clientFrame(false, ws.OpPing, nil), proto.CloseProtocolError},
		{"control too long", clientFrame(true, ws.OpPing, []byte(big)), proto.CloseProtocolError},
		{"64-bit MSB", []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, proto.CloseProtocolError},
		{"absurd length", []byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, proto.CloseMessageTooBig},
		{"message over limit", clientFrame(true, ws.OpText, make([]byte, 1<<10+1)), proto.CloseMessageTooBig},
		{"fragments over limit", append(clientFrame(false, ws.OpText, make([]byte, 600)), clientFrame(true, ws.OpContinuation, make([]byte, 600))...), proto.CloseMessageTooBig},
		{"binary message", clientFrame(true, ws.OpBinary, []byte{1}), proto.CloseUnsupportedData},
		{"invalid UTF-8", clientFrame(true, ws.OpText, []byte("\xff")), proto.CloseInvalidPayload},
		{"close 1-byte payload", clientFrame(true, ws.OpClose, []byte{3}), proto.CloseProtocolError},
		{"close code 999", clientFrame(true, ws.OpClose, []byte{0x03, 0xe7}), proto.CloseProtocolError},
		{"close code 1005", clientFrame(true, ws.OpClose, []byte{0x03, 0xed}), proto.CloseProtocolError},
		{"close reason bad UTF-8", clientFrame(true, ws.OpClose, []byte{0x03, 0xe8, 0xff}), proto.CloseInvalidPayload},
		{"client close echoed", clientFrame(true, ws.OpClose, []byte{0x03, 0xe8, 'b', 'y', 'e'}), proto.CloseNormal},
		{"client close 4000 echoed", clientFrame(true, ws.OpClose, []byte{0x0f, 0xa0}), 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{MaxMessage: 1 << 10})
			l, e := newTestLoop(t, s)
			d := newConnDriver(t, s, l, e)
			upgrade(t, d)
			d.feed(tt.in)
			code, _ := closeCode(t, d.t.takeOut())
			if code != tt.code {
				t.Errorf("close code %d, want %d", code, tt.code)
			}
			if strings.HasPrefix(tt.name, "client close") {
				// The client ended the handshake: closed at once.
				if !d.t.closed.Load() || d.t.halfClosed {
					t.Errorf("state %d, half-closed %v, closed %v; want closed at once", d.c.state, d.t.halfClosed, d.t.closed.Load())
				}
				d.close()
				return
			}
			if d.c.state != stateClosing || !d.t.halfClosed {
				t.Errorf("state %d, half-closed %v; want closing", d.c.state, d.t.halfClosed)
			}
			// Input after the close is drained, nothing more is written.
			d.feed(clientFrame(true, ws.OpText, []byte(`{"op":"ping"}`)))
			if len(d.buf) != 0 || len(d.t.out) != 0 {
				t.Errorf("after close: %d bytes unconsumed, wrote %q", len(d.buf), d.t.out)
			}
			d.close()
		})
	}
}

// An empty close frame gets an empty close back.
func TestConnEmptyClose(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	d := newConnDriver(t, s, l, e)
	upgrade(t, d)
	d.feed(clientFrame(true, ws.OpClose, nil))
	frames := readServerFrames(t, d.t.takeOut())
	if len(frames) != 1 || frames[0].Header.OpCode != ws.OpClose || len(frames[0].Payload) != 0 {
		t.Fatalf("frames = %+v", frames)
	}
	d.close()
}

func TestConnSlowConsumer(t *testing.T) {
	s := newTestServer(t, Config{MaxOutbound: 4096})
	l, e := newTestLoop(t, s)
	pub := newConnDriver(t, s, l, e)
	upgrade(t, pub)
	sub := newConnDriver(t, s, l, e)
	upgrade(t, sub)
	sendText(t, sub, `{"op":"subscribe","channel":"c"}`)
	sub.t.buffered = 4000 // the peer stopped reading
	sendText(t, pub, `{"op":"publish","channel":"c","data":"`+strings.Repeat("x", 200)+`"}`)
	if !sub.t.closed.Load() {
		t.Fatalf("slow consumer not closed")
	}
	code, _ := closeCode(t, sub.t.takeOut())
	if code != proto.CloseSlowConsumer {
		t.Errorf("close code %d, want %d", code, proto.CloseSlowConsumer)
	}
	if got := l.stats.slowClosed.Load(); got != 1 {
		t.Errorf("slowClosed = %d", got)
	}
	sub.close()
	pub.close()
}

func TestConnTooManySubscriptions(t *testing.T) {
	s := newTestServer(t, Config{MaxSubscriptions: 2})
	l, e := newTestLoop(t, s)
	d := newConnDriver(t, s, l, e)
	upgrade(t, d)
	sendText(t, d, `{"op":"subscribe","channel":"a"}`)
	sendText(t, d, `{"op":"subscribe","channel":"b"}`)
	got := sendText(t, d, `{"id":3,"op":"subscribe","channel":"c"}`)
	if len(got) != 1 || got[0]["code"] != `"limit_exceeded"` || got[0]["id"] != "3" {
		t.Errorf("third subscribe: %v", got)
	}
	// Resubscribing to a held channel is not a new subscription.
	got = sendText(t, d, `{"id":4,"op":"subscribe","channel":"a"}`)
	if len(got) != 1 || got[0]["op"] != `"ack"` || got[0]["id"] != "4" {
		t.Errorf("resubscribe at the limit: %v, want an ack", got)
	}
	if len(d.c.chans) != 2 {
		t.Errorf("chans = %v", d.c.chans)
	}
	d.close()
}

func TestHTTPResponses(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantStatus []string // status lines, in order
		closing    bool
	}{
		{"healthz", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 200 OK"}, false},
		{"healthz head", "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 200 OK"}, false},
		{"healthz post", "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", []string{"HTTP/1.1 405 Method Not Allowed"}, false},
		{"static index", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 200 OK"}, false},
		{"static missing", "GET /nope.txt HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 404 Not Found"}, false},
		{"dotfile refused", "GET /.env HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 404 Not Found"}, false},
		{"metrics", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 200 OK"}, false},
		{"pipelined", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
			[]string{"HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 200 OK"}, false},
		{"connection close", "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
			[]string{"HTTP/1.1 200 OK"}, true},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", []string{"HTTP/1.1 400 Bad Request"}, true},
		{"chunked body", "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", []string{"HTTP/1.1 411 Length Required"}, true},
		{"body too large", "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", []string{"HTTP/1.1 413 Request Entity Too Large"}, true},
		{"head too large", "GET /" + strings.Repeat("a", 17<<10) + " HTTP/1.1\r\n", []string{"HTTP/1.1 431 Request Header Fields Too Large"}, true},
		{"ws without upgrade headers", "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", []string{"HTTP/1.1 400 Bad Request"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, Config{})
			l, e := newTestLoop(t, s)
			d := newConnDriver(t, s, l, e)
			d.feed([]byte(tt.in))
			got := statusLines(d.t.takeOut())
			if strings.Join(got, "|") != strings.Join(tt.wantStatus, "|") {
				t.Errorf("status lines %q, want %q", got, tt.wantStatus)
			}
			if closing := d.c.state == stateClosing; closing != tt.closing {
				t.Errorf("closing = %v, want %v", closing, tt.closing)
			}
			d.close()
		})
	}
}

// statusLines returns the status line of every response in out, skipping
// bodies by Content-Length (HEAD responses included: their declared length
// is not followed by a body, so a body that starts with "HTTP/1.1 " is
// taken for the next response).
func statusLines(out []byte) []string {
	var lines []string
	for len(out) > 0 {
		head, rest, ok := bytes.Cut(out, []byte("\r\n\r\n"))
		if !ok {
			lines = append(lines, "INCOMPLETE: "+string(out[:min(len(out), 40)]))
			break
		}
		status, _, _ := bytes.Cut(head, []byte("\r\n"))
		lines = append(lines, string(status))
		n := 0
		for _, h := range bytes.Split(head, []byte("\r\n")) {
			if k, v, ok := bytes.Cut(h, []byte(":")); ok && strings.EqualFold(string(k), "Content-Length") {
				n = atoi(strings.TrimSpace(string(v)))
			}
		}
		if bytes.HasPrefix(rest, []byte("HTTP/1.1 ")) || n > len(rest) {
			n = 0
		}
		out = rest[n:]
	}
	return lines
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// Input split at every byte still yields the same responses.
func TestHTTPSplitEverywhere(t *testing.T) {
	in := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + upgradeRequest)
	in = append(in, clientFrame(true, ws.OpText, []byte(`{"op":"ping"}`))...)
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	for split := 1; split < len(in); split++ {
		d := newConnDriver(t, s, l, e)
		d.feed(in[:split])
		d.feed(in[split:])
		out := d.t.takeOut()
		if !bytes.HasPrefix(out, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.Contains(out, []byte("HTTP/1.1 101 ")) || !bytes.HasSuffix(out, []byte(`{"op":"pong"}`)) {
			t.Fatalf("split at %d: %q", split, out)
		}
		d.close()
	}
}

// Messages cross protocols: JSON data reaches a binary subscriber as the
// same text, opaque bytes reach a JSON subscriber as base64.
func TestConnCrossProtocolFanout(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	jsonSub := newConnDriver(t, s, l, e)
	upgrade(t, jsonSub)
	sendText(t, jsonSub, `{"op":"subscribe","channel":"c"}`)

	binSub := newConnDriver(t, s, l, e)
	binSub.feed([]byte(upgradeRequestFor(true)))
	if !binSub.c.bin {
		t.Fatal("X-Bin-Protocol did not select the binary protocol")
	}
	binSub.feed(clientFrame(true, ws.OpBinary, []byte{proto.BinSubscribe, 1, 'c'}))
	binSub.t.takeOut()

	// A binary publisher sends opaque bytes with id 5.
	pub := newConnDriver(t, s, l, e)
	pub.feed([]byte(upgradeRequestFor(true)))
	pub.t.takeOut()
	pub.feed(clientFrame(true, ws.OpBinary, []byte{0x80 | 0x40 | proto.BinPublish, 5, 1, 'c', 0x00, 0xff}))
	frames := readServerFrames(t, pub.t.takeOut())
	if len(frames) != 1 || frames[0].Header.OpCode != ws.OpBinary || !bytes.Equal(frames[0].Payload, []byte{0x80 | proto.BinAck, 5}) {
		t.Fatalf("publisher got %+v", frames)
	}
	got := textReplies(t, jsonSub)
	if len(got) != 1 || got[0]["enc"] != `"base64"` || got[0]["data"] != `"AP8="` {
		t.Errorf("JSON subscriber got %v", got)
	}
	frames = readServerFrames(t, binSub.t.takeOut())
	if len(frames) != 1 || frames[0].Header.OpCode != ws.OpBinary || frames[0].Payload[0] != 0x40|proto.BinMessage ||
		!bytes.HasSuffix(frames[0].Payload, []byte{0x00, 0xff}) {
		t.Errorf("binary subscriber got %+v", frames)
	}

	// A JSON publisher: the binary subscriber gets the JSON text, B clear.
	jpub := newConnDriver(t, s, l, e)
	upgrade(t, jpub)
	sendText(t, jpub, `{"op":"publish","channel":"c","data":{"k":1}}`)
	frames = readServerFrames(t, binSub.t.takeOut())
	if len(frames) != 1 || frames[0].Payload[0] != proto.BinMessage || !bytes.HasSuffix(frames[0].Payload, []byte(`{"k":1}`)) {
		t.Errorf("binary subscriber got %+v", frames)
	}
	for _, d := range []*connDriver{jsonSub, binSub, pub, jpub} {
		d.close()
	}
}

// A client's close handshake closes the connection at once, unless the
// kernel still holds back part of what was written to it: then the close
// frame waits behind it, the connection lingers, and it half-closes once
// the socket took everything, so the queued frames are not lost with the
// socket.
func TestConnClientCloseWithBacklog(t *testing.T) {
	for _, backlog := range []int{0, 100} {
		s := newTestServer(t, Config{})
		l, e := newTestLoop(t, s)
		d := newConnDriver(t, s, l, e)
		upgrade(t, d)
		d.t.buffered = backlog
		d.feed(clientFrame(true, ws.OpClose, []byte{0x03, 0xe8}))
		if backlog > 0 {
			if d.t.closed.Load() || d.t.halfClosed || d.c.state != stateClosing || d.t.waits != 1 {
				t.Errorf("backlog: closed %v, half-closed %v, state %d, waits %d; want lingering, waiting for the socket",
					d.t.closed.Load(), d.t.halfClosed, d.c.state, d.t.waits)
			}
			d.t.buffered = 0 // the kernel took the backlog
			d.c.Writable()
		}
		if code, _ := closeCode(t, d.t.takeOut()); code != proto.CloseNormal {
			t.Errorf("backlog %d: close code %d, want 1000", backlog, code)
		}
		closed, half := d.t.closed.Load(), d.t.halfClosed
		if backlog == 0 && (!closed || half) {
			t.Errorf("no backlog: closed %v, half-closed %v; want closed at once", closed, half)
		}
		if backlog > 0 && (closed || !half || d.c.state != stateClosing) {
			t.Errorf("backlog: closed %v, half-closed %v, state %d; want lingering", closed, half, d.c.state)
		}
		d.close()
	}
}

// An idle connection holds no outbound buffer: once its frames are
// written the buffer goes back to the loop, which lends it to the next
// connection with frames to send.
func TestConnIdleHoldsNoOutBuffer(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	a, b := newConnDriver(t, s, l, e), newConnDriver(t, s, l, e)
	upgrade(t, a)
	if a.c.out != nil || len(l.spareOut) != 1 {
		t.Fatalf("after the welcome: out %d bytes (cap %d), %d spare buffers; want none held, 1 spare", len(a.c.out), cap(a.c.out), len(l.spareOut))
	}
	upgrade(t, b) // reuses the spare buffer
	sendText(t, a, `{"id":1,"op":"ping"}`)
	if a.c.out != nil || b.c.out != nil || len(l.spareOut) != 1 {
		t.Fatalf("after replies: out %v/%v, %d spare buffers; want none held, 1 spare", a.c.out != nil, b.c.out != nil, len(l.spareOut))
	}
}
