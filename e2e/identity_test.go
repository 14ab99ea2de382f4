package e2e

// Identity features: signed tokens (JWT) at the handshake and through the auth op,
// grants on private channels, broadcast, token expiry on a live connection.
//
// The helpers at the top of this file (prefix ib: a WebSocket client that speaks both
// the JSON and the binary protocol, token minting, the binary codec written from the
// layout in PROTOCOL/proto docs) are shared with binary_test.go and api_test.go.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// ---------------------------------------------------------------------------
// Tokens.

// ibSecret is the HMAC secret of the test servers (≥ 32 bytes).
const ibSecret = "e2e-identity-secret-0123456789abcdef-xyz"

// ibGrants is the grants claim.
type ibGrants struct {
	Subscribe []string `json:"subscribe,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	Broadcast bool     `json:"broadcast,omitempty"`
}

// ibClaims builds a claim set for sub expiring at exp (no exp claim when exp is zero).
func ibClaims(sub string, exp time.Time, g ibGrants) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "iat": time.Now().Unix(), "grants": g}
	if !exp.IsZero() {
		c["exp"] = exp.Unix()
	}
	return c
}

// ibSign signs claims with method and key.
func ibSign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("signing a %s token: %v", method.Alg(), err)
	}
	return tok
}

// ibToken is an HS256 token with ibSecret for sub, valid for an hour.
func ibToken(t *testing.T, sub string, g ibGrants) string {
	t.Helper()
	return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims(sub, time.Now().Add(time.Hour), g))
}

// ibTamper rewrites a token's payload with edit and keeps the original signature.
func ibTamper(t *testing.T, tok string, edit func(map[string]any)) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", tok, len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// writePublicKeyPEM writes pub as a PKIX "PUBLIC KEY" PEM file and returns its path.
func writePublicKeyPEM(t *testing.T, pub crypto.PublicKey) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	p := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	path := filepath.Join(t.TempDir(), "jwt-public.pem")
	if err := os.WriteFile(path, p, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, p
}

// RSA key generation takes a while; the tests share two keys.
var ibRSAKeys = sync.OnceValues(func() (*rsa.PrivateKey, *rsa.PrivateKey) {
	a, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	b, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return a, b
})

// ---------------------------------------------------------------------------
// A WebSocket client for both protocols. A reader goroutine queues every message, so
// waits are bounded by timers and a timeout does not break the connection (so tests
// can check that nothing arrives, then go on using it).

type ibFrame struct {
	typ int // websocket.TextMessage or websocket.BinaryMessage
	p   []byte
}

type ibConn struct {
	t    *testing.T
	name string
	c    *websocket.Conn
	Resp *http.Response

	Bin     bool   // the server chose the binary protocol (binary welcome)
	ID      string // conn id from the welcome
	Node    string
	Welcome []byte // payload of the welcome message

	mu     sync.Mutex
	queue  []ibFrame
	err    error
	notify chan struct{}
}

// ibDialOpts chooses the handshake: query (without "?"), extra headers, subprotocols.
type ibDialOpts struct {
	Query     string
	Header    http.Header
	Subproto  []string
	BearerTok string // sent as Authorization: Bearer
}

// ibDialE dials /ws and reads the welcome. On a refused handshake it returns the HTTP
// response (its body holds at most 1 KiB) and websocket.ErrBadHandshake.
func ibDialE(s *serverProc, o ibDialOpts) (*ibConn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout, Subprotocols: o.Subproto, TLSClientConfig: s.tlsClient}
	u := s.scheme("ws") + "://" + s.wsAddr() + "/ws"
	if o.Query != "" {
		u += "?" + o.Query
	}
	h := http.Header{}
	for k, v := range o.Header {
		h[k] = v
	}
	if o.BearerTok != "" {
		h.Set("Authorization", "Bearer "+o.BearerTok)
	}
	wc, resp, err := d.Dial(u, h)
	if err != nil {
		return nil, resp, err
	}
	c := &ibConn{c: wc, Resp: resp, notify: make(chan struct{}, 1)}
	go c.readLoop()
	f, err := c.nextE(defaultTimeout)
	if err != nil {
		wc.Close()
		return nil, resp, fmt.Errorf("reading the welcome: %w", err)
	}
	c.Welcome = f.p
	switch f.typ {
	case websocket.BinaryMessage:
		m, err := ibDecode(f.p)
		if err != nil || m.Op != 0x11 || m.Proto != "bin" || m.ID != "" || m.Conn == "" || m.Node == "" {
			wc.Close()
			return nil, resp, fmt.Errorf("binary welcome % x: decoded %+v, err %v; want 0x11 str8 conn str8 node str8 \"bin\"", f.p, m, err)
		}
		c.Bin, c.ID, c.Node = true, m.Conn, m.Node
	default:
		m, err := ibParseJSON(f.p)
		if err != nil || m.Op != "welcome" || m.Proto != "json" || m.Conn == "" || m.Node == "" {
			wc.Close()
			return nil, resp, fmt.Errorf("JSON welcome %s (err %v), want op welcome with conn, node, proto json", f.p, err)
		}
		c.ID, c.Node = m.Conn, m.Node
	}
	return c, resp, nil
}

// ibDial dials for the test and closes the connection at cleanup.
func ibDial(t *testing.T, s *serverProc, o ibDialOpts) *ibConn {
	t.Helper()
	c, resp, err := ibDialE(s, o)
	if err != nil {
		status := 0
		var body []byte
		if resp != nil {
			status = resp.StatusCode
			body, _ = io.ReadAll(resp.Body)
		}
		t.Fatalf("dial /ws %+v: %v (status %d, body %q)", o, err, status, body)
	}
	c.t = t
	c.name = "conn " + c.ID
	t.Cleanup(func() { c.c.Close() })
	return c
}

// ibDialJSON and ibDialBin dial an anonymous (or token-bearing) JSON/binary client.
func ibDialJSON(t *testing.T, s *serverProc, token string) *ibConn {
	t.Helper()
	c := ibDial(t, s, ibDialOpts{BearerTok: token})
	if c.Bin {
		t.Fatalf("%s: default protocol is binary, want JSON", c.name)
	}
	return c
}

func ibDialBin(t *testing.T, s *serverProc, token string) *ibConn {
	t.Helper()
	c := ibDial(t, s, ibDialOpts{BearerTok: token, Header: http.Header{"X-Bin-Protocol": {"1"}}})
	if !c.Bin {
		t.Fatalf("%s: X-Bin-Protocol: 1 gave a JSON welcome", c.name)
	}
	return c
}

// ibRefused dials and requires the handshake to be refused with status want; it returns
// the response body.
func ibRefused(t *testing.T, s *serverProc, o ibDialOpts, want int) string {
	t.Helper()
	c, resp, err := ibDialE(s, o)
	if err == nil {
		c.c.Close()
		t.Fatalf("handshake %+v was accepted (welcome conn %s), want status %d", o, c.ID, want)
	}
	if resp == nil {
		t.Fatalf("handshake %+v: %v, want an HTTP %d answer", o, err, want)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("handshake %+v: status %d body %q, want %d", o, resp.StatusCode, body, want)
	}
	return string(body)
}

func (c *ibConn) readLoop() {
	for {
		typ, p, err := c.c.ReadMessage()
		c.mu.Lock()
		if err != nil {
			c.err = err
		} else {
			c.queue = append(c.queue, ibFrame{typ, p})
		}
		c.mu.Unlock()
		select {
		case c.notify <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// nextE returns the next message, or the read error once the queue is drained, or a
// timeout error.
func (c *ibConn) nextE(timeout time.Duration) (ibFrame, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if len(c.queue) > 0 {
			f := c.queue[0]
			c.queue = c.queue[1:]
			c.mu.Unlock()
			return f, nil
		}
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return ibFrame{}, err
		}
		select {
		case <-c.notify:
		case <-timer.C:
			return ibFrame{}, errIBTimeout
		}
	}
}

var errIBTimeout = errors.New("timed out waiting for a message")

func (c *ibConn) next() ibFrame { c.t.Helper(); return c.nextWithin(defaultTimeout) }

func (c *ibConn) nextWithin(d time.Duration) ibFrame {
	c.t.Helper()
	f, err := c.nextE(d)
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.name, err)
	}
	return f
}

// quiet requires that no message arrives within d.
func (c *ibConn) quiet(d time.Duration) {
	c.t.Helper()
	f, err := c.nextE(d)
	if err == nil {
		c.t.Fatalf("%s: unexpected message %s", c.name, describeIB(f))
	}
	if !errors.Is(err, errIBTimeout) {
		c.t.Fatalf("%s: connection ended while waiting: %v", c.name, err)
	}
}

// expectCloseCode requires the connection to end with a close frame carrying code;
// messages before it are returned.
func (c *ibConn) expectCloseCode(code int, timeout time.Duration) []ibFrame {
	c.t.Helper()
	var seen []ibFrame
	deadline := time.Now().Add(timeout)
	for {
		f, err := c.nextE(time.Until(deadline))
		if err == nil {
			seen = append(seen, f)
			continue
		}
		if got := closeCode(err); got != code {
			c.t.Fatalf("%s: connection ended with %v (close code %d), want close code %d; messages before: %s",
				c.name, err, got, code, describeIBs(seen))
		}
		return seen
	}
}

func describeIB(f ibFrame) string {
	if f.typ == websocket.BinaryMessage {
		return fmt.Sprintf("binary[% x]", f.p)
	}
	return fmt.Sprintf("text[%s]", f.p)
}

func describeIBs(fs []ibFrame) string {
	if len(fs) == 0 {
		return "none"
	}
	var s []string
	for _, f := range fs {
		s = append(s, describeIB(f))
	}
	return strings.Join(s, " ")
}

func (c *ibConn) sendRaw(typ int, p []byte) {
	c.t.Helper()
	_ = c.c.SetWriteDeadline(time.Now().Add(defaultTimeout))
	if err := c.c.WriteMessage(typ, p); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// ---------------------------------------------------------------------------
// JSON protocol side.

// ibMsg is a server JSON message with its raw keys, so tests can check that a field is
// absent (a broadcast has no "channel").
type ibMsg struct {
	Op      string          `json:"op"`
	ID      json.RawMessage `json:"id"`
	Conn    string          `json:"conn"`
	Node    string          `json:"node"`
	Proto   string          `json:"proto"`
	Channel string          `json:"channel"`
	From    string          `json:"from"`
	Enc     string          `json:"enc"`
	Data    json.RawMessage `json:"data"`
	Code    string          `json:"code"`
	Message string          `json:"message"`

	keys map[string]json.RawMessage
	raw  []byte
}

func ibParseJSON(p []byte) (ibMsg, error) {
	var m ibMsg
	if err := json.Unmarshal(p, &m); err != nil {
		return m, fmt.Errorf("invalid JSON %q: %w", p, err)
	}
	if err := json.Unmarshal(p, &m.keys); err != nil {
		return m, fmt.Errorf("not a JSON object %q: %w", p, err)
	}
	m.raw = p
	return m, nil
}

func (m ibMsg) has(key string) bool { _, ok := m.keys[key]; return ok }

func (m ibMsg) String() string { return string(m.raw) }

func (c *ibConn) send(s string) {
	c.t.Helper()
	c.sendRaw(websocket.TextMessage, []byte(s))
}

// readJSON reads the next message, which must be a JSON text message.
func (c *ibConn) readJSON() ibMsg { c.t.Helper(); return c.readJSONWithin(defaultTimeout) }

func (c *ibConn) readJSONWithin(d time.Duration) ibMsg {
	c.t.Helper()
	f := c.nextWithin(d)
	if f.typ != websocket.TextMessage {
		c.t.Fatalf("%s: got %s, want a JSON text message", c.name, describeIB(f))
	}
	m, err := ibParseJSON(f.p)
	if err != nil {
		c.t.Fatalf("%s: %v", c.name, err)
	}
	return m
}

// expectOp reads the next message and requires op (and the numeric id when id > 0).
func (c *ibConn) expectOp(op string, id int) ibMsg {
	c.t.Helper()
	m := c.readJSON()
	if m.Op != op || (id > 0 && string(m.ID) != fmt.Sprint(id)) {
		c.t.Fatalf("%s: got %s, want op %q id %d", c.name, m, op, id)
	}
	return m
}

// ok sends a request with id and requires its ack.
func (c *ibConn) ok(id int, req string) {
	c.t.Helper()
	c.send(req)
	m := c.readJSON()
	if m.Op != "ack" || string(m.ID) != fmt.Sprint(id) {
		c.t.Fatalf("%s: %s answered %s, want ack id %d", c.name, req, m, id)
	}
}

// refused sends a request with id and requires an error with code.
func (c *ibConn) refused(id int, req, code string) ibMsg {
	c.t.Helper()
	c.send(req)
	m := c.readJSON()
	if m.Op != "error" || m.Code != code || string(m.ID) != fmt.Sprint(id) {
		c.t.Fatalf("%s: %s answered %s, want error %q with id %d", c.name, req, m, code, id)
	}
	if m.Message == "" {
		c.t.Errorf("%s: error %s has no message", c.name, m)
	}
	return m
}

func (c *ibConn) sub(id int, ch string) {
	c.t.Helper()
	c.ok(id, fmt.Sprintf(`{"id":%d,"op":"subscribe","channel":%q}`, id, ch))
}

func (c *ibConn) pub(id int, ch, data string) {
	c.t.Helper()
	c.ok(id, fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":%s}`, id, ch, data))
}

// expectMsg requires the next message to be a channel message (channel "" for a
// broadcast, which must then have no channel field) from `from` with data (compared
// as JSON).
func (c *ibConn) expectMsg(ch, from, data string) ibMsg {
	c.t.Helper()
	if c.Bin {
		m := c.readBin()
		if m.Op != 0x14 || m.Channel != ch || m.From != from || m.Opaque || string(m.Data) != data {
			c.t.Fatalf("%s: got %s, want binary message channel %q from %q data %s", c.name, m, ch, from, data)
		}
		return ibMsg{}
	}
	m := c.readJSON()
	if m.Op != "message" || m.Channel != ch || m.From != from || !jsonEqual(m.Data, []byte(data)) {
		c.t.Fatalf("%s: got %s, want message channel %q from %q data %s", c.name, m, ch, from, data)
	}
	if ch == "" && m.has("channel") {
		c.t.Fatalf("%s: broadcast %s carries a channel field", c.name, m)
	}
	return m
}

// pingPong syncs with the server: every request sent before has been processed.
func (c *ibConn) pingPong() {
	c.t.Helper()
	if c.Bin {
		c.sendBin(ibBinPing())
		if m := c.readBin(); m.Op != 0x15 {
			c.t.Fatalf("%s: ping answered %s, want pong", c.name, m)
		}
		return
	}
	c.send(`{"op":"ping"}`)
	c.expectOp("pong", 0)
}

// ---------------------------------------------------------------------------
// Binary protocol side, from the layout documented in proto/binary.go.

// ibBin is one decoded server binary message.
type ibBin struct {
	Head    byte
	Op      byte
	ID      string // decimal, "" when the I flag is clear
	Opaque  bool
	Conn    string
	Node    string
	Proto   string
	Code    byte
	Message string
	Channel string
	From    string
	Data    []byte
	raw     []byte
}

func (m ibBin) String() string { return fmt.Sprintf("binary[% x]", m.raw) }

func ibStr8(p []byte) (string, []byte, error) {
	if len(p) < 1 || len(p) < 1+int(p[0]) {
		return "", nil, errors.New("truncated str8")
	}
	n := int(p[0])
	return string(p[1 : 1+n]), p[1+n:], nil
}

// ibDecode decodes a server message strictly (reserved bit clear, no trailing bytes).
func ibDecode(p []byte) (ibBin, error) {
	m := ibBin{raw: p}
	if len(p) == 0 {
		return m, errors.New("empty binary message")
	}
	m.Head = p[0]
	m.Op = p[0] & 0x1f
	m.Opaque = p[0]&0x40 != 0
	if p[0]&0x20 != 0 {
		return m, errors.New("reserved head bit set")
	}
	rest := p[1:]
	if p[0]&0x80 != 0 {
		id, n := binary.Uvarint(rest)
		if n <= 0 {
			return m, errors.New("bad id varint")
		}
		m.ID = fmt.Sprint(id)
		rest = rest[n:]
	}
	var err error
	switch m.Op {
	case 0x11:
		if m.Conn, rest, err = ibStr8(rest); err != nil {
			return m, err
		}
		if m.Node, rest, err = ibStr8(rest); err != nil {
			return m, err
		}
		if m.Proto, rest, err = ibStr8(rest); err != nil {
			return m, err
		}
	case 0x12, 0x15:
	case 0x13:
		if len(rest) < 1 {
			return m, errors.New("error without a code")
		}
		m.Code, m.Message, rest = rest[0], string(rest[1:]), nil
	case 0x14:
		if m.Channel, rest, err = ibStr8(rest); err != nil {
			return m, err
		}
		if m.From, rest, err = ibStr8(rest); err != nil {
			return m, err
		}
		m.Data, rest = rest, nil
		if m.Data == nil {
			m.Data = []byte{}
		}
	default:
		return m, fmt.Errorf("unknown server op 0x%02x", m.Op)
	}
	if m.Opaque && m.Op != 0x14 {
		return m, errors.New("opaque flag on a message without data")
	}
	if len(rest) != 0 {
		return m, fmt.Errorf("%d trailing bytes", len(rest))
	}
	return m, nil
}

// Binary error codes.
const (
	ibBadRequest   = 1
	ibLimit        = 2
	ibUnauthorized = 3
	ibForbidden    = 4
	ibTokenExpired = 5
)

func ibHead(op byte, id uint64, opaque bool) []byte {
	if opaque {
		op |= 0x40
	}
	if id == 0 {
		return []byte{op}
	}
	return binary.AppendUvarint([]byte{op | 0x80}, id)
}

func ibAppendStr8(p []byte, s string) []byte { return append(append(p, byte(len(s))), s...) }

// Binary requests; id 0 means no id.
func ibBinSub(id uint64, ch string) []byte   { return ibAppendStr8(ibHead(0x01, id, false), ch) }
func ibBinUnsub(id uint64, ch string) []byte { return ibAppendStr8(ibHead(0x02, id, false), ch) }
func ibBinPub(id uint64, ch string, data []byte, opaque bool) []byte {
	return append(ibAppendStr8(ibHead(0x03, id, opaque), ch), data...)
}
func ibBinBroadcast(id uint64, data []byte, opaque bool) []byte {
	return append(ibHead(0x04, id, opaque), data...)
}
func ibBinAuth(id uint64, tok string) []byte { return append(ibHead(0x05, id, false), tok...) }
func ibBinPing() []byte                      { return []byte{0x06} }

func (c *ibConn) sendBin(p []byte) {
	c.t.Helper()
	c.sendRaw(websocket.BinaryMessage, p)
}

// readBin reads the next message, which must be a well-formed binary message.
func (c *ibConn) readBin() ibBin { c.t.Helper(); return c.readBinWithin(defaultTimeout) }

func (c *ibConn) readBinWithin(d time.Duration) ibBin {
	c.t.Helper()
	f := c.nextWithin(d)
	if f.typ != websocket.BinaryMessage {
		c.t.Fatalf("%s: got %s, want a binary message", c.name, describeIB(f))
	}
	m, err := ibDecode(f.p)
	if err != nil {
		c.t.Fatalf("%s: malformed server message % x: %v", c.name, f.p, err)
	}
	return m
}

// binOK sends a binary request with id and requires the ack.
func (c *ibConn) binOK(id uint64, req []byte) {
	c.t.Helper()
	c.sendBin(req)
	m := c.readBin()
	if m.Op != 0x12 || m.ID != fmt.Sprint(id) || m.Head&0x40 != 0 {
		c.t.Fatalf("%s: request % x answered %s, want ack id %d", c.name, req, m, id)
	}
}

// binRefused sends a binary request and requires an error with code (and id when
// id > 0, none otherwise).
func (c *ibConn) binRefused(id uint64, req []byte, code byte) ibBin {
	c.t.Helper()
	c.sendBin(req)
	m := c.readBin()
	wantID := ""
	if id > 0 {
		wantID = fmt.Sprint(id)
	}
	if m.Op != 0x13 || m.Code != code || m.ID != wantID {
		c.t.Fatalf("%s: request % x answered %s, want error code %d id %q", c.name, req, m, code, wantID)
	}
	return m
}

// ---------------------------------------------------------------------------
// Tests.

func TestIdentityStartupChecks(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("this is not a key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := writePublicKeyPEM(t, &ecPriv.PublicKey)
	cases := []struct {
		name string
		args []string
	}{
		{"secret of 31 bytes", []string{"--jwt-secret", strings.Repeat("s", 31)}},
		{"secret of 8 bytes", []string{"--jwt-secret", "short123"}},
		{"public key file missing", []string{"--jwt-public-key", filepath.Join(dir, "missing.pem")}},
		{"public key file not PEM", []string{"--jwt-public-key", notPEM}},
		{"P-384 key (ES256 needs P-256)", []string{"--jwt-public-key", p384}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := t.TempDir()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--public", d, "--data", filepath.Join(d, "data"), "--access-log", "off"}, tc.args...)
			out, code := runCLI(t, 10*time.Second, nil, args...)
			if code == 0 || code == -1 {
				t.Fatalf("zenconn %q: exit status %d, want the process to refuse to start (exit ≠ 0)\n%s", args, code, out)
			}
			if strings.Contains(out, "listening") {
				t.Errorf("the process logged listening before refusing:\n%s", out)
			}
		})
	}
	t.Run("secret of 32 bytes starts", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "--jwt-secret", strings.Repeat("s", 32))
		s.assertServing(t)
	})
}

func TestIdentityHandshakeTokens(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	// After every (parallel) subtest: the refusals left the server healthy.
	t.Cleanup(func() { s.assertServing(t) })
	grants := ibGrants{Subscribe: []string{"private-team-*"}, Publish: []string{"private-team-*"}}
	valid := ibToken(t, "alice", grants)
	now := time.Now()

	// accepted proves the connection carries the token's grants: a private subscribe
	// is acked (an anonymous one is refused with unauthorized).
	accepted := func(t *testing.T, o ibDialOpts) {
		t.Helper()
		c := ibDial(t, s, o)
		c.sub(1, "private-team-red")
		c.refused(2, `{"id":2,"op":"subscribe","channel":"private-other"}`, "forbidden")
	}
	t.Run("valid via query", func(t *testing.T) {
		t.Parallel()
		accepted(t, ibDialOpts{Query: "token=" + valid})
	})
	t.Run("valid via header", func(t *testing.T) {
		t.Parallel()
		accepted(t, ibDialOpts{BearerTok: valid})
	})
	t.Run("valid HS512", func(t *testing.T) {
		t.Parallel()
		tok := ibSign(t, jwt.SigningMethodHS512, []byte(ibSecret), ibClaims("alice", now.Add(time.Hour), grants))
		accepted(t, ibDialOpts{BearerTok: tok})
	})
	t.Run("valid nbf in the past", func(t *testing.T) {
		t.Parallel()
		c := ibClaims("alice", now.Add(time.Hour), grants)
		c["nbf"] = now.Add(-time.Minute).Unix()
		accepted(t, ibDialOpts{BearerTok: ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), c)})
	})
	t.Run("valid without a grants claim", func(t *testing.T) {
		t.Parallel()
		tok := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), jwt.MapClaims{"sub": "nog", "exp": now.Add(time.Hour).Unix()})
		c := ibDial(t, s, ibDialOpts{BearerTok: tok})
		c.refused(1, `{"id":1,"op":"subscribe","channel":"private-team-red"}`, "forbidden")
		c.refused(2, `{"id":2,"op":"broadcast","data":1}`, "forbidden")
		c.sub(3, "public-news")
	})
	t.Run("wildcard grant", func(t *testing.T) {
		t.Parallel()
		c := ibDial(t, s, ibDialOpts{BearerTok: ibToken(t, "root", ibGrants{Subscribe: []string{"*"}, Publish: []string{"*"}})})
		c.sub(1, "private-anything")
		c.sub(2, "private-")
		c.ok(3, `{"id":3,"op":"publish","channel":"private-else","data":1}`)
	})
	t.Run("no token is anonymous", func(t *testing.T) {
		t.Parallel()
		c := ibDial(t, s, ibDialOpts{})
		c.refused(1, `{"id":1,"op":"subscribe","channel":"private-team-red"}`, "unauthorized")
		c.sub(2, "public-news")
	})

	otherSecret := "another-secret-of-more-than-32-bytes-000"
	rsaKey, _ := ibRSAKeys()
	bad := []struct {
		name   string
		token  func(t *testing.T) string
		reason string // lower-case substring the 401 body must contain ("" for any reason)
	}{
		{"expired", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("alice", now.Add(-time.Minute), grants))
		}, "expired"},
		{"nbf in the future", func(t *testing.T) string {
			c := ibClaims("alice", now.Add(2*time.Hour), grants)
			c["nbf"] = now.Add(time.Hour).Unix()
			return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), c)
		}, "valid"},
		{"no exp claim", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("alice", time.Time{}, grants))
		}, ""},
		{"signed with another secret", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodHS256, []byte(otherSecret), ibClaims("alice", now.Add(time.Hour), grants))
		}, ""},
		{"alg none", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ibClaims("alice", now.Add(time.Hour), grants))
		}, ""},
		{"alg none with the original signature", func(t *testing.T) string {
			parts := strings.Split(valid, ".")
			parts[0] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
			return strings.Join(parts, ".")
		}, ""},
		{"RS256 when only a secret is configured", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodRS256, rsaKey, ibClaims("alice", now.Add(time.Hour), grants))
		}, ""},
		{"tampered payload (grants widened)", func(t *testing.T) string {
			return ibTamper(t, valid, func(m map[string]any) {
				m["grants"] = map[string]any{"subscribe": []string{"*"}, "publish": []string{"*"}, "broadcast": true}
			})
		}, ""},
		{"tampered payload (exp extended)", func(t *testing.T) string {
			exp := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("alice", now.Add(-time.Minute), grants))
			return ibTamper(t, exp, func(m map[string]any) { m["exp"] = now.Add(time.Hour).Unix() })
		}, ""},
		{"signature stripped", func(t *testing.T) string {
			return valid[:strings.LastIndexByte(valid, '.')+1]
		}, ""},
		{"garbage", func(*testing.T) string { return "not-a-jwt" }, ""},
		{"grants of the wrong type", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "grants": "everything"})
		}, ""},
		{"bad grant pattern", func(t *testing.T) string {
			return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("alice", now.Add(time.Hour), ibGrants{Subscribe: []string{"a*b"}}))
		}, ""},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tok := tc.token(t)
			for _, o := range []ibDialOpts{{BearerTok: tok}, {Query: "token=" + tok}} {
				body := ibRefused(t, s, o, http.StatusUnauthorized)
				if strings.TrimSpace(body) == "" {
					t.Errorf("401 for %+v has an empty body, want a reason", o)
				}
				if tc.reason != "" && !strings.Contains(strings.ToLower(body), tc.reason) {
					t.Errorf("401 body %q does not mention %q", body, tc.reason)
				}
			}
		})
	}
}

func TestIdentityIssuerAudience(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret, "--jwt-issuer", "https://issuer.e2e", "--jwt-audience", "zenconn-e2e")
	mk := func(t *testing.T, iss, aud string) string {
		c := ibClaims("alice", time.Now().Add(time.Hour), ibGrants{Subscribe: []string{"private-*"}})
		if iss != "" {
			c["iss"] = iss
		}
		if aud != "" {
			c["aud"] = aud
		}
		return ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), c)
	}
	c := ibDial(t, s, ibDialOpts{BearerTok: mk(t, "https://issuer.e2e", "zenconn-e2e")})
	c.sub(1, "private-x")
	for _, tc := range []struct{ name, iss, aud string }{
		{"wrong issuer", "https://evil.e2e", "zenconn-e2e"},
		{"wrong audience", "https://issuer.e2e", "other"},
		{"no issuer", "", "zenconn-e2e"},
		{"no audience", "https://issuer.e2e", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ibRefused(t, s, ibDialOpts{BearerTok: mk(t, tc.iss, tc.aud)}, http.StatusUnauthorized)
		})
	}
}

func TestIdentityPublicKeys(t *testing.T) {
	t.Parallel()
	rsaA, rsaB := ibRSAKeys()
	ecA, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecB, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edA, _ := ed25519.GenerateKey(rand.Reader)
	_, edB, _ := ed25519.GenerateKey(rand.Reader)

	type signer struct {
		m   jwt.SigningMethod
		key any
	}
	cases := []struct {
		name      string
		pub       crypto.PublicKey
		good      signer
		otherKey  signer // same algorithm, another key
		otherAlgs []signer
	}{
		{"RS256", &rsaA.PublicKey, signer{jwt.SigningMethodRS256, rsaA}, signer{jwt.SigningMethodRS256, rsaB},
			[]signer{{jwt.SigningMethodPS256, rsaA}, {jwt.SigningMethodRS512, rsaA}, {jwt.SigningMethodES256, ecA}}},
		{"ES256", &ecA.PublicKey, signer{jwt.SigningMethodES256, ecA}, signer{jwt.SigningMethodES256, ecB},
			[]signer{{jwt.SigningMethodRS256, rsaA}, {jwt.SigningMethodEdDSA, edA}}},
		{"EdDSA", edA.Public(), signer{jwt.SigningMethodEdDSA, edA}, signer{jwt.SigningMethodEdDSA, edB},
			[]signer{{jwt.SigningMethodES256, ecA}, {jwt.SigningMethodRS256, rsaA}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path, pemBytes := writePublicKeyPEM(t, tc.pub)
			s := startServer(t, "--jwt-public-key", path)
			claims := func() jwt.MapClaims {
				return ibClaims("bob", time.Now().Add(time.Hour), ibGrants{Subscribe: []string{"private-ops"}, Broadcast: true})
			}
			good := ibSign(t, tc.good.m, tc.good.key, claims())
			for _, o := range []ibDialOpts{{BearerTok: good}, {Query: "token=" + good}} {
				c := ibDial(t, s, o)
				c.sub(1, "private-ops")
				c.refused(2, `{"id":2,"op":"subscribe","channel":"private-dev"}`, "forbidden")
			}
			// The auth op accepts it too.
			c := ibDial(t, s, ibDialOpts{})
			c.ok(1, fmt.Sprintf(`{"id":1,"op":"auth","token":%q}`, good))
			c.sub(2, "private-ops")

			refuseCode := func(name, tok, code string) {
				t.Helper()
				body := ibRefused(t, s, ibDialOpts{BearerTok: tok}, http.StatusUnauthorized)
				if strings.TrimSpace(body) == "" {
					t.Errorf("%s: 401 without a reason", name)
				}
				c.refused(9, fmt.Sprintf(`{"id":9,"op":"auth","token":%q}`, tok), code)
			}
			refuse := func(name, tok string) { t.Helper(); refuseCode(name, tok, "unauthorized") }
			refuse("another key", ibSign(t, tc.otherKey.m, tc.otherKey.key, claims()))
			refuse("HS256 with a secret", ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), claims()))
			refuse("HS256 keyed with the public key PEM (key confusion)", ibSign(t, jwt.SigningMethodHS256, pemBytes, claims()))
			refuse("alg none", ibSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims()))
			for _, o := range tc.otherAlgs {
				refuse(o.m.Alg(), ibSign(t, o.m, o.key, claims()))
			}
			refuseCode("expired", ibSign(t, tc.good.m, tc.good.key, ibClaims("bob", time.Now().Add(-time.Minute), ibGrants{})), "token_expired")
			refuse("tampered", ibTamper(t, good, func(m map[string]any) { m["sub"] = "mallory" }))
			// The connection kept its grants through all those refusals.
			c.sub(3, "private-ops")
		})
	}
}

func TestIdentityAnonymousDisabled(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret, "--anonymous=false")
	body := ibRefused(t, s, ibDialOpts{}, http.StatusUnauthorized)
	if strings.TrimSpace(body) == "" {
		t.Errorf("401 without a token has an empty body, want a reason")
	}
	ibRefused(t, s, ibDialOpts{Header: http.Header{"X-Bin-Protocol": {"1"}}}, http.StatusUnauthorized)
	ibRefused(t, s, ibDialOpts{BearerTok: "garbage"}, http.StatusUnauthorized)
	ibRefused(t, s, ibDialOpts{Header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}}, http.StatusUnauthorized)
	tok := ibToken(t, "carol", ibGrants{})
	c := ibDial(t, s, ibDialOpts{Query: "token=" + tok})
	c.sub(1, "news")
	// A refused auth op does not close (or change) a connection that has a token.
	c.refused(2, `{"id":2,"op":"auth","token":"garbage"}`, "unauthorized")
	c.pingPong()
	c = ibDial(t, s, ibDialOpts{BearerTok: tok, Query: "proto=bin"})
	if !c.Bin {
		t.Fatalf("?proto=bin with a token gave a JSON welcome")
	}
}

func TestIdentityNoVerifier(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	tok := ibToken(t, "alice", ibGrants{Subscribe: []string{"*"}, Broadcast: true})
	ibRefused(t, s, ibDialOpts{BearerTok: tok}, http.StatusUnauthorized)
	c := ibDial(t, s, ibDialOpts{})
	c.refused(1, fmt.Sprintf(`{"id":1,"op":"auth","token":%q}`, tok), "unauthorized")
	c.refused(2, `{"id":2,"op":"subscribe","channel":"private-x"}`, "unauthorized")
	c.refused(3, `{"id":3,"op":"broadcast","data":1}`, "unauthorized")
	c.sub(4, "public")
}

func TestIdentityAuthOp(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	pub := ibDialJSON(t, s, ibToken(t, "pub", ibGrants{Publish: []string{"*"}}))
	c := ibDialJSON(t, s, "")
	c.sub(1, "canary")

	// Anonymous: private channels refused.
	c.refused(2, `{"id":2,"op":"subscribe","channel":"private-a"}`, "unauthorized")
	c.refused(3, `{"id":3,"op":"auth"}`, "bad_request")
	c.refused(4, `{"id":4,"op":"auth","token":"garbage"}`, "unauthorized")

	wide := ibToken(t, "alice", ibGrants{Subscribe: []string{"private-a", "private-b"}, Publish: []string{"private-b"}})
	c.ok(5, fmt.Sprintf(`{"id":5,"op":"auth","token":%q}`, wide))
	c.sub(6, "private-a")
	c.sub(7, "private-b")
	pub.pub(1, "private-a", `"a1"`)
	c.expectMsg("private-a", pub.ID, `"a1"`)

	// A refused auth leaves the connection unchanged.
	expired := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("alice", time.Now().Add(-time.Minute), ibGrants{Subscribe: []string{"*"}}))
	c.refused(8, fmt.Sprintf(`{"id":8,"op":"auth","token":%q}`, expired), "token_expired")
	forged := ibSign(t, jwt.SigningMethodHS256, []byte("forged-secret-forged-secret-forged-secret"), ibClaims("root", time.Now().Add(time.Hour), ibGrants{Subscribe: []string{"*"}}))
	c.refused(9, fmt.Sprintf(`{"id":9,"op":"auth","token":%q}`, forged), "unauthorized")
	c.refused(10, fmt.Sprintf(`{"id":10,"op":"auth","token":%q}`, ibTamper(t, wide, func(m map[string]any) {
		m["grants"] = map[string]any{"subscribe": []string{"*"}}
	})), "unauthorized")
	notYet := ibClaims("alice", time.Now().Add(2*time.Hour), ibGrants{Subscribe: []string{"*"}})
	notYet["nbf"] = time.Now().Add(time.Hour).Unix()
	c.refused(18, fmt.Sprintf(`{"id":18,"op":"auth","token":%q}`, ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), notYet)), "unauthorized")
	c.refused(19, fmt.Sprintf(`{"id":19,"op":"auth","token":%q}`, ibSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, ibClaims("root", time.Now().Add(time.Hour), ibGrants{Subscribe: []string{"*"}}))), "unauthorized")
	c.refused(11, `{"id":11,"op":"subscribe","channel":"private-c"}`, "forbidden")
	pub.pub(2, "private-a", `"a2"`)
	c.expectMsg("private-a", pub.ID, `"a2"`)
	c.ok(12, `{"id":12,"op":"publish","channel":"private-b","data":"from c"}`)

	// A narrower token replaces the grants: private-a is dropped, private-b stays.
	narrow := ibToken(t, "alice", ibGrants{Subscribe: []string{"private-b"}})
	c.ok(13, fmt.Sprintf(`{"id":13,"op":"auth","token":%q}`, narrow))
	pub.pub(3, "private-a", `"a3"`)
	pub.pub(4, "private-b", `"b1"`)
	pub.pub(5, "canary", `"c1"`)
	c.expectMsg("private-b", pub.ID, `"b1"`)
	c.expectMsg("canary", pub.ID, `"c1"`)
	c.refused(14, `{"id":14,"op":"publish","channel":"private-b","data":1}`, "forbidden")
	c.refused(15, `{"id":15,"op":"subscribe","channel":"private-a"}`, "forbidden")

	// Without an id there is no ack, but the new token is in force.
	c.send(fmt.Sprintf(`{"op":"auth","token":%q}`, wide))
	c.sub(16, "private-a")
	pub.pub(6, "private-a", `"a4"`)
	c.expectMsg("private-a", pub.ID, `"a4"`)
	c.quiet(100 * time.Millisecond)
}

func TestIdentityPrivateChannels(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	team := ibGrants{Subscribe: []string{"private-team-*", "private-solo"}, Publish: []string{"private-team-*"}}
	pubA := ibDialJSON(t, s, ibToken(t, "alice", team))
	subB := ibDialJSON(t, s, ibToken(t, "bob", team))
	binC := ibDialBin(t, s, ibToken(t, "carl", team))
	anon := ibDialJSON(t, s, "")
	anonBin := ibDialBin(t, s, "")
	other := ibDialJSON(t, s, ibToken(t, "eve", ibGrants{Subscribe: []string{"private-eve", "news"}, Publish: []string{"private-eve", "news"}}))
	listenOnly := ibDialJSON(t, s, ibToken(t, "lou", ibGrants{Subscribe: []string{"private-team-*"}}))

	// Refusals: anonymous → unauthorized, token without the grant → forbidden.
	anon.refused(1, `{"id":1,"op":"subscribe","channel":"private-team-1"}`, "unauthorized")
	anon.refused(2, `{"id":2,"op":"publish","channel":"private-team-1","data":"x"}`, "unauthorized")
	anonBin.binRefused(1, ibBinSub(1, "private-team-1"), ibUnauthorized)
	anonBin.binRefused(2, ibBinPub(2, "private-team-1", []byte(`"x"`), false), ibUnauthorized)
	anonBin.binRefused(0, ibBinSub(0, "private-team-1"), ibUnauthorized) // no id: error without id
	other.refused(1, `{"id":1,"op":"subscribe","channel":"private-team-1"}`, "forbidden")
	other.refused(2, `{"id":2,"op":"publish","channel":"private-team-1","data":"x"}`, "forbidden")
	other.refused(3, `{"id":3,"op":"subscribe","channel":"private-teamX"}`, "forbidden")
	subB.refused(1, `{"id":1,"op":"subscribe","channel":"private-solo2"}`, "forbidden") // exact pattern
	subB.refused(2, `{"id":2,"op":"subscribe","channel":"private-other"}`, "forbidden")
	subB.refused(3, `{"id":3,"op":"publish","channel":"private-solo","data":1}`, "forbidden") // subscribe grant only
	listenOnly.refused(1, `{"id":1,"op":"publish","channel":"private-team-1","data":1}`, "forbidden")

	// Grants work: prefix and exact patterns.
	subB.sub(4, "private-team-1")
	subB.sub(5, "private-solo")
	binC.binOK(3, ibBinSub(3, "private-team-1"))
	listenOnly.sub(2, "private-team-1")
	pubA.sub(1, "private-team-1") // a publisher does not get its own message
	other.sub(4, "private-eve")
	for _, c := range []*ibConn{pubA, subB, binC, anon, anonBin, other, listenOnly} {
		if c.Bin {
			c.binOK(9, ibBinSub(9, "canary"))
		} else {
			c.sub(9, "canary")
		}
	}

	// Refused publishes delivered nothing: everyone's next message is the canary.
	pubA.pub(2, "private-team-1", `{"text":"hello team"}`)
	for _, c := range []*ibConn{subB, binC, listenOnly} {
		c.expectMsg("private-team-1", pubA.ID, `{"text":"hello team"}`)
	}
	other.pub(5, "private-eve", `"eve only"`)
	pubA.pub(3, "canary", `"c1"`)
	for _, c := range []*ibConn{subB, binC, anon, anonBin, other, listenOnly} {
		c.expectMsg("canary", pubA.ID, `"c1"`)
	}
	// Public channels stay open to everyone, anonymous included.
	anon.sub(3, "news")
	anonBin.binOK(3, ibBinSub(3, "news"))
	subB.sub(6, "news")
	anon.pub(4, "news", `"anon says hi"`)
	anonBin.expectMsg("news", anon.ID, `"anon says hi"`)
	subB.expectMsg("news", anon.ID, `"anon says hi"`)
	anonBin.binOK(4, ibBinPub(4, "news", []byte(`"bin anon says hi"`), false))
	anon.expectMsg("news", anonBin.ID, `"bin anon says hi"`)
	subB.expectMsg("news", anonBin.ID, `"bin anon says hi"`)

	for _, c := range []*ibConn{pubA, subB, binC, anon, anonBin, other, listenOnly} {
		c.quiet(100 * time.Millisecond)
	}
}

func TestIdentityPublicPublishGranted(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret, "--public-publish=granted")
	anon := ibDialJSON(t, s, "")
	anonBin := ibDialBin(t, s, "")
	noGrant := ibDialJSON(t, s, ibToken(t, "nog", ibGrants{Publish: []string{"sports"}, Subscribe: []string{"*"}}))
	granted := ibDialJSON(t, s, ibToken(t, "gra", ibGrants{Publish: []string{"news", "private-x"}}))

	// Subscribing to public channels stays open.
	anon.sub(1, "news")
	anonBin.binOK(1, ibBinSub(1, "news"))
	noGrant.sub(1, "news")

	anon.refused(2, `{"id":2,"op":"publish","channel":"news","data":"no"}`, "unauthorized")
	anonBin.binRefused(2, ibBinPub(2, "news", []byte(`"no"`), false), ibUnauthorized)
	noGrant.refused(2, `{"id":2,"op":"publish","channel":"news","data":"no"}`, "forbidden")
	granted.pub(1, "news", `{"n":1}`)
	for _, c := range []*ibConn{anon, anonBin, noGrant} {
		c.expectMsg("news", granted.ID, `{"n":1}`)
		c.quiet(50 * time.Millisecond)
	}
	// Private rules are unchanged.
	anon.refused(3, `{"id":3,"op":"publish","channel":"private-x","data":1}`, "unauthorized")
	noGrant.refused(3, `{"id":3,"op":"publish","channel":"private-x","data":1}`, "forbidden")
	granted.pub(2, "private-x", `1`)
}

func TestIdentityBroadcast(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	sender := ibDialJSON(t, s, ibToken(t, "boss", ibGrants{Broadcast: true}))
	sender.sub(1, "news") // subscriptions do not matter for a broadcast
	anon1 := ibDialJSON(t, s, "")
	anon2 := ibDialJSON(t, s, "")
	anonBin := ibDialBin(t, s, "")
	noBroadcast := ibDialJSON(t, s, ibToken(t, "worker", ibGrants{Subscribe: []string{"*"}, Publish: []string{"*"}}))
	tokBin := ibDialBin(t, s, ibToken(t, "binworker", ibGrants{Broadcast: false}))
	others := []*ibConn{anon1, anon2, anonBin, noBroadcast, tokBin}

	sender.ok(2, `{"id":2,"op":"broadcast","data":{"text":"all hands","n":[1,2]}}`)
	for _, c := range others {
		c.expectMsg("", sender.ID, `{"text":"all hands","n":[1,2]}`)
	}

	// Refused broadcasts reach nobody.
	anon1.refused(1, `{"id":1,"op":"broadcast","data":"anon"}`, "unauthorized")
	anonBin.binRefused(1, ibBinBroadcast(1, []byte(`"anon"`), false), ibUnauthorized)
	noBroadcast.refused(1, `{"id":1,"op":"broadcast","data":"worker"}`, "forbidden")
	tokBin.binRefused(1, ibBinBroadcast(1, []byte{1, 2, 3}, true), ibForbidden)
	anon1.refused(2, `{"id":2,"op":"broadcast"}`, "bad_request")

	// Without an id: no ack, still delivered; a null payload is data too.
	sender.send(`{"op":"broadcast","data":null}`)
	for _, c := range others {
		c.expectMsg("", sender.ID, `null`)
	}
	sender.pingPong() // the sender got no copy of its own broadcast
	sender.quiet(100 * time.Millisecond)
	for _, c := range others {
		c.quiet(20 * time.Millisecond)
	}
}

// ibShortExp is an exp 2 to 3 seconds ahead (exp has a one-second resolution).
func ibShortExp() time.Time { return time.Unix(time.Now().Unix()+3, 0) }

func TestIdentityTokenExpiry(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret, "--api-key", ibAPIKey)
	grants := ibGrants{Subscribe: []string{"private-*"}, Publish: []string{"private-*"}, Broadcast: true}
	exp := ibShortExp()
	short := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("shorty", exp, grants))
	pub := ibDialJSON(t, s, ibToken(t, "pub", grants))

	victim := ibDialJSON(t, s, short)
	victim.sub(1, "private-x")
	victim.sub(2, "canary")
	victimBin := ibDial(t, s, ibDialOpts{Query: "proto=bin&token=" + short})
	victimBin.binOK(1, ibBinSub(1, "private-x"))
	victimBin.binOK(2, ibBinSub(2, "canary"))
	// renewed re-authenticates with a long token before the short one expires.
	renewed := ibDialJSON(t, s, short)
	renewed.sub(1, "private-x")
	renewed.ok(2, fmt.Sprintf(`{"id":2,"op":"auth","token":%q}`, ibToken(t, "shorty", grants)))
	// lateAuth starts anonymous and takes the short token through the auth op.
	lateAuth := ibDialJSON(t, s, "")
	lateAuth.ok(1, fmt.Sprintf(`{"id":1,"op":"auth","token":%q}`, short))
	lateAuth.sub(2, "private-x")

	pub.pub(1, "private-x", `"before"`)
	for _, c := range []*ibConn{victim, victimBin, renewed, lateAuth} {
		c.expectMsg("private-x", pub.ID, `"before"`)
	}
	if time.Now().After(exp) {
		t.Fatalf("setup took past the token's expiry; the test cannot tell anything")
	}

	// The expiry notice, without an id, within about a second of exp.
	m := victim.readJSONWithin(time.Until(exp) + 3*time.Second)
	if m.Op != "error" || m.Code != "token_expired" || m.has("id") {
		t.Fatalf("victim: got %s, want {\"op\":\"error\",\"code\":\"token_expired\",...} without id", m)
	}
	if late := time.Since(exp); late > 2500*time.Millisecond {
		t.Errorf("token_expired came %v after exp, want within ~1 s", late)
	}
	if m := lateAuth.readJSONWithin(3 * time.Second); m.Op != "error" || m.Code != "token_expired" {
		t.Fatalf("connection that took the short token by the auth op: got %s, want token_expired", m)
	}
	bm := victimBin.readBinWithin(3 * time.Second)
	if bm.Op != 0x13 || bm.Code != ibTokenExpired || bm.ID != "" {
		t.Fatalf("binary victim: got %s, want error code 5 (token_expired) without id", bm)
	}

	// Grants and private subscriptions are gone; the connection lives on as anonymous.
	pub.pub(2, "private-x", `"after"`)
	pub.pub(3, "canary", `"c1"`)
	victim.expectMsg("canary", pub.ID, `"c1"`)
	victimBin.expectMsg("canary", pub.ID, `"c1"`)
	renewed.expectMsg("private-x", pub.ID, `"after"`)
	victim.refused(3, `{"id":3,"op":"subscribe","channel":"private-x"}`, "unauthorized")
	victim.refused(4, `{"id":4,"op":"publish","channel":"private-x","data":1}`, "unauthorized")
	victim.refused(5, `{"id":5,"op":"broadcast","data":1}`, "unauthorized")
	victimBin.binRefused(3, ibBinSub(3, "private-x"), ibUnauthorized)
	conns := apiConnections(t, s)
	for _, c := range []*ibConn{victim, victimBin} {
		if got := conns[c.ID]; got.User != "" || len(got.Channels) != 1 || got.Channels[0] != "canary" {
			t.Errorf("GET /api/connections after expiry: %s is %+v, want user \"\" and channels [canary]", c.name, got)
		}
	}
	if got := conns[renewed.ID]; got.User != "shorty" {
		t.Errorf("GET /api/connections: renewed connection is %+v, want user shorty", got)
	}
	victim.sub(6, "public-after")
	victim.pingPong()
	// Re-authenticating restores access.
	victim.ok(7, fmt.Sprintf(`{"id":7,"op":"auth","token":%q}`, ibToken(t, "shorty", grants)))
	victim.sub(8, "private-x")
	pub.pub(4, "private-x", `"again"`)
	victim.expectMsg("private-x", pub.ID, `"again"`)
	renewed.expectMsg("private-x", pub.ID, `"again"`)
	for _, c := range []*ibConn{victim, victimBin, renewed, lateAuth} {
		c.quiet(100 * time.Millisecond)
	}
}

func TestIdentityTokenExpiryRequired(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret, "--anonymous=false")
	exp := ibShortExp()
	short := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("shorty", exp, ibGrants{Subscribe: []string{"*"}}))
	victim := ibDialJSON(t, s, short)
	victim.sub(1, "private-x")
	victimBin := ibDial(t, s, ibDialOpts{Query: "token=" + short, Subproto: []string{"zenconn.v1.bin"}})
	renewed := ibDialJSON(t, s, short)
	renewed.ok(1, fmt.Sprintf(`{"id":1,"op":"auth","token":%q}`, ibToken(t, "shorty", ibGrants{})))

	seen := victim.expectCloseCode(4002, time.Until(exp)+4*time.Second)
	if len(seen) != 1 {
		t.Fatalf("victim: messages before the 4002 close: %s, want exactly the token_expired error", describeIBs(seen))
	}
	if m, err := ibParseJSON(seen[0].p); err != nil || m.Op != "error" || m.Code != "token_expired" {
		t.Fatalf("victim: before the 4002 close got %s, want a token_expired error", describeIBs(seen))
	}
	seen = victimBin.expectCloseCode(4002, 3*time.Second)
	if len(seen) != 1 || seen[0].typ != websocket.BinaryMessage {
		t.Fatalf("binary victim: messages before the 4002 close: %s, want one binary token_expired error", describeIBs(seen))
	}
	if m, err := ibDecode(seen[0].p); err != nil || m.Op != 0x13 || m.Code != ibTokenExpired {
		t.Fatalf("binary victim: before the 4002 close got %s, want error code 5", describeIBs(seen))
	}
	// The re-authenticated connection is still open.
	renewed.pingPong()
	renewed.quiet(100 * time.Millisecond)
}

func TestIdentityTokenSubcommand(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	out, code := runCLI(t, 10*time.Second, nil, "token", "--secret", ibSecret, "--sub", "dora",
		"--subscribe", "private-team-*", "--publish", "private-team-a,private-team-b", "--broadcast", "--ttl", "10m")
	if code != 0 {
		t.Fatalf("zenconn token: exit %d\n%s", code, out)
	}
	tok := strings.TrimSpace(out)
	var claims struct {
		Sub    string   `json:"sub"`
		Exp    int64    `json:"exp"`
		Grants ibGrants `json:"grants"`
	}
	if _, err := jwt.ParseWithClaims(tok, jwt.MapClaims{}, func(*jwt.Token) (any, error) { return []byte(ibSecret), nil },
		jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatalf("token %q does not verify with the secret as HS256: %v", tok, err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Sub != "dora" || claims.Exp < time.Now().Add(9*time.Minute).Unix() || claims.Exp > time.Now().Add(11*time.Minute).Unix() ||
		!claims.Grants.Broadcast || len(claims.Grants.Publish) != 2 || len(claims.Grants.Subscribe) != 1 {
		t.Errorf("claims %s, want sub dora, exp in 10 min, the grants given", raw)
	}
	c := ibDialJSON(t, s, tok)
	c.sub(1, "private-team-z")
	c.ok(2, `{"id":2,"op":"publish","channel":"private-team-b","data":1}`)
	c.refused(3, `{"id":3,"op":"publish","channel":"private-team-c","data":1}`, "forbidden")
	c.ok(4, `{"id":4,"op":"broadcast","data":1}`)
}
