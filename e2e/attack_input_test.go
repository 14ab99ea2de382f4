package e2e

// Attacks on the input side: trickled messages and bodies, slowloris heads,
// stalled handshakes, an exhausted input budget, and the small protocol
// points of parsing (non-minimal lengths, obs-fold, huge Range ends, the
// access log of refused handshakes). Deadlines are set small by flag, and
// the server checks them once a second: each test takes a few seconds.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// partialFrame is the start of a masked text frame declaring n payload
// bytes, with the first sent bytes of its payload.
func partialFrame(n, sent int) []byte {
	f := ws.MaskFrame(ws.NewFrame(ws.OpText, true, make([]byte, n)))
	var b bytes.Buffer
	_ = ws.WriteFrame(&b, f)
	h := b.Len() - n
	return b.Bytes()[:h+sent]
}

// closedWithin reads from c until the server closes it and returns what it
// sent and how long that took; ok is false if it is still open after d.
func closedWithin(c net.Conn, d time.Duration) (got []byte, after time.Duration, ok bool) {
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	var buf bytes.Buffer
	_, err := io.Copy(&buf, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return buf.Bytes(), time.Since(start), false
	}
	return buf.Bytes(), time.Since(start), true
}

// trickle writes data one byte every period, in the background, until the
// data ends or a write fails.
func trickle(c net.Conn, data []byte, period time.Duration) {
	go func() {
		for _, b := range data {
			_ = c.SetWriteDeadline(time.Now().Add(defaultTimeout))
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(period)
		}
	}()
}

func metricValue(t *testing.T, s *serverProc, name string, label *regexp.Regexp) float64 {
	t.Helper()
	return sum(s.scrape(t).find(regexp.MustCompile("^"+name+"$"), label))
}

// TestAttackSlowloris: connections that trickle a never-ending request
// head are closed by --handshake-timeout (first request) and
// --header-timeout (later ones), although each byte arrives well within
// --idle-timeout, and the server keeps serving meanwhile.
func TestAttackSlowloris(t *testing.T) {
	s := startServer(t, "--handshake-timeout", "2s", "--header-timeout", "2s", "--idle-timeout", "60s")
	head := []byte("GET /ws HTTP/1.1\r\nHost: e2e.test\r\n" + strings.Repeat("X-Slow: 1\r\n", 100))
	const n = 20
	conns := make([]net.Conn, 0, n+1)
	for range n {
		c := s.dialRaw(t).conn
		trickle(c, head, 300*time.Millisecond)
		conns = append(conns, c)
	}
	// A later head on a keep-alive connection.
	later := s.dialRaw(t)
	later.write(rawRequest("GET", "/healthz"))
	if resp, _ := later.readResponse("GET"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	trickle(later.conn, head, 300*time.Millisecond)
	s.assertServing(t)
	for i, c := range append(conns, later.conn) {
		got, after, ok := closedWithin(c, 6*time.Second)
		if !ok {
			t.Fatalf("slowloris connection %d still open after %s", i, after)
		}
		if len(got) > 0 && !bytes.Contains(got, []byte(" 408 ")) {
			t.Errorf("connection %d: %q, want 408 or nothing", i, got)
		}
	}
	s.assertServing(t)
	// The input metrics are a worker process's: with several, /metrics
	// shows one worker's share.
	want := float64(n + 1)
	if os.Getenv("ZENCONN_E2E_WORKERS") != "" {
		want = 1
	}
	if v := metricValue(t, s, "zenconn_input_timeouts_total", regexp.MustCompile("^(handshake|head)$")); v < want {
		t.Errorf("input timeouts counted %v, want at least %v", v, want)
	}
}

// TestAttackHandshakeDeadline: a connection that sends nothing, or half a
// WebSocket handshake and stalls, is closed by --handshake-timeout, long
// before --idle-timeout.
func TestAttackHandshakeDeadline(t *testing.T) {
	s := startServer(t, "--handshake-timeout", "2s", "--idle-timeout", "60s")
	silent := s.dialRaw(t).conn
	half := s.dialRaw(t)
	half.write("GET /ws HTTP/1.1\r\nHost: e2e.test\r\nUpgrade: websocket\r\n")
	start := time.Now()
	for name, c := range map[string]net.Conn{"silent": silent, "half handshake": half.conn} {
		_, _, ok := closedWithin(c, 6*time.Second)
		if after := time.Since(start); !ok || after < time.Second {
			t.Errorf("%s connection: closed %v after %s, want closed after about 2 s", name, ok, after)
		}
	}
	s.dialRawWS(t, 0) // a real handshake is unaffected
}

// TestAttackTrickledMessage: a started WebSocket message must complete
// within --message-timeout; bytes trickling in do not extend it (4004).
func TestAttackTrickledMessage(t *testing.T) {
	s := startServer(t, "--message-timeout", "2s", "--idle-timeout", "60s")
	c, _ := s.dialRawWS(t, 0)
	frame := partialFrame(1000, 0)
	trickle(c.conn, append(frame, make([]byte, 999)...), 200*time.Millisecond)
	start := time.Now()
	code, _, _, err := c.readUntilClose(8 * time.Second)
	if code != 4004 {
		t.Fatalf("close code %d (%v), want 4004", code, err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("closed after %s, want about 2 s", d)
	}
}

// TestAttackTrickledBody: a request body must complete within
// --body-timeout of its head, however it trickles.
func TestAttackTrickledBody(t *testing.T) {
	s := startServer(t, "--body-timeout", "2s", "--api-key", ibAPIKey)
	c := s.dialRaw(t)
	c.write("POST /api/publish HTTP/1.1\r\nHost: e2e.test\r\nX-API-Key: " + ibAPIKey + "\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	trickle(c.conn, bytes.Repeat([]byte("a"), 1000), 200*time.Millisecond)
	got, after, ok := closedWithin(c.conn, 8*time.Second)
	if !ok || after > 5*time.Second {
		t.Fatalf("trickled body: closed %v after %s", ok, after)
	}
	if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 408 ")) {
		t.Errorf("trickled body answered %q, want 408", got)
	}
}

// TestAttackInputBudget: partial messages and bodies are held within
// --max-pending-input; past it a WebSocket gets close 1013 and an HTTP
// request 503, the connections within it complete, and the refusals are
// counted.
func TestAttackInputBudget(t *testing.T) {
	s := startServer(t, "--max-pending-input", "2MiB", "--api-key", ibAPIKey)
	const payload = 600 << 10
	var held []*rawWS
	refused := false
	frame := partialFrame(payload, payload) // all of it: masked zeros
	for i := 0; i < 6 && !refused; i++ {
		c, _ := s.dialRawWS(t, 0)
		if _, err := c.conn.Write(frame[:len(frame)-1]); err != nil {
			refused = true
			break
		}
		switch heldOrRefused(t, s, c, float64((len(held)+1)*payload)) {
		case 1013:
			refused = true
		case 0:
			held = append(held, c)
		default:
			t.Fatalf("connection %d closed with another code than 1013", i)
		}
	}
	if !refused || len(held) < 2 {
		t.Fatalf("refused %v after %d connections holding %d KiB each, want a 1013 after 2 or 3", refused, len(held), payload>>10)
	}
	if v := metricValue(t, s, "zenconn_input_held_bytes", nil); v < float64(len(held)*payload) || v > 2<<20 {
		t.Errorf("held bytes %v for %d connections each holding %d, budget %d", v, len(held), payload, 2<<20)
	}
	// An HTTP body past the budget: 503.
	h := s.dialRaw(t)
	h.write("POST /api/publish HTTP/1.1\r\nHost: e2e.test\r\nX-API-Key: " + ibAPIKey + "\r\nContent-Length: 1000000\r\n\r\n")
	go func() { _, _ = h.conn.Write(make([]byte, 900<<10)) }()
	if got, _, _ := closedWithin(h.conn, 5*time.Second); !bytes.HasPrefix(got, []byte("HTTP/1.1 503 ")) {
		t.Errorf("body past the budget answered %.80q, want 503", got)
	}
	// The held messages complete: each is a text message of zeros, not
	// JSON, so it gets an error reply, not a close. (A
	// connection whose last bytes were still on their way when it was
	// counted as held may have been refused since.)
	completed := 0
	for i, c := range held {
		if _, err := c.conn.Write(frame[len(frame)-1:]); err != nil {
			continue
		}
		f, err := c.readFrame(defaultTimeout)
		switch {
		case err != nil:
			t.Fatalf("held connection %d after completing its message: %v", i, err)
		case f.Header.OpCode != ws.OpClose:
			completed++
		case binary.BigEndian.Uint16(f.Payload) != 1013:
			t.Fatalf("held connection %d closed with %d", i, binary.BigEndian.Uint16(f.Payload))
		}
	}
	if completed == 0 {
		t.Fatal("no held message completed")
	}
	if v := metricValue(t, s, "zenconn_input_budget_refusals_total", nil); v < 2 {
		t.Errorf("budget refusals counted %v, want at least 2", v)
	}
	eventually(t, 5*time.Second, func() string {
		if v := metricValue(t, s, "zenconn_input_held_bytes", nil); v != 0 {
			return "held bytes " + strconv.FormatFloat(v, 'f', 0, 64) + " once every message completed"
		}
		return ""
	})
}

// heldOrRefused waits until the server either holds want bytes of partial
// input (0) or closes c, and returns the close code.
func heldOrRefused(t *testing.T, s *serverProc, c *rawWS, want float64) uint16 {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		f, err := c.readFrame(100 * time.Millisecond)
		switch {
		case err == nil && f.Header.OpCode == ws.OpClose && len(f.Payload) >= 2:
			return binary.BigEndian.Uint16(f.Payload)
		case err == nil:
			t.Fatalf("unexpected frame %v", f.Header)
		}
		if metricValue(t, s, "zenconn_input_held_bytes", nil) >= want {
			return 0
		}
	}
	t.Fatalf("neither held nor refused after 10 s")
	return 0
}

// TestAttackAPIBodyWithoutKey: a server-API request without the key is
// answered 401 on its head, before any body is sent, and closed.
func TestAttackAPIBodyWithoutKey(t *testing.T) {
	s := startServer(t, "--api-key", ibAPIKey)
	c := s.dialRaw(t)
	c.write("POST /api/publish HTTP/1.1\r\nHost: e2e.test\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
	resp, _ := c.readResponse("POST")
	if resp.StatusCode != 401 || !resp.Close {
		t.Fatalf("status %d, close %v; want 401 and Connection: close", resp.StatusCode, resp.Close)
	}
	if _, _, ok := closedWithin(c.conn, 5*time.Second); !ok {
		t.Fatal("connection still open after the refusal")
	}
}

// TestAttackParsingPoints: a non-minimal WebSocket length is a 1002,
// obs-fold a 400, a huge Range end a clamped 206, and a refused handshake
// is logged with the bytes of its body.
func TestAttackParsingPoints(t *testing.T) {
	s := startServer(t)
	t.Run("non-minimal length", func(t *testing.T) {
		c, _ := s.dialRawWS(t, 0)
		p := []byte(`{"op":"ping"}`)
		f := []byte{0x81, 0x80 | 126, 0, byte(len(p)), 0, 0, 0, 0}
		if _, err := c.conn.Write(append(f, p...)); err != nil {
			t.Fatal(err)
		}
		c.expectClose(1002)
	})
	t.Run("obs-fold", func(t *testing.T) {
		c := s.dialRaw(t)
		c.write("GET /index.html HTTP/1.1\r\nHost: e2e.test\r\nX-Folded: a\r\n  b\r\n\r\n")
		if resp, _ := c.readResponse("GET"); resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
	t.Run("huge range end", func(t *testing.T) {
		resp, body := s.get(t, "GET", "/big.txt", "Range: bytes=0-99999999999999999999")
		if resp.StatusCode != 206 || !bytes.Equal(body, fixtureBig) {
			t.Fatalf("status %d, %d bytes; want 206 and the whole %d-byte file", resp.StatusCode, len(body), len(fixtureBig))
		}
		resp, body = s.get(t, "GET", "/big.txt", "Range: bytes=10-99999999999999999999")
		if resp.StatusCode != 206 || !bytes.Equal(body, fixtureBig[10:]) {
			t.Fatalf("status %d, %d bytes; want 206 and the file from byte 10", resp.StatusCode, len(body))
		}
	})
	t.Run("refused handshake logged with its body", func(t *testing.T) {
		c := s.dialRaw(t)
		c.write(rawRequest("GET", "/ws?refused-handshake", "Upgrade: websocket", "Connection: Upgrade",
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 12"))
		resp, body := c.readResponse("GET")
		if resp.StatusCode == 101 || len(body) == 0 {
			t.Fatalf("status %d, body %q: want a refusal with a body", resp.StatusCode, body)
		}
		want := `"GET /ws?refused-handshake HTTP/1.1" ` + strconv.Itoa(resp.StatusCode) + " " + strconv.Itoa(len(body)) + " "
		eventually(t, 5*time.Second, func() string {
			b, _ := os.ReadFile(s.AccessLog)
			if !strings.Contains(string(b), want) {
				return "access log lacks " + want + ":\n" + string(b)
			}
			return ""
		})
	})
}

// TestAttackSlowlorisFullNode: when trickled heads hold every slot of
// --max-connections, a client that sends its handshake at once still gets
// in: it takes the slot of the oldest incomplete head.
func TestAttackSlowlorisFullNode(t *testing.T) {
	s := startServer(t, "--max-connections", "20", "--handshake-timeout", "20s", "--idle-timeout", "60s")
	s.HTTP.CloseIdleConnections()
	held := 0
	for range 30 {
		c := s.dialRaw(t)
		c.write("GET /ws HTTP/1.1\r\nHost: e2e.test\r\n")
		_ = c.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if b, _ := c.br.Peek(12); bytes.Contains(b, []byte(" 503")) {
			break
		}
		held++
	}
	if held < 15 {
		t.Fatalf("only %d trickling connections before a 503", held)
	}
	time.Sleep(1500 * time.Millisecond) // older than a fresh request
	for range 3 {
		c, _ := s.dialRawWS(t, 0) // fails the test on a 503
		c.sendText(`{"op":"ping"}`)
		if f, err := c.readFrame(defaultTimeout); err != nil || f.Header.OpCode == ws.OpClose {
			t.Fatalf("client after reclaiming a slot: %v %v", f.Header, err)
		}
	}
}
