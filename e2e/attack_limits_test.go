package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Attacks on the client limits: per-address connection caps and pace,
// per-connection op buckets, per-user and per-node caps across worker
// processes, client addresses from trusted proxies, and the Origin list.
// Clients take distinct loopback source addresses (127.0.0.0/8 all
// reaches the server), so one test's "attacker" and "healthy client" are
// different addresses. The per-address tests count exactly, so they run
// in one process (with worker processes each enforces its share, which
// TestAttackMaxConnectionsPerNode shows for --max-connections).

// lmDialer dials from source address src (a loopback address).
func lmDialer(src string) *net.Dialer {
	return &net.Dialer{Timeout: defaultTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
}

// lmDial opens a WebSocket from src with extra headers; on a refused
// handshake it returns the HTTP status (and a nil conn).
func lmDial(s *serverProc, src string, h http.Header) (*websocket.Conn, int, error) {
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout, NetDialContext: lmDialer(src).DialContext}
	c, resp, err := d.Dial("ws://"+s.Addr+"/ws", h)
	if err != nil {
		if resp != nil {
			return nil, resp.StatusCode, err
		}
		return nil, 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(defaultTimeout))
	if _, p, err := c.ReadMessage(); err != nil || !strings.Contains(string(p), `"welcome"`) {
		c.Close()
		return nil, 0, fmt.Errorf("welcome: %q, %v", p, err)
	}
	return c, 101, nil
}

// lmAlive reports whether c still answers a ping op.
func lmAlive(c *websocket.Conn) (bool, int) {
	_ = c.SetWriteDeadline(time.Now().Add(defaultTimeout))
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"op":"ping"}`)); err != nil {
		return false, 0
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(defaultTimeout))
		_, p, err := c.ReadMessage()
		if err != nil {
			return false, closeCode(err)
		}
		if strings.Contains(string(p), `"pong"`) {
			return true, 0
		}
	}
}

// TestAttackPerIPConnectionCap: one address gets --max-conns-per-ip
// connections and then 429, another address is not affected, and a slot
// freed by a close is served again.
func TestAttackPerIPConnectionCap(t *testing.T) {
	s := startServer(t, "--workers", "0", "--max-conns-per-ip", "5", "--conn-rate-per-ip", "1000")
	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	refused := 0
	for i := 0; i < 12; i++ {
		c, status, err := lmDial(s, "127.0.0.2", nil)
		if c != nil {
			open = append(open, c)
			continue
		}
		if status != http.StatusTooManyRequests {
			t.Fatalf("connection %d from 127.0.0.2: status %d (%v), want 101 or 429", i, status, err)
		}
		refused++
	}
	if len(open) != 5 || refused != 7 {
		t.Fatalf("from one address: %d connections accepted, %d refused; want 5 and 7", len(open), refused)
	}
	other, status, err := lmDial(s, "127.0.0.3", nil)
	if other == nil {
		t.Fatalf("another address refused (%d, %v) while the first is at its cap", status, err)
	}
	other.Close()
	open[0].Close()
	open = open[1:]
	eventually(t, 5*time.Second, func() string {
		c, status, err := lmDial(s, "127.0.0.2", nil)
		if c == nil {
			return fmt.Sprintf("after a close, still refused: %d %v", status, err)
		}
		open = append(open, c)
		return ""
	})
	if m := lmMetric(t, s, `zenconn_limit_refused_total{limit="conns_per_ip"}`); m < 7 {
		t.Errorf("zenconn_limit_refused_total{limit=conns_per_ip} = %v, want ≥ 7", m)
	}
}

// TestAttackPerIPConnectionRate: past --conn-rate-per-ip new connections
// per second (a burst of that many), one address gets 429 even though it
// holds no connection, and another address is not affected.
func TestAttackPerIPConnectionRate(t *testing.T) {
	s := startServer(t, "--workers", "0", "--conn-rate-per-ip", "5", "--max-conns-per-ip", "1000")
	accepted, refused := 0, 0
	start := time.Now()
	for i := 0; i < 30; i++ {
		c, status, err := lmDial(s, "127.0.0.4", nil)
		switch {
		case c != nil:
			accepted++
			c.Close()
		case status == http.StatusTooManyRequests:
			refused++
		default:
			t.Fatalf("connection %d: status %d (%v)", i, status, err)
		}
	}
	// 5 of burst, plus 5 a second for the time the loop took.
	if max := 5 + int(time.Since(start).Seconds()*5) + 1; accepted > max || refused == 0 {
		t.Fatalf("30 connections in %v: %d accepted, %d refused; want at most %d accepted", time.Since(start), accepted, refused, max)
	}
	if c, status, err := lmDial(s, "127.0.0.5", nil); c == nil {
		t.Fatalf("another address refused: %d %v", status, err)
	} else {
		c.Close()
	}
}

// TestAttackPublishFlood: a connection publishing far past --publish-rate
// gets rate_limited errors, then is closed with 4008, and it is not
// audited per refused op; a healthy client on another address keeps
// publishing and receiving meanwhile.
func TestAttackPublishFlood(t *testing.T) {
	s := startServer(t, "--publish-rate", "50", "--subscribe-rate", "20", "--api-key", ibAPIKey)
	healthy, _, err := lmDial(s, "127.0.0.6", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer healthy.Close()
	receiver, _, err := lmDial(s, "127.0.0.6", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer receiver.Close()
	sub := `{"id":1,"op":"subscribe","channel":"healthy"}`
	if err := receiver.WriteMessage(websocket.TextMessage, []byte(sub)); err != nil {
		t.Fatal(err)
	}
	if _, p, err := receiver.ReadMessage(); err != nil || !strings.Contains(string(p), `"ack"`) {
		t.Fatalf("subscribe: %q %v", p, err)
	}
	flood, _, err := lmDial(s, "127.0.0.7", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the flooder writes as fast as it can, for at most 5 s
		defer wg.Done()
		msg := []byte(`{"id":1,"op":"publish","channel":"flood","data":"xxxxxxxxxxxxxxxx"}`)
		end := time.Now().Add(5 * time.Second)
		for time.Now().Before(end) {
			_ = flood.SetWriteDeadline(time.Now().Add(time.Second))
			if flood.WriteMessage(websocket.TextMessage, msg) != nil {
				return
			}
		}
	}()
	limited, code := 0, 0
	wg.Add(1)
	go func() { // and reads what it gets back
		defer wg.Done()
		for {
			_ = flood.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, p, err := flood.ReadMessage()
			if err != nil {
				code = closeCode(err)
				return
			}
			if strings.Contains(string(p), `"rate_limited"`) {
				limited++
			}
		}
	}()

	// Meanwhile the healthy client's publishes reach their subscriber.
	for i := 0; i < 20; i++ {
		pub := fmt.Sprintf(`{"op":"publish","channel":"healthy","data":%d}`, i)
		if err := healthy.WriteMessage(websocket.TextMessage, []byte(pub)); err != nil {
			t.Fatal(err)
		}
		_ = receiver.SetReadDeadline(time.Now().Add(defaultTimeout))
		_, p, err := receiver.ReadMessage()
		if err != nil || !strings.Contains(string(p), `"message"`) {
			t.Fatalf("healthy message %d: %q %v", i, p, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	if limited == 0 || code != 4008 {
		t.Fatalf("flooder: %d rate_limited errors, then close %d; want some, then 4008", limited, code)
	}

	// A subscribe/unsubscribe flood is limited too, and not an audit record per op.
	for i := 0; i < 200; i++ {
		op := "subscribe"
		if i%2 == 1 {
			op = "unsubscribe"
		}
		if healthy.WriteMessage(websocket.TextMessage, []byte(`{"op":"`+op+`","channel":"churn"}`)) != nil {
			break
		}
	}
	subLimited := 0
	for {
		_ = healthy.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, p, err := healthy.ReadMessage()
		if err != nil {
			break
		}
		if strings.Contains(string(p), `"rate_limited"`) {
			subLimited++
		}
	}
	if subLimited < 100 {
		t.Errorf("200 subscribe/unsubscribe ops at once with --subscribe-rate 20: %d rate_limited, want ≥ 100", subLimited)
	}
	eventually(t, 5*time.Second, func() string {
		recs := auAudit(t, s, "channel=churn")
		if len(recs) == 0 || len(recs) > 40 {
			return fmt.Sprintf("%d audit records of channel churn, want 1..40 (the ops the bucket let through)", len(recs))
		}
		return ""
	})
}

// TestAttackPerUserCapAcrossWorkers: with two worker processes, one user
// keeps --max-conns-per-user connections on the node: further ones are
// refused (429) by the worker that holds the others, or closed with 4009
// by the agent, which sees both workers.
func TestAttackPerUserCapAcrossWorkers(t *testing.T) {
	s := startServer(t, "--workers", "2", "--jwt-secret", ibSecret, "--max-conns-per-user", "2")
	tok := ibToken(t, "alice", ibGrants{})
	h := http.Header{"Authorization": {"Bearer " + tok}}
	var conns []*websocket.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 10; i++ {
		c, status, err := lmDial(s, "127.0.0.8", h)
		if c == nil {
			if status != http.StatusTooManyRequests {
				t.Fatalf("handshake %d: %d %v, want 101 or 429", i, status, err)
			}
			continue
		}
		conns = append(conns, c)
		time.Sleep(20 * time.Millisecond) // let the agent see it before the next
	}
	alive := 0
	for i, c := range conns {
		ok, code := lmAlive(c)
		switch {
		case ok:
			alive++
		case code != 4009:
			t.Errorf("connection %d ended with %d, want 4009", i, code)
		}
		if i < 2 && !ok {
			t.Errorf("connection %d (within the limit) was closed with %d", i, code)
		}
	}
	if alive != 2 {
		t.Fatalf("%d of alice's connections alive, want 2 (%d accepted at the handshake)", alive, len(conns))
	}
	// Another user is not affected.
	c, status, err := lmDial(s, "127.0.0.8", http.Header{"Authorization": {"Bearer " + ibToken(t, "bob", ibGrants{})}})
	if c == nil {
		t.Fatalf("bob refused: %d %v", status, err)
	}
	c.Close()
}

// TestAttackMaxConnectionsPerNode: with two worker processes the node
// holds at most --max-connections, not that many per worker.
func TestAttackMaxConnectionsPerNode(t *testing.T) {
	s := startServer(t, "--workers", "2", "--max-connections", "10")
	s.HTTP.CloseIdleConnections()
	var open []*websocket.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	refused := 0
	for i := 0; i < 30; i++ {
		c, status, _ := lmDial(s, "127.0.0.9", nil)
		if c != nil {
			open = append(open, c)
			continue
		}
		if status != 0 && status != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 101 or 503", status)
		}
		refused++
	}
	if len(open) > 10 || len(open) < 5 || refused == 0 {
		t.Fatalf("%d connections accepted, %d refused; want 5..10 accepted (5 per worker)", len(open), refused)
	}
}

// lmRaw opens a TCP connection from src and sends p.
func lmRaw(t *testing.T, s *serverProc, src string, p []byte) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := lmDialer(src).Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(defaultTimeout))
	if _, err := c.Write(p); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// lmHandshake is a WebSocket handshake with extra header lines.
func lmHandshake(extra ...string) string {
	var b strings.Builder
	b.WriteString("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// lmStatus reads a response's status code.
func lmStatus(t *testing.T, br *bufio.Reader) int {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatalf("reading the status line: %v", err)
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		t.Fatalf("status line %q", line)
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// lmAccessLog waits for the access log to hold want.
func lmAccessLog(t *testing.T, s *serverProc, want ...string) {
	t.Helper()
	eventually(t, 5*time.Second, func() string {
		b, _ := os.ReadFile(s.AccessLog)
		b = append([]byte("\n"), b...) // the first line starts a line too
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				return fmt.Sprintf("access log without %q:\n%s", w, b)
			}
		}
		return ""
	})
}

// TestAttackForwardedForTrustedOnly: X-Forwarded-For names the client for
// the per-address cap and the access log only when the peer is in
// --trusted-proxies; from anyone else it is ignored.
func TestAttackForwardedForTrustedOnly(t *testing.T) {
	s := startServer(t, "--workers", "0", "--trusted-proxies", "127.0.0.10/32", "--max-conns-per-ip", "2", "--conn-rate-per-ip", "1000")
	xff := func(a string) http.Header { return http.Header{"X-Forwarded-For": {"192.0.2.77, " + a}} }
	// Through the trusted proxy: counted per forwarded client.
	for i, want := range []int{101, 101, 429} {
		c, status, err := lmDial(s, "127.0.0.10", xff("203.0.113.9"))
		if status != want {
			t.Fatalf("proxied connection %d for 203.0.113.9: %d (%v), want %d", i, status, err, want)
		}
		if c != nil {
			defer c.Close()
		}
	}
	if c, status, err := lmDial(s, "127.0.0.10", xff("203.0.113.10")); c == nil {
		t.Fatalf("proxied connection for another client: %d %v", status, err)
	} else {
		defer c.Close()
	}
	// From an untrusted peer the header changes nothing.
	for i, want := range []int{101, 101, 429} {
		c, status, err := lmDial(s, "127.0.0.11", xff(fmt.Sprintf("198.51.100.%d", i)))
		if status != want {
			t.Fatalf("untrusted peer's connection %d: %d (%v), want %d", i, status, err, want)
		}
		if c != nil {
			defer c.Close()
		}
	}
	lmAccessLog(t, s, "\n203.0.113.9 - - ", "\n203.0.113.10 - - ", "\n127.0.0.11 - - ")
	if b, _ := os.ReadFile(s.AccessLog); strings.Contains(string(b), "198.51.100.") || strings.Contains(string(b), "127.0.0.10 - - [") {
		t.Fatalf("the access log took an untrusted X-Forwarded-For, or the proxy's address:\n%s", b)
	}
}

// TestAttackProxyProtocol: a trusted proxy's PROXY header (v1 and v2)
// names the client for the per-address cap and the access log; from an
// untrusted peer it is not a valid request.
func TestAttackProxyProtocol(t *testing.T) {
	s := startServer(t, "--workers", "0", "--trusted-proxies", "127.0.0.12", "--max-conns-per-ip", "1", "--conn-rate-per-ip", "1000")
	v1 := func(src string) []byte {
		return []byte("PROXY TCP4 " + src + " 127.0.0.1 40000 80\r\n" + lmHandshake())
	}
	v2 := func(src net.IP) []byte {
		b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
		b = append(b, src.To4()...)
		b = append(b, 127, 0, 0, 1)
		b = binary.BigEndian.AppendUint16(b, 40001)
		b = binary.BigEndian.AppendUint16(b, 80)
		return append(b, lmHandshake()...)
	}
	for _, tc := range []struct {
		name string
		p    []byte
		want int
	}{
		{"v1 first", v1("198.51.100.1"), 101},
		{"v1 same client", v1("198.51.100.1"), 429},
		{"v2 first", v2(net.ParseIP("198.51.100.2")), 101},
		{"v2 same client", v2(net.ParseIP("198.51.100.2")), 429},
		{"v1 malformed", []byte("PROXY TCP4 nonsense\r\n" + lmHandshake()), 400},
	} {
		_, br := lmRaw(t, s, "127.0.0.12", tc.p)
		if got := lmStatus(t, br); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	// Split across writes: the header is waited for.
	c, br := lmRaw(t, s, "127.0.0.12", []byte("PROX"))
	time.Sleep(50 * time.Millisecond)
	if _, err := c.Write(v1("198.51.100.3")[4:]); err != nil {
		t.Fatal(err)
	}
	if got := lmStatus(t, br); got != 101 {
		t.Errorf("a v1 header in two writes: status %d, want 101", got)
	}
	// From an untrusted peer, a PROXY header is not HTTP.
	_, br = lmRaw(t, s, "127.0.0.13", v1("198.51.100.4"))
	if got := lmStatus(t, br); got != 400 {
		t.Errorf("PROXY header from an untrusted peer: status %d, want 400", got)
	}
	lmAccessLog(t, s, "\n198.51.100.1 - - ", "\n198.51.100.2 - - ", "\n198.51.100.3 - - ")
}

// TestAttackAllowedOrigins: with --allowed-origins, a handshake from
// another Origin gets 403 and is audited as a refused connect.
func TestAttackAllowedOrigins(t *testing.T) {
	s := startServer(t, "--allowed-origins", "https://app.example.com, https://*.example.org", "--api-key", ibAPIKey)
	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"https://app.example.com", 101},
		{"https://APP.example.com", 101},
		{"https://a.b.example.org", 101},
		{"", 101}, // not a browser
		{"https://evil.example.net", 403},
		{"https://example.org", 403},
		{"http://app.example.com", 403},
		{"https://app.example.com.evil.net", 403},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		c, status, err := lmDial(s, "127.0.0.14", h)
		if c != nil {
			c.Close()
		}
		if status != tc.want {
			t.Errorf("Origin %q: %d (%v), want %d", tc.origin, status, err, tc.want)
		}
	}
	eventually(t, 5*time.Second, func() string {
		n := 0
		for _, r := range auAudit(t, s, "op=refused") {
			if r.Attempt == "connect" && r.Error == "forbidden" && strings.HasPrefix(r.Remote, "127.0.0.14") {
				n++
			}
		}
		if n != 4 {
			return fmt.Sprintf("%d refused connects audited, want 4", n)
		}
		return ""
	})
}

// lmMetric reads one sample of /metrics.
func lmMetric(t *testing.T, s *serverProc, sample string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL("/metrics"), nil)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// testLimitFlags lift the client limits for the tests of everything else
// (the harness passes them before a test's own flags).
var testLimitFlags = []string{
	"--max-conns-per-ip", "1000000", "--conn-rate-per-ip", "1000000", "--max-conns-per-user", "1000000",
	"--publish-rate", "1000000", "--subscribe-rate", "1000000", "--auth-rate", "1000000",
}
