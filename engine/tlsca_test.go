package engine

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"
)

// resumed makes a new connection to addr with cfg, reads a response
// (and so, with TLS 1.3, the server's tickets) and reports whether the
// session was resumed.
func resumed(t *testing.T, addr string, cfg *tls.Config) bool {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return c.ConnectionState().DidResume
}

// TestTLSTicketKeysShared: two servers (two workers) with client CAs,
// given the same session-ticket keys, resume each other's sessions, TLS
// 1.2 and 1.3; after a reload of the CAs and a rotation that keeps the old
// key second they still do; once the old key is dropped, a ticket it
// sealed is refused. Without shared keys they do not.
func TestTLSTicketKeysShared(t *testing.T) {
	ca, dir := newCA(t), t.TempDir()
	putCertFiles(t, dir, ca.CertPEM, ca.KeyPEM)
	clientCert, err := ca.ClientCert("alice")
	if err != nil {
		t.Fatal(err)
	}
	servers := make([]*Server, 2)
	certs := make([]*CertFiles, 2)
	for i := range servers {
		c, err := NewCertFiles(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), loadPair(dir))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetClientCAs("", func() (*x509.CertPool, error) {
			p := x509.NewCertPool()
			p.AppendCertsFromPEM(ca.CAPEM)
			return p, nil
		}); err != nil {
			t.Fatal(err)
		}
		cfg := Config{TLS: c.TLSConfig(tls.VersionTLS12), TLSCertificates: c}
		certs[i], servers[i] = c, startServer(t, cfg)
	}
	key := func(b byte) (k [32]byte) { k[0] = b; return k }
	set := func(keys ...[32]byte) {
		for _, c := range certs {
			(&Config{TLS: c.base, TLSCertificates: c}).SetTicketKeys(keys)
		}
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := ca.ClientConfig()
		cfg.MinVersion, cfg.MaxVersion = v, v
		cfg.Certificates = []tls.Certificate{clientCert}
		newClient := func() *tls.Config {
			c := cfg.Clone()
			c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			return c
		}
		a, b := servers[0].Addr().String(), servers[1].Addr().String()

		// Each server its own keys: no resumption on the other.
		certs[0].SetTicketKeys([][32]byte{key(1)})
		certs[1].SetTicketKeys([][32]byte{key(2)})
		c := newClient()
		if resumed(t, a, c) || resumed(t, b, c) {
			t.Fatalf("TLS %x: resumed with keys of each server's own", v)
		}

		set(key(3))
		for _, c := range certs { // a reload copies the configuration
			if err := c.Reload(nil, "test"); err != nil {
				t.Fatal(err)
			}
		}
		c = newClient()
		if resumed(t, a, c) || !resumed(t, b, c) || !resumed(t, a, c) {
			t.Fatalf("TLS %x: not resumed across servers with the same keys", v)
		}
		set(key(4), key(3)) // a rotation: tickets of key 3 still open
		if !resumed(t, b, c) {
			t.Fatalf("TLS %x: not resumed after a rotation", v)
		}
		old := newClient()
		resumed(t, a, old) // a ticket sealed with key 4
		set(key(5), key(4))
		set(key(6), key(5)) // key 4 dropped
		if resumed(t, b, old) {
			t.Fatalf("TLS %x: a ticket of a dropped key resumed", v)
		}
	}
}
