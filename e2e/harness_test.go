package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the harness. They bound waits; nothing sleeps for them.
const (
	startTimeout   = 10 * time.Second // process start to "listening" and a healthy /healthz
	stopGrace      = 5 * time.Second  // SIGTERM to SIGKILL
	defaultTimeout = 5 * time.Second  // a single network exchange
)

// listeningRE matches the slog text line the server prints once it accepts connections,
// e.g. `time=... level=INFO msg=listening addr=127.0.0.1:40123`.
var listeningRE = regexp.MustCompile(`msg="?listening"?.*\baddr="?(127\.0\.0\.1:\d+)"?`)

// serverProc is one zenconn child process started by a test.
type serverProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	Addr string // host:port it listens on

	Root      string // temp dir holding the next four paths and the fixture's secret file
	Public    string // --public
	Data      string // --data
	AccessLog string // --access-log

	Stderr *syncBuffer
	Stdout *syncBuffer

	HTTP *http.Client // no automatic decompression, own transport

	prefix, env, extra []string // how it was started, for restart
	// tlsClient, when the server serves TLS, is how clients verify it
	// (https://, wss://); nil for plain HTTP.
	tlsClient *tls.Config

	peer  *serverProc  // the other node of a pair (ZENCONN_E2E_CLUSTER=1), or nil
	dials atomic.Int64 // WebSocket dials so far, to alternate with peer

	done     chan struct{} // closed when the process has been reaped
	waitErr  error         // cmd.Wait result, valid after done
	signaled atomic.Bool   // a test or the cleanup signaled the process on purpose
}

// startServer starts `zenconn serve` with the standard flags plus extra and waits until
// it answers GET /healthz. The process is stopped at cleanup (SIGTERM, SIGKILL after 5 s).
func startServer(t *testing.T, extra ...string) *serverProc {
	t.Helper()
	return startServerEnv(t, nil, extra...)
}

// startServerEnv is startServer with additional environment variables (KEY=VALUE).
// When env sets ZENCONN_ADDR the --addr flag is left out.
func startServerEnv(t *testing.T, env []string, extra ...string) *serverProc {
	t.Helper()
	return startServerVia(t, nil, env, extra...)
}

// startServerVia is startServerEnv with the server started through a
// command prefix (e.g. prlimit) that execs it.
func startServerVia(t *testing.T, prefix, env []string, extra ...string) *serverProc {
	t.Helper()
	if clusterMode() {
		return startClusterPair(t, prefix, env, extra...)
	}
	return startServerIn(t, t.TempDir(), prefix, env, extra...)
}

// restart starts s's command again in s's Root, once s has exited (stopped or
// killed): the new process keeps the data folder (node id, store, cache) and
// listens on a new port. It is stopped at cleanup like any other.
func (s *serverProc) restart(t *testing.T) *serverProc {
	t.Helper()
	if !s.Exited() {
		t.Fatalf("restart: the previous process %d is still running", s.cmd.Process.Pid)
	}
	return startServerWith(t, s.Root, s.prefix, s.env, s.tlsClient, s.extra...)
}

// startServerIn is startServerVia in the folder root.
func startServerIn(t *testing.T, root string, prefix, env []string, extra ...string) *serverProc {
	t.Helper()
	return startServerWith(t, root, prefix, env, nil, extra...)
}

// startServerWith is startServerIn for a server that serves TLS when
// tlsClient is set (extra then holds --tls-cert and --tls-key): clients
// verify it with tlsClient.
func startServerWith(t *testing.T, root string, prefix, env []string, tlsClient *tls.Config, extra ...string) *serverProc {
	t.Helper()
	s := &serverProc{
		tlsClient: tlsClient,
		t:         t,
		Root:      root,
		Public:    filepath.Join(root, "public"),
		Data:      filepath.Join(root, "data"),
		AccessLog: filepath.Join(root, "access.log"),
		Stderr:    newSyncBuffer(),
		Stdout:    newSyncBuffer(),
		done:      make(chan struct{}),
		prefix:    prefix,
		env:       env,
		extra:     extra,
	}
	writeFixture(t, root)
	if err := os.MkdirAll(s.Data, 0o755); err != nil {
		t.Fatal(err)
	}

	args := []string{"serve"}
	envAddr := false
	for _, kv := range env {
		if strings.HasPrefix(kv, "ZENCONN_ADDR=") {
			envAddr = true
		}
	}
	if !envAddr {
		args = append(args, "--addr", "127.0.0.1:0")
	}
	args = append(args,
		"--public", s.Public,
		"--data", s.Data,
		"--access-log", s.AccessLog,
		"--workers", "0",
	)
	if w := os.Getenv("ZENCONN_E2E_WORKERS"); w != "" {
		args = append(args, "--workers", w)
	}
	// Tests dial hundreds of clients from 127.0.0.1 and send ops in
	// bursts: the client limits are lifted unless a test sets them
	// (attack_limits_test.go does; a later flag wins).
	args = append(args, testLimitFlags...)
	args = append(args, extra...)

	argv := append(append(append([]string(nil), prefix...), zenconnBin), args...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Dir = root
	s.cmd.Env = append(cleanEnv(), env...)
	s.cmd.Stdout = s.Stdout
	s.cmd.Stderr = s.Stderr
	// If the test binary dies, take the server with it.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.cmd.WaitDelay = 2 * time.Second
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", zenconnBin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	s.HTTP = &http.Client{
		Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 8, TLSClientConfig: tlsClient},
		Timeout:   10 * time.Second,
	}
	t.Cleanup(s.cleanup)

	m, err := s.Stderr.WaitMatch(listeningRE, startTimeout, s.done)
	if err != nil {
		s.signaled.Store(true) // the failure is reported here, with the logs at cleanup
		t.Fatalf("server did not log msg=listening addr=127.0.0.1:PORT: %v", err)
	}
	s.Addr = m[1]
	s.waitHealthy()
	return s
}

// cleanEnv is the test's environment without ZENCONN_* variables, so that a developer's
// shell cannot change what the server under test does.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ZENCONN_") {
			env = append(env, kv)
		}
	}
	return env
}

func (s *serverProc) URL(path string) string { return s.scheme("http") + "://" + s.Addr + path }

// scheme is plain ("http" or "ws") with an "s" when the server serves TLS.
func (s *serverProc) scheme(plain string) string {
	if s.tlsClient != nil {
		return plain + "s"
	}
	return plain
}

// Logs returns the child's stdout and stderr for failure messages.
func (s *serverProc) Logs() string {
	return fmt.Sprintf("--- server stderr ---\n%s--- server stdout ---\n%s", s.Stderr.String(), s.Stdout.String())
}

// waitHealthy polls GET /healthz until it answers 200 "ok".
func (s *serverProc) waitHealthy() {
	s.t.Helper()
	var last string
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			s.signaled.Store(true)
			s.t.Fatalf("server exited while starting: %v", s.waitErr)
		default:
		}
		resp, err := s.HTTP.Get(s.URL("/healthz"))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.TrimSpace(string(body)) == "ok" {
				return
			}
			last = fmt.Sprintf("status %d body %q", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("GET /healthz never answered 200 ok (last: %s)", last)
}

// Signal sends sig to the child (by PID) and records that the exit, if any, is expected.
func (s *serverProc) Signal(sig syscall.Signal) {
	s.t.Helper()
	if sig == syscall.SIGTERM || sig == syscall.SIGKILL || sig == syscall.SIGINT {
		s.signaled.Store(true)
	}
	if err := syscall.Kill(s.cmd.Process.Pid, sig); err != nil {
		s.t.Fatalf("kill -%d %d: %v", sig, s.cmd.Process.Pid, err)
	}
}

// WaitExit waits up to d for the process to exit and returns whether it did and its
// Wait error.
func (s *serverProc) WaitExit(d time.Duration) (bool, error) {
	select {
	case <-s.done:
		return true, s.waitErr
	case <-time.After(d):
		return false, nil
	}
}

// Exited reports whether the process has been reaped.
func (s *serverProc) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *serverProc) cleanup() {
	t := s.t
	s.HTTP.CloseIdleConnections()
	if s.Exited() && !s.signaled.Load() {
		t.Errorf("server exited on its own during the test: %v", s.waitErr)
	}
	if !s.Exited() {
		s.signaled.Store(true)
		_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGTERM)
		if ok, _ := s.WaitExit(stopGrace); !ok {
			t.Errorf("server did not exit within %v of SIGTERM; sending SIGKILL", stopGrace)
			_ = syscall.Kill(s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.done
		}
	}
	logs := s.Stderr.String() + s.Stdout.String()
	for _, bad := range []string{"panic:", "fatal error:", "WARNING: DATA RACE"} {
		if strings.Contains(logs, bad) {
			t.Errorf("server output contains %q\n%s", bad, s.Logs())
			break
		}
	}
	if t.Failed() {
		t.Logf("server %s args %q\n%s", s.Addr, s.cmd.Args, s.Logs())
	}
}

// syncBuffer is an io.Writer for a child's output that tests can wait on.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{})} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitMatch waits until re matches the buffer, the timeout passes or stop is closed.
func (b *syncBuffer) WaitMatch(re *regexp.Regexp, timeout time.Duration, stop <-chan struct{}) ([]string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		b.mu.Lock()
		m := re.FindStringSubmatch(b.buf.String())
		changed := b.changed
		b.mu.Unlock()
		if m != nil {
			return m, nil
		}
		select {
		case <-changed:
		case <-stop:
			// One more look: the line may have come with the last write.
			if m := re.FindStringSubmatch(b.String()); m != nil {
				return m, nil
			}
			return nil, errors.New("process exited")
		case <-timer.C:
			return nil, fmt.Errorf("timed out after %v", timeout)
		}
	}
}

// runCLI runs the binary with args to completion (bounded by timeout) and returns its
// combined output and exit code (-1 if it did not exit by itself).
func runCLI(t *testing.T, timeout time.Duration, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, zenconnBin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cleanEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("zenconn %q did not exit within %v\n%s", args, timeout, out)
		return string(out), -1
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &ee):
		return string(out), ee.ExitCode()
	default:
		t.Fatalf("running zenconn %q: %v", args, err)
		return "", -1
	}
}

// eventually polls cond every 20 ms until it returns "" or timeout passes, then fails with
// the last reason cond gave.
func eventually(t *testing.T, timeout time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		why := cond()
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
