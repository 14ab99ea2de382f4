package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/zenconn/server/engine"
)

// TestCheckAloneSeesAnotherListener: two placeholders on one port (two nodes
// starting at the same moment, both past the probe) each see the other.
func TestCheckAloneSeesAnotherListener(t *testing.T) {
	a, err := engine.ListenReusePort("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	at := a.Addr().(*net.TCPAddr)
	if err := checkAlone(a, at); err != nil {
		t.Fatalf("one listener: %v, want none", err)
	}
	b, err := engine.ListenReusePort(at.String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for name, ln := range map[string]net.Listener{"first": a, "second": b} {
		if err := checkAlone(ln, at); err != errPortServed {
			t.Errorf("%s of two listeners: %v, want errPortServed", name, err)
		}
	}
}

// TestClaimPort: a port served by another socket is refused, with or
// without SO_REUSEPORT; a free one is reserved until the placeholder closes.
func TestClaimPort(t *testing.T) {
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	shared, err := engine.ListenReusePort("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	for _, addr := range []string{plain.Addr().String(), shared.Addr().String()} {
		if _, ph, err := claimPort("--addr", addr); err == nil || !strings.Contains(err.Error(), "--addr "+addr+": another process") {
			if ph != nil {
				ph.Close()
			}
			t.Errorf("claimPort(%s) = %v, want refused", addr, err)
		}
	}
	for _, addr := range []string{"nonsense", "127.0.0.1:99999", "127.0.0.1:http"} {
		if _, _, err := claimPort("--addr", addr); err == nil || !strings.HasPrefix(err.Error(), "--addr") {
			t.Errorf("claimPort(%s) = %v, want an --addr error", addr, err)
		}
	}
	addr, ph, err := claimPort("--addr", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := claimPort("--addr", addr); err == nil {
		t.Errorf("claimPort(%s) while reserved: no error", addr)
	}
	ph.Close()
}

func TestParseProcAddr(t *testing.T) {
	ip, port, ok := parseProcAddr("0100007F:1F90")
	if !ok || !ip.Equal(net.IPv4(127, 0, 0, 1)) || port != 8080 {
		t.Errorf("v4: %v %d %v", ip, port, ok)
	}
	ip, port, ok = parseProcAddr("00000000000000000000000001000000:0050")
	if !ok || !ip.Equal(net.IPv6loopback) || port != 80 {
		t.Errorf("v6: %v %d %v", ip, port, ok)
	}
	if _, _, ok := parseProcAddr("zz:1"); ok {
		t.Error("bad address parsed")
	}
}

// TestClaimDataLocks: the data folder's lock holds against a second claim
// until released.
func TestClaimDataLocks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	release, err := claimData(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != dirMode {
		t.Errorf("data folder %v %v, want mode %o", fi.Mode(), err, dirMode)
	}
	if _, err := claimData(dir); err == nil || !strings.Contains(err.Error(), "in use by another running node") {
		t.Errorf("second claim: %v, want in use", err)
	}
	release()
	release2, err := claimData(dir)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	release2()
}

func TestCheckPublic(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for public, ok := range map[string]bool{dir: true, "off": true, "": true, file: false, filepath.Join(dir, "missing"): false} {
		err := checkPublic(public)
		if (err == nil) != ok || (err != nil && !strings.HasPrefix(err.Error(), "--public: ")) {
			t.Errorf("checkPublic(%q) = %v, want ok=%v", public, err, ok)
		}
	}
}

func TestWithoutSecrets(t *testing.T) {
	args := []string{"--addr", ":1", "--api-key", "K1", "-api-key=K2", "--jwt-secret", "S1", "--jwt-secret=S2",
		"--public", "p", "--", "--api-key"}
	got := withoutSecrets(args)
	want := []string{"--addr", ":1", "--public", "p", "--", "--api-key"}
	if !slices.Equal(got, want) {
		t.Fatalf("withoutSecrets = %q, want %q", got, want)
	}
	o := serveOptions{apiKey: "K", jwtSecret: "S"}
	env := workerEnv(&o)
	if !slices.Contains(env, "ZENCONN_API_KEY=K") || !slices.Contains(env, "ZENCONN_JWT_SECRET=S") {
		t.Fatalf("worker environment lacks the secrets")
	}
}

// TestUsageErrorStyle: one line per problem, `zenconn <cmd>: <problem>`, exit 2.
func TestUsageErrorStyle(t *testing.T) {
	var b bytes.Buffer
	code := usageError(&b, "serve", errorsJoin("--a: x", "--b: y"))
	if code != exitUsage || b.String() != "zenconn serve: --a: x\nzenconn serve: --b: y\n" {
		t.Fatalf("usageError: %d %q", code, b.String())
	}
	for _, args := range [][]string{{"--api-key", "short"}, {"--addr", "nonsense", "--data", t.TempDir()}, {"--metrics", "key"}} {
		if code := serve(args); code != exitUsage {
			t.Errorf("serve %q: exit %d, want %d", args, code, exitUsage)
		}
	}
}

func errorsJoin(msgs ...string) error {
	return &joined{strings.Join(msgs, "\n")}
}

type joined struct{ s string }

func (j *joined) Error() string { return j.s }

// TestListenersDiagAgreesWithProc: the kernel's socket diagnostics find
// the same listeners on a port as /proc/net/tcp, without the one skipped,
// and nothing on a port no one listens on.
func TestListenersDiagAgreesWithProc(t *testing.T) {
	a, err := engine.ListenReusePort("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := engine.ListenReusePort(a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	port := a.Addr().(*net.TCPAddr).Port
	own, err := socketInode(a)
	if err != nil {
		t.Fatal(err)
	}
	diag, err := listenersDiag(syscall.AF_INET, port, own)
	if err != nil {
		t.Fatalf("sock_diag: %v", err)
	}
	proc, err := listenersOn("/proc/net/tcp", port, own)
	if err != nil {
		t.Fatal(err)
	}
	if len(diag) != 1 || !diag[0].Equal(net.IPv4(127, 0, 0, 1)) || len(proc) != 1 || !proc[0].Equal(diag[0]) {
		t.Fatalf("listeners on %d besides the first: sock_diag %v, /proc %v; want [127.0.0.1] from both", port, diag, proc)
	}
	if none, err := listenersDiag(syscall.AF_INET6, port, own); err != nil || len(none) != 0 {
		t.Fatalf("IPv6 listeners on %d: %v, %v; want none", port, none, err)
	}
}
