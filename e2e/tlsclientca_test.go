package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/internal/testca"
)

// TestTLSClientCA runs the real binary with --tls-client-ca, with two
// workers: a client with a certificate from that CA is served (https://
// and wss://); one without a certificate, or with one from another CA, is
// refused in the TLS handshake.
func TestTLSClientCA(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	flags, client := tlsFiles(t, root)
	clientCA, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(root, "client-ca.pem")
	if err := os.WriteFile(caFile, clientCA.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	good, err := clientCA.ClientCert("alice")
	if err != nil {
		t.Fatal(err)
	}
	bad, err := otherCA.ClientCert("mallory")
	if err != nil {
		t.Fatal(err)
	}
	withCert := client.Clone()
	withCert.Certificates = []tls.Certificate{good}
	s := startServerWith(t, root, nil, nil, withCert, append(flags, "--tls-client-ca", caFile, "--workers", "2")...)
	checkHTTPS(t, s)
	s.dialWS(t).pingPong()

	wrong := client.Clone()
	wrong.Certificates = []tls.Certificate{bad}
	for name, cfg := range map[string]*tls.Config{"no certificate": client, "another CA's certificate": wrong} {
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			c := cfg.Clone()
			c.MaxVersion = v
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c}}
			if resp, err := hc.Get(s.URL("/")); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				t.Fatalf("%s (TLS %x): served with status %d", name, v, resp.StatusCode)
			}
			d := websocket.Dialer{HandshakeTimeout: defaultTimeout, TLSClientConfig: c}
			if ws, _, err := d.Dial("wss://"+s.Addr+"/ws", nil); err == nil {
				ws.Close()
				t.Fatalf("%s (TLS %x): wss:// handshake accepted", name, v)
			}
		}
	}
	checkHTTPS(t, s) // still serving
}
