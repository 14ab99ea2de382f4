package e2e

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// combinedRE is the Apache/nginx combined log format.
var combinedRE = regexp.MustCompile(`^(\S+) (\S+) (\S+) \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"$`)

const clfTime = "02/Jan/2006:15:04:05 -0700"

type logLine struct {
	host, ident, user string
	time              time.Time
	request           string
	status            string
	bytes             string
	referer, agent    string
	raw               string
}

// readAccessLog parses every line of path; a line that is not in the combined format is
// an error.
func readAccessLog(path string) ([]logLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []logLine
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		g := combinedRE.FindStringSubmatch(line)
		if g == nil {
			return out, fmt.Errorf("%s line %d is not in the combined format: %q", path, i+1, line)
		}
		ts, err := time.Parse(clfTime, g[4])
		if err != nil {
			return out, fmt.Errorf("%s line %d: time %q is not like 26/Nov/2026:21:40:00 +0000: %v", path, i+1, g[4], err)
		}
		out = append(out, logLine{g[1], g[2], g[3], ts, g[5], g[6], g[7], g[8], g[9], line})
	}
	return out, nil
}

// waitLogLine polls the access log until a line's request field equals request.
func waitLogLine(t *testing.T, path, request string, timeout time.Duration) logLine {
	t.Helper()
	var found logLine
	eventually(t, timeout, func() string {
		lines, err := readAccessLog(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, l := range lines {
			if l.request == request {
				found = l
				return ""
			}
		}
		return fmt.Sprintf("no line for %q in %s (%d lines)", request, path, len(lines))
	})
	return found
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	const agent, referer = "zenconn-e2e/1.0 (access log)", "http://e2e.test/from"

	type want struct {
		method, path, status, bytes string
		headers                     []string
	}
	reqs := []want{
		{"GET", "/index.html?log=1", "200", fmt.Sprint(len(fixtureIndex)), nil},
		{"GET", "/big.txt", "200", fmt.Sprint(bigSize), nil},
		{"GET", "/big.txt?range=1", "206", "100", []string{"Range: bytes=0-99"}},
		{"GET", "/missing-log.txt", "404", "", nil},
		{"POST", "/index.html?log=post", "405", "", nil},
		{"HEAD", "/index.html?log=head", "200", "", nil},
	}
	sent := time.Now()
	for _, r := range reqs {
		hs := append([]string{"User-Agent: " + agent, "Referer: " + referer}, r.headers...)
		s.get(t, r.method, r.path, hs...)
	}
	ws := s.dialWS(t) // the handshake is logged (101) while the connection stays open

	for _, r := range reqs {
		l := waitLogLine(t, s.AccessLog, r.method+" "+r.path+" HTTP/1.1", 3*time.Second)
		if l.status != r.status {
			t.Errorf("%q: status %s, want %s", l.raw, l.status, r.status)
		}
		if r.bytes != "" && l.bytes != r.bytes {
			t.Errorf("%q: bytes %s, want %s", l.raw, l.bytes, r.bytes)
		}
		if l.host != "127.0.0.1" || l.agent != agent || l.referer != referer {
			t.Errorf("%q: host %q agent %q referer %q, want 127.0.0.1 %q %q", l.raw, l.host, l.agent, l.referer, agent, referer)
		}
		if d := l.time.Sub(sent); d < -2*time.Second || d > time.Minute {
			t.Errorf("%q: time %v is %v away from the request", l.raw, l.time, d)
		}
	}
	l := waitLogLine(t, s.AccessLog, "GET /ws HTTP/1.1", 3*time.Second)
	if l.status != "101" {
		t.Errorf("WebSocket handshake logged as %q, want status 101", l.raw)
	}
	ws.pingPong()

	// Every line of the file, including /healthz from start-up, is in the combined format.
	if _, err := readAccessLog(s.AccessLog); err != nil {
		t.Fatal(err)
	}
}

func TestAccessLogLatency(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	// A line appears within ~2 s of the request (the log is flushed periodically).
	for i := 0; i < 3; i++ {
		path := fmt.Sprintf("/latency-%d", i)
		start := time.Now()
		s.get(t, "GET", path)
		waitLogLine(t, s.AccessLog, "GET "+path+" HTTP/1.1", 2500*time.Millisecond)
		t.Logf("%s logged after %v", path, time.Since(start).Round(time.Millisecond))
	}
}

func TestAccessLogReopen(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	s.get(t, "GET", "/before-rotate")
	waitLogLine(t, s.AccessLog, "GET /before-rotate HTTP/1.1", 3*time.Second)

	rotated := s.AccessLog + ".1"
	if err := os.Rename(s.AccessLog, rotated); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGUSR1)

	// Requests made before the server handles the signal may still go to the old file;
	// keep making them until one lands in a new file at the original path.
	i := 0
	eventually(t, 5*time.Second, func() string {
		i++
		s.get(t, "GET", fmt.Sprintf("/after-rotate-%d", i))
		lines, err := readAccessLog(s.AccessLog)
		if err != nil {
			return err.Error()
		}
		for _, l := range lines {
			if strings.HasPrefix(l.request, "GET /after-rotate-") {
				return ""
			}
		}
		return fmt.Sprintf("%d lines in the new file, none for /after-rotate-*", len(lines))
	})
	old, err := readAccessLog(rotated)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range old {
		found = found || l.request == "GET /before-rotate HTTP/1.1"
	}
	if !found {
		t.Fatalf("the rotated file lost the line written before rotation")
	}
	if s.Exited() {
		t.Fatalf("server exited on SIGUSR1")
	}
	s.assertServing(t)
}

// TestAccessLogHostileInput: client-controlled fields (path, User-Agent, Referer) must
// not break the line format: quotes and control bytes are escaped, so every line still
// matches the combined format and there is one line per request.
func TestAccessLogHostileInput(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, req := range []string{
		rawRequest("GET", "/hostile-1", `User-Agent: evil" 200 - "injected`, `Referer: x"y`),
		rawRequest("GET", `/hostile-2?q="quoted"`, "User-Agent: tab\there"),
		rawRequest("GET", "/hostile-3", "User-Agent: \x1b[31mred\x1b[0m"), // may be refused (400)
		rawRequest("GET", "/hostile-done"),
	} {
		c := s.dialRaw(t)
		c.write(req)
		resp, _ := c.readResponse("GET")
		t.Logf("%.40q: status %d", req, resp.StatusCode)
	}
	// With worker processes each writes its own lines, so the lines of
	// requests served by different workers need not arrive in request
	// order: wait for all four.
	var b []byte
	eventually(t, 3*time.Second, func() string {
		var err error
		if b, err = os.ReadFile(s.AccessLog); err != nil {
			return err.Error()
		}
		lines, err := readAccessLog(s.AccessLog)
		if err != nil {
			return fmt.Sprintf("%v\n%s", err, b)
		}
		have := map[string]bool{}
		for _, l := range lines {
			for _, p := range []string{"/hostile-1 ", "/hostile-2?", "/hostile-3 ", "/hostile-done "} {
				if strings.Contains(l.request, p) {
					have[p] = true
				}
			}
			if l.status == "400" { // /hostile-3 may be refused before its request line is kept
				have["/hostile-3 "] = true
			}
		}
		if len(have) != 4 {
			return fmt.Sprintf("lines found for %v, want all 4 /hostile-* requests:\n%s", have, b)
		}
		return ""
	})
	if bytes.ContainsAny(b, "\x1b\t") {
		t.Errorf("control bytes from the request written to the log unescaped")
	}
}

// TestAccessLogRejectedRequests: requests the server refuses before routing (400, 431)
// are requests too and get their line. (The request field may be "-".)
func TestAccessLogRejectedRequests(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.dialRaw(t)
	c.write("GARBAGE\r\n\r\n")
	if resp, _ := c.readResponse("GET"); resp.StatusCode != 400 {
		t.Fatalf("garbage: status %d, want 400", resp.StatusCode)
	}
	c = s.dialRaw(t)
	c.write(rawRequest("GET", "/too-big-head", "X-Pad: "+strings.Repeat("a", 17<<10)))
	if resp, _ := c.readResponse("GET"); resp.StatusCode != 431 {
		t.Fatalf("big head: status %d, want 431", resp.StatusCode)
	}
	c = s.dialRaw(t)
	c.write(rawRequest("GET", "/ws", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"))
	if resp, _ := c.readResponse("GET"); resp.StatusCode != 400 {
		t.Fatalf("handshake without key: status %d, want 400", resp.StatusCode)
	}
	eventually(t, 3*time.Second, func() string {
		lines, err := readAccessLog(s.AccessLog)
		if err != nil {
			return err.Error()
		}
		got := map[string]bool{}
		for _, l := range lines {
			got[l.status] = true
			if l.request == "GET /ws HTTP/1.1" && l.status == "400" {
				got["ws400"] = true
			}
		}
		if got["400"] && got["431"] && got["ws400"] {
			return ""
		}
		var st []string
		for _, l := range lines {
			st = append(st, l.status+" "+l.request)
		}
		return fmt.Sprintf("want lines with 400 (garbage), 431 and 400 for GET /ws; have: %q", st)
	})
}
