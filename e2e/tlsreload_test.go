package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zenconn/server/internal/testca"
)

// replaceFile replaces path with b by a rename, as a certificate manager
// does.
func replaceFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// handshakeSerial makes a new TLS connection to addr that verifies the
// server with cfg and returns the serial of the certificate it presented.
func handshakeSerial(addr string, cfg *tls.Config) (*big.Int, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: defaultTimeout}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// waitServes waits until 16 new handshakes in a row (spread over the
// workers by SO_REUSEPORT) present the certificate of ca.
func waitServes(t *testing.T, s *serverProc, client *tls.Config, ca *testca.CA, within time.Duration) {
	t.Helper()
	want := ca.Server.Leaf.SerialNumber
	row := 0
	eventually(t, within, func() string {
		for ; row < 16; row++ {
			got, err := handshakeSerial(s.Addr, client)
			if err != nil {
				row = 0
				return err.Error()
			}
			if got.Cmp(want) != 0 {
				row = 0
				return fmt.Sprintf("a new handshake got serial %s, want %s", got, want)
			}
		}
		return ""
	})
}

// waitLogWorkers waits until both worker processes (with workers "2"; the
// node's process with "0") logged a line holding every one of parts.
func waitLogWorkers(t *testing.T, s *serverProc, workers string, within time.Duration, parts ...string) {
	t.Helper()
	worker := regexp.MustCompile(`\bworker=(\d)\b`)
	eventually(t, within, func() string {
		seen := map[string]bool{}
	lines:
		for _, line := range strings.Split(s.Stderr.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			if m := worker.FindStringSubmatch(line); m != nil {
				seen[m[1]] = true
			} else if workers == "0" {
				seen["0"], seen["1"] = true, true
			}
		}
		if !seen["0"] || !seen["1"] {
			return fmt.Sprintf("workers that logged %q: %v", parts, seen)
		}
		return ""
	})
}

// TestTLSReload runs the real binary in one process and with two worker
// processes and swaps its certificate: SIGHUP to the agent makes every
// worker reload it, and a change of the files alone is picked up too.
// Connections opened before keep exchanging messages, under a steady
// stream of publishes and new handshakes, none lost or failed; new
// handshakes get the new certificate; a key that does not match is
// refused with an error line and the certificate in use stays.
func TestTLSReload(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			t.Parallel()
			testTLSReload(t, workers)
		})
	}
}

func testTLSReload(t *testing.T, workers string) {
	root := t.TempDir()
	cas := make([]*testca.CA, 3)
	pool := x509.NewCertPool()
	for i := range cas {
		ca, err := testca.New()
		if err != nil {
			t.Fatal(err)
		}
		cas[i] = ca
		pool.AppendCertsFromPEM(ca.CAPEM)
	}
	client := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	cert, key := filepath.Join(root, "cert.pem"), filepath.Join(root, "key.pem")
	replaceFile(t, cert, cas[0].CertPEM)
	replaceFile(t, key, cas[0].KeyPEM)
	s := startServerWith(t, root, nil, nil, client, "--tls-cert", cert, "--tls-key", key, "--workers", workers)
	waitServes(t, s, client, cas[0], defaultTimeout)

	subs := make([]*wsClient, 6)
	for i := range subs {
		subs[i] = s.dialWS(t)
		subs[i].subscribe(1, "reload")
	}
	pub := s.dialWS(t)
	exchange := func(id int, data string) {
		t.Helper()
		pub.request(id, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"reload","data":%q}`, id, data))
		deadline := time.Now().Add(defaultTimeout)
		for _, c := range subs {
			if m := c.expectMessage(t, deadline); !strings.Contains(string(m.raw), data) {
				t.Fatalf("conn %s got %s, want %q", c.Welcome.Conn, m.raw, data)
			}
		}
	}
	exchange(10, "before any reload")
	load := startReloadLoad(t, s, client, 40)

	// SIGHUP: both workers reload at once (well before the files' poll).
	replaceFile(t, cert, cas[1].CertPEM)
	replaceFile(t, key, cas[1].KeyPEM)
	hup := time.Now()
	s.Signal(syscall.SIGHUP)
	waitLogWorkers(t, s, workers, defaultTimeout, `msg="TLS certificate reloaded"`, "reason=SIGHUP")
	waitServes(t, s, client, cas[1], defaultTimeout)
	t.Logf("SIGHUP to 16 new handshakes in a row with the new certificate: %s", time.Since(hup).Round(time.Millisecond))
	exchange(11, "after SIGHUP")

	// A key that does not match: refused by each worker, the certificate
	// in use stays.
	replaceFile(t, key, cas[2].KeyPEM)
	s.Signal(syscall.SIGHUP)
	waitLogWorkers(t, s, workers, defaultTimeout, `level=ERROR msg="TLS certificate not reloaded: the certificate in use stays"`, "reason=SIGHUP", "does not match")
	waitServes(t, s, client, cas[1], defaultTimeout)
	exchange(12, "after a refused reload")

	// No signal: the changed files are picked up.
	changed := time.Now()
	replaceFile(t, cert, cas[2].CertPEM)
	waitLogWorkers(t, s, workers, 10*time.Second, `msg="TLS certificate reloaded"`, `reason="files changed"`)
	waitServes(t, s, client, cas[2], defaultTimeout)
	t.Logf("file change to 16 new handshakes in a row with the new certificate: %s", time.Since(changed).Round(time.Millisecond))
	exchange(13, strings.Repeat("after a change of the files ", 2000))
	load.stop(t)
	for _, c := range subs {
		c.pingPong()
	}
	if s.Exited() {
		t.Fatalf("the node exited:\n%s", s.Logs())
	}
}

// reloadLoad keeps a node busy while its certificate is swapped: one wss://
// client publishes on "load" without pause, each publish acked, while
// another goroutine keeps opening new TLS connections. stop ends both and
// checks that every subscriber got every message, in order, and that no
// handshake failed.
type reloadLoad struct {
	subs      []*wsClient
	done      chan struct{}
	published chan int   // the number of acked publishes, once stopped
	failures  chan error // the first failure of either goroutine, once stopped
}

func startReloadLoad(t *testing.T, s *serverProc, client *tls.Config, nSubs int) *reloadLoad {
	t.Helper()
	l := &reloadLoad{done: make(chan struct{}), published: make(chan int, 1), failures: make(chan error, 2)}
	for i := 0; i < nSubs; i++ {
		c := s.dialWS(t)
		c.subscribe(1, "load")
		l.subs = append(l.subs, c)
	}
	pub := s.dialWS(t)
	go func() {
		n := 0
		defer func() { l.published <- n }()
		for {
			select {
			case <-l.done:
				return
			default:
			}
			if err := pub.sendE(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"load","data":"m%d"}`, n+1, n)); err != nil {
				l.failures <- fmt.Errorf("publish %d: %w", n, err)
				return
			}
			if m, err := pub.readE(defaultTimeout); err != nil || m.Op != "ack" {
				l.failures <- fmt.Errorf("ack of publish %d: %v %v", n, m, err)
				return
			}
			n++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	go func() {
		for {
			select {
			case <-l.done:
				l.failures <- nil
				return
			default:
			}
			if _, err := handshakeSerial(s.Addr, client); err != nil {
				l.failures <- fmt.Errorf("a new handshake during the reloads: %w", err)
				return
			}
		}
	}()
	return l
}

func (l *reloadLoad) stop(t *testing.T) {
	t.Helper()
	close(l.done)
	n := <-l.published
	if err := <-l.failures; err != nil {
		t.Fatal(err)
	}
	if n < 50 {
		t.Fatalf("only %d publishes acked during the reloads", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range l.subs {
		for i := 0; i < n; i++ {
			m := c.expectMessage(t, deadline)
			if string(m.Data) != fmt.Sprintf(`"m%d"`, i) {
				t.Fatalf("conn %s: message %d is %s", c.Welcome.Conn, i, m.Data)
			}
		}
	}
	t.Logf("%d subscribers got all %d messages published across the reloads", len(l.subs), n)
}
