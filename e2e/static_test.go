package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

// get performs a request with headers ("Name: value") and returns the response and body.
func (s *serverProc) get(t *testing.T, method, path string, headers ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp, body
}

func TestStaticIndex(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, tc := range []struct{ path, want string }{
		{"/", fixtureIndex},
		{"/index.html", fixtureIndex},
		{"/sub/", fixtureSubIndex},
		{"/sub", fixtureSubIndex}, // directly or through a redirect to /sub/
		{"/sub/index.html", fixtureSubIndex},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := s.get(t, "GET", tc.path)
			if resp.StatusCode != 200 || string(body) != tc.want {
				t.Fatalf("status %d body %.80q, want 200 %.80q", resp.StatusCode, body, tc.want)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
				t.Fatalf("Content-Type %q, want text/html", ct)
			}
		})
	}
}

func TestStaticContentType(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, tc := range []struct{ path, want string }{
		{"/big.txt", "text/plain; charset=utf-8"},
		{"/index.html", "text/html; charset=utf-8"},
		{"/logo.png", "image/png"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := s.get(t, "GET", tc.path)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.want {
				t.Fatalf("Content-Type %q, want %q", ct, tc.want)
			}
			if tc.path == "/big.txt" {
				if !bytes.Equal(body, fixtureBig) {
					t.Fatalf("body: %d bytes differ from the %d-byte file", len(body), len(fixtureBig))
				}
				if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(bigSize) {
					t.Fatalf("Content-Length %q, want %d", cl, bigSize)
				}
			}
		})
	}
}

func TestStaticConditional(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	resp, _ := s.get(t, "GET", "/big.txt")
	etag := resp.Header.Get("ETag")
	lastMod := resp.Header.Get("Last-Modified")
	if etag == "" {
		t.Errorf("no ETag header; headers: %v", resp.Header)
	}
	if lastMod == "" {
		t.Fatalf("no Last-Modified header; headers: %v", resp.Header)
	}
	if _, err := http.ParseTime(lastMod); err != nil {
		t.Errorf("Last-Modified %q is not an HTTP date: %v", lastMod, err)
	}

	check := func(name string, wantStatus int, headers ...string) {
		t.Run(name, func(t *testing.T) {
			resp, body := s.get(t, "GET", "/big.txt", headers...)
			if resp.StatusCode != wantStatus {
				t.Fatalf("%v: status %d, want %d", headers, resp.StatusCode, wantStatus)
			}
			if wantStatus == 304 && len(body) != 0 {
				t.Fatalf("304 with a %d-byte body", len(body))
			}
			if wantStatus == 200 && !bytes.Equal(body, fixtureBig) {
				t.Fatalf("200 with a wrong body (%d bytes)", len(body))
			}
		})
	}
	if etag != "" {
		check("If-None-Match matching", 304, "If-None-Match: "+etag)
		check("If-None-Match in a list", 304, `If-None-Match: "nope", `+etag)
		check("If-None-Match other", 200, `If-None-Match: "zenconn-e2e-other"`)
	}
	check("If-Modified-Since equal", 304, "If-Modified-Since: "+lastMod)
	check("If-Modified-Since old", 200, "If-Modified-Since: Mon, 02 Jan 2006 15:04:05 GMT")
}

func TestStaticRange(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, tc := range []struct {
		rng        string
		start, end int // inclusive
	}{
		{"bytes=0-99", 0, 99},
		{"bytes=100-199", 100, 199},
		{"bytes=65530-", 65530, bigSize - 1},
		{"bytes=-10", bigSize - 10, bigSize - 1},
	} {
		t.Run(tc.rng, func(t *testing.T) {
			resp, body := s.get(t, "GET", "/big.txt", "Range: "+tc.rng)
			if resp.StatusCode != http.StatusPartialContent {
				t.Fatalf("status %d, want 206", resp.StatusCode)
			}
			want := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, bigSize)
			if cr := resp.Header.Get("Content-Range"); cr != want {
				t.Fatalf("Content-Range %q, want %q", cr, want)
			}
			if !bytes.Equal(body, fixtureBig[tc.start:tc.end+1]) {
				t.Fatalf("body %.40q (%d bytes), want bytes %d-%d of the file", body, len(body), tc.start, tc.end)
			}
		})
	}
	t.Run("unsatisfiable", func(t *testing.T) {
		resp, _ := s.get(t, "GET", "/big.txt", "Range: bytes=70000-80000")
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("status %d, want 416", resp.StatusCode)
		}
	})
}

func TestStaticCompression(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	decoders := map[string]func(io.Reader) (io.Reader, error){
		"gzip": func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) },
		"br":   func(r io.Reader) (io.Reader, error) { return brotli.NewReader(r), nil },
	}
	for _, enc := range []string{"gzip", "br"} {
		t.Run(enc, func(t *testing.T) {
			resp, body := s.get(t, "GET", "/big.txt", "Accept-Encoding: "+enc)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if ce := resp.Header.Get("Content-Encoding"); ce != enc {
				t.Fatalf("Content-Encoding %q, want %q", ce, enc)
			}
			if len(body) >= len(fixtureBig) {
				t.Errorf("compressed body is %d bytes, not smaller than %d", len(body), len(fixtureBig))
			}
			r, err := decoders[enc](bytes.NewReader(body))
			if err != nil {
				t.Fatalf("decoding %s: %v", enc, err)
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("decoding %s: %v", enc, err)
			}
			if !bytes.Equal(plain, fixtureBig) {
				t.Fatalf("decoded body (%d bytes) differs from the file (%d bytes)", len(plain), len(fixtureBig))
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q with %s, want the file's type", ct, enc)
			}
		})
	}
	t.Run("gzip, br preference list", func(t *testing.T) {
		resp, body := s.get(t, "GET", "/big.txt", "Accept-Encoding: gzip, deflate, br")
		ce := resp.Header.Get("Content-Encoding")
		dec, ok := decoders[ce]
		if !ok {
			t.Fatalf("Content-Encoding %q, want gzip or br", ce)
		}
		r, err := dec(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(plain, fixtureBig) {
			t.Fatalf("decoded body wrong (%d bytes, %v)", len(plain), err)
		}
	})
	t.Run("identity without Accept-Encoding", func(t *testing.T) {
		resp, body := s.get(t, "GET", "/big.txt")
		if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
			t.Fatalf("Content-Encoding %q without Accept-Encoding", ce)
		}
		if !bytes.Equal(body, fixtureBig) {
			t.Fatalf("body differs")
		}
	})
	t.Run("png is not compressed", func(t *testing.T) {
		resp, body := s.get(t, "GET", "/logo.png", "Accept-Encoding: gzip, br")
		if ce := resp.Header.Get("Content-Encoding"); ce != "" && ce != "identity" {
			t.Fatalf("Content-Encoding %q for an incompressible image/png", ce)
		}
		if !bytes.Equal(body, fixturePNG) {
			t.Fatalf("body differs")
		}
	})
}

func TestStaticHead(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.dialRaw(t)
	// HEAD then GET on the same connection: if HEAD sent a body, the second response
	// would be read from the middle of it.
	c.write(rawRequest("HEAD", "/big.txt") + rawRequest("GET", "/healthz"))
	resp, _ := c.readResponse("HEAD")
	if resp.StatusCode != 200 {
		t.Fatalf("HEAD status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("HEAD Content-Type %q", ct)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(bigSize) {
		t.Errorf("HEAD Content-Length %q, want %d", cl, bigSize)
	}
	if resp.Header.Get("Last-Modified") == "" {
		t.Errorf("HEAD without Last-Modified")
	}
	resp, body := c.readResponse("GET")
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("response after HEAD: %d %.80q: HEAD response carried a body", resp.StatusCode, body)
	}
}

func TestStaticNotFound(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, path := range []string{"/missing.html", "/sub/missing.txt", "/no/such/dir/", "/index.html/extra"} {
		t.Run(path, func(t *testing.T) {
			resp, _ := s.get(t, "GET", path)
			if resp.StatusCode != 404 {
				t.Fatalf("status %d, want 404", resp.StatusCode)
			}
		})
	}
}

func TestStaticPathTraversal(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, target := range []string{
		"/../secret",
		"/%2e%2e/secret",
		"/..%2fsecret",
		"/%2e%2e%2fsecret",
		"/.%2e/secret",
		"/%2E%2E/secret",
		"/sub/../../secret",
		"/sub/%2e%2e/%2e%2e/secret",
		"/..%5csecret",
		"/%2e%2e%5csecret",
		"/./../secret",
		"//../secret",
		"/..",
		"/../",
		"/../public/../secret",
	} {
		t.Run(target, func(t *testing.T) {
			c := s.dialRaw(t)
			c.write(rawRequest("GET", target))
			resp, body, err := c.tryReadResponse("GET")
			if err != nil {
				// Closing the connection is an acceptable answer; serving is not.
				t.Logf("no response: %v", err)
				if bytes.Contains(body, []byte("TOP-SECRET")) {
					t.Fatalf("the file outside --public was served")
				}
				return
			}
			t.Logf("status %d, %d-byte body", resp.StatusCode, len(body))
			if bytes.Contains(body, []byte("TOP-SECRET")) {
				t.Fatalf("status %d: the file outside --public was served", resp.StatusCode)
			}
			if resp.StatusCode < 300 || resp.StatusCode >= 500 {
				// /.. and /../ may fall back to the root index; anything else is a leak or a crash.
				if !(resp.StatusCode == 200 && string(body) == fixtureIndex) {
					t.Fatalf("status %d body %.80q, want a 3xx/4xx refusal", resp.StatusCode, body)
				}
			}
		})
	}
	s.assertServing(t)
}

func TestStaticDotfiles(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, path := range []string{"/.env", "/.git/config", "/.git/", "/.git", "/%2eenv", "/sub/../.env"} {
		t.Run(path, func(t *testing.T) {
			c := s.dialRaw(t)
			c.write(rawRequest("GET", path))
			resp, body := c.readResponse("GET")
			if bytes.Contains(body, []byte("must-not-leak")) {
				t.Fatalf("status %d: dotfile content served", resp.StatusCode)
			}
			if resp.StatusCode != 404 {
				t.Fatalf("status %d, want 404", resp.StatusCode)
			}
		})
	}
}
