package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// buildZenconn builds this command into a temporary folder with extra
// go build arguments.
func buildZenconn(t *testing.T, args ...string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "zenconn")
	cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), ".")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestVersionStamped(t *testing.T) {
	bin := buildZenconn(t, "-trimpath", "-ldflags", "-X main.version=v9.8.7 -X main.commit=0123abc")
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("zenconn version: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`^zenconn v9\.8\.7 \(commit 0123abc, go1\.[0-9.]+[^,]*, linux/[a-z0-9]+\)\n$`).Match(out) {
		t.Fatalf("zenconn version printed %q", out)
	}
}

func TestVersionUnstamped(t *testing.T) {
	var out, errb bytes.Buffer
	if code := versionCmd(nil, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	v, c := versionInfo()
	if v == "" || c == "" || !strings.HasPrefix(out.String(), "zenconn "+v+" (commit "+c+", ") {
		t.Fatalf("version %q commit %q, printed %q", v, c, out.String())
	}
	if code := versionCmd([]string{"extra"}, &out, &errb); code != 2 {
		t.Fatalf("an argument: exit %d, want 2", code)
	}
}

func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}))
	defer ok.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	// A server that accepts and never answers.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + closed.Addr().String() + "/healthz"
	closed.Close()

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--url", ok.URL + "/healthz"}, 0, ": ok"},
		{[]string{"--url", ok.URL + "/nothing"}, 1, "status 404"},
		{[]string{"--url", down.URL + "/healthz"}, 1, "status 503"},
		{[]string{"--url", "http://" + silent.Addr().String() + "/healthz", "--timeout", "300ms"}, 1, "no answer within 300ms"},
		{[]string{"--url", closedURL}, 1, "refused"},
		{[]string{"--url", "ftp://x/healthz"}, 2, "--url"},
		{[]string{"--timeout", "0s"}, 2, "--timeout"},
		{[]string{"extra"}, 2, "unexpected argument"},
	} {
		var out, errb bytes.Buffer
		start := time.Now()
		code := healthcheck(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.msg) {
			t.Errorf("%v: exit %d, output %q %q; want exit %d with %q", tc.args, code, out.String(), errb.String(), tc.code, tc.msg)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v: took %s, more than its bound", tc.args, d)
		}
	}
}

// TestHealthcheckAgainstNode runs the binary's healthcheck against a
// real node, then against its port once the node is gone.
func TestHealthcheckAgainstNode(t *testing.T) {
	bin := buildZenconn(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	node := exec.Command(bin, "serve", "--addr", addr, "--workers", "0", "--public", "off", "--data", t.TempDir(), "--access-log", "off")
	var logs bytes.Buffer
	node.Stdout, node.Stderr = &logs, &logs
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = node.Process.Kill(); _ = node.Wait() }()
	url := "http://" + addr + "/healthz"
	var out []byte
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err = exec.Command(bin, "healthcheck", "--url", url).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			_ = node.Process.Kill()
			_ = node.Wait()
			t.Fatalf("healthcheck of a running node: %v\n%s\nnode:\n%s", err, out, logs.String())
		}
	}
	_ = node.Process.Signal(os.Interrupt)
	_ = node.Wait()
	out, err = exec.Command(bin, "healthcheck", "--url", url, "--timeout", "1s").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "zenconn healthcheck: "+url) {
		t.Fatalf("healthcheck of a stopped node: err %v, output %q", err, out)
	}
}

// TestDefaultWorkersFollowCPUs checks that the --workers default follows
// the CPUs the process may use (Go's GOMAXPROCS default: the cgroup's CPU
// limit, or GOMAXPROCS from the environment), not all the machine's.
func TestDefaultWorkersFollowCPUs(t *testing.T) {
	bin := buildZenconn(t)
	cmd := exec.Command(bin, "serve", "--help")
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	out, _ := cmd.CombinedOutput()
	m := regexp.MustCompile(`(?m)^\s+-workers int\n.*\(default (\d+)\)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no --workers default in zenconn serve --help:\n%s", out)
	}
	if string(m[1]) != "1" {
		t.Fatalf("--workers default %s with GOMAXPROCS=1, want 1", m[1])
	}
}
