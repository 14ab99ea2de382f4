package main

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zenconn/server/internal/testca"
	"golang.org/x/sys/unix"
)

// caFile writes a new test CA's certificate to a file; it returns the CA.
func caFile(t *testing.T) (*testca.CA, string) {
	t.Helper()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, ca.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return ca, f
}

// tlsEcho serves TLS with ca's certificate and echoes what it reads;
// ended receives once per connection when its peer ends the stream.
func tlsEcho(t *testing.T, ca *testca.CA) (addr string, ended chan struct{}) {
	t.Helper()
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{ca.Server}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ended = make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				ended <- struct{}{}
			}()
		}
	}()
	return ln.Addr().String(), ended
}

// readFd reads from the non-blocking fd until want bytes arrived or the
// stream ended, for at most 5 s.
func readFd(t *testing.T, fd, want int) []byte {
	t.Helper()
	var got []byte
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 100); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		n, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			continue
		}
		if err != nil || n == 0 {
			break
		}
		got = append(got, buf[:n]...)
	}
	return got
}

func TestTLSBridgeCarriesBytesBothWays(t *testing.T) {
	ca, file := caFile(t)
	addr, ended := tlsEcho(t, ca)
	cfg, err := tlsClientConfig(file, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	fails := newTLSFails()
	fd, _, err := dialTLSPair(addr, cfg, 5*time.Second, fails)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("GET /ws HTTP/1.1\r\n\r\n")
	if _, err := unix.Write(fd, msg); err != nil {
		t.Fatal(err)
	}
	if got := readFd(t, fd, len(msg)); string(got) != string(msg) {
		t.Fatalf("echo through the bridge: %q, want %q (handshake error: %v)", got, msg, fails.first())
	}
	_ = unix.Close(fd)
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's side did not end after the client's end was closed")
	}
}

func TestTLSBridgeRefusesAnUntrustedServer(t *testing.T) {
	ca, _ := caFile(t)
	_, other := caFile(t) // trusts another CA
	addr, _ := tlsEcho(t, ca)
	cfg, err := tlsClientConfig(other, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	fails := newTLSFails()
	fd, _, err := dialTLSPair(addr, cfg, 5*time.Second, fails)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if got := readFd(t, fd, 1); len(got) != 0 {
		t.Fatalf("read %q from an untrusted server", got)
	}
	if err := fails.first(); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("handshake error %v, want a certificate error", err)
	}
}

func TestHandshakeModeCountsFullHandshakes(t *testing.T) {
	ca, file := caFile(t)
	_, other := caFile(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	var resumed, full atomic.Int64
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Server}}
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if tc, ok := c.(*tls.Conn); ok && s == http.StateClosed {
			if tc.ConnectionState().DidResume {
				resumed.Add(1)
			} else {
				full.Add(1)
			}
		}
	}
	srv.StartTLS()
	defer srv.Close()
	url := srv.URL + "/index.html"
	c := &hsConfig{url: url, server: "test", label: "handshake", ca: file, conc: 2,
		duration: 300 * time.Millisecond, warmup: 100 * time.Millisecond, pids: []int{os.Getpid()}}
	out, err := handshakes(c)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := out["handshakes"].(int64); n < 2 || out["failures"].(int64) != 0 {
		t.Fatalf("handshakes %v, failures %v", out["handshakes"], out["failures"])
	}
	if _, ok := out["handshakes_per_core_s"]; !ok {
		t.Fatalf("no per-core figure in %v", out)
	}
	srv.CloseClientConnections()
	if resumed.Load() != 0 || full.Load() == 0 {
		t.Fatalf("%d resumed handshakes and %d full: every handshake must be full", resumed.Load(), full.Load())
	}
	c.ca = other
	if out, err := handshakes(c); err == nil || out["failures"].(int64) == 0 {
		t.Fatalf("untrusted server: err %v, out %v", err, out)
	}
}
