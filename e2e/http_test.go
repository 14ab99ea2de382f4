package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"
)

func TestHealthz(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	resp, err := s.HTTP.Get(s.URL("/healthz"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("GET /healthz = %d %q, want 200 ok", resp.StatusCode, body)
	}
}

func TestHTTPKeepAlive(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	t.Run("net/http reuses the connection", func(t *testing.T) {
		var reused []bool
		for i := 0; i < 3; i++ {
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) }}
			req, _ := http.NewRequest("GET", s.URL("/index.html"), nil)
			req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
			resp, err := s.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != fixtureIndex {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
			}
		}
		if len(reused) != 3 || !reused[1] || !reused[2] {
			t.Fatalf("connection reuse per request = %v, want [false true true]", reused)
		}
	})

	t.Run("sequential requests on one socket", func(t *testing.T) {
		c := s.dialRaw(t)
		for i, path := range []string{"/healthz", "/index.html", "/missing.txt", "/healthz"} {
			c.write(rawRequest("GET", path))
			resp, body := c.readResponse("GET")
			if resp.Close {
				t.Fatalf("request %d (%s): server closed a keep-alive connection (Connection: close)", i, path)
			}
			want := map[string]int{"/healthz": 200, "/index.html": 200, "/missing.txt": 404}[path]
			if resp.StatusCode != want {
				t.Fatalf("request %d (%s): status %d, want %d; body %q", i, path, resp.StatusCode, want, body)
			}
		}
	})
}

func TestHTTPPipelining(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.dialRaw(t)
	// Three requests in one write; the responses must come back whole and in order.
	c.write(rawRequest("GET", "/index.html") + rawRequest("GET", "/big.txt") + rawRequest("GET", "/healthz") + rawRequest("HEAD", "/sub/"))
	want := []struct {
		method, body string
	}{
		{"GET", fixtureIndex},
		{"GET", string(fixtureBig)},
		{"GET", "ok"},
		{"HEAD", ""},
	}
	for i, w := range want {
		resp, body := c.readResponse(w.method)
		if resp.StatusCode != 200 {
			t.Fatalf("response %d: status %d, want 200", i, resp.StatusCode)
		}
		got := string(body)
		if w.body == "ok" {
			got = strings.TrimSpace(got)
		}
		if got != w.body {
			t.Fatalf("response %d: body (%d bytes) %.80q, want %.80q: responses out of order or mangled", i, len(body), got, w.body)
		}
	}
}

func TestHTTPSplitInput(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	req := rawRequest("GET", "/index.html", "User-Agent: split-test", "Accept: */*")
	cases := []struct {
		name  string
		split []int // cut points into req
	}{
		{"inside method", []int{2}},
		{"inside path", []int{7}},
		{"between header lines", []int{strings.Index(req, "\r\n") + 2}},
		{"inside CRLF CRLF", []int{len(req) - 3, len(req) - 1}},
		{"every 5 bytes", every(len(req), 5)},
		{"byte by byte", every(len(req), 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialRaw(t)
			prev := 0
			for _, cut := range append(tc.split, len(req)) {
				c.write(req[prev:cut])
				prev = cut
				// Not synchronization: a gap so the pieces arrive as separate segments
				// and the server's parser sees a partial request head.
				time.Sleep(2 * time.Millisecond)
			}
			resp, body := c.readResponse("GET")
			if resp.StatusCode != 200 || string(body) != fixtureIndex {
				t.Fatalf("status %d body %.80q, want 200 with index.html", resp.StatusCode, body)
			}
			// The connection is still usable afterwards.
			c.write(rawRequest("GET", "/healthz"))
			if resp, _ := c.readResponse("GET"); resp.StatusCode != 200 {
				t.Fatalf("follow-up request: status %d", resp.StatusCode)
			}
		})
	}
}

func every(n, step int) []int {
	var cuts []int
	for i := step; i < n; i += step {
		cuts = append(cuts, i)
	}
	return cuts
}

func TestHTTPLargeHead(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	head := func(size int) string {
		// Pad with a header so the whole head is about size bytes.
		base := rawRequest("GET", "/index.html")
		pad := size - len(base) - len("X-Pad: \r\n")
		return strings.TrimSuffix(base, "\r\n") + "X-Pad: " + strings.Repeat("a", pad) + "\r\n\r\n"
	}

	t.Run("12 KiB head is accepted", func(t *testing.T) {
		c := s.dialRaw(t)
		c.write(head(12 << 10))
		resp, body := c.readResponse("GET")
		if resp.StatusCode != 200 || string(body) != fixtureIndex {
			t.Fatalf("status %d, want 200 (heads up to 16 KiB are allowed)", resp.StatusCode)
		}
	})
	for _, size := range []int{16<<10 + 1, 17 << 10, 64 << 10} {
		t.Run(fmt.Sprintf("%d-byte head", size), func(t *testing.T) {
			c := s.dialRaw(t)
			c.write(head(size))
			resp, _ := c.readResponse("GET")
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("%d-byte head: status %d, want 431", size, resp.StatusCode)
			}
			s.assertServing(t)
		})
	}
}

func TestHTTPGarbageRequestLine(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, line := range []string{
		"GARBAGE",
		"\x01\x02\x03\x04\x05",
		"GET",
		"GET /index.html HTTP/1.1 trailing junk",
		"GET /index.html XTTP/9.9",
	} {
		t.Run(line, func(t *testing.T) {
			c := s.dialRaw(t)
			c.write(line + "\r\nHost: e2e.test\r\n\r\n")
			resp, body := c.readResponse("GET")
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("request line %q: status %d body %.80q, want 400", line, resp.StatusCode, body)
			}
			s.assertServing(t)
		})
	}
}

func TestHTTPMethodNotAllowed(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, method := range []string{"POST", "PUT", "DELETE", "PATCH"} {
		for _, path := range []string{"/index.html", "/big.txt", "/"} {
			t.Run(method+" "+path, func(t *testing.T) {
				req, _ := http.NewRequest(method, s.URL(path), strings.NewReader("payload"))
				resp, err := s.HTTP.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusMethodNotAllowed {
					t.Fatalf("status %d, want 405", resp.StatusCode)
				}
				allow := resp.Header.Get("Allow")
				if !hasToken(allow, "GET") || !hasToken(allow, "HEAD") {
					t.Fatalf("Allow: %q, want GET and HEAD listed", allow)
				}
			})
		}
	}

	t.Run("request body is consumed on keep-alive", func(t *testing.T) {
		c := s.dialRaw(t)
		c.write("POST /index.html HTTP/1.1\r\nHost: e2e.test\r\nContent-Length: 11\r\n\r\nhello world" + rawRequest("GET", "/healthz"))
		resp, _ := c.readResponse("POST")
		if resp.StatusCode != 405 {
			t.Fatalf("status %d, want 405", resp.StatusCode)
		}
		if resp.Close {
			return // the server chose to close; that is allowed
		}
		resp, body := c.readResponse("GET")
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
			t.Fatalf("request after the POST: %d %q: the POST body was not consumed", resp.StatusCode, body)
		}
	})
	s.assertServing(t)
}

// hasToken reports whether the comma-separated header value lists tok.
func hasToken(v, tok string) bool {
	for _, f := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(f), tok) {
			return true
		}
	}
	return false
}

// TestHTTPIdleTimeout: --idle-timeout also closes silent HTTP connections, idle
// keep-alive ones and ones stalled in the middle of a request head (slowloris).
func TestHTTPIdleTimeout(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--idle-timeout", "2s", "--ping-interval", "1s")
	for _, tc := range []struct{ name, send string }{
		{"idle keep-alive", ""},
		{"partial head", "GET /index.html HTTP/1.1\r\nHost: e2e"},
		{"nothing sent", "-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := s.dialRaw(t)
			switch tc.send {
			case "":
				c.write(rawRequest("GET", "/healthz"))
				c.readResponse("GET")
			case "-":
			default:
				c.write(tc.send)
			}
			start := time.Now()
			_ = c.conn.SetReadDeadline(time.Now().Add(8 * time.Second))
			n, err := io.Copy(io.Discard, c.br)
			el := time.Since(start)
			if isTimeout(err) {
				t.Fatalf("connection still open %v later with --idle-timeout 2s", el.Round(time.Millisecond))
			}
			t.Logf("closed after %v (%d bytes: %v)", el.Round(time.Millisecond), n, err)
			if el < 1500*time.Millisecond {
				t.Errorf("closed after %v, before the 2 s idle timeout", el)
			}
		})
	}
}
