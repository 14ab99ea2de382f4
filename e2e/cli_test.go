package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var serveFlags = []string{"--addr", "--public", "--data", "--access-log", "--workers", "--max-message", "--log-level"}

func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"serve", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, code := runCLI(t, 10*time.Second, nil, args...)
			if code != 0 {
				t.Fatalf("exit status %d, want 0\n%s", code, out)
			}
			for _, f := range serveFlags {
				// Go's flag package prints "-addr"; accept either spelling.
				if !strings.Contains(out, f) && !strings.Contains(out, " "+f[1:]) {
					t.Errorf("output does not mention %s", f)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
}

func TestCLIWorkersOutOfRange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out, code := runCLI(t, 10*time.Second, nil, "serve",
		"--addr", "127.0.0.1:0",
		"--public", dir,
		"--data", filepath.Join(dir, "data"),
		"--access-log", filepath.Join(dir, "access.log"),
		"--workers", "257")
	if code == 0 {
		t.Fatalf("--workers 257 exited 0, want a non-zero status\n%s", out)
	}
	if !strings.Contains(strings.ToLower(out), "workers") {
		t.Fatalf("error does not mention workers:\n%s", out)
	}
}

func TestCLIEnvAddr(t *testing.T) {
	t.Parallel()
	s := startServerEnv(t, []string{"ZENCONN_ADDR=127.0.0.1:0"})
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") || strings.HasSuffix(s.Addr, ":0") {
		t.Fatalf("listening on %q, want 127.0.0.1:<ephemeral port>", s.Addr)
	}
	for _, a := range s.cmd.Args {
		if a == "--addr" {
			t.Fatalf("test bug: --addr passed with ZENCONN_ADDR")
		}
	}
	s.assertServing(t)
}

// TestCLIInvalidSettings: a bad value stops the server at start-up with a non-zero
// status and an error naming the setting.
func TestCLIInvalidSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		args    []string
		env     []string
		mention string
	}{
		{"log level", []string{"--log-level", "loud"}, nil, "log-level"},
		{"max message", []string{"--max-message", "lots"}, nil, "max-message"},
		{"negative max message", []string{"--max-message", "-1"}, nil, "max-message"},
		{"ping interval", []string{"--ping-interval", "soon"}, nil, "ping-interval"},
		{"negative ping rate", []string{"--ping-rate", "-1"}, nil, "ping-rate"},
		{"negative workers", []string{"--workers", "-1"}, nil, "workers"},
		{"unknown flag", []string{"--no-such-flag"}, nil, "no-such-flag"},
		{"env log level", nil, []string{"ZENCONN_LOG_LEVEL=loud"}, "log"},
		{"address in use", []string{"--addr", "in-use"}, nil, "addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			addr, extra := "127.0.0.1:0", tc.args
			if len(extra) == 2 && extra[0] == "--addr" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				addr, extra = ln.Addr().String(), nil
			}
			args := []string{"serve",
				"--addr", addr,
				"--public", dir,
				"--data", filepath.Join(dir, "data"),
				"--access-log", filepath.Join(dir, "access.log"),
				"--workers", "0"}
			args = append(args, extra...)
			out, code := runCLI(t, 10*time.Second, tc.env, args...)
			if code == 0 {
				t.Fatalf("exit status 0, want non-zero\n%s", out)
			}
			if !strings.Contains(strings.ToLower(out), tc.mention) {
				t.Fatalf("exit %d; output does not mention %q:\n%s", code, tc.mention, out)
			}
		})
	}
}
