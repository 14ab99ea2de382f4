package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// ---------------------------------------------------------------------------
// Raw HTTP over one TCP connection.

type rawConn struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// dialRaw opens a TCP connection to the server, closed at cleanup.
func (s *serverProc) dialRaw(t *testing.T) *rawConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr, defaultTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn, br: bufio.NewReader(conn)}
}

func (c *rawConn) write(p string) {
	c.t.Helper()
	_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
	if _, err := io.WriteString(c.conn, p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readResponse reads one response (for a request with the given method) and its whole body.
func (c *rawConn) readResponse(method string) (*http.Response, []byte) {
	c.t.Helper()
	resp, body, err := c.tryReadResponse(method)
	if err != nil {
		c.t.Fatalf("reading response to %s: %v", method, err)
	}
	return resp, body
}

func (c *rawConn) tryReadResponse(method string) (*http.Response, []byte, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(defaultTimeout))
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp, body, fmt.Errorf("reading body: %w", err)
	}
	return resp, body, nil
}

// rawRequest builds a minimal HTTP/1.1 request; headers are "Name: value".
func rawRequest(method, target string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: e2e.test\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// assertServing checks the server still answers GET /healthz on a fresh connection.
func (s *serverProc) assertServing(t *testing.T) {
	t.Helper()
	resp, err := s.HTTP.Get(s.URL("/healthz"))
	if err != nil {
		t.Fatalf("server no longer serving: GET /healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("server no longer serving: GET /healthz = %d %q", resp.StatusCode, body)
	}
}

// ---------------------------------------------------------------------------
// Raw WebSocket client: hand-built handshake and frames (gobwas/ws helpers).

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// closeAbnormal stands for "the TCP connection ended without a close frame".
const closeAbnormal ws.StatusCode = 1006

type rawWS struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// wsKey returns a random Sec-WebSocket-Key and the Sec-WebSocket-Accept it requires.
func wsKey() (key, accept string) {
	var k [16]byte
	_, _ = rand.Read(k[:])
	key = base64.StdEncoding.EncodeToString(k[:])
	sum := sha1.Sum([]byte(key + wsGUID))
	return key, base64.StdEncoding.EncodeToString(sum[:])
}

// dialRawWS performs the opening handshake by hand and returns the connection and the
// welcome message (the first frame, which must be a text frame with op "welcome").
// rcvbuf > 0 sets SO_RCVBUF before connecting (to make a slow consumer whose kernel
// buffer is small).
func (s *serverProc) dialRawWS(t *testing.T, rcvbuf int) (*rawWS, message) {
	t.Helper()
	d := net.Dialer{Timeout: defaultTimeout}
	if rcvbuf > 0 {
		d.Control = func(network, address string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	addr := s.wsAddr()
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawWS{t: t, conn: conn, br: bufio.NewReader(conn)}

	key, accept := wsKey()
	req := rawRequest("GET", "/ws",
		"Upgrade: websocket",
		"Connection: Upgrade",
		"Sec-WebSocket-Key: "+key,
		"Sec-WebSocket-Version: 13",
	)
	_ = conn.SetDeadline(time.Now().Add(defaultTimeout))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("writing handshake: %v", err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("reading handshake response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("handshake: status %d, want 101; body %q", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Sec-WebSocket-Accept"); got != accept {
		t.Fatalf("handshake: Sec-WebSocket-Accept %q, want %q", got, accept)
	}
	_ = conn.SetDeadline(time.Time{})

	f, err := c.readFrame(defaultTimeout)
	if err != nil {
		t.Fatalf("reading welcome frame: %v", err)
	}
	if f.Header.OpCode != ws.OpText || !f.Header.Fin {
		t.Fatalf("first frame: opcode %v fin %v, want a complete text frame", f.Header.OpCode, f.Header.Fin)
	}
	w := mustParse(t, f.Payload)
	if w.Op != "welcome" {
		t.Fatalf("first message %s, want op welcome", f.Payload)
	}
	return c, w
}

// write writes a frame exactly as given (the caller masks it or not).
func (c *rawWS) write(f ws.Frame) {
	c.t.Helper()
	if err := c.tryWrite(f); err != nil {
		c.t.Fatalf("writing frame: %v", err)
	}
}

func (c *rawWS) tryWrite(f ws.Frame) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(defaultTimeout))
	return ws.WriteFrame(c.conn, f)
}

// send writes a masked frame.
func (c *rawWS) send(op ws.OpCode, fin bool, payload []byte) {
	c.t.Helper()
	c.write(ws.MaskFrame(ws.NewFrame(op, fin, payload)))
}

// sendText writes a masked, final text frame.
func (c *rawWS) sendText(s string) { c.t.Helper(); c.send(ws.OpText, true, []byte(s)) }

// maxServerFrame bounds what the client accepts off the wire.
const maxServerFrame = 4 << 20

// readFrame reads one frame from the server. It checks what RFC 6455 §5.1-5.2 require of a
// server frame: unmasked, no RSV bits (no extension is negotiated), a sane length.
func (c *rawWS) readFrame(timeout time.Duration) (ws.Frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > maxServerFrame {
		return ws.Frame{Header: h}, fmt.Errorf("server frame declares %d bytes", h.Length)
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return ws.Frame{Header: h}, fmt.Errorf("reading %d-byte payload: %w", h.Length, err)
	}
	f := ws.Frame{Header: h, Payload: p}
	if h.Masked {
		return f, errors.New("server frame is masked (RFC 6455 §5.1: a server MUST NOT mask)")
	}
	if h.Rsv != 0 {
		return f, fmt.Errorf("server frame has RSV bits %03b set without a negotiated extension", h.Rsv)
	}
	return f, nil
}

// readUntilClose reads frames until a close frame and returns its code (1005 for an
// empty close body), or 1006 if the connection ended or timed out first. The frames
// read before it are returned too.
func (c *rawWS) readUntilClose(timeout time.Duration) (ws.StatusCode, string, []ws.Frame, error) {
	deadline := time.Now().Add(timeout)
	var seen []ws.Frame
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return closeAbnormal, "", seen, errors.New("timed out waiting for a close frame")
		}
		f, err := c.readFrame(left)
		if err != nil {
			return closeAbnormal, "", seen, err
		}
		if f.Header.OpCode == ws.OpClose {
			if len(f.Payload) == 0 {
				return ws.StatusNoStatusRcvd, "", seen, nil
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			return code, reason, seen, nil
		}
		seen = append(seen, f)
	}
}

// expectClose requires a close frame with code want, answers it, and requires the
// server to end the TCP connection afterwards.
func (c *rawWS) expectClose(want ws.StatusCode) {
	c.t.Helper()
	code, reason, seen, err := c.readUntilClose(defaultTimeout)
	if code != want {
		c.t.Fatalf("close code %d (reason %q, err %v), want %d; frames before: %s", code, reason, err, want, describeFrames(seen))
	}
	// Echo the close (RFC 6455 §5.5.1); the server may already have closed TCP.
	_ = c.tryWrite(ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(code, ""))))
	c.expectEOF(defaultTimeout)
}

// expectEOF requires the server to close the TCP connection within timeout (any frames
// still arriving are discarded).
func (c *rawWS) expectEOF(timeout time.Duration) {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	_, err := io.Copy(io.Discard, c.br)
	if err == nil || isConnReset(err) {
		return
	}
	c.t.Fatalf("server did not close the TCP connection within %v: %v", timeout, err)
}

func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func describeFrames(fs []ws.Frame) string {
	if len(fs) == 0 {
		return "none"
	}
	var b strings.Builder
	for _, f := range fs {
		p := f.Payload
		if len(p) > 80 {
			p = p[:80]
		}
		fmt.Fprintf(&b, "[op=%v fin=%v len=%d %q] ", f.Header.OpCode, f.Header.Fin, f.Header.Length, p)
	}
	return b.String()
}

// ---------------------------------------------------------------------------
// JSON protocol messages.

// message is any server → client JSON message; fields absent from an op stay zero.
type message struct {
	Op      string          `json:"op"`
	ID      json.RawMessage `json:"id"`
	Conn    string          `json:"conn"`
	Node    string          `json:"node"`
	Proto   string          `json:"proto"`
	Channel string          `json:"channel"`
	From    string          `json:"from"`
	Data    json.RawMessage `json:"data"`
	Code    string          `json:"code"`
	Message string          `json:"message"`

	raw []byte
}

func parseMessage(p []byte) (message, error) {
	var m message
	if err := json.Unmarshal(p, &m); err != nil {
		return m, fmt.Errorf("server sent invalid JSON %q: %w", p, err)
	}
	m.raw = p
	return m, nil
}

func mustParse(t *testing.T, p []byte) message {
	t.Helper()
	m, err := parseMessage(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (m message) String() string { return string(m.raw) }

// hasID reports whether the message carries the numeric id n.
func (m message) hasID(n int) bool {
	return strings.TrimSpace(string(m.ID)) == fmt.Sprint(n)
}

// jsonEqual reports whether a and b are the same JSON value.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// ---------------------------------------------------------------------------
// Normal WebSocket client (gorilla/websocket).

type wsClient struct {
	t       *testing.T
	c       *websocket.Conn
	Welcome message
}

// dialWSE dials /ws and reads the welcome message; safe to call from any goroutine.
func (s *serverProc) dialWSE() (*wsClient, error) {
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout, TLSClientConfig: s.tlsClient}
	c, resp, err := d.Dial(s.scheme("ws")+"://"+s.wsAddr()+"/ws", nil)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial /ws: %w (status %d)", err, resp.StatusCode)
		}
		return nil, fmt.Errorf("dial /ws: %w", err)
	}
	wc := &wsClient{c: c}
	w, err := wc.readE(defaultTimeout)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading welcome: %w", err)
	}
	if w.Op != "welcome" {
		c.Close()
		return nil, fmt.Errorf("first message %s, want op welcome", w)
	}
	wc.Welcome = w
	return wc, nil
}

// dialWS dials /ws for the test; the connection is closed at cleanup.
func (s *serverProc) dialWS(t *testing.T) *wsClient {
	t.Helper()
	c, err := s.dialWSE()
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	t.Cleanup(func() { c.c.Close() })
	return c
}

func (c *wsClient) sendE(s string) error {
	_ = c.c.SetWriteDeadline(time.Now().Add(defaultTimeout))
	return c.c.WriteMessage(websocket.TextMessage, []byte(s))
}

func (c *wsClient) send(s string) {
	c.t.Helper()
	if err := c.sendE(s); err != nil {
		c.t.Fatalf("send %s: %v", s, err)
	}
}

func (c *wsClient) readE(timeout time.Duration) (message, error) {
	_ = c.c.SetReadDeadline(time.Now().Add(timeout))
	typ, p, err := c.c.ReadMessage()
	if err != nil {
		return message{}, err
	}
	if typ != websocket.TextMessage {
		return message{}, fmt.Errorf("got a message of type %d, want text", typ)
	}
	return parseMessage(p)
}

func (c *wsClient) read() message {
	c.t.Helper()
	m, err := c.readE(defaultTimeout)
	if err != nil {
		c.t.Fatalf("conn %s: read: %v", c.Welcome.Conn, err)
	}
	return m
}

// expect reads the next message and requires its op (and id, if id > 0).
func (c *wsClient) expect(op string, id int) message {
	c.t.Helper()
	m := c.read()
	if m.Op != op || (id > 0 && !m.hasID(id)) {
		c.t.Fatalf("conn %s: got %s, want op %q id %d", c.Welcome.Conn, m, op, id)
	}
	return m
}

// request sends s and requires an ack with id.
func (c *wsClient) request(id int, s string) {
	c.t.Helper()
	c.send(s)
	c.expect("ack", id)
}

func (c *wsClient) subscribe(id int, channel string) {
	c.t.Helper()
	c.request(id, fmt.Sprintf(`{"id":%d,"op":"subscribe","channel":%q}`, id, channel))
}

// pingPong proves the connection is alive and in sync: {"op":"ping"} → {"op":"pong"}.
func (c *wsClient) pingPong() {
	c.t.Helper()
	c.send(`{"op":"ping"}`)
	c.expect("pong", 0)
}

// messagesUntilPong sends a ping and returns the channels of the
// messages that arrive before the pong, sorted.
func (c *wsClient) messagesUntilPong() []string {
	c.t.Helper()
	c.send(`{"op":"ping"}`)
	var chans []string
	for {
		m := c.read()
		switch m.Op {
		case "pong":
			sort.Strings(chans)
			return chans
		case "message":
			chans = append(chans, m.Channel)
		default:
			c.t.Fatalf("conn %s: got %s, want messages then a pong", c.Welcome.Conn, m)
		}
	}
}

// closeCode extracts the close code of a gorilla read error (1006 if there was none).
func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return int(closeAbnormal)
}
