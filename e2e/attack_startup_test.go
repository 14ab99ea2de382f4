package e2e

// Start-up mistakes and secrets, tried from outside against the real binary:
// each configuration mistake ends the start at once (within a few seconds) with
// exit status 2 and the same `zenconn serve: …` line in both modes (--workers 0
// and worker processes); a second node on a served port or on a locked data folder
// is refused; tokens never reach the access log; files are private; secrets stay
// off the workers' command lines; /metrics can be closed or put behind the key;
// failed API keys are audited and limited per address; and sessions cut by an
// agent crash get their disconnect record at the next start.

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// suMustFailFast is how long a refused start may take: it must not wait for
// workers restarting in a loop.
const suMustFailFast = 5 * time.Second

// suModes are the two ways to run a node.
var suModes = []string{"0", "2"}

// suServe runs `zenconn serve` in a fresh folder (with a public folder) with the
// usual flags, then args, and returns its output and exit status.
func suServe(t *testing.T, workers string, args ...string) (string, int) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "public"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := []string{"serve", "--addr", "127.0.0.1:0", "--public", filepath.Join(dir, "public"),
		"--data", filepath.Join(dir, "data"), "--access-log", "off", "--workers", workers}
	return runCLI(t, suMustFailFast, nil, append(base, args...)...)
}

// suErrorLine is the error line of a refused command, `zenconn <cmd>: …`.
var suErrorLine = regexp.MustCompile(`(?m)^zenconn [a-z]+: .*$`)

// suReusePortListener listens on a free loopback port with SO_REUSEPORT, like a
// running node's workers.
func suReusePortListener(t *testing.T) net.Listener {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// TestAttackStartupMistakes: every mistake exits 2 at once, in both modes, with
// the same message naming the flag.
func TestAttackStartupMistakes(t *testing.T) {
	t.Parallel()
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plain.Close() })
	shared := suReusePortListener(t)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error line
	}{
		{"address in use", []string{"--addr", plain.Addr().String()}, "--addr " + plain.Addr().String() + ": another process is already listening"},
		{"port shared with SO_REUSEPORT", []string{"--addr", shared.Addr().String()}, "--addr " + shared.Addr().String() + ": another process is already listening"},
		{"invalid port", []string{"--addr", "127.0.0.1:99999"}, `--addr: invalid port "99999"`},
		{"address without port", []string{"--addr", "nonsense"}, "--addr: address nonsense: missing port"},
		{"access log cannot be opened", []string{"--access-log", "/nonexistent-dir/access.log"}, "--access-log: "},
		{"missing public folder", []string{"--public", "/nonexistent-public"}, "--public: stat /nonexistent-public"},
		{"public is a file", []string{"--public", notDir}, "--public: " + notDir + " is not a folder"},
		{"short api key", []string{"--api-key", "short"}, "--api-key: at least 16 characters"},
		{"metrics key without api key", []string{"--metrics", "key"}, "--metrics=key: needs --api-key"},
		{"metrics typo", []string{"--metrics", "closed"}, `--metrics: "closed" is not open, key or off`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lines := map[string]string{}
			for _, w := range suModes {
				start := time.Now()
				out, code := suServe(t, w, tc.args...)
				if code != 2 {
					t.Fatalf("--workers %s: exit status %d after %v, want 2\n%s", w, code, time.Since(start).Round(time.Millisecond), out)
				}
				line := suErrorLine.FindString(out)
				if !strings.Contains(line, tc.want) {
					t.Fatalf("--workers %s: error line %q does not contain %q\n%s", w, line, tc.want, out)
				}
				lines[w] = line
			}
			if lines["0"] != lines["2"] {
				t.Errorf("messages differ between modes:\n--workers 0: %s\n--workers 2: %s", lines["0"], lines["2"])
			}
		})
	}
}

// TestAttackStartupCLIStyle: every subcommand reports a usage error the same way,
// on one line with exit status 2, and an unknown filter value is one.
func TestAttackStartupCLIStyle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--no-such-flag"}, "zenconn serve: flag provided but not defined: -no-such-flag"},
		{[]string{"serve", "--workers", "300"}, "zenconn serve: --workers: 300 is outside"},
		{[]string{"token", "--no-such-flag"}, "zenconn token: flag provided but not defined"},
		{[]string{"token", "--sub", "x"}, "zenconn token: --secret"},
		{[]string{"status", "--no-such-flag"}, "zenconn status: flag provided but not defined"},
		{[]string{"audit", "--data", dir, "--op", "publsh"}, `zenconn audit: --op: "publsh" is not one of publish`},
		{[]string{"audit", "--url", "http://127.0.0.1:1", "--op", "publsh"}, `zenconn audit: --op: "publsh" is not one of`},
		{[]string{"audit", "--data", dir, "--since", "yesterday"}, "zenconn audit: --since:"},
		{[]string{"sessions", "--data", dir, "--active", "maybe"}, `zenconn sessions: --active: "maybe"`},
		{[]string{"sessions", "--limit", "0", "--data", dir}, "zenconn sessions: --limit: must be"},
	} {
		out, code := runCLI(t, suMustFailFast, nil, tc.args...)
		if code != 2 || !strings.HasPrefix(strings.TrimSpace(out), tc.want) {
			t.Errorf("zenconn %q: exit %d, output %q; want exit 2 and a line starting %q", tc.args, code, out, tc.want)
		}
	}
}

// TestAttackStartupAuditOpUnknown: the API refuses an unknown op with 400.
func TestAttackStartupAuditOpUnknown(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	if status, _, body := apiCall(t, s, "GET", "/api/audit?op=publsh", ibAPIKey, ""); status != http.StatusBadRequest {
		t.Fatalf("GET /api/audit?op=publsh: %d %s, want 400", status, body)
	}
}

// suFreePort is a loopback address with a port free at the time of the call.
func suFreePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestAttackStartupSecondNodeRefused: a second node on the port of a running one
// (whose workers share it with SO_REUSEPORT) is refused; the first keeps serving.
func TestAttackStartupSecondNodeRefused(t *testing.T) {
	t.Parallel()
	for _, w := range suModes {
		t.Run("workers="+w, func(t *testing.T) {
			t.Parallel()
			addr := suFreePort(t)
			first := startServerEnv(t, []string{"ZENCONN_ADDR=" + addr}, "--workers", w, "--audit=false")
			out, code := suServe(t, w, "--addr", addr)
			if code != 2 || !strings.Contains(out, "zenconn serve: --addr "+addr+": another process is already listening") {
				t.Fatalf("second node on %s: exit %d\n%s\nwant exit 2, refused", addr, code, out)
			}
			first.assertServing(t)
		})
	}
}

// TestAttackStartupDataLockedWithoutAudit: --audit=false still locks the data
// folder: a second node on it is refused and the first's API (its agent socket
// in that folder) keeps answering.
func TestAttackStartupDataLockedWithoutAudit(t *testing.T) {
	t.Parallel()
	for _, w := range suModes {
		t.Run("workers="+w, func(t *testing.T) {
			t.Parallel()
			first := startServer(t, "--workers", w, "--audit=false", "--api-key", ibAPIKey)
			out, code := runCLI(t, suMustFailFast, nil, "serve", "--addr", "127.0.0.1:0", "--public", first.Public,
				"--data", first.Data, "--access-log", "off", "--workers", w, "--audit=false", "--api-key", ibAPIKey)
			if code != 2 || !strings.Contains(out, "zenconn serve: --data: "+first.Data+" is in use by another running node") {
				t.Fatalf("second node on %s: exit %d\n%s\nwant exit 2, refused", first.Data, code, out)
			}
			if status, _, body := apiCall(t, first, "GET", "/api/workers", ibAPIKey, ""); status != 200 {
				t.Fatalf("the first node's API after the refused start: %d %s", status, body)
			}
		})
	}
}

// TestAttackStartupPublicOff: --public off serves no files, and starts without a
// public folder.
func TestAttackStartupPublicOff(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--public", "off")
	for path, want := range map[string]int{"/": 404, "/index.html": 404, "/healthz": 200, "/metrics": 200} {
		resp, err := s.HTTP.Get(s.URL(path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s with --public off: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// TestAttackStartupTokenRedacted: a token in the query (grants and all) never
// reaches the access log, however its name is encoded.
func TestAttackStartupTokenRedacted(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--jwt-secret", ibSecret)
	tok := ibToken(t, "alice", ibGrants{Subscribe: []string{"private-team-*"}, Publish: []string{"private-team-*"}})
	c := ibDial(t, s, ibDialOpts{Query: "token=" + tok})
	c.c.Close()
	for _, path := range []string{"/index.html?a=1&token=" + tok + "&b=2", "/index.html?tok%65n=" + tok} {
		req, _ := http.NewRequest("GET", s.URL(path), nil)
		req.Header.Set("Referer", "http://example.com/page?token="+tok)
		resp, err := s.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var log string
	eventually(t, 5*time.Second, func() string {
		b, _ := os.ReadFile(s.AccessLog)
		log = string(b)
		if strings.Count(log, "REDACTED") < 3 {
			return "waiting for three redacted lines in the access log:\n" + log
		}
		return ""
	})
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	if strings.Contains(log, sig) || strings.Contains(log, tok[:strings.IndexByte(tok, '.')+10]) {
		t.Fatalf("the access log holds the token:\n%s", log)
	}
	for _, want := range []string{"/ws?token=REDACTED", "a=1&token=REDACTED&b=2", "tok%65n=REDACTED", "page?token=REDACTED"} {
		if !strings.Contains(log, want) {
			t.Errorf("access log lacks %q:\n%s", want, log)
		}
	}
}

// TestAttackStartupFileModes: everything the node creates in its data folder,
// and its access log, is for its user alone.
func TestAttackStartupFileModes(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	c := s.dialWS(t)
	c.subscribe(1, "modes")
	// A file over the in-memory cache's bound gets its compressed copy on disk.
	if err := os.WriteFile(filepath.Join(s.Public, "huge.txt"), []byte(strings.Repeat("zenconn modes ", 30000)), 0o644); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", s.URL("/huge.txt"), nil)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s.Signal(syscall.SIGTERM)
	if exited, _ := s.WaitExit(10 * time.Second); !exited {
		t.Fatal("the node did not stop")
	}
	var pebble, cache int
	err = filepath.WalkDir(s.Data, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == s.Data { // the folder itself is the test's
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want nothing for group and others", path, fi.Mode().Perm())
		}
		if strings.Contains(path, "pebble") && !d.IsDir() {
			pebble++
		}
		if strings.Contains(path, "compressed") && !d.IsDir() {
			cache++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if pebble == 0 || cache == 0 {
		t.Errorf("%d Pebble files and %d cached files checked, want some of each", pebble, cache)
	}
	fi, err := os.Stat(s.AccessLog)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("access log: %v %v, want mode 0600", fi.Mode(), err)
	}
}

// TestAttackStartupCmdlineWithoutSecrets: --api-key and --jwt-secret reach the
// workers (the API and tokens work through them) but not their command lines.
func TestAttackStartupCmdlineWithoutSecrets(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--workers", "2", "--api-key", ibAPIKey, "--jwt-secret="+ibSecret)
	procs := wkWorkerProcs(s)
	if len(procs) != 2 {
		t.Fatalf("%d worker processes found, want 2", len(procs))
	}
	for _, p := range procs {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		if err != nil {
			t.Fatal(err)
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, ibAPIKey) || strings.Contains(cmdline, ibSecret) ||
			strings.Contains(cmdline, "api-key") || strings.Contains(cmdline, "jwt-secret") {
			t.Errorf("worker %d's command line holds a secret: %s", p.PID, cmdline)
		}
	}
	// Several requests: each lands on either worker.
	for i := 0; i < 6; i++ {
		if status, _, body := apiCall(t, s, "GET", "/api/workers", ibAPIKey, ""); status != 200 {
			t.Fatalf("API with the key through a worker: %d %s", status, body)
		}
		c := ibDial(t, s, ibDialOpts{BearerTok: ibToken(t, "alice", ibGrants{})})
		c.c.Close()
	}
}

// TestAttackStartupMetricsAccess: --metrics=key puts /metrics behind the API key,
// --metrics=off closes it; the default stays open.
func TestAttackStartupMetricsAccess(t *testing.T) {
	t.Parallel()
	get := func(s *serverProc, key string) int {
		req, _ := http.NewRequest("GET", s.URL("/metrics"), nil)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		resp, err := s.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 && !strings.Contains(string(b), "zenconn_") {
			t.Errorf("/metrics answered 200 without zenconn_ families")
		}
		return resp.StatusCode
	}
	keyed := startServer(t, "--api-key", ibAPIKey, "--metrics", "key")
	if got := get(keyed, ""); got != 401 {
		t.Errorf("--metrics=key without the key: %d, want 401", got)
	}
	if got := get(keyed, ibAPIKey); got != 200 {
		t.Errorf("--metrics=key with the key: %d, want 200", got)
	}
	if got := get(startServer(t, "--metrics", "off"), ""); got != 404 {
		t.Errorf("--metrics=off: %d, want 404", got)
	}
	if got := get(startServer(t), ""); got != 200 {
		t.Errorf("default --metrics: %d, want 200", got)
	}
}

// TestAttackStartupAPIKeyFailures: wrong keys from one address are audited
// (refused, attempt api, error unauthorized, the remote address) up to the
// limit, then that address gets 429 on every worker, even with the right key;
// another address is not affected.
func TestAttackStartupAPIKeyFailures(t *testing.T) {
	t.Parallel()
	for _, w := range suModes {
		t.Run("workers="+w, func(t *testing.T) {
			t.Parallel()
			suKeyFailures(t, startServer(t, "--api-key", ibAPIKey, "--workers", w))
		})
	}
}

func suKeyFailures(t *testing.T, s *serverProc) {
	// The attacker comes from 127.0.0.2; the test's own queries from 127.0.0.1.
	attacker := clientFrom(net.IPv4(127, 0, 0, 2))
	try := func(key string) int {
		req, _ := http.NewRequest("GET", s.URL("/api/workers"), nil)
		req.Header.Set("X-API-Key", key)
		resp, err := attacker.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const limit = 10 // keyguard.MaxFailures, documented in README
	for i := 0; i < limit; i++ {
		if got := try(fmt.Sprintf("wrong-key-%02d-xxxxxxxx", i)); got != 401 {
			t.Fatalf("wrong key %d: %d, want 401", i, got)
		}
	}
	// Several tries each: with workers, they land on either.
	for _, key := range []string{"wrong-key-again-xxxxxxxx", ibAPIKey, ibAPIKey, ibAPIKey, ibAPIKey} {
		if got := try(key); got != 429 {
			t.Fatalf("after %d failures, key %q: %d, want 429", limit, key, got)
		}
	}
	if status, _, body := apiCall(t, s, "GET", "/api/workers", ibAPIKey, ""); status != 200 {
		t.Fatalf("another address with the key: %d %s", status, body)
	}
	eventually(t, 5*time.Second, func() string {
		recs, _ := auAuditPage(t, s, "op=refused&limit=100")
		n := 0
		for _, r := range recs {
			if r.Attempt == "api" {
				if r.Error != "unauthorized" || !strings.HasPrefix(r.Remote, "127.0.0.2:") {
					return "refused API record " + r.String() + ": want error unauthorized from 127.0.0.2"
				}
				n++
			}
		}
		if n != limit {
			return fmt.Sprintf("%d refused API records, want %d", n, limit)
		}
		return ""
	})
}

// TestAttackStartupDisconnectAfterAgentKill: a session cut by kill -9 of the agent
// is closed with 1006 at the next start, with its disconnect audit record.
func TestAttackStartupDisconnectAfterAgentKill(t *testing.T) {
	t.Parallel()
	for _, w := range suModes {
		t.Run("workers="+w, func(t *testing.T) {
			t.Parallel()
			suDisconnectAfterKill(t, w)
		})
	}
}

func suDisconnectAfterKill(t *testing.T, workers string) {
	s := startServer(t, "--api-key", ibAPIKey, "--audit-sync", "always", "--workers", workers)
	c := auDial(t, s, "e2e-crash", "")
	// A subscribe in always mode is answered once the session is on disk.
	c.send(`{"id":1,"op":"subscribe","channel":"crash"}`)
	c.expectOp("ack", 1)
	s.Signal(syscall.SIGKILL)
	if exited, _ := s.WaitExit(5 * time.Second); !exited {
		t.Fatal("the agent still runs 5 s after SIGKILL")
	}
	s2 := s.restart(t)
	recs, _ := auAuditPage(t, s2, "op=disconnect&limit=100")
	for _, r := range recs {
		if r.Conn == c.ID {
			if r.Code != 1006 {
				t.Fatalf("disconnect record %s: code %d, want 1006", r, r.Code)
			}
			return
		}
	}
	t.Fatalf("no disconnect record for %s after the restart; records: %v", c.ID, recs)
}
