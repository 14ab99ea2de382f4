package engine

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
	"golang.org/x/sys/unix"
)

// startServer starts a real server on 127.0.0.1:0 and shuts it down when
// the test ends.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.Loops == 0 {
		cfg.Loops = 2
	}
	s := newTestServer(t, cfg)
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if !s.draining.Load() {
			shutdown(t, s)
		}
	})
	return s
}

func shutdown(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// wsClient is a raw WebSocket client over TCP with handcrafted frames.
type wsClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialWS(t *testing.T, addr string) *wsClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &wsClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.deadline()
	if _, err := nc.Write([]byte(upgradeRequest)); err != nil {
		t.Fatal(err)
	}
	status, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		t.Fatalf("handshake status %q, %v", status, err)
	}
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	if f := c.read(); f.Header.OpCode != ws.OpText || !bytes.Contains(f.Payload, []byte(`"op":"welcome"`)) {
		t.Fatalf("want welcome, got %+v %q", f.Header, f.Payload)
	}
	return c
}

func (c *wsClient) deadline() { _ = c.nc.SetDeadline(time.Now().Add(5 * time.Second)) }

func (c *wsClient) send(msg string) {
	c.t.Helper()
	c.deadline()
	if _, err := c.nc.Write(clientFrame(true, ws.OpText, []byte(msg))); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wsClient) read() ws.Frame {
	c.t.Helper()
	c.deadline()
	f, err := ws.ReadFrame(c.br) //nolint:staticcheck // bounded: our own server, test deadline
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	if f.Header.Masked {
		c.t.Fatalf("server sent a masked frame")
	}
	return f
}

// TestServerRealSockets runs the engine on gnet: handshake, pub/sub across
// connections (and loops), HTTP, and a shutdown that closes WebSockets with
// 1001. TestMain's goleak check then proves the loops are gone.
func TestServerRealSockets(t *testing.T) {
	s := startServer(t, Config{})
	addr := s.Addr().String()

	const nSubs = 4
	subs := make([]*wsClient, nSubs)
	for i := range subs {
		subs[i] = dialWS(t, addr)
		subs[i].send(`{"id":1,"op":"subscribe","channel":"room"}`)
		if f := subs[i].read(); !bytes.Contains(f.Payload, []byte(`"op":"ack"`)) {
			t.Fatalf("subscribe reply %q", f.Payload)
		}
	}
	pub := dialWS(t, addr)
	pub.send(`{"id":2,"op":"publish","channel":"room","data":{"n":1}}`)
	if f := pub.read(); !bytes.Contains(f.Payload, []byte(`"op":"ack"`)) {
		t.Fatalf("publish reply %q", f.Payload)
	}
	for i, c := range subs {
		f := c.read()
		if !bytes.Contains(f.Payload, []byte(`"op":"message"`)) || !bytes.Contains(f.Payload, []byte(`"data":{"n":1}`)) {
			t.Errorf("subscriber %d got %q", i, f.Payload)
		}
	}

	// Plain HTTP on the same port.
	hc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	_ = hc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := hc.Write([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := io.ReadAll(hc)
	if err != nil || !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.HasSuffix(resp, []byte("\r\n\r\nok")) {
		t.Fatalf("healthz: %q %v", resp, err)
	}
	hc.Close()

	// Shutdown sends 1001 to every WebSocket; the clients answer and close.
	done := make(chan struct{})
	go func() {
		defer close(done)
		shutdown(t, s)
	}()
	for i, c := range append(subs, pub) {
		f := c.read()
		code, _ := ws.ParseCloseFrameData(f.Payload)
		if f.Header.OpCode != ws.OpClose || code != proto.CloseGoingAway {
			t.Errorf("client %d: got %+v code %d, want close 1001", i, f.Header, code)
		}
		_, _ = c.nc.Write(clientFrame(true, ws.OpClose, f.Payload[:2]))
		c.nc.Close()
	}
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	if n := s.openConnections(); n != 0 {
		t.Errorf("%d connections open after Shutdown", n)
	}
}

// TestShutdownResetsTheRest: a client that answers the 1001 sees its
// connection end (FIN); one still silent when the grace period ends sees
// it reset (RST), so the kernel keeps no state for it.
func TestShutdownResetsTheRest(t *testing.T) {
	s := startServer(t, Config{Loops: 1})
	addr := s.Addr().String()
	polite, silent := dialWS(t, addr), dialWS(t, addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		shutdown(t, s)
	}()
	for _, c := range []*wsClient{polite, silent} {
		if f := c.read(); f.Header.OpCode != ws.OpClose {
			t.Fatalf("got %+v, want the 1001 close", f.Header)
		}
	}
	_, _ = polite.nc.Write(clientFrame(true, ws.OpClose, []byte{0x03, 0xe9}))
	if n, err := polite.br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("the client that answered: read %d, %v; want the end of the stream", n, err)
	}
	<-done
	// The close frame came with a half-close (FIN), which a read reports
	// even after a reset: the socket's state tells them apart (CLOSE_WAIT
	// after the FIN alone, CLOSE once reset).
	if st := tcpState(t, silent.nc); st != unix.BPF_TCP_CLOSE {
		t.Errorf("the silent client's socket is in state %d, want %d (reset)", st, unix.BPF_TCP_CLOSE)
	}
}

// tcpState returns the kernel's state of nc's socket (TCP_INFO).
func tcpState(t *testing.T, nc net.Conn) uint8 {
	t.Helper()
	raw, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	if err := raw.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return info.State
}
