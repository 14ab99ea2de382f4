package engine

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/internal/testca"
)

// newCA makes a test CA and its server certificate.
func newCA(t *testing.T) *testca.CA {
	t.Helper()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// putCertFiles replaces dir's cert.pem and key.pem with certPEM and keyPEM,
// each by a rename, as a certificate manager does.
func putCertFiles(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	for name, b := range map[string][]byte{"cert.pem": certPEM, "key.pem": keyPEM} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// loadPair is what the binary's loader does, without its flag names.
func loadPair(dir string) func() (tls.Certificate, error) {
	return func() (tls.Certificate, error) {
		return tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	}
}

// peerCert makes a new TLS connection to addr with cfg and returns the
// certificate the server presented.
func peerCert(t *testing.T, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// wantServes checks that a new handshake that trusts only ca succeeds and
// sees ca's server certificate.
func wantServes(t *testing.T, addr string, ca *testca.CA) {
	t.Helper()
	got, err := peerCert(t, addr, ca.ClientConfig())
	if err != nil {
		t.Fatalf("new handshake: %v", err)
	}
	if want := ca.Server.Leaf.SerialNumber; got.SerialNumber.Cmp(want) != 0 {
		t.Fatalf("new handshake got serial %s, want %s", got.SerialNumber, want)
	}
}

// pubSubOK publishes on pub and reads the delivery on sub.
func pubSubOK(t *testing.T, pub, sub *websocket.Conn, data string) {
	t.Helper()
	writeWSS(t, pub, `{"id":2,"op":"publish","channel":"news","data":"`+data+`"}`)
	if m := readWSS(t, pub); m["op"] != "ack" {
		t.Fatalf("publish: %v", m)
	}
	if m := readWSS(t, sub); m["op"] != "message" || m["data"] != data {
		t.Fatalf("delivery: %v", m)
	}
}

// TestTLSCertificateReload swaps the certificate files under a running
// server: on Reload (what SIGHUP calls) and, without a call, when the
// files change. New handshakes see the new certificate; wss:// connections
// opened before keep working; a pair whose key does not match is refused
// and the certificate in use stays.
func TestTLSCertificateReload(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2, ca3 := newCA(t), newCA(t), newCA(t)
	putCertFiles(t, dir, ca1.CertPEM, ca1.KeyPEM)
	certs, err := NewCertFiles(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), loadPair(dir))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{TLS: certs.TLSConfig(tls.VersionTLS12), TLSCertificates: certs})
	addr := s.Addr().String()
	sub, pub := dialWSS(t, addr, ca1), dialWSS(t, addr, ca1)
	writeWSS(t, sub, `{"id":1,"op":"subscribe","channel":"news"}`)
	if m := readWSS(t, sub); m["op"] != "ack" {
		t.Fatalf("subscribe: %v", m)
	}
	wantServes(t, addr, ca1)

	// A key that does not match: refused, ca1's certificate stays.
	putCertFiles(t, dir, ca2.CertPEM, ca1.KeyPEM)
	if err := certs.Reload(nil, "test"); err == nil {
		t.Fatal("a certificate with another's key was loaded")
	}
	wantServes(t, addr, ca1)
	pubSubOK(t, pub, sub, "after a refused reload")

	putCertFiles(t, dir, ca2.CertPEM, ca2.KeyPEM)
	if err := certs.Reload(nil, "test"); err != nil {
		t.Fatal(err)
	}
	wantServes(t, addr, ca2)
	if _, err := peerCert(t, addr, ca1.ClientConfig()); err == nil {
		t.Fatal("a client trusting only the first CA still verifies a new handshake")
	}
	pubSubOK(t, pub, sub, "after a reload")

	// No call: the server sees the files change.
	putCertFiles(t, dir, ca3.CertPEM, ca3.KeyPEM)
	deadline := time.Now().Add(4 * CertPollInterval)
	for {
		got, err := peerCert(t, addr, ca3.ClientConfig())
		if err == nil && got.SerialNumber.Cmp(ca3.Server.Leaf.SerialNumber) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the changed files were not picked up within %s", 4*CertPollInterval)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pubSubOK(t, pub, sub, strings.Repeat("y", 40<<10))
}

// TestTLSUnknownServerName: a ClientHello for a name the certificate does
// not cover still gets the certificate; a client that verifies the name
// refuses it, one that asks for no name or does not verify is served.
func TestTLSUnknownServerName(t *testing.T) {
	ca, dir := newCA(t), t.TempDir()
	putCertFiles(t, dir, ca.CertPEM, ca.KeyPEM)
	certs, err := NewCertFiles(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), loadPair(dir))
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{TLS: certs.TLSConfig(tls.VersionTLS12), TLSCertificates: certs})
	addr := s.Addr().String()
	cfg := ca.ClientConfig()
	cfg.ServerName = "unknown.example"
	if _, err := peerCert(t, addr, cfg); err == nil || !strings.Contains(err.Error(), "unknown.example") {
		t.Fatalf("verifying client asking for unknown.example: %v, want a name mismatch", err)
	}
	cfg.InsecureSkipVerify = true
	got, err := peerCert(t, addr, cfg)
	if err != nil {
		t.Fatalf("client asking for unknown.example without verification: %v", err)
	}
	if !bytes.Equal(got.Raw, ca.Server.Leaf.Raw) {
		t.Fatal("another certificate than the server's was presented")
	}
	cfg = ca.ClientConfig()
	cfg.ServerName = "localhost"
	if _, err := peerCert(t, addr, cfg); err != nil {
		t.Fatalf("client asking for localhost: %v", err)
	}
}

// TestTLSSecondAddress serves plain on Addr and TLS on TLSAddr from the
// same loops, with the redirect on: plain requests get 308 to https at
// the TLS port (WebSocket handshakes too) but /healthz; the TLS address
// serves files and wss://.
func TestTLSSecondAddress(t *testing.T) {
	public := t.TempDir()
	writeFile(t, public, "index.html", "hello\n")
	ca := newCA(t)
	s := startServer(t, Config{PublicDir: public, TLS: TLSConfig(ca.Server, tls.VersionTLS12),
		TLSAddr: "127.0.0.1:0", TLSRedirect: true})
	plain, secure := s.Addr().String(), s.TLSAddr().String()
	_, tlsPort, _ := net.SplitHostPort(secure)
	noFollow := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ path, host, want string }{
		{"/index.html?a=1", "example.com", "https://example.com:" + tlsPort + "/index.html?a=1"},
		{"/", "example.com:8080", "https://example.com:" + tlsPort + "/"},
		{"/ws", "[::1]:80", "https://[::1]:" + tlsPort + "/ws"},
	} {
		req, _ := http.NewRequest("GET", "http://"+plain+tc.path, nil)
		req.Host = tc.host
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 308 || resp.Header.Get("Location") != tc.want {
			t.Fatalf("GET %s Host %s: %d Location %q, want 308 %q", tc.path, tc.host, resp.StatusCode, resp.Header.Get("Location"), tc.want)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+plain+"/", nil)
	req.Host = "bad\x01host"
	if resp, err := noFollow.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 308 {
			t.Fatal("a Host with a control character was redirected")
		}
	}
	if resp, err := noFollow.Get("http://" + plain + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("plain /healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	if ws, resp, err := d.Dial("ws://"+plain+"/ws", nil); err == nil {
		ws.Close()
		t.Fatal("a plain WebSocket handshake was accepted with the redirect on")
	} else if resp == nil || resp.StatusCode != 308 {
		t.Fatalf("plain WebSocket handshake: %v, %v; want 308", resp, err)
	}
	c := httpsClient(t, ca)
	resp, err := c.Get("https://" + secure + "/index.html")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello\n" {
		t.Fatalf("https GET: %d %q", resp.StatusCode, body)
	}
	sub, pub := dialWSS(t, secure, ca), dialWSS(t, secure, ca)
	writeWSS(t, sub, `{"id":1,"op":"subscribe","channel":"news"}`)
	if m := readWSS(t, sub); m["op"] != "ack" {
		t.Fatalf("subscribe: %v", m)
	}
	pubSubOK(t, pub, sub, "on the TLS address")
}

// TestTLSHSTS: with HSTS every response over TLS carries
// Strict-Transport-Security (a cached file, a large file from the
// workers, a 404, /healthz), no response on the plain address does.
func TestTLSHSTS(t *testing.T) {
	public := t.TempDir()
	writeFile(t, public, "index.html", "hello\n")
	writeFile(t, public, "big.txt", strings.Repeat("z", 3<<20))
	ca := newCA(t)
	s := startServer(t, Config{PublicDir: public, TLS: TLSConfig(ca.Server, tls.VersionTLS12),
		TLSAddr: "127.0.0.1:0", HSTS: 365 * 24 * time.Hour})
	c := httpsClient(t, ca)
	plain := &http.Client{Timeout: 5 * time.Second}
	for _, path := range []string{"/index.html", "/index.html", "/big.txt", "/missing", "/healthz"} {
		for _, tc := range []struct {
			client *http.Client
			url    string
			want   string
		}{
			{c, "https://" + s.TLSAddr().String() + path, "max-age=31536000"},
			{plain, "http://" + s.Addr().String() + path, ""},
		} {
			resp, err := tc.client.Get(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got := resp.Header.Get("Strict-Transport-Security"); got != tc.want {
				t.Fatalf("GET %s: status %d, Strict-Transport-Security %q, want %q", tc.url, resp.StatusCode, got, tc.want)
			}
		}
	}
}
