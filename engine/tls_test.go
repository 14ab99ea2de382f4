package engine

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/internal/testca"
)

// startTLSServer starts a real server that serves TLS with a certificate
// from a CA made for the test.
func startTLSServer(t *testing.T, cfg Config) (*Server, *testca.CA) {
	t.Helper()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLS = TLSConfig(ca.Server, tls.VersionTLS12)
	return startServer(t, cfg), ca
}

// httpsClient is an HTTP client that trusts only ca.
func httpsClient(t *testing.T, ca *testca.CA) *http.Client {
	cfg := ca.ClientConfig()
	cfg.NextProtos = []string{"http/1.1"}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// dialWSS opens a wss:// WebSocket that verifies the server's certificate
// and reads the welcome.
func dialWSS(t *testing.T, addr string, ca *testca.CA) *websocket.Conn {
	t.Helper()
	return dialWSSWith(t, addr, ca.ClientConfig())
}

func dialWSSWith(t *testing.T, addr string, cfg *tls.Config) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial("wss://"+addr+"/ws", nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	if m := readWSS(t, ws); m["op"] != "welcome" {
		t.Fatalf("want welcome, got %v", m)
	}
	return ws
}

func readWSS(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("wss read: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("wss read %q: %v", b, err)
	}
	return m
}

func writeWSS(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("wss write: %v", err)
	}
}

func TestTLSStaticFiles(t *testing.T) {
	public := t.TempDir()
	writeFile(t, public, "index.html", "<!doctype html><title>zenconn</title>\n")
	big := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB: many records, a full socket
	writeFile(t, public, "big.txt", big)
	s, ca := startTLSServer(t, Config{PublicDir: public})
	c := httpsClient(t, ca)
	for _, tc := range []struct{ path, want string }{
		{"/", "<!doctype html><title>zenconn</title>\n"},
		{"/big.txt", big},
		{"/big.txt", big}, // from the cache
	} {
		resp, err := c.Get("https://" + s.Addr().String() + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(body) != tc.want {
			t.Fatalf("GET %s: status %d, %d bytes (want %d), %v", tc.path, resp.StatusCode, len(body), len(tc.want), err)
		}
		if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "http/1.1" {
			t.Fatalf("GET %s: TLS state %+v, want ALPN http/1.1", tc.path, resp.TLS)
		}
	}
}

func TestTLSPubSub(t *testing.T) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"tls1.2", tls.VersionTLS12}, {"tls1.3", tls.VersionTLS13}} {
		t.Run(v.name, func(t *testing.T) {
			s, ca := startTLSServer(t, Config{})
			addr := s.Addr().String()
			cfg := ca.ClientConfig()
			cfg.MaxVersion = v.max
			sub := dialWSSWith(t, addr, cfg)
			pub := dialWSSWith(t, addr, cfg)
			if got := sub.UnderlyingConn().(*tls.Conn).ConnectionState().Version; got != v.max {
				t.Fatalf("version %x, want %x", got, v.max)
			}
			writeWSS(t, sub, `{"id":1,"op":"subscribe","channel":"news"}`)
			if m := readWSS(t, sub); m["op"] != "ack" {
				t.Fatalf("subscribe: %v", m)
			}
			large := strings.Repeat("x", 100<<10) // several records
			for _, data := range []string{"hello", large} {
				writeWSS(t, pub, `{"id":2,"op":"publish","channel":"news","data":"`+data+`"}`)
				if m := readWSS(t, pub); m["op"] != "ack" {
					t.Fatalf("publish: %v", m)
				}
				m := readWSS(t, sub)
				if m["op"] != "message" || m["channel"] != "news" || m["data"] != data {
					t.Fatalf("delivery: op %v channel %v, %d bytes", m["op"], m["channel"], len(m["data"].(string)))
				}
			}
		})
	}
}

// clientHello returns the first record a TLS client sends: its
// ClientHello.
func clientHello(t *testing.T, ca *testca.CA) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		cfg := ca.ClientConfig()
		cfg.ServerName = "localhost"
		_ = tls.Client(a, cfg).Handshake()
		a.Close()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	rec := make([]byte, 5+int(hdr[3])<<8|int(hdr[4]))
	copy(rec, hdr)
	if _, err := io.ReadFull(b, rec[5:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

// waitClosed reads from nc until the server closes it, and fails the test
// if that takes longer than within.
func waitClosed(t *testing.T, nc net.Conn, within time.Duration) []byte {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(within))
	var got bytes.Buffer
	_, err := io.Copy(&got, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still open after %s (read %d bytes)", within, got.Len())
	}
	return got.Bytes()
}

// waitHandshakes waits until no TLS handshake is in progress and no
// handshake input is held.
func waitHandshakes(t *testing.T, s *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.tlsHandshakes.Load() != 0 || s.input.held.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handshakes still in progress, %d bytes of input held", s.tlsHandshakes.Load(), s.input.held.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dialTCP(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// checkServes fails the test unless the server still serves HTTPS.
func checkServes(t *testing.T, s *Server, ca *testca.CA) {
	t.Helper()
	c := httpsClient(t, ca)
	resp, err := c.Get("https://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatalf("server no longer serves: %v", err)
	}
	resp.Body.Close()
	c.CloseIdleConnections()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestTLSPlainTextRequest(t *testing.T) {
	s, ca := startTLSServer(t, Config{})
	nc := dialTCP(t, s.Addr().String())
	if _, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	got := waitClosed(t, nc, 5*time.Second)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got)), nil)
	if err != nil || resp.StatusCode != 400 {
		t.Fatalf("answer %q: %v", got, err)
	}
	checkServes(t, s, ca)
}

func TestTLSTruncatedHandshake(t *testing.T) {
	s, ca := startTLSServer(t, Config{})
	hello := clientHello(t, ca)
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"header", hello[:3]},
		{"half hello", hello[:len(hello)/2]},
		{"whole hello", hello},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := dialTCP(t, s.Addr().String())
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			nc.Close()
			waitHandshakes(t, s)
			checkServes(t, s, ca)
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.openConns.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open", s.openConns.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTLSOversizedRecordClosed checks that a first record longer than any
// ClientHello closes the connection at once, without waiting for it.
func TestTLSOversizedRecordClosed(t *testing.T) {
	s, ca := startTLSServer(t, Config{})
	nc := dialTCP(t, s.Addr().String())
	if _, err := nc.Write([]byte{0x16, 0x03, 0x01, 0xff, 0xff, 0x01}); err != nil {
		t.Fatal(err)
	}
	if got := waitClosed(t, nc, time.Second); len(got) != 0 {
		t.Fatalf("answered %q", got)
	}
	waitHandshakes(t, s)
	checkServes(t, s, ca)
}

func TestTLSHandshakeDeadline(t *testing.T) {
	s, ca := startTLSServer(t, Config{HandshakeTimeout: time.Second})
	hello := clientHello(t, ca)
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"half hello", hello[:len(hello)/2]},
		{"stalled after the hello", hello}, // a handshake goroutine runs
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := dialTCP(t, s.Addr().String())
			start := time.Now()
			if _, err := nc.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			waitClosed(t, nc, 4*time.Second)
			if d := time.Since(start); d < 900*time.Millisecond {
				t.Fatalf("closed after %s, before the 1 s deadline", d)
			}
			waitHandshakes(t, s)
		})
	}
	if n := s.tlsFailed.Load(); n == 0 {
		t.Fatal("no failed handshake counted")
	}
}

func TestTLSHandshakesBounded(t *testing.T) {
	s, ca := startTLSServer(t, Config{MaxTLSHandshakes: 2, HandshakeTimeout: 3 * time.Second})
	hello := clientHello(t, ca)
	stalled := make([]net.Conn, 2)
	for i := range stalled {
		stalled[i] = dialTCP(t, s.Addr().String())
		if _, err := stalled[i].Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.tlsHandshakes.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d handshakes in progress, want 2", s.tlsHandshakes.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	third := dialTCP(t, s.Addr().String())
	if _, err := third.Write(hello); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, third, time.Second) // long before the deadline
	if s.tlsRefused.Load() != 1 {
		t.Fatalf("refused %d, want 1", s.tlsRefused.Load())
	}
	for _, nc := range stalled {
		nc.Close()
	}
	waitHandshakes(t, s)
	checkServes(t, s, ca)
}

// TestTLSIdleConnsHoldNoGoroutine opens idle wss:// connections and counts
// the goroutines they hold once their handshakes are done.
func TestTLSIdleConnsHoldNoGoroutine(t *testing.T) {
	const n = 200
	s, ca := startTLSServer(t, Config{Limits: Limits{MaxConnsPerIP: 10 * n, ConnRatePerIP: 10 * n}})
	dialWSS(t, s.Addr().String(), ca) // warm up the loops and pools
	waitHandshakes(t, s)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before, heapBefore := runtime.NumGoroutine(), ms.HeapAlloc
	conns := make([]*websocket.Conn, n)
	for i := range conns {
		conns[i] = dialWSS(t, s.Addr().String(), ca)
	}
	waitHandshakes(t, s)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	after := runtime.NumGoroutine()
	if after-before > 10 {
		t.Fatalf("%d goroutines before, %d with %d idle TLS connections", before, after, n)
	}
	t.Logf("%d idle wss connections: %d goroutines more; heap %d bytes per connection, client and server together",
		n, after-before, (int64(ms.HeapAlloc)-int64(heapBefore))/n)
	for _, c := range conns {
		writeWSS(t, c, `{"op":"ping"}`)
		if m := readWSS(t, c); m["op"] != "pong" {
			t.Fatalf("ping: %v", m)
		}
	}
}

// TestTLSRefusalIsNotPlainText checks that a connection refused when it
// opens (here by the per-address connection rate) is closed without a
// plain-text answer, which a TLS client would read as garbage.
func TestTLSRefusalIsNotPlainText(t *testing.T) {
	s, _ := startTLSServer(t, Config{Limits: Limits{ConnRatePerIP: 1}})
	refused := false
	for i := 0; i < 5 && !refused; i++ {
		nc := dialTCP(t, s.Addr().String())
		_ = nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		b := make([]byte, 64)
		n, err := nc.Read(b)
		switch {
		case n > 0:
			t.Fatalf("refused connection answered %q", b[:n])
		case err != nil && !errors.Is(err, io.EOF) && !isTimeout(err):
			refused = true // reset
		case errors.Is(err, io.EOF):
			refused = true
		}
	}
	if !refused {
		t.Fatal("no connection was refused at 1 per second")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTLSSlowReaderGetsEverythingInOrder is the TLS form of
// TestServerSlowReaderGetsEverythingInOrder: a wss:// subscriber that stops
// reading while large messages and its own replies pile up (ciphertext the
// kernel does not take, then frames queued behind it) gets all of them,
// intact and in order, once it reads again.
func TestTLSSlowReaderGetsEverythingInOrder(t *testing.T) {
	const (
		msgs    = 40
		size    = 256 << 10
		pingGap = 5
	)
	s, ca := startTLSServer(t, Config{MaxOutbound: 32 << 20})
	sub := dialWSS(t, s.Addr().String(), ca)
	pub := dialWSS(t, s.Addr().String(), ca)
	writeWSS(t, sub, `{"id":1,"op":"subscribe","channel":"big"}`)
	if m := readWSS(t, sub); m["op"] != "ack" {
		t.Fatalf("subscribe: %v", m)
	}
	fill := strings.Repeat("x", size)
	for i := range msgs {
		writeWSS(t, pub, `{"id":2,"op":"publish","channel":"big","data":"`+strconv.Itoa(1000+i)+fill+`"}`)
		if m := readWSS(t, pub); m["op"] != "ack" {
			t.Fatalf("publish %d: %v", i, m)
		}
		if i%pingGap == 0 {
			writeWSS(t, sub, `{"op":"ping"}`)
		}
	}
	next, pongs := 0, 0
	for next < msgs || pongs < msgs/pingGap {
		m := readWSS(t, sub)
		switch m["op"] {
		case "pong":
			pongs++
		case "message":
			if m["data"] != strconv.Itoa(1000+next)+fill {
				t.Fatalf("message %d: got %.20q…", next, m["data"])
			}
			next++
		default:
			t.Fatalf("unexpected %v", m["op"])
		}
	}
	if slow := s.Stats().SlowClosed; slow != 0 {
		t.Errorf("%d slow-consumer closes under the limit", slow)
	}
}

// TestTLSSlowConsumerClosed checks that ciphertext the kernel does not
// take counts against MaxOutbound: a wss:// subscriber that never reads is
// closed as a slow consumer.
func TestTLSSlowConsumerClosed(t *testing.T) {
	s, ca := startTLSServer(t, Config{MaxOutbound: 1 << 20})
	sub := dialWSS(t, s.Addr().String(), ca)
	pub := dialWSS(t, s.Addr().String(), ca)
	writeWSS(t, sub, `{"id":1,"op":"subscribe","channel":"big"}`)
	if m := readWSS(t, sub); m["op"] != "ack" {
		t.Fatalf("subscribe: %v", m)
	}
	fill := strings.Repeat("x", 256<<10)
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; s.Stats().SlowClosed == 0; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("not closed after %d messages of 256 KiB", i)
		}
		writeWSS(t, pub, `{"id":2,"op":"publish","channel":"big","data":"`+fill+`"}`)
		if m := readWSS(t, pub); m["op"] != "ack" {
			t.Fatalf("publish %d: %v", i, m)
		}
	}
}

// TestTLSBadRecordAlerted checks that a record that does not decrypt ends
// the connection with a TLS alert (written by crypto/tls while the loop
// reads) rather than a bare close.
func TestTLSBadRecordAlerted(t *testing.T) {
	s, ca := startTLSServer(t, Config{})
	nc := dialTCP(t, s.Addr().String())
	cfg := ca.ClientConfig()
	cfg.ServerName = "localhost"
	tc := tls.Client(nc, cfg)
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte{0x17, 0x03, 0x03, 0x00, 0x20}, bytes.Repeat([]byte{0xa5}, 0x20)...)
	if _, err := nc.Write(bad); err != nil {
		t.Fatal(err)
	}
	_, err := tc.Read(make([]byte, 64))
	if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
		t.Fatalf("read after a bad record: %v, want the bad_record_mac alert", err)
	}
}

// TestWholeRecords: during the handshake the loop takes whole records
// only; the bytes of an incomplete record, even a header cut short, stay
// in gnet's buffer until the rest arrives.
func TestWholeRecords(t *testing.T) {
	rec := func(n int) []byte {
		return append([]byte{recordTypeHandshake, 3, 3, byte(n >> 8), byte(n)}, make([]byte, n)...)
	}
	two := append(rec(10), rec(3)...)
	for _, tc := range []struct {
		name string
		in   []byte
		want int
	}{
		{"empty", nil, 0},
		{"short header", two[:3], 0},
		{"header only", two[:5], 0},
		{"one whole", two[:15], 15},
		{"one whole, the next header cut short", two[:18], 15},
		{"two whole", two, len(two)},
		{"too long a body is handed over", []byte{recordTypeHandshake, 3, 3, 0xff, 0xff, 1}, 6},
	} {
		if got := wholeRecords(tc.in); got != tc.want {
			t.Errorf("%s: wholeRecords = %d, want %d", tc.name, got, tc.want)
		}
	}
}
