package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zenconn/server/internal/testca"
)

// tlsFiles writes a test CA's server certificate (with its chain) and key
// into dir and returns the flags that serve TLS with them and the client
// configuration that verifies them.
func tlsFiles(t *testing.T, dir string) ([]string, *tls.Config) {
	t.Helper()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, ca.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := ca.ClientConfig()
	cfg.NextProtos = []string{"http/1.1"}
	return []string{"--tls-cert", cert, "--tls-key", key}, cfg
}

// TestTLSServe runs the real binary with --tls-cert and --tls-key, in one
// process and with two worker processes: https:// static files and wss://
// pub/sub with certificate verification, and a plain-text request to the
// TLS port.
func TestTLSServe(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			flags, client := tlsFiles(t, root)
			s := startServerWith(t, root, nil, nil, client, append(flags, "--workers", workers)...)
			checkHTTPS(t, s)
			checkWSSPubSub(t, s)
			checkPlainToTLS(t, s)
			checkUnknownSNI(t, s, client)
			checkHTTPS(t, s) // still serving
		})
	}
}

func checkHTTPS(t *testing.T, s *serverProc) {
	t.Helper()
	for _, tc := range []struct {
		path string
		want []byte
	}{{"/", []byte(fixtureIndex)}, {"/big.txt", fixtureBig}, {"/logo.png", fixturePNG}} {
		resp, body := s.get(t, "GET", tc.path)
		if resp.StatusCode != 200 || !bytes.Equal(body, tc.want) {
			t.Fatalf("GET %s: status %d, %d bytes, want %d", tc.path, resp.StatusCode, len(body), len(tc.want))
		}
		if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 || resp.TLS.NegotiatedProtocol != "http/1.1" {
			t.Fatalf("GET %s: not verified TLS with ALPN http/1.1: %+v", tc.path, resp.TLS)
		}
	}
}

// checkWSSPubSub subscribes several wss:// clients (spread over the
// workers) and publishes to them from another, small and large messages.
func checkWSSPubSub(t *testing.T, s *serverProc) {
	t.Helper()
	subs := make([]*wsClient, 6)
	for i := range subs {
		subs[i] = s.dialWS(t)
		subs[i].subscribe(1, "tls-news")
	}
	pub := s.dialWS(t)
	large := strings.Repeat("z", 200<<10)
	deadline := time.Now().Add(10 * time.Second)
	for i, data := range []string{"hello over tls", large} {
		id := 10 + i
		pub.request(id, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"tls-news","data":%q}`, id, data))
		for _, c := range subs {
			m := c.expectMessage(t, deadline)
			if !strings.Contains(string(m.raw), `"data":"`+data+`"`) {
				t.Fatalf("conn %s got %d bytes, want the message of %d", c.Welcome.Conn, len(m.raw), len(data))
			}
		}
	}
	for _, c := range subs {
		c.pingPong()
	}
}

// expectMessage reads until a message op arrives, by the deadline.
func (c *wsClient) expectMessage(t *testing.T, deadline time.Time) message {
	t.Helper()
	for {
		m, err := c.readE(time.Until(deadline))
		if err != nil {
			t.Fatalf("conn %s: read: %v", c.Welcome.Conn, err)
		}
		if m.Op == "message" {
			return m
		}
	}
}

func checkPlainToTLS(t *testing.T, s *serverProc) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr, defaultTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(defaultTimeout))
	if _, err := nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(nc)
	if err != nil && !isConnReset(err) {
		t.Fatalf("plain request to the TLS port: %v (read %q)", err, got)
	}
	if !bytes.HasPrefix(got, []byte("HTTP/1.1 400 ")) {
		t.Fatalf("plain request to the TLS port: got %q, want a 400", got)
	}
}

// checkUnknownSNI asks for a name the certificate does not cover: the
// node answers with its one certificate, which a verifying client
// refuses for that name, and the node goes on serving.
func checkUnknownSNI(t *testing.T, s *serverProc, client *tls.Config) {
	t.Helper()
	for _, verify := range []bool{true, false} {
		cfg := client.Clone()
		cfg.ServerName, cfg.InsecureSkipVerify = "unknown.invalid", !verify
		d := &net.Dialer{Timeout: defaultTimeout}
		c, err := tls.DialWithDialer(d, "tcp", s.Addr, cfg)
		var hostErr x509.HostnameError
		switch {
		case verify && !errors.As(err, &hostErr):
			t.Fatalf("SNI unknown.invalid, verifying: %v, want a certificate name error", err)
		case !verify && err != nil:
			t.Fatalf("SNI unknown.invalid, not verifying: %v", err)
		case !verify:
			if len(c.ConnectionState().PeerCertificates) == 0 {
				t.Fatal("SNI unknown.invalid: no certificate presented")
			}
			c.Close()
		}
	}
}

// TestTLSBadFilesStopStart checks that a missing file or a key that does
// not match stops the start with the flag's name, in both modes.
func TestTLSBadFilesStopStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	flags, _ := tlsFiles(t, dir)
	other := t.TempDir()
	otherFlags, _ := tlsFiles(t, other)
	for _, workers := range []string{"0", "2"} {
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"missing cert", []string{"--tls-cert", filepath.Join(dir, "none.pem"), "--tls-key", flags[3]}, "--tls-cert: open"},
			{"key not matching", []string{"--tls-cert", flags[1], "--tls-key", otherFlags[3]}, "--tls-key: the key in"},
		} {
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--workers", workers,
				"--data", t.TempDir(), "--public", "off"}, tc.args...)
			out, code := runCLI(t, 20*time.Second, nil, args...)
			if code != 2 || !strings.Contains(out, tc.want) {
				t.Fatalf("workers=%s %s: exit %d, output %q; want 2 and %q", workers, tc.name, code, out, tc.want)
			}
		}
	}
}
