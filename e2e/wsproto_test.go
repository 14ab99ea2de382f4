package e2e

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

func TestWSHandshake(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	key, accept := wsKey()
	good := []string{"Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"}
	without := func(name string) []string {
		var out []string
		for _, h := range good {
			if !strings.HasPrefix(h, name+":") {
				out = append(out, h)
			}
		}
		return out
	}
	with := func(name, value string) []string { return append(without(name), name+": "+value) }

	t.Run("valid", func(t *testing.T) {
		c := s.dialRaw(t)
		c.write(rawRequest("GET", "/ws", good...))
		_ = c.conn.SetReadDeadline(time.Now().Add(defaultTimeout))
		resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		if got := resp.Header.Get("Sec-WebSocket-Accept"); got != accept {
			t.Errorf("Sec-WebSocket-Accept %q, want %q", got, accept)
		}
		if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !hasToken(resp.Header.Get("Connection"), "Upgrade") {
			t.Errorf("Upgrade %q Connection %q, want websocket / Upgrade", resp.Header.Get("Upgrade"), resp.Header.Get("Connection"))
		}
	})

	for _, tc := range []struct {
		name    string
		method  string
		headers []string
		want    int
	}{
		{"missing Sec-WebSocket-Key", "GET", without("Sec-WebSocket-Key"), 400},
		{"Sec-WebSocket-Key not 16 bytes", "GET", with("Sec-WebSocket-Key", "c2hvcnQ="), 400},
		{"missing Upgrade", "GET", without("Upgrade"), 400},
		{"Upgrade not websocket", "GET", with("Upgrade", "h2c"), 400},
		{"missing Connection", "GET", without("Connection"), 400},
		{"POST", "POST", append(good, "Content-Length: 0"), 400},
		{"PUT", "PUT", append(good, "Content-Length: 0"), 400},
		{"Sec-WebSocket-Version 12", "GET", with("Sec-WebSocket-Version", "12"), 426},
		{"Sec-WebSocket-Version 14", "GET", with("Sec-WebSocket-Version", "14"), 426},
		{"missing Sec-WebSocket-Version", "GET", without("Sec-WebSocket-Version"), 0}, // 400 or 426
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialRaw(t)
			c.write(rawRequest(tc.method, "/ws", tc.headers...))
			resp, body := c.readResponse(tc.method)
			switch {
			case tc.want == 0 && (resp.StatusCode == 400 || resp.StatusCode == 426):
			case resp.StatusCode != tc.want:
				t.Fatalf("status %d body %.80q, want %d", resp.StatusCode, body, tc.want)
			}
			if resp.StatusCode == 426 && resp.Header.Get("Sec-WebSocket-Version") != "13" {
				t.Errorf("426 without Sec-WebSocket-Version: 13 (RFC 6455 §4.4); headers %v", resp.Header)
			}
		})
	}
	s.assertServing(t)
}

// TestWSProtocolErrors sends one offending frame per case and requires the close code
// of RFC 6455 §7.4.1, then the end of the TCP connection.
func TestWSProtocolErrors(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	masked := func(op ws.OpCode, fin bool, p string) ws.Frame {
		return ws.MaskFrame(ws.NewFrame(op, fin, []byte(p)))
	}
	withRsv := func(r1, r2, r3 bool) ws.Frame {
		f := ws.NewTextFrame([]byte(`{"op":"ping"}`))
		f.Header.Rsv = ws.Rsv(r1, r2, r3)
		return ws.MaskFrame(f)
	}
	for _, tc := range []struct {
		name   string
		frames []ws.Frame
		want   ws.StatusCode
	}{
		{"unmasked text frame", []ws.Frame{ws.NewTextFrame([]byte(`{"op":"ping"}`))}, 1002},
		{"unmasked ping", []ws.Frame{ws.NewPingFrame([]byte("x"))}, 1002},
		{"reserved data opcode 0x3", []ws.Frame{masked(ws.OpCode(0x3), true, "x")}, 1002},
		{"reserved data opcode 0x7", []ws.Frame{masked(ws.OpCode(0x7), true, "")}, 1002},
		{"reserved control opcode 0xB", []ws.Frame{masked(ws.OpCode(0xB), true, "")}, 1002},
		{"RSV1 set", []ws.Frame{withRsv(true, false, false)}, 1002},
		{"RSV2 set", []ws.Frame{withRsv(false, true, false)}, 1002},
		{"RSV3 set", []ws.Frame{withRsv(false, false, true)}, 1002},
		{"fragmented ping", []ws.Frame{masked(ws.OpPing, false, "a")}, 1002},
		{"fragmented close", []ws.Frame{masked(ws.OpClose, false, "\x03\xe8")}, 1002},
		{"ping with 126-byte payload", []ws.Frame{masked(ws.OpPing, true, strings.Repeat("p", 126))}, 1002},
		{"continuation without start", []ws.Frame{masked(ws.OpContinuation, true, `{"op":"ping"}`)}, 1002},
		{"new text frame inside a fragmented message", []ws.Frame{
			masked(ws.OpText, false, `{"op":`),
			masked(ws.OpText, true, `{"op":"ping"}`),
		}, 1002},
		{"invalid UTF-8 text", []ws.Frame{masked(ws.OpText, true, "{\"op\":\"ping\",\"x\":\"\xff\xfe\"}")}, 1007},
		{"overlong UTF-8 encoding", []ws.Frame{masked(ws.OpText, true, "\"\xc0\xaf\"")}, 1007},
		{"UTF-16 surrogate in UTF-8", []ws.Frame{masked(ws.OpText, true, "\"\xed\xa0\x80\"")}, 1007},
		{"invalid UTF-8 in a later fragment", []ws.Frame{
			masked(ws.OpText, false, `{"op":"ping","x":"`),
			masked(ws.OpContinuation, true, "\xff\"}"),
		}, 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := s.dialRawWS(t, 0)
			for _, f := range tc.frames {
				c.write(f)
			}
			c.expectClose(tc.want)
		})
	}
	s.assertServing(t)
}

// TestWSCloseFrameValidation covers RFC 6455 §5.5.1 and §7.4: close payloads must be
// empty or carry a valid code and a UTF-8 reason.
func TestWSCloseFrameValidation(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, tc := range []struct {
		name string
		body []byte
		want ws.StatusCode
	}{
		{"1-byte payload", []byte{0x03}, 1002},
		{"code 0", ws.NewCloseFrameBody(0, ""), 1002},
		{"code 999", ws.NewCloseFrameBody(999, ""), 1002},
		{"code 1004 (reserved)", ws.NewCloseFrameBody(1004, ""), 1002},
		{"code 1005 (never on the wire)", ws.NewCloseFrameBody(1005, ""), 1002},
		{"code 1006 (never on the wire)", ws.NewCloseFrameBody(1006, ""), 1002},
		{"code 1016 (unassigned)", ws.NewCloseFrameBody(1016, ""), 1002},
		{"code 2999 (reserved)", ws.NewCloseFrameBody(2999, ""), 1002},
		{"invalid UTF-8 reason", append(ws.NewCloseFrameBody(1000, ""), 0xff, 0xfe), 1007},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := s.dialRawWS(t, 0)
			c.write(ws.MaskFrame(ws.NewCloseFrame(tc.body)))
			c.expectClose(tc.want)
		})
	}
	t.Run("empty close is answered", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		c.write(ws.MaskFrame(ws.NewCloseFrame(nil)))
		code, reason, seen, err := c.readUntilClose(defaultTimeout)
		if code == closeAbnormal {
			t.Fatalf("no close frame in answer to an empty close: %v; frames: %s", err, describeFrames(seen))
		}
		if code != ws.StatusNoStatusRcvd && code != 1000 {
			t.Fatalf("answer to an empty close carries code %d %q, want none or 1000", code, reason)
		}
		c.expectEOF(defaultTimeout)
	})
}

func TestWSCloseHandshake(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, code := range []ws.StatusCode{1000, 1001, 3000, 4001, 4999} {
		t.Run(strconv.Itoa(int(code)), func(t *testing.T) {
			c, _ := s.dialRawWS(t, 0)
			c.write(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, "bye"))))
			got, reason, seen, err := c.readUntilClose(defaultTimeout)
			if got != code {
				t.Fatalf("server answered close %d with %d %q (err %v), want the same code echoed; frames: %s", code, got, reason, err, describeFrames(seen))
			}
			// The server closes TCP first after the close handshake (RFC 6455 §7.1.1).
			c.expectEOF(defaultTimeout)
		})
	}
}

func TestWSPingPong(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, _ := s.dialRawWS(t, 0)
	for _, n := range []int{0, 1, 64, 125} {
		p := bytes.Repeat([]byte{byte('a' + n%26)}, n)
		c.send(ws.OpPing, true, p)
		f, err := c.readFrame(defaultTimeout)
		if err != nil {
			t.Fatalf("%d-byte ping: %v", n, err)
		}
		if f.Header.OpCode != ws.OpPong || !f.Header.Fin || !bytes.Equal(f.Payload, p) {
			t.Fatalf("%d-byte ping: got opcode %v fin %v payload %q, want a pong with the same payload", n, f.Header.OpCode, f.Header.Fin, f.Payload)
		}
	}
	// An unsolicited pong is ignored (RFC 6455 §5.5.3): the connection stays usable.
	c.send(ws.OpPong, true, []byte("unsolicited"))
	c.sendText(`{"op":"ping"}`)
	f, err := c.readFrame(defaultTimeout)
	if err != nil || f.Header.OpCode != ws.OpText || mustParse(t, f.Payload).Op != "pong" {
		t.Fatalf("after an unsolicited pong: %v %s, want {\"op\":\"pong\"}", err, describeFrames([]ws.Frame{f}))
	}
}

func TestWSPingBetweenFragments(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, _ := s.dialRawWS(t, 0)
	c.send(ws.OpText, false, []byte(`{"op":`))
	c.send(ws.OpPing, true, []byte("mid-message"))
	c.send(ws.OpContinuation, true, []byte(`"ping"}`))

	var gotPong, gotText bool
	var seen []ws.Frame
	deadline := time.Now().Add(defaultTimeout)
	for !(gotPong && gotText) {
		f, err := c.readFrame(time.Until(deadline))
		if err != nil {
			t.Fatalf("pong frame %v, JSON pong %v: %v; frames: %s", gotPong, gotText, err, describeFrames(seen))
		}
		seen = append(seen, f)
		switch f.Header.OpCode {
		case ws.OpPong:
			if string(f.Payload) != "mid-message" {
				t.Fatalf("pong payload %q, want %q", f.Payload, "mid-message")
			}
			gotPong = true
		case ws.OpText:
			m := mustParse(t, f.Payload)
			if m.Op != "pong" {
				t.Fatalf("reply to the fragmented message: %s, want op pong", m)
			}
			gotText = true
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			t.Fatalf("server closed with %d %q; frames: %s", code, reason, describeFrames(seen))
		}
	}
}

func TestWSUTF8AcrossFragments(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	sub := s.dialWS(t)
	sub.subscribe(1, "utf8")
	c, _ := s.dialRawWS(t, 0)
	// "é" is C3 A9: split the code point between two fragments. Valid UTF-8 as a message.
	c.send(ws.OpText, false, []byte("{\"id\":7,\"op\":\"publish\",\"channel\":\"utf8\",\"data\":\"h\xc3"))
	c.send(ws.OpContinuation, false, []byte("\xa9llo \xe2\x9c"))
	c.send(ws.OpContinuation, true, []byte("\x93\"}"))
	f, err := c.readFrame(defaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if m := mustParse(t, f.Payload); f.Header.OpCode != ws.OpText || m.Op != "ack" || !m.hasID(7) {
		t.Fatalf("got %s, want ack id 7 (a code point split across fragments is valid UTF-8)", describeFrames([]ws.Frame{f}))
	}
	m := sub.expect("message", 0)
	if !jsonEqual(m.Data, []byte(`"héllo ✓"`)) {
		t.Fatalf("data %s, want \"héllo ✓\"", m.Data)
	}
}

func TestWSMessageSizeLimit(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const limit = 1 << 20

	// publishOfSize is a publish request of exactly n bytes.
	publishOfSize := func(n int) []byte {
		head := `{"id":9,"op":"publish","channel":"big","data":"`
		tail := `"}`
		return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
	}

	t.Run("exactly 1 MiB is accepted", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		c.send(ws.OpText, true, publishOfSize(limit))
		f, err := c.readFrame(defaultTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if f.Header.OpCode != ws.OpText || mustParse(t, f.Payload).Op != "ack" {
			t.Fatalf("got %s, want an ack for a message of exactly 1 MiB", describeFrames([]ws.Frame{f}))
		}
	})

	t.Run("1 MiB + 1 in one frame", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		c.writeInBackground(t, ws.MaskFrame(ws.NewTextFrame(publishOfSize(limit+1))))
		c.expectClose(1009)
	})

	t.Run("1 MiB + 1 in two fragments", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		p := publishOfSize(limit + 1)
		c.send(ws.OpText, false, p[:limit/2])
		c.writeInBackground(t, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, p[limit/2:])))
		c.expectClose(1009)
	})

	t.Run("17 MiB header only", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		// Declare 17 MiB and send none of it: the server must refuse from the header.
		h := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: ws.NewMask(), Length: 17 << 20}
		_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
		if err := ws.WriteHeader(c.conn, h); err != nil {
			t.Fatal(err)
		}
		c.expectClose(1009)
	})

	t.Run("2^63-1 header only", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		h := ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: ws.NewMask(), Length: 1<<63 - 1}
		_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
		if err := ws.WriteHeader(c.conn, h); err != nil {
			t.Fatal(err)
		}
		code, reason, _, err := c.readUntilClose(defaultTimeout)
		if code != 1009 && code != 1003 {
			t.Fatalf("close %d %q (%v), want 1009 (or 1003 for binary on JSON)", code, reason, err)
		}
	})
	s.assertServing(t)
}

// writeInBackground writes f from another goroutine (the server may stop reading
// and close while it is being written) and waits for that goroutine at cleanup.
func (c *rawWS) writeInBackground(t *testing.T, f ws.Frame) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = c.conn.SetWriteDeadline(time.Now().Add(2 * defaultTimeout))
		_ = ws.WriteFrame(c.conn, f)
	}()
	t.Cleanup(func() {
		c.conn.Close()
		wg.Wait()
	})
}

func TestWSBinaryFrameOnJSON(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c, w := s.dialRawWS(t, 0)
	if w.Proto != "json" {
		t.Fatalf("welcome proto %q, want json", w.Proto)
	}
	c.send(ws.OpBinary, true, []byte{0x01, 0x02, 0x03})
	c.expectClose(1003)
}

func TestWSIdle(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--ping-interval", "1s", "--idle-timeout", "3s")

	t.Run("silent client is pinged then closed with 4000", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		c, _ := s.dialRawWS(t, 0)
		pinged := false
		for {
			f, err := c.readFrame(10 * time.Second)
			if err != nil {
				t.Fatalf("after %v (pinged %v): connection ended without a close frame (1006): %v", time.Since(start), pinged, err)
			}
			switch f.Header.OpCode {
			case ws.OpPing:
				if !pinged {
					t.Logf("first ping after %v", time.Since(start).Round(time.Millisecond))
				}
				pinged = true
				continue // never answer
			case ws.OpClose:
			default:
				t.Fatalf("unexpected frame %s", describeFrames([]ws.Frame{f}))
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			el := time.Since(start)
			t.Logf("closed after %v with %d %q", el.Round(time.Millisecond), code, reason)
			if !pinged {
				t.Errorf("closed without having been pinged")
			}
			if code != 4000 {
				t.Errorf("close code %d, want 4000", code)
			}
			if el < 2*time.Second {
				t.Errorf("closed after %v, before the 3 s idle timeout", el)
			}
			c.expectEOF(defaultTimeout)
			return
		}
	})

	t.Run("client answering pings stays open", func(t *testing.T) {
		t.Parallel()
		c := s.dialWS(t)
		var mu sync.Mutex
		pings := 0
		c.c.SetPingHandler(func(data string) error {
			mu.Lock()
			pings++
			mu.Unlock()
			return c.c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		type result struct {
			m   message
			err error
		}
		msgs := make(chan result, 8)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // reading answers the pings
			defer wg.Done()
			for {
				m, err := c.readE(time.Minute)
				msgs <- result{m, err}
				if err != nil {
					return
				}
			}
		}()
		defer func() { c.c.Close(); wg.Wait() }()

		// Stay silent (except for pongs) for well past the 3 s idle timeout. This wait
		// is the behaviour under test, not synchronization.
		select {
		case r := <-msgs:
			t.Fatalf("while idle: got %s, err %v (close code %d)", r.m, r.err, closeCode(r.err))
		case <-time.After(5 * time.Second):
		}
		mu.Lock()
		n := pings
		mu.Unlock()
		if n < 2 {
			t.Errorf("%d pings in 5 s with --ping-interval 1s", n)
		}
		c.send(`{"op":"ping"}`)
		select {
		case r := <-msgs:
			if r.err != nil || r.m.Op != "pong" {
				t.Fatalf("after 5 s answering pings: got %s, err %v (close code %d), want pong", r.m, r.err, closeCode(r.err))
			}
		case <-time.After(defaultTimeout):
			t.Fatalf("no pong")
		}
	})
}

// TestWSStreamFraming: frames are a byte stream. A frame may arrive in the same read as
// the handshake, split across many reads, or many to a read.
func TestWSStreamFraming(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	ping := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(`{"op":"ping"}`))))

	expectPongs := func(t *testing.T, c *rawWS, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			f, err := c.readFrame(defaultTimeout)
			if err != nil {
				t.Fatalf("pong %d of %d: %v", i+1, n, err)
			}
			if f.Header.OpCode != ws.OpText || mustParse(t, f.Payload).Op != "pong" {
				t.Fatalf("pong %d of %d: got %s", i+1, n, describeFrames([]ws.Frame{f}))
			}
		}
	}

	t.Run("frame in the handshake's write", func(t *testing.T) {
		c := s.dialRaw(t)
		key, _ := wsKey()
		c.write(rawRequest("GET", "/ws", "Upgrade: websocket", "Connection: Upgrade",
			"Sec-WebSocket-Key: "+key, "Sec-WebSocket-Version: 13") + string(ping))
		_ = c.conn.SetReadDeadline(time.Now().Add(defaultTimeout))
		resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("handshake: %v %v", resp, err)
		}
		w := &rawWS{t: t, conn: c.conn, br: c.br}
		f, err := w.readFrame(defaultTimeout)
		if err != nil || mustParse(t, f.Payload).Op != "welcome" {
			t.Fatalf("welcome: %v %s", err, describeFrames([]ws.Frame{f}))
		}
		expectPongs(t, w, 1)
	})

	t.Run("upgrade on a keep-alive connection", func(t *testing.T) {
		c := s.dialRaw(t)
		c.write(rawRequest("GET", "/index.html"))
		if resp, body := c.readResponse("GET"); resp.StatusCode != 200 || string(body) != fixtureIndex {
			t.Fatalf("GET before the upgrade: %d", resp.StatusCode)
		}
		key, accept := wsKey()
		c.write(rawRequest("GET", "/ws", "Upgrade: websocket", "Connection: Upgrade",
			"Sec-WebSocket-Key: "+key, "Sec-WebSocket-Version: 13"))
		_ = c.conn.SetReadDeadline(time.Now().Add(defaultTimeout))
		resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
		if err != nil || resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != accept {
			t.Fatalf("upgrade after a request on the same connection: %v %v", resp, err)
		}
		w := &rawWS{t: t, conn: c.conn, br: c.br}
		f, err := w.readFrame(defaultTimeout)
		if err != nil || mustParse(t, f.Payload).Op != "welcome" {
			t.Fatalf("welcome: %v %s", err, describeFrames([]ws.Frame{f}))
		}
		c.write(string(ping))
		expectPongs(t, w, 1)
	})

	t.Run("frame split byte by byte", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		for i := range ping {
			_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
			if _, err := c.conn.Write(ping[i : i+1]); err != nil {
				t.Fatal(err)
			}
			// Not synchronization: separate segments, so the server sees partial frames.
			time.Sleep(time.Millisecond)
		}
		expectPongs(t, c, 1)
	})

	t.Run("100 frames in one write", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
		if _, err := c.conn.Write(bytes.Repeat(ping, 100)); err != nil {
			t.Fatal(err)
		}
		expectPongs(t, c, 100)
	})

	t.Run("64 KiB frame in odd-sized writes", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		body := `{"id":5,"op":"publish","channel":"split","data":"` + strings.Repeat("s", 64<<10) + `"}`
		frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewTextFrame([]byte(body))))
		for off := 0; off < len(frame); off += 1000 {
			end := min(off+1000, len(frame))
			_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
			if _, err := c.conn.Write(frame[off:end]); err != nil {
				t.Fatal(err)
			}
		}
		f, err := c.readFrame(defaultTimeout)
		if err != nil || f.Header.OpCode != ws.OpText || !mustParse(t, f.Payload).hasID(5) {
			t.Fatalf("want ack id 5: %v %s", err, describeFrames([]ws.Frame{f}))
		}
	})
}

// TestWSMaxMessageSetting: --max-message (and ZENCONN_MAX_MESSAGE) with a size suffix.
func TestWSMaxMessageSetting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"--max-message", "4KiB"}},
		{"env", []string{"ZENCONN_MAX_MESSAGE=4KiB"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startServerEnv(t, tc.env, tc.args...)
			msg := func(n int) []byte {
				head, tail := `{"id":1,"op":"publish","channel":"m","data":"`, `"}`
				return []byte(head + strings.Repeat("m", n-len(head)-len(tail)) + tail)
			}
			c, _ := s.dialRawWS(t, 0)
			c.send(ws.OpText, true, msg(4096))
			if f, err := c.readFrame(defaultTimeout); err != nil || mustParse(t, f.Payload).Op != "ack" {
				t.Fatalf("4096-byte message: %v %s, want ack", err, describeFrames([]ws.Frame{f}))
			}
			c.send(ws.OpText, true, msg(4097))
			c.expectClose(1009)
		})
	}
}
