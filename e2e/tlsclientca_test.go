package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
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

// clientCertServed makes a new connection with cfg (its own session cache
// if it has one) and reports whether an https:// request over it is served.
func clientCertServed(s *serverProc, cfg *tls.Config) error {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	resp, err := hc.Get(s.URL("/"))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

// waitClientCAs waits until 8 new connections in a row of accepted are
// served and 8 of refused are not (spread over the workers).
func waitClientCAs(t *testing.T, s *serverProc, accepted, refused *tls.Config) {
	t.Helper()
	row := 0
	eventually(t, 10*time.Second, func() string {
		for ; row < 8; row++ {
			if err := clientCertServed(s, accepted); err != nil {
				row = 0
				return "a client that should be served: " + err.Error()
			}
			if clientCertServed(s, refused) == nil {
				row = 0
				return "a client that should be refused was served"
			}
		}
		return ""
	})
}

// TestTLSClientCAReload runs the real binary with --tls-client-ca, in one
// process and with two workers, and replaces the CA file: a file that is not a certificate is
// refused by every worker and the CAs in use stay; a file of another CA
// is picked up without a signal (then that CA's clients are served and
// the first CA's refused, even those holding a session to resume); SIGHUP
// reloads it too.
func TestTLSClientCAReload(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			t.Parallel()
			testClientCAReload(t, workers)
		})
	}
}

func testClientCAReload(t *testing.T, workers string) {
	root := t.TempDir()
	flags, client := tlsFiles(t, root)
	cas := make([]*testca.CA, 2)
	clients := make([]*tls.Config, 2)
	for i := range cas {
		ca, err := testca.New()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.ClientCert(fmt.Sprint("user", i))
		if err != nil {
			t.Fatal(err)
		}
		cas[i], clients[i] = ca, client.Clone()
		clients[i].Certificates = []tls.Certificate{cert}
		clients[i].ClientSessionCache = tls.NewLRUClientSessionCache(4)
	}
	caFile := filepath.Join(root, "client-ca.pem")
	replaceFile(t, caFile, cas[0].CAPEM)
	s := startServerWith(t, root, nil, nil, clients[0], append(flags, "--tls-client-ca", caFile, "--workers", workers)...)
	waitClientCAs(t, s, clients[0], clients[1])

	replaceFile(t, caFile, []byte("not a certificate\n"))
	waitLogWorkers(t, s, workers, 10*time.Second, `level=ERROR msg="TLS client CAs not reloaded: the CAs in use stay"`, `reason="files changed"`)
	waitClientCAs(t, s, clients[0], clients[1])

	replaceFile(t, caFile, cas[1].CAPEM)
	waitLogWorkers(t, s, workers, 10*time.Second, `msg="TLS client CAs reloaded"`, `reason="files changed"`)
	waitClientCAs(t, s, clients[1], clients[0])

	replaceFile(t, caFile, cas[0].CAPEM)
	s.Signal(syscall.SIGHUP)
	waitLogWorkers(t, s, workers, defaultTimeout, `msg="TLS client CAs reloaded"`, "reason=SIGHUP")
	waitClientCAs(t, s, clients[0], clients[1])
	if s.Exited() {
		t.Fatalf("the node exited:\n%s", s.Logs())
	}
}
