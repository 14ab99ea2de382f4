package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server address (loopback)")
	pid := flag.Int("pid", 0, "server process id, for its RSS")
	subs := flag.Int("subs", 300, "subscribers that never read")
	sources := flag.Int("sources", 10, "loopback source addresses 127.0.1.1… to spread them over")
	pubs := flag.Int("publishes", 8, "messages published")
	size := flag.Int("size", 975000, "bytes of each message's data")
	settle := flag.Duration("settle", 3*time.Second, "wait after the last publish before reading RSS")
	flag.Parse()
	if err := run(*addr, *pid, *subs, *sources, *pubs, *size, *settle); err != nil {
		fmt.Fprintln(os.Stderr, "slowsubs:", err)
		os.Exit(1)
	}
}

func run(addr string, pid, subs, sources, pubs, size int, settle time.Duration) error {
	conns := make([]*wsConn, 0, subs)
	defer func() {
		for _, c := range conns {
			c.conn.Close()
		}
	}()
	for i := range subs {
		src := net.IPv4(127, 0, 1, byte(1+i%max(sources, 1)))
		c, err := dial(addr, src)
		if err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := c.request(`{"id":1,"op":"subscribe","channel":"slow"}`, `"ack"`); err != nil {
			return fmt.Errorf("subscriber %d: %w", i, err)
		}
	}
	pub, err := dial(addr, net.IPv4(127, 0, 2, 1))
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	defer pub.conn.Close()
	time.Sleep(500 * time.Millisecond)
	before := rss(pid)
	data := `"` + strings.Repeat("x", size-2) + `"`
	for i := range pubs {
		msg := `{"id":` + strconv.Itoa(i+2) + `,"op":"publish","channel":"slow","data":` + data + `}`
		if err := pub.request(msg, `"ack"`); err != nil {
			return fmt.Errorf("publish %d: %w", i, err)
		}
	}
	peak := rss(pid)
	deadline := time.Now().Add(settle)
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, rss(pid))
	}
	after := rss(pid)
	closed, open := 0, 0
	for _, c := range conns {
		if code := c.closeCode(2 * time.Second); code == 4001 {
			closed++
		} else {
			open++
		}
	}
	fmt.Printf("{\"subs\":%d,\"publishes\":%d,\"size\":%d,\"rss_before_kib\":%d,\"rss_peak_kib\":%d,\"rss_after_kib\":%d,\"growth_mib\":%.1f,\"closed_4001\":%d,\"not_closed\":%d,\"slow_metric\":%q}\n",
		subs, pubs, size, before, peak, after, float64(peak-before)/1024, closed, open, slowMetric(addr))
	return nil
}

type wsConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func dial(addr string, src net.IP) (*wsConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: src}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	var k [16]byte
	_, _ = rand.Read(k[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(k[:]) + "\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		conn.Close()
		return nil, err
	}
	c := &wsConn{conn: conn, br: bufio.NewReaderSize(conn, 64<<10)}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		conn.Close()
		return nil, fmt.Errorf("handshake: %v %v", resp, err)
	}
	if _, _, err := c.readFrame(); err != nil { // welcome
		conn.Close()
		return nil, err
	}
	return c, nil
}

// request sends a text frame and reads frames until one contains want.
func (c *wsConn) request(msg, want string) error {
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	frame := []byte{0x81}
	n := len(msg)
	switch {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n < 1<<16:
		frame = append(frame, 0x80|126, byte(n>>8), byte(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	frame = append(frame, 0, 0, 0, 0) // zero mask key: payload unchanged
	frame = append(frame, msg...)
	if _, err := c.conn.Write(frame); err != nil {
		return err
	}
	for {
		_, p, err := c.readFrame()
		if err != nil {
			return err
		}
		if bytes.Contains(p, []byte(want)) {
			return nil
		}
	}
}

func (c *wsConn) readFrame() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 16<<20 {
		return 0, nil, errors.New("frame too large")
	}
	p := make([]byte, n)
	_, err := io.ReadFull(c.br, p)
	return h[0] & 0x0f, p, err
}

// closeCode reads what the server sent until a close frame (its code) or
// the end of the stream (0).
func (c *wsConn) closeCode(timeout time.Duration) int {
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	for {
		op, p, err := c.readFrame()
		if err != nil {
			return 0
		}
		if op == 8 && len(p) >= 2 {
			return int(binary.BigEndian.Uint16(p))
		}
	}
}

func rss(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func slowMetric(addr string) string {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "zenconn_slow_consumer_disconnects_total") {
			return line
		}
	}
	return "?"
}
