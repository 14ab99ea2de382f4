package e2e

// TLS from outside clients: the npm ws client (Node.js) and python's
// websockets, each verifying the node's certificate against the test CA;
// the JSON and binary protocols and the server API over TLS with Go
// clients. testssl.sh is in tls_testssl_test.go, Chromium in
// tls_browser_test.go. `make test` installs the tools first with
// scripts/ensure-tls-tools.sh; a test fails, never skips, when one is
// missing.

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tlsPKI is a test CA and a server certificate it signed, written as PEM
// files: what a node and its outside clients are given.
type tlsPKI struct {
	CAFile   string // the CA certificate alone, for clients
	CertFile string // the server certificate, then the CA's (a chain)
	KeyFile  string // the server's key (PKCS #8)
	Client   *tls.Config
	CAPEM    []byte
}

// Flags are the serve flags that use the certificate.
func (p *tlsPKI) Flags() []string { return []string{"--tls-cert", p.CertFile, "--tls-key", p.KeyFile} }

// newTLSPKI makes an ECDSA P-256 CA and a server certificate for
// localhost, 127.0.0.1 and ::1 with an ECDSA P-256 key, or an RSA 2048
// key when rsaKey is set, and writes them into dir. The certificate looks
// like one from a public CA, so that testssl.sh judges the server and not
// a bare test certificate: valid for 90 days and naming a CRL (which
// nothing fetches).
func newTLSPKI(t *testing.T, dir string, rsaKey bool) *tlsPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: randSerial(t), Subject: pkix.Name{CommonName: "ZenConn e2e test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	var key crypto.Signer
	usage := x509.KeyUsageDigitalSignature
	if rsaKey {
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: randSerial(t), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: usage, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		CRLDistributionPoints: []string{"http://crl.zenconn-test.invalid/ca.crl"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &tlsPKI{
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
		CAPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
	}
	certPEM := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), p.CAPEM...)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
	for f, b := range map[string][]byte{p.CAFile: p.CAPEM, p.CertFile: certPEM, p.KeyFile: keyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	p.Client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	return p
}

func randSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

// startTLSNode starts a node serving TLS with a fresh test CA's
// certificate (ECDSA) plus extra flags; its HTTP client and WebSocket
// dialers verify against that CA.
func startTLSNode(t *testing.T, extra ...string) (*serverProc, *tlsPKI) {
	t.Helper()
	root := t.TempDir()
	pki := newTLSPKI(t, root, false)
	return startServerWith(t, root, nil, nil, pki.Client, append(pki.Flags(), extra...)...), pki
}

// port is the node's port, for URLs that name localhost (the certificate
// is for localhost as well as 127.0.0.1).
func (s *serverProc) port(t *testing.T) string {
	t.Helper()
	_, port, err := net.SplitHostPort(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// outsideClient runs one of the client scripts of testdata/ (arguments:
// the wss:// URL and a channel). The script prints JSON lines on stdout:
// {"event":"subscribed",...} once subscribed, then {"event":"message",...}
// for the first message on the channel, and exits 0; on any error it
// prints {"event":"error","error":...} and exits 1.
type outsideClient struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	events chan clientEvent // closed at the end of its stdout
	stderr *syncBuffer
	once   sync.Once
	err    error // cmd.Wait's, after once
}

type clientEvent struct {
	Event    string          `json:"event"`
	Error    string          `json:"error"`
	Conn     string          `json:"conn"`
	Protocol string          `json:"protocol"` // TLS version
	Cipher   string          `json:"cipher"`
	Verified bool            `json:"verified"` // the client says it verified the certificate
	Channel  string          `json:"channel"`
	From     string          `json:"from"`
	Data     json.RawMessage `json:"data"`
	raw      string
}

// outsideTimeout bounds a client script's whole run.
const outsideTimeout = 20 * time.Second

// startOutsideClient starts argv with env (the process's environment
// without ZENCONN_*, NODE_* and SSL_* variables, plus env).
func startOutsideClient(t *testing.T, env []string, argv ...string) *outsideClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), outsideTimeout)
	c := &outsideClient{t: t, name: filepath.Base(argv[1]), events: make(chan clientEvent, 16), stderr: newSyncBuffer()}
	c.cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "NODE_") && !strings.HasPrefix(kv, "SSL_") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Env = append(c.cmd.Env, env...)
	c.cmd.Stderr = c.stderr
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c.cmd.WaitDelay = 2 * time.Second
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %q: %v", argv, err)
	}
	go func() {
		defer close(c.events)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ev := clientEvent{}
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = clientEvent{Event: "unparsed", Error: err.Error()}
			}
			ev.raw = sc.Text()
			select {
			case c.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = c.wait()
	})
	return c
}

// next returns the client's next event, which must be want; an error
// event, an early exit or no event within outsideTimeout fail the test.
func (c *outsideClient) next(want string) clientEvent {
	c.t.Helper()
	timer := time.NewTimer(outsideTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-c.events:
		switch {
		case !ok:
			c.t.Fatalf("%s exited before %q: %v\nstderr:\n%s", c.name, want, c.wait(), c.stderr.String())
		case ev.Event != want:
			c.t.Fatalf("%s: got %s, want event %q\nstderr:\n%s", c.name, ev.raw, want, c.stderr.String())
		}
		return ev
	case <-timer.C:
		c.t.Fatalf("%s: no %q event within %v\nstderr:\n%s", c.name, want, outsideTimeout, c.stderr.String())
	}
	return clientEvent{}
}

// wait waits (bounded by outsideTimeout from the start) for the client to
// exit and returns cmd.Wait's error.
func (c *outsideClient) wait() error {
	c.once.Do(func() { c.err = c.cmd.Wait() })
	return c.err
}

// checkOutsideClient runs a client script (argv) that trusts the test CA
// (through env or its arguments) against s: it subscribes, a Go wss://
// client publishes, and the script must get the message with the
// certificate verified, over TLS 1.3.
func checkOutsideClient(t *testing.T, s *serverProc, channel string, env []string, argv ...string) {
	t.Helper()
	c := startOutsideClient(t, env, argv...)
	sub := c.next("subscribed")
	if !sub.Verified || sub.Protocol != "TLSv1.3" || sub.Conn == "" {
		t.Fatalf("%s subscribed as %s; want the certificate verified, TLSv1.3 and a connection id", c.name, sub.raw)
	}
	pub := s.dialWS(t)
	data := fmt.Sprintf(`{"text":"to %s over TLS","n":%d}`, c.name, time.Now().UnixNano())
	pub.request(1, fmt.Sprintf(`{"id":1,"op":"publish","channel":%q,"data":%s}`, channel, data))
	m := c.next("message")
	if m.Channel != channel || m.From != pub.Welcome.Conn || !jsonEqual(m.Data, []byte(data)) {
		t.Fatalf("%s got %s; want channel %q from %s data %s", c.name, m.raw, channel, pub.Welcome.Conn, data)
	}
	if err := c.wait(); err != nil {
		t.Fatalf("%s exited with %v after the message\nstderr:\n%s", c.name, err, c.stderr.String())
	}
	t.Logf("%s: %s %s, verified", c.name, sub.Protocol, sub.Cipher)
}

// checkOutsideRefuses runs a client script that does not trust the test
// CA: it must fail the TLS handshake on the certificate and exit 1.
func checkOutsideRefuses(t *testing.T, env []string, argv ...string) {
	t.Helper()
	c := startOutsideClient(t, env, argv...)
	ev := c.next("error")
	if !strings.Contains(ev.Error, "self-signed certificate in certificate chain") &&
		!strings.Contains(ev.Error, "self signed certificate in certificate chain") {
		t.Fatalf("%s without the test CA: %s; want a refused certificate (self-signed certificate in certificate chain)", c.name, ev.raw)
	}
	var exit *exec.ExitError
	if err := c.wait(); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("%s without the test CA exited with %v, want exit status 1", c.name, err)
	}
}

// TestTLSNodeWSClient: the npm ws client over wss:// with NODE_EXTRA_CA_CERTS.
func TestTLSNodeWSClient(t *testing.T) {
	t.Parallel()
	start := time.Now()
	script := filepath.Join("testdata", "node", "client.mjs")
	if _, err := os.Stat(filepath.Join("testdata", "node", "node_modules", "ws", "package.json")); err != nil {
		t.Fatalf("the npm ws client is not installed (run `bash scripts/ensure-tls-tools.sh`, which `make test` does): %v", err)
	}
	s, pki := startTLSNode(t)
	url := "wss://localhost:" + s.port(t) + "/ws"
	checkOutsideRefuses(t, nil, "node", script, url, "tls-node")
	checkOutsideClient(t, s, "tls-node", []string{"NODE_EXTRA_CA_CERTS=" + pki.CAFile}, "node", script, url, "tls-node")
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// pythonWithWebsockets is Debian's python3, where python3-websockets is
// installed (a python3 earlier on PATH may not have it).
const pythonWithWebsockets = "/usr/bin/python3"

// TestTLSPythonWebsocketsClient: python's websockets over wss:// with an
// ssl context that trusts the CA file.
func TestTLSPythonWebsocketsClient(t *testing.T) {
	t.Parallel()
	start := time.Now()
	script := filepath.Join("testdata", "python", "client.py")
	if out, err := exec.Command(pythonWithWebsockets, "-c", "import websockets").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import websockets (run `bash scripts/ensure-tls-tools.sh`, which `make test` does): %v\n%s", pythonWithWebsockets, err, out)
	}
	s, pki := startTLSNode(t)
	url := "wss://localhost:" + s.port(t) + "/ws"
	checkOutsideRefuses(t, nil, pythonWithWebsockets, script, url, "tls-python")
	checkOutsideClient(t, s, "tls-python", nil, pythonWithWebsockets, script, url, "tls-python", pki.CAFile)
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// requireVerifiedTLS checks that c's connection is TLS 1.3 with the
// server's certificate verified.
func requireVerifiedTLS(t *testing.T, c *ibConn) {
	t.Helper()
	tc, ok := c.c.UnderlyingConn().(*tls.Conn)
	if !ok {
		t.Fatalf("%s: the connection is %T, not TLS", c.name, c.c.UnderlyingConn())
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 || st.Version != tls.VersionTLS13 {
		t.Fatalf("%s: TLS version %x, %d verified chains, handshake complete %v; want 1.3 and a verified chain",
			c.name, st.Version, len(st.VerifiedChains), st.HandshakeComplete)
	}
}

// TestTLSJSONProtocol: the JSON protocol (PROTOCOL.md) over wss://.
func TestTLSJSONProtocol(t *testing.T) {
	t.Parallel()
	s, _ := startTLSNode(t)
	a, b := ibDialJSON(t, s, ""), ibDialJSON(t, s, "")
	requireVerifiedTLS(t, a)
	requireVerifiedTLS(t, b)
	a.sub(1, "tls-json")
	b.sub(1, "tls-json")
	b.pub(2, "tls-json", `{"text":"héllo over TLS","n":[1,2.5,null]}`)
	a.expectMsg("tls-json", b.ID, `{"text":"héllo over TLS","n":[1,2.5,null]}`)
	// Messages larger than a TLS record (16 KiB), both ways.
	big := `"` + strings.Repeat("tls-", 40<<10) + `"`
	a.pub(3, "tls-json", big)
	b.expectMsg("tls-json", a.ID, big)
	a.refused(4, `{"id":4,"op":"subscribe","channel":"bad name"}`, "bad_request")
	a.ok(5, `{"id":5,"op":"unsubscribe","channel":"tls-json"}`)
	b.pub(6, "tls-json", `"after unsubscribe"`)
	for _, c := range []*ibConn{a, b} {
		c.pingPong()
		c.quiet(50 * time.Millisecond)
	}
}

// TestTLSBinaryProtocol: the binary protocol (PROTOCOL.md) over wss://,
// chosen by the X-Bin-Protocol header and by the subprotocol, with a JSON
// subscriber beside.
func TestTLSBinaryProtocol(t *testing.T) {
	t.Parallel()
	s, _ := startTLSNode(t)
	pub := ibDialBin(t, s, "")
	sub := ibDial(t, s, ibDialOpts{Subproto: []string{"zenconn.v1.bin"}})
	js := ibDialJSON(t, s, "")
	if !sub.Bin {
		t.Fatalf("%s: subprotocol zenconn.v1.bin gave a JSON welcome", sub.name)
	}
	for _, c := range []*ibConn{pub, sub, js} {
		requireVerifiedTLS(t, c)
	}
	pub.binOK(1, ibBinSub(1, "tls-bin"))
	sub.binOK(1, ibBinSub(1, "tls-bin"))
	js.sub(1, "tls-bin")

	data := []byte(`{"text":"binary over TLS"}`)
	pub.binOK(2, ibBinPub(2, "tls-bin", data, false))
	sub.expectMsg("tls-bin", pub.ID, string(data))
	js.expectMsg("tls-bin", pub.ID, string(data))
	// Opaque bytes larger than several TLS records reach the binary subscriber intact.
	payload := make([]byte, 100<<10)
	_, _ = rand.Read(payload)
	sub.binOK(3, ibBinUnsub(3, "tls-bin")) // re-subscribed below: only sub gets the opaque message
	sub.binOK(4, ibBinSub(4, "tls-opaque"))
	pub.binOK(5, ibBinPub(5, "tls-opaque", payload, true))
	m := sub.readBin()
	if m.Op != 0x14 || !m.Opaque || m.Channel != "tls-opaque" || m.From != pub.ID || !bytesEqual(m.Data, payload) {
		t.Fatalf("%s: opaque message of %d bytes arrived as head 0x%02x opaque %v channel %q from %q, %d bytes",
			sub.name, len(payload), m.Head, m.Opaque, m.Channel, m.From, len(m.Data))
	}
	// A JSON publisher reaches the binary subscriber.
	js.pub(2, "tls-opaque", `[1,"two"]`)
	sub.expectMsg("tls-opaque", js.ID, `[1,"two"]`)
	for _, c := range []*ibConn{pub, sub, js} {
		c.pingPong()
		c.quiet(50 * time.Millisecond)
	}
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// TestTLSServerAPI: the server API (README) over https://, with the key,
// publishing to wss:// clients of both protocols and listing them.
func TestTLSServerAPI(t *testing.T) {
	t.Parallel()
	s, _ := startTLSNode(t, "--api-key", ibAPIKey)
	j, b := ibDialJSON(t, s, ""), ibDialBin(t, s, "")
	j.sub(1, "tls-api")
	b.binOK(1, ibBinSub(1, "tls-api"))

	apiFails(t, s, "POST", "/api/publish", "wrong-key-0123456789", `{"channel":"tls-api","data":1}`, http.StatusUnauthorized)
	var ok map[string]any
	apiOK(t, s, "POST", "/api/publish", `{"channel":"tls-api","data":{"via":"https"}}`, &ok)
	if ok["ok"] != true {
		t.Fatalf("POST /api/publish over https answered %v, want {\"ok\":true}", ok)
	}
	j.expectMsg("tls-api", "api", `{"via":"https"}`)
	b.expectMsg("tls-api", "api", `{"via":"https"}`)
	apiOK(t, s, "POST", "/api/broadcast", `{"data":"to all over https"}`, nil)
	j.expectMsg("", "api", `"to all over https"`)
	b.expectMsg("", "api", `"to all over https"`)

	conns := apiConnections(t, s)
	for _, c := range []*ibConn{j, b} {
		info, found := conns[c.ID]
		if !found || len(info.Channels) != 1 || info.Channels[0] != "tls-api" {
			t.Fatalf("GET /api/connections over https: %s is %+v (listed %v), want subscribed to tls-api", c.name, info, found)
		}
	}
	if got := apiChannels(t, s)["tls-api"]; got != 2 {
		t.Fatalf("GET /api/channels over https: tls-api has %d subscribers, want 2", got)
	}
	apiOK(t, s, "POST", "/api/disconnect", fmt.Sprintf(`{"conn":%q}`, j.ID), nil)
	j.expectCloseCode(4100, defaultTimeout)
	b.pingPong()
	// The requests went over verified TLS.
	resp, body := s.get(t, "GET", "/healthz")
	if resp.StatusCode != 200 || resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
		t.Fatalf("GET /healthz: status %d body %q TLS %+v; want 200 over verified TLS", resp.StatusCode, body, resp.TLS)
	}
}
