package e2e

// Automatic certificates (--acme-*) against Let's Encrypt's test CA,
// pebble, run here (built by scripts/ensure-pebble.sh), with
// pebble-challtestsrv as its DNS server answering 127.0.0.1 for every
// name: pebble validates the challenges on the node's real ports (its
// httpPort and tlsPort are the node's --addr and --tls-addr), with
// PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0, never
// PEBBLE_VA_ALWAYS_VALID.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/internal/testca"
)

const (
	pebbleVersion = "v2.10.3"
	// acmeTimeout bounds an order (pebble's Retry-After is 1 s here) and
	// the workers' pick-up of its certificate (every 2 s).
	acmeTimeout = 60 * time.Second
)

// acmeDomains are the names of the test certificate; the DNS server
// answers 127.0.0.1 for them.
var acmeDomains = []string{"a.zenconn.test", "b.zenconn.test"}

// pebbleBin is where scripts/ensure-pebble.sh put pebble.
func pebbleBin(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ZENCONN_PEBBLE_BIN")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "zenconn", "pebble-"+pebbleVersion)
	}
	for _, b := range []string{"pebble", "pebble-challtestsrv"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%s not built (run scripts/ensure-pebble.sh, as make test does): %v", b, err)
		}
	}
	return dir
}

// pebbleEnv is a running pebble and its DNS server.
type pebbleEnv struct {
	Directory string // ACME directory URL
	CAFile    string // PEM of the CA of pebble's own TLS (--acme-ca)
	HTTPPort  int    // where pebble validates HTTP-01: the node's --addr
	TLSPort   int    // where pebble validates TLS-ALPN-01: the node's --tls-addr
	Log       *syncBuffer
	mgmt      string
	client    *http.Client
}

// startPebble starts pebble-challtestsrv (DNS only) and pebble with
// certificates valid for validity seconds; both are killed at cleanup.
func startPebble(t *testing.T, validity int) *pebbleEnv {
	t.Helper()
	bin := pebbleBin(t)
	dir := t.TempDir()
	ca, err := testca.New()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"wfe-cert.pem": ca.CertPEM, "wfe-key.pem": ca.KeyPEM, "wfe-ca.pem": ca.CAPEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p := &pebbleEnv{
		CAFile: filepath.Join(dir, "wfe-ca.pem"), HTTPPort: fixedPort(t), TLSPort: fixedPort(t), Log: newSyncBuffer(),
		client: &http.Client{Timeout: defaultTimeout, Transport: &http.Transport{TLSClientConfig: ca.ClientConfig()}},
	}
	listen := fmt.Sprintf("127.0.0.1:%d", fixedPort(t))
	p.Directory, p.mgmt = "https://"+listen+"/dir", fmt.Sprintf("127.0.0.1:%d", fixedPort(t))
	dns := fmt.Sprintf("127.0.0.1:%d", fixedPort(t))
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": p.mgmt,
		"certificate": filepath.Join(dir, "wfe-cert.pem"), "privateKey": filepath.Join(dir, "wfe-key.pem"),
		"httpPort": p.HTTPPort, "tlsPort": p.TLSPort, "ocspResponderURL": "",
		"retryAfter": map[string]int{"authz": 1, "order": 1},
		"profiles":   map[string]any{"default": map[string]any{"description": "test", "validityPeriod": validity}},
	}}
	b, _ := json.Marshal(cfg)
	conf := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	startAux(t, p.Log, nil, filepath.Join(bin, "pebble-challtestsrv"), "-dnsserver", dns, "-defaultIPv6", "",
		"-management", fmt.Sprintf("127.0.0.1:%d", fixedPort(t)), "-doh", "", "-http01", "", "-https01", "", "-tlsalpn01", "")
	startAux(t, p.Log, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		filepath.Join(bin, "pebble"), "-config", conf, "-dnsserver", dns)
	eventually(t, startTimeout, func() string {
		resp, err := p.client.Get(p.Directory)
		if err != nil {
			return err.Error()
		}
		resp.Body.Close()
		if c, err := net.DialTimeout("tcp", dns, time.Second); err != nil {
			return err.Error()
		} else {
			c.Close()
		}
		return ""
	})
	return p
}

// startAux starts a helper process, its output to log, killed (by PID)
// at cleanup.
func startAux(t *testing.T, log *syncBuffer, env []string, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", argv[0], err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("--- %s ---\n%s", filepath.Base(argv[0]), log.String())
		}
	})
}

// fixedPort returns a free port of 127.0.0.1 below the kernel's range of
// ephemeral ports (net.ipv4.ip_local_port_range, 32768-60999 by default):
// pebble's configuration names the node's ports before the node binds
// them, and a port of that range could meanwhile become the local end of
// some outgoing connection, which a listener cannot share.
func fixedPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		port := 20000 + mathrand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

// Roots is pebble's issuing root, from its management API.
func (p *pebbleEnv) Roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pebble /roots/0: %d %v", resp.StatusCode, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble /roots/0: no certificate in %q", b)
	}
	return pool
}

// Issued counts the certificates pebble issued.
func (p *pebbleEnv) Issued() int { return strings.Count(p.Log.String(), "Issued certificate serial") }

// startACMENode starts the node with --addr and --tls-addr on pebble's
// validation ports and certificates from pebble for acmeDomains.
func startACMENode(t *testing.T, p *pebbleEnv, workers, challenge string) *serverProc {
	t.Helper()
	return startServerWith(t, t.TempDir(), nil, nil, nil,
		"--addr", "127.0.0.1:"+strconv.Itoa(p.HTTPPort), "--tls-addr", "127.0.0.1:"+strconv.Itoa(p.TLSPort),
		"--workers", workers, "--acme-domain", acmeDomains[0], "--acme-domain", acmeDomains[1],
		"--acme-email", "ops@zenconn.test", "--acme-directory", p.Directory, "--acme-ca", p.CAFile,
		"--acme-challenge", challenge)
}

// acmeClient is a TLS client configuration that verifies name against
// pebble's root.
func acmeClient(roots *x509.CertPool, name string) *tls.Config {
	return &tls.Config{RootCAs: roots, ServerName: name, NextProtos: []string{"http/1.1"}, MinVersion: tls.VersionTLS12}
}

// httpsGet makes one request on a new TLS connection to port, for
// https://name/path verified with roots; it returns the status, the body
// and the serial number of the certificate served.
func httpsGet(port int, roots *x509.CertPool, name, path string) (int, string, string, error) {
	d := &net.Dialer{Timeout: defaultTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", "127.0.0.1:"+strconv.Itoa(port), acmeClient(roots, name))
	if err != nil {
		return 0, "", "", err
	}
	defer conn.Close()
	serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	_ = conn.SetDeadline(time.Now().Add(defaultTimeout))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, name)
	b, err := io.ReadAll(conn)
	if err != nil {
		return 0, "", serial, err
	}
	head, body, _ := strings.Cut(string(b), "\r\n\r\n")
	f := strings.Fields(head)
	if len(f) < 2 {
		return 0, "", serial, fmt.Errorf("response %q", b)
	}
	status, _ := strconv.Atoi(f[1])
	return status, body, serial, nil
}

// waitACMECert waits until the node serves a certificate of pebble for
// every domain and returns its serial number.
func waitACMECert(t *testing.T, s *serverProc, p *pebbleEnv, roots *x509.CertPool) string {
	t.Helper()
	var serial string
	eventually(t, acmeTimeout, func() string {
		for _, d := range acmeDomains {
			status, _, sn, err := httpsGet(p.TLSPort, roots, d, "/healthz")
			if err != nil || status != 200 {
				return fmt.Sprintf("https://%s/healthz: %d %v", d, status, err)
			}
			serial = sn
		}
		return ""
	})
	return serial
}

// waitWorkersLoaded waits until each of the node's workers (0 to
// workers-1) logged loading the certificate it obtained: until then a
// connection that lands on a worker still without one fails its
// handshake.
func waitWorkersLoaded(t *testing.T, s *serverProc, workers int) {
	t.Helper()
	eventually(t, acmeTimeout, func() string {
		seen := map[string]bool{}
		for _, m := range reloadedRE.FindAllStringSubmatch(s.Stderr.String(), -1) {
			seen[m[1]] = true
		}
		for w := range workers {
			if !seen[strconv.Itoa(w)] {
				return fmt.Sprintf("workers that loaded the certificate: %v", seen)
			}
		}
		return ""
	})
}

// acmeMetric returns the value of the metric line that starts with name
// on the node's plain /metrics, or "".
func acmeMetric(t *testing.T, s *serverProc, name string) string {
	t.Helper()
	resp, err := s.HTTP.Get(s.URL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

var reloadedRE = regexp.MustCompile(`msg="TLS certificate reloaded" worker=(\d)`)

// TestACMEChallenges obtains a certificate from pebble with each challenge
// type alone, on a node of two worker processes: both workers serve it
// (each logs its reload, and fresh connections all verify against
// pebble's root, to each name), the plain address keeps serving, and a
// wss:// client verifies it.
func TestACMEChallenges(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			t.Parallel()
			p := startPebble(t, 3600)
			s := startACMENode(t, p, "2", challenge)
			roots := p.Roots(t)
			serial := waitACMECert(t, s, p, roots)
			obtained := regexp.MustCompile(`msg="ACME: certificate obtained" challenge=` + challenge + `.*took=(\S+)`).FindStringSubmatch(s.Logs())
			if obtained == nil {
				t.Fatalf("no certificate obtained with %s:\n%s", challenge, s.Logs())
			}
			t.Logf("%s: order to certificate in %s", challenge, obtained[1])
			waitWorkersLoaded(t, s, 2)
			for i := 0; i < 16; i++ {
				d := acmeDomains[i%2]
				status, body, sn, err := httpsGet(p.TLSPort, roots, d, "/index.html")
				if err != nil || status != 200 || sn != serial || body == "" {
					t.Fatalf("https://%s/index.html #%d: %d %v serial %s (want %s)", d, i, status, err, sn, serial)
				}
			}
			if n := p.Issued(); n != 1 {
				t.Fatalf("pebble issued %d certificates, want 1", n)
			}
			if v := acmeMetric(t, s, `zenconn_acme_orders_total{result="obtained"}`); v != "1" {
				t.Fatalf("zenconn_acme_orders_total{result=\"obtained\"} = %q, want 1", v)
			}
			ws := acmeWS(t, roots, acmeDomains[0], p.TLSPort)
			ws.pingPong()
			if resp, err := s.HTTP.Get(s.URL("/healthz")); err != nil || resp.StatusCode != 200 {
				t.Fatalf("plain /healthz: %v %v", resp, err)
			} else {
				resp.Body.Close()
			}
		})
	}
}

// acmeWS dials wss://name:port/ws on 127.0.0.1 (no DNS), verifying the
// certificate against roots, and reads the welcome.
func acmeWS(t *testing.T, roots *x509.CertPool, name string, port int) *wsClient {
	t.Helper()
	d := websocket.Dialer{
		HandshakeTimeout: defaultTimeout,
		TLSClientConfig:  acmeClient(roots, name),
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var nd net.Dialer
			return nd.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(port))
		},
	}
	c, resp, err := d.Dial(fmt.Sprintf("wss://%s:%d/ws", name, port), nil)
	if err != nil {
		t.Fatalf("dial wss://%s:%d/ws: %v (%v)", name, port, err, resp)
	}
	wc := &wsClient{t: t, c: c}
	t.Cleanup(func() { c.Close() })
	if wc.Welcome, err = wc.readE(defaultTimeout); err != nil || wc.Welcome.Op != "welcome" {
		t.Fatalf("welcome: %v %v", wc.Welcome, err)
	}
	return wc
}

// TestACMERestartUsesCache restarts a node (one process) with the same
// --data: it serves the cached certificate, same serial, and pebble
// issues nothing more.
func TestACMERestartUsesCache(t *testing.T) {
	t.Parallel()
	p := startPebble(t, 3600)
	s := startACMENode(t, p, "0", "tls-alpn-01,http-01")
	roots := p.Roots(t)
	serial := waitACMECert(t, s, p, roots)
	if n := p.Issued(); n != 1 {
		t.Fatalf("pebble issued %d certificates, want 1", n)
	}
	info, err := os.Stat(filepath.Join(s.Data, "acme", "certificate.pem"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("cached certificate: %v %v", info, err)
	}
	s.Signal(syscall.SIGTERM)
	if ok, _ := s.WaitExit(stopGrace); !ok {
		t.Fatal("the node did not stop")
	}
	s2 := s.restart(t)
	if got := waitACMECert(t, s2, p, roots); got != serial {
		t.Fatalf("after the restart the node serves serial %s, want the cached %s", got, serial)
	}
	if _, err := s2.Stderr.WaitMatch(regexp.MustCompile(`msg="ACME: the certificate is good; next look later"`), acmeTimeout, s2.done); err != nil {
		t.Fatalf("the restarted node never looked at its certificate: %v\n%s", err, s2.Logs())
	}
	logs := s2.Logs()
	if !strings.Contains(logs, `msg="ACME: certificate from the cache"`) || strings.Contains(logs, "ordering one") {
		t.Fatalf("the restarted node did not use its cache:\n%s", logs)
	}
	if n := p.Issued(); n != 1 {
		t.Fatalf("pebble issued %d certificates after the restart, want still 1", n)
	}
	if v := acmeMetric(t, s2, `zenconn_acme_orders_total{result="obtained"}`); v != "0" {
		t.Fatalf("the restarted node's zenconn_acme_orders_total{result=\"obtained\"} = %q, want 0", v)
	}
	if v := acmeMetric(t, s2, "zenconn_acme_certificate_not_after_seconds"); v == "" || v == "0" {
		t.Fatalf("zenconn_acme_certificate_not_after_seconds = %q", v)
	}
}

// TestACMERenewal gets certificates valid for 30 s from pebble: the node
// renews when a third of that is left, the workers serve the new one to
// new connections, and a connection made before keeps working.
func TestACMERenewal(t *testing.T) {
	t.Parallel()
	p := startPebble(t, 30)
	s := startACMENode(t, p, "2", "tls-alpn-01")
	roots := p.Roots(t)
	first := waitACMECert(t, s, p, roots)
	waitWorkersLoaded(t, s, 2)
	ws := acmeWS(t, roots, acmeDomains[0], p.TLSPort)
	ws.subscribe(1, "renewal")
	var second string
	eventually(t, acmeTimeout, func() string {
		_, _, sn, err := httpsGet(p.TLSPort, roots, acmeDomains[1], "/healthz")
		if err != nil {
			return err.Error()
		}
		if sn == first {
			return "still the first certificate " + first
		}
		second = sn
		return ""
	})
	if !strings.Contains(s.Logs(), `msg="ACME: renewing the certificate" serial=`+first) {
		t.Fatalf("no renewal of %s logged:\n%s", first, s.Logs())
	}
	// The connection made with the first certificate is still served.
	if got := ws.c.NetConn().(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.String(); got != first {
		t.Fatalf("the connection made before the renewal has certificate %s, want %s", got, first)
	}
	pub := acmeWS(t, roots, acmeDomains[1], p.TLSPort)
	pub.request(2, fmt.Sprintf(`{"id":2,"op":"publish","channel":"renewal","data":%q}`, "after "+second))
	if m := ws.expectMessage(t, time.Now().Add(defaultTimeout)); m.Channel != "renewal" {
		t.Fatalf("message on the old connection: %v", m)
	}
}

// TestACMECAUnreachable starts a node whose CA does not answer: it serves
// plain HTTP, TLS handshakes fail at once (no certificate yet), the
// failure is logged with a retry, and HTTP-01 requests with a bad token
// get a clear answer.
func TestACMECAUnreachable(t *testing.T) {
	t.Parallel()
	dead := fixedPort(t)
	tlsPort := fixedPort(t)
	s := startServerWith(t, t.TempDir(), nil, nil, nil,
		"--tls-addr", "127.0.0.1:"+strconv.Itoa(tlsPort), "--acme-domain", "a.zenconn.test", "--tls-redirect",
		"--acme-directory", fmt.Sprintf("https://127.0.0.1:%d/dir", dead))
	if _, err := s.Stderr.WaitMatch(regexp.MustCompile(`msg="ACME: no certificate obtained; trying again later".*retry_in=10s`), acmeTimeout, s.done); err != nil {
		t.Fatalf("no retry logged: %v\n%s", err, s.Logs())
	}
	if v := acmeMetric(t, s, `zenconn_acme_orders_total{result="failed"}`); v == "" || v == "0" {
		t.Fatalf("zenconn_acme_orders_total{result=\"failed\"} = %q", v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTimeout)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: "a.zenconn.test", InsecureSkipVerify: true}}
	if c, err := d.DialContext(ctx, "tcp", "127.0.0.1:"+strconv.Itoa(tlsPort)); err == nil {
		c.Close()
		t.Fatal("a TLS handshake succeeded without a certificate")
	} else if ctx.Err() != nil {
		t.Fatalf("the TLS handshake hung: %v", err)
	}
	for path, want := range map[string]int{
		"/.well-known/acme-challenge/unknownToken_-1":             404,
		"/.well-known/acme-challenge/..%2f..%2fnode-id":           404,
		"/.well-known/acme-challenge/" + strings.Repeat("a", 200): 404,
		"/.well-known/acme-challenge/":                            404,
	} {
		resp, err := s.HTTP.Get(s.URL(path))
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// A pending challenge is answered from its file, --tls-redirect or not.
	tokenFile := filepath.Join(s.Data, "acme", "http-01", "tok-EN_1")
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("tok-EN_1.thumbprint"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.HTTP.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for path, want := range map[string]string{"/.well-known/acme-challenge/tok-EN_1": "200 tok-EN_1.thumbprint", "/index.html": "308 "} {
		resp, err := s.HTTP.Get(s.URL(path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := fmt.Sprintf("%d %s", resp.StatusCode, b); !strings.HasPrefix(got, want) {
			t.Fatalf("GET %s: %q, want %q", path, got, want)
		}
	}
	resp, err := s.HTTP.Post(s.URL("/.well-known/acme-challenge/abc"), "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("POST to a challenge: %d, want 405", resp.StatusCode)
	}
	if s.Exited() {
		t.Fatalf("the node exited:\n%s", s.Logs())
	}
}

// TestACMEStartupChecks: bad --acme-* flags stop the start with a message
// naming the flag.
func TestACMEStartupChecks(t *testing.T) {
	t.Parallel()
	cert, key := filepath.Join(t.TempDir(), "c.pem"), filepath.Join(t.TempDir(), "k.pem")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--acme-domain", "a.example.com", "--tls-cert", cert, "--tls-key", key}, "--acme-domain: the certificate comes either"},
		{[]string{"--acme-domain", "localhost"}, "--acme-domain: \"localhost\" has a single label"},
		{[]string{"--acme-domain", "*.example.com"}, "--acme-domain: \"*.example.com\" has '*'"},
		{[]string{"--acme-domain", "127.0.0.1"}, "is an IP address"},
		{[]string{"--acme-domain", "a.example.com", "--acme-directory", "http://ca.example/dir"}, "--acme-directory: \"http://ca.example/dir\" is not an https:// URL"},
		{[]string{"--acme-domain", "a.example.com", "--acme-email", "not-an-address"}, "--acme-email:"},
		{[]string{"--acme-domain", "a.example.com", "--acme-challenge", "dns-01"}, "--acme-challenge: \"dns-01\" is neither"},
		{[]string{"--acme-domain", "a.example.com", "--acme-challenge", "http-01"}, "--acme-challenge: http-01 needs a plain listener"},
		{[]string{"--acme-domain", "a.example.com", "--acme-ca", "/nonexistent.pem"}, "--acme-ca:"},
		{[]string{"--acme-email", "ops@example.com"}, "--acme-email: needs --acme-domain"},
	} {
		out, code := runCLI(t, startTimeout, nil, append([]string{"serve", "--addr", "127.0.0.1:0", "--public", "off"}, c.args...)...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("serve %v: exit %d, want 2 and %q in:\n%s", c.args, code, c.want, out)
		}
	}
}
