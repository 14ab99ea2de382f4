package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dialUpgrade opens a TCP connection, sends a WebSocket handshake and
// returns the connection and the response's status line.
func dialUpgrade(t *testing.T, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatalf("reading the handshake response: %v", err)
	}
	return c, strings.TrimSpace(line)
}

// TestMaxConnections: past --max-connections a new connection gets 503 and
// is closed, the open ones keep working, and the server serves again once
// connections close.
func TestMaxConnections(t *testing.T) {
	s := startServer(t, "--max-connections", "10")
	s.HTTP.CloseIdleConnections() // the health check's keep-alive connection counts too
	var open []net.Conn
	closeAll := func() {
		for _, c := range open {
			c.Close()
		}
		open = nil
	}
	defer closeAll()
	// fill opens connections until one is refused and reports how many
	// were upgraded and the refusal's status.
	fill := func() (int, string) {
		for i := 0; i < 20; i++ {
			c, status := dialUpgrade(t, s.Addr)
			if !strings.Contains(status, " 101 ") {
				c.Close()
				return len(open), status
			}
			open = append(open, c)
		}
		return len(open), "no refusal"
	}
	eventually(t, 5*time.Second, func() string {
		closeAll()
		n, status := fill()
		if n != 10 || !strings.Contains(status, " 503 ") {
			return fmt.Sprintf("%d connections upgraded, then %q; want 10, then 503", n, status)
		}
		return ""
	})
	// A slot freed by a close is served again.
	open[0].Close()
	open = open[1:]
	eventually(t, 5*time.Second, func() string {
		c, status := dialUpgrade(t, s.Addr)
		if !strings.Contains(status, " 101 ") {
			c.Close()
			return "after a close, a new connection still gets " + status
		}
		open = append(open, c)
		return ""
	})
}

// TestOpenFileLimitDoesNotStopServing runs the server with an open-file
// limit of 100 and opens 150 connections: the default connection cap keeps
// accept from running out of descriptors, the surplus gets 503, and the
// server keeps serving.
func TestOpenFileLimitDoesNotStopServing(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (util-linux) is needed for this test: %v", err)
	}
	s := startServerVia(t, []string{prlimit, "--nofile=100:100", "--"}, nil)
	var ok, busy int
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < 150; i++ {
		c, status := dialUpgrade(t, s.Addr)
		switch {
		case strings.Contains(status, " 101 "):
			ok++
			open = append(open, c)
		case strings.Contains(status, " 503 "):
			busy++
			c.Close()
		default:
			c.Close()
			t.Fatalf("connection %d: %q, want 101 or 503", i, status)
		}
	}
	if ok == 0 || busy == 0 || ok+busy != 150 {
		t.Fatalf("%d upgraded, %d refused with 503", ok, busy)
	}
	resp, err := s.HTTP.Get(s.URL("/healthz"))
	if err != nil {
		t.Fatalf("server stopped serving at the descriptor limit: %v", err)
	}
	resp.Body.Close()
	if s.Exited() {
		t.Fatal("server exited")
	}
}
