package e2e

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// helloRecorder is the net.Conn of a TLS client that only writes its
// ClientHello: it keeps what is written and ends every read.
type helloRecorder struct {
	net.Conn
	out bytes.Buffer
}

func (h *helloRecorder) Write(p []byte) (int, error) { return h.out.Write(p) }
func (h *helloRecorder) Read([]byte) (int, error)    { return 0, io.EOF }
func (h *helloRecorder) Close() error                { return nil }

// clientHello returns the bytes of a TLS client's ClientHello.
func clientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	h := &helloRecorder{}
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	_ = tls.Client(h, cfg).Handshake()
	if h.out.Len() < 5 || h.out.Bytes()[0] != 0x16 {
		t.Fatalf("no ClientHello: % x", h.out.Bytes())
	}
	return h.out.Bytes()
}

// TestTLSMaxHandshakes runs the real binary with --max-tls-handshakes 1:
// while a client that sent its ClientHello and nothing more holds the one
// handshake allowed, a new handshake is refused (closed and counted); once
// that client leaves, new handshakes are served.
func TestTLSMaxHandshakes(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	flags, client := tlsFiles(t, root)
	s := startServerWith(t, root, nil, nil, client, append(flags, "--max-tls-handshakes", "1", "--handshake-timeout", "30s")...)
	stalled, err := net.DialTimeout("tcp", s.Addr, defaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := stalled.Write(clientHello(t, client)); err != nil {
		t.Fatal(err)
	}
	// The server answers the ClientHello once its handshake is under way.
	_ = stalled.SetReadDeadline(time.Now().Add(defaultTimeout))
	if _, err := stalled.Read(make([]byte, 1)); err != nil {
		t.Fatalf("no ServerHello for the stalled client: %v", err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: defaultTimeout}, "tcp", s.Addr, client)
	if err == nil {
		c.Close()
		t.Fatal("a second handshake was served past --max-tls-handshakes 1")
	}
	stalled.Close()
	eventually(t, 10*time.Second, func() string {
		if err := clientCertServed(s, client); err != nil {
			return "after the stalled client left: " + err.Error()
		}
		return ""
	})
	if n := metricValue(t, s, "zenconn_tls_handshakes_refused_total", nil); n < 1 {
		t.Fatalf("zenconn_tls_handshakes_refused_total %v, want at least 1", n)
	}
}

// TestTLSMaxHandshakesChecked: a --max-tls-handshakes outside 1..65536
// stops the start, naming the flag.
func TestTLSMaxHandshakesChecked(t *testing.T) {
	t.Parallel()
	flags, _ := tlsFiles(t, t.TempDir())
	for _, v := range []string{"0", "-1", "65537"} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--public", "off", "--max-tls-handshakes", v}, flags...)
		out, code := runCLI(t, 20*time.Second, nil, args...)
		if want := "--max-tls-handshakes: " + v + " is outside 1..65536"; code != 2 || !strings.Contains(out, want) {
			t.Fatalf("--max-tls-handshakes %s: exit %d, output %q; want 2 and %q", v, code, out, want)
		}
	}
}
