package static

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/zenconn/server/internal/httpresp"
)

func TestCachePath(t *testing.T) {
	for _, tc := range []struct {
		uri, want string
		ok        bool
	}{
		{"/", "/", true},
		{"/app.css", "/app.css", true},
		{"/app.css?v=3", "/app.css", true},
		{"/sub/", "/sub/", true},
		{"/a/b-c_d~e.f.js", "/a/b-c_d~e.f.js", true},
		{"/a..b", "/a..b", true},
		{"", "", false},
		{"*", "", false},
		{"http://host/app.css", "", false},
		{"/.env", "", false},
		{"/sub/.git/config", "", false},
		{"/..", "", false},
		{"/sub/../.env", "", false},
		{"/./app.css", "", false},
		{"//app.css", "", false},
		{"/sub//index.html", "", false},
		{"/%2e%2e/secret", "", false},
		{"/app%2ecss", "", false},
		{"/a\\b", "", false},
		{"/c:/x", "", false},
		{"/a#b", "", false},
		{"/a b", "", false},
		{"/caf\xc3\xa9", "", false},
	} {
		got, ok := cachePath([]byte(tc.uri))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("cachePath(%q) = %q, %v; want %q, %v", tc.uri, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFileCacheHitMiss(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	for _, tc := range []struct{ target, body, ctype string }{
		{"/", fileIndex, "text/html; charset=utf-8"},
		{"/index.html", fileIndex, "text/html; charset=utf-8"},
		{"/sub/", fileSubIndex, "text/html; charset=utf-8"},
		{"/app.css?v=1", string(fx.css), "text/css; charset=utf-8"},
		{"/noise.bin", string(fx.noise), "application/octet-stream"},
		{"/empty.txt", "", "text/plain; charset=utf-8"},
	} {
		t.Run(tc.target, func(t *testing.T) {
			var first *http.Response
			for i, wantLoop := range []bool{false, true, true} {
				resp, body, onLoop := fx.get(d, "GET", tc.target)
				if onLoop != wantLoop {
					t.Errorf("request %d answered on the loop: %v, want %v", i, onLoop, wantLoop)
				}
				if resp.StatusCode != 200 || string(body) != tc.body {
					t.Fatalf("request %d: %d, %d-byte body, want 200 with the file", i, resp.StatusCode, len(body))
				}
				if ct := resp.Header.Get("Content-Type"); ct != tc.ctype {
					t.Errorf("Content-Type %q, want %q", ct, tc.ctype)
				}
				for _, h := range []string{"Date", "Last-Modified", "ETag", "Content-Length"} {
					if resp.Header.Get(h) == "" {
						t.Errorf("request %d: no %s", i, h)
					}
				}
				if resp.Header.Get("Server") != "zenconn" || resp.Header.Get("Accept-Ranges") != "bytes" || resp.Close {
					t.Errorf("request %d: headers %v", i, resp.Header)
				}
				if first == nil {
					first = resp
				} else if resp.Header.Get("ETag") != first.Header.Get("ETag") || resp.Header.Get("Last-Modified") != first.Header.Get("Last-Modified") {
					t.Errorf("validators changed between a miss and a hit: %v, %v", first.Header, resp.Header)
				}
			}
		})
	}
	// Not cached: a redirect to the folder, a missing file, a range.
	for _, tc := range []struct {
		target string
		hdr    []string
		status int
	}{
		{"/sub", nil, 302},
		{"/missing.txt", nil, 404},
		{"/index.html/extra", nil, 404},
		{"/app.css", []string{"Range: bytes=0-9"}, 206},
		{"/app.css", []string{"Range: bytes=9000-9999"}, 416},
	} {
		for i := range 2 {
			resp, body, onLoop := fx.get(d, "GET", tc.target, tc.hdr...)
			if resp.StatusCode != tc.status || onLoop {
				t.Errorf("%s %v (%d): status %d on the loop %v, want %d from a worker", tc.target, tc.hdr, i, resp.StatusCode, onLoop, tc.status)
			}
			if tc.status == 206 && string(body) != string(fx.css[:10]) {
				t.Errorf("range body %q", body)
			}
		}
	}
}

func TestFileCacheRevalidate(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	fx.setFile("page.html", "version 1", base)
	getBody := func(wantLoop bool) (string, string) {
		t.Helper()
		resp, body, onLoop := fx.get(d, "GET", "/page.html")
		if onLoop != wantLoop {
			t.Errorf("on the loop: %v, want %v", onLoop, wantLoop)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return string(body), resp.Header.Get("ETag")
	}
	body, etag1 := getBody(false)
	if body != "version 1" {
		t.Fatalf("body %q", body)
	}

	// Same size, new mtime: served from memory until the entry is due.
	fx.setFile("page.html", "version 2", base.Add(time.Minute))
	if body, _ := getBody(true); body != "version 1" {
		t.Fatalf("within the revalidation interval: %q", body)
	}
	fx.advance(time.Duration(fileRevalidate))
	body, etag2 := getBody(false) // this request checks the file
	if body != "version 2" || etag2 == etag1 {
		t.Fatalf("after the interval: %q with ETag %s (was %s)", body, etag2, etag1)
	}
	if body, _ := getBody(true); body != "version 2" {
		t.Fatalf("the new entry: %q", body)
	}

	// Unchanged file: the check keeps the entry.
	e := fx.s.files.get([]byte("/page.html"))
	fx.advance(2 * time.Duration(fileRevalidate))
	getBody(false)
	if fx.s.files.get([]byte("/page.html")) != e {
		t.Errorf("an unchanged file got a new entry")
	}
	getBody(true)

	// New size, same mtime.
	fx.setFile("page.html", "version three", base.Add(time.Minute))
	fx.advance(time.Duration(fileRevalidate))
	if body, _ := getBody(false); body != "version three" {
		t.Fatalf("after a size change: %q", body)
	}

	// Deleted: 404, and the entry is gone.
	if err := os.Remove(filepath.Join(fx.public, "page.html")); err != nil {
		t.Fatal(err)
	}
	fx.advance(time.Duration(fileRevalidate))
	// fasthttp's FS keeps open files for a second of real time: poll.
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _, onLoop := fx.get(d, "GET", "/page.html")
		if onLoop {
			t.Fatalf("a deleted file answered on the loop")
		}
		if resp.StatusCode == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deleted file: status %d", resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if fx.s.files.get([]byte("/page.html")) != nil {
		t.Errorf("the entry of a deleted file is still cached")
	}
}

// Only the request that claims an entry's check goes to a worker; the
// others keep being answered from memory meanwhile.
func TestFileCacheOneCheckAtATime(t *testing.T) {
	fx := newFileEnv(t)
	d1 := newMemConn()
	d2 := newMemConn()
	fx.get(d1, "GET", "/app.css")
	fx.advance(time.Duration(fileRevalidate))
	req := "GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n"
	fx.serve(d1, req) // claims the check: a job, not run yet
	if fx.s.Pending() != 1 {
		t.Fatalf("%d jobs queued, want the check", fx.s.Pending())
	}
	fx.serve(d2, req)
	if fx.s.Pending() != 1 {
		t.Fatalf("a second request went to a worker while the check was pending")
	}
	if r := httpresp.Read(t, d2.takeOut(), "GET"); r[0].Resp.StatusCode != 200 || !bytes.Equal(r[0].Body, fx.css) {
		t.Fatalf("second request: %d", r[0].Resp.StatusCode)
	}
	fx.s.RunPending()
	if r := httpresp.Read(t, d1.takeOut(), "GET"); r[0].Resp.StatusCode != 200 || !bytes.Equal(r[0].Body, fx.css) {
		t.Fatalf("checking request: %d", r[0].Resp.StatusCode)
	}
}

func TestFileCacheConditionalAndHead(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	resp, _, _ := fx.get(d, "GET", "/app.css")
	etag, lastMod := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	mod, err := http.ParseTime(lastMod)
	if err != nil {
		t.Fatalf("Last-Modified %q: %v", lastMod, err)
	}
	for _, tc := range []struct {
		name   string
		method string
		hdr    []string
		status int
		vary   bool
	}{
		{"If-None-Match", "GET", []string{"If-None-Match: " + etag}, 304, false},
		{"If-None-Match strong form", "GET", []string{"If-None-Match: " + strings.TrimPrefix(etag, "W/")}, 304, false},
		{"If-None-Match list", "GET", []string{`If-None-Match: "a", ` + etag}, 304, false},
		{"If-None-Match star", "GET", []string{"If-None-Match: *"}, 304, false},
		{"If-None-Match other", "GET", []string{`If-None-Match: "other"`}, 200, false},
		{"If-None-Match other wins over If-Modified-Since", "GET", []string{`If-None-Match: "other"`, "If-Modified-Since: " + lastMod}, 200, false},
		{"If-None-Match gzip", "GET", []string{"If-None-Match: " + etag, "Accept-Encoding: gzip"}, 304, true},
		{"If-Modified-Since equal", "GET", []string{"If-Modified-Since: " + lastMod}, 304, false},
		{"If-Modified-Since later", "GET", []string{"If-Modified-Since: " + mod.Add(time.Hour).Format(http.TimeFormat)}, 304, false},
		{"If-Modified-Since earlier", "GET", []string{"If-Modified-Since: " + mod.Add(-time.Second).Format(http.TimeFormat)}, 200, false},
		{"If-Modified-Since garbage", "GET", []string{"If-Modified-Since: yesterday"}, 200, false},
		{"HEAD", "HEAD", nil, 200, false},
		{"HEAD br", "HEAD", []string{"Accept-Encoding: br"}, 200, true},
		{"HEAD If-None-Match", "HEAD", []string{"If-None-Match: " + etag}, 304, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, onLoop := fx.get(d, tc.method, "/app.css", tc.hdr...)
			if !onLoop {
				t.Errorf("not answered on the loop")
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("ETag"); got != etag {
				t.Errorf("ETag %q, want %q", got, etag)
			}
			if vary := resp.Header.Get("Vary") == "Accept-Encoding"; vary != tc.vary {
				t.Errorf("Vary %q", resp.Header.Get("Vary"))
			}
			switch {
			case tc.status == 304:
				if len(body) != 0 || resp.Header.Get("Content-Length") != "" {
					t.Errorf("304 with a body or a length: %q %v", body, resp.Header)
				}
			case tc.method == "HEAD":
				if len(body) != 0 {
					t.Errorf("HEAD with a body")
				}
				if tc.vary {
					break // the compressed length
				}
				if cl := resp.Header.Get("Content-Length"); cl != fmt.Sprint(len(fx.css)) {
					t.Errorf("HEAD Content-Length %q, want %d", cl, len(fx.css))
				}
			default:
				if !bytes.Equal(body, fx.css) {
					t.Errorf("200 with a wrong body")
				}
			}
			wantSent := 0
			if tc.status == 200 && tc.method == "GET" {
				wantSent = len(fx.css)
			}
			// What the engine's access log writes of the response.
			if want := (answer{tc.method, tc.status, wantSent, true}); d.last != want {
				t.Errorf("reported %+v, want %+v", d.last, want)
			}
		})
	}
	// The same answers from a worker, for the request that checks the file.
	fx.advance(time.Duration(fileRevalidate))
	resp, body, onLoop := fx.get(d, "GET", "/app.css", "If-None-Match: "+etag)
	if onLoop || resp.StatusCode != 304 || len(body) != 0 {
		t.Errorf("revalidating conditional request: status %d, on the loop %v", resp.StatusCode, onLoop)
	}
}

func TestFileCacheCompression(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	decode := map[string]func([]byte) ([]byte, error){
		"gzip": func(b []byte) ([]byte, error) {
			r, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(r)
		},
		"br": func(b []byte) ([]byte, error) { return io.ReadAll(brotli.NewReader(bytes.NewReader(b))) },
	}
	for _, tc := range []struct{ accept, want string }{
		{"gzip", "gzip"},
		{"br", "br"},
		{"gzip, deflate, br", "br"},
		{"gzip;q=1, br;q=0", "gzip"},
		{"deflate", ""},
		{"", ""},
	} {
		t.Run(tc.accept, func(t *testing.T) {
			var hdr []string
			if tc.accept != "" {
				hdr = []string{"Accept-Encoding: " + tc.accept}
			}
			for i := range 2 { // the miss (or a worker) and the loop
				resp, body, _ := fx.get(d, "GET", "/app.css", hdr...)
				ce := resp.Header.Get("Content-Encoding")
				if ce != tc.want {
					t.Fatalf("request %d: Content-Encoding %q, want %q", i, ce, tc.want)
				}
				if ce == "" {
					if !bytes.Equal(body, fx.css) || resp.Header.Get("Vary") != "" {
						t.Fatalf("identity: wrong body or Vary %q", resp.Header.Get("Vary"))
					}
					continue
				}
				plain, err := decode[ce](body)
				if err != nil || !bytes.Equal(plain, fx.css) {
					t.Fatalf("request %d: decoding %s: %v (%d bytes)", i, ce, err, len(plain))
				}
				if len(body) >= len(fx.css) || resp.Header.Get("Vary") != "Accept-Encoding" || resp.Header.Get("Content-Type") != "text/css; charset=utf-8" {
					t.Fatalf("request %d: %d bytes, headers %v", i, len(body), resp.Header)
				}
			}
		})
	}
	resp, body, onLoop := fx.get(d, "GET", "/noise.bin", "Accept-Encoding: gzip, br")
	if !bytes.Equal(body, fx.noise) || resp.Header.Get("Content-Encoding") != "" || onLoop {
		t.Errorf("random bytes: Content-Encoding %q, body ok %v", resp.Header.Get("Content-Encoding"), bytes.Equal(body, fx.noise))
	}
	if _, _, onLoop = fx.get(d, "GET", "/noise.bin", "Accept-Encoding: gzip, br"); !onLoop {
		t.Errorf("random bytes: not answered on the loop")
	}
}

func TestFileCacheRefusals(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	for _, target := range []string{
		"/.env", "/%2eenv", "/sub/../.env", "/./.env",
		"/../secret.txt", "/%2e%2e/secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt", "/..%5csecret.txt",
		"/link.txt",
	} {
		for i := range 2 {
			out, onLoop := fx.do(d, "GET "+target+" HTTP/1.1\r\nHost: x\r\n\r\n")
			if bytes.Contains(out, []byte("TOP-SECRET")) || bytes.Contains(out, []byte("must-not-leak")) {
				t.Fatalf("%s: served: %q", target, out)
			}
			if onLoop {
				t.Errorf("%s (%d): answered on the loop", target, i)
			}
			if !bytes.HasPrefix(out, []byte("HTTP/1.1 404 ")) && !bytes.HasPrefix(out, []byte("HTTP/1.1 400 ")) {
				t.Errorf("%s: %.40q", target, out)
			}
		}
	}
	fx.s.files.mu.RLock()
	n := len(fx.s.files.m)
	fx.s.files.mu.RUnlock()
	if n != 0 {
		t.Errorf("%d entries cached by refused requests", n)
	}
}

// A connection with too much unsent output is answered by a worker, which
// paces the response.
func TestFileCacheBackpressure(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	fx.get(d, "GET", "/app.css")
	d.unsent = streamHighWater + 1
	fx.serve(d, "GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n")
	if fx.s.Pending() != 1 || len(d.out) != 0 {
		t.Fatalf("congested connection: %d jobs, %d bytes written on the loop", fx.s.Pending(), len(d.out))
	}
	d.unsent = 0 // the peer reads
	fx.s.RunPending()
	if r := httpresp.Read(t, d.takeOut(), "GET"); !bytes.Equal(r[0].Body, fx.css) {
		t.Fatalf("paced response: %d-byte body", len(r[0].Body))
	}
}

// Files over the cache's limit are streamed by the workers in chunks.
func TestFileCacheLargeFileStreamed(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	big := make([]byte, MaxFile*3+123)
	for i := range big {
		big[i] = byte('a' + i%26)
	}
	writeFile(t, fx.public, "big.txt", string(big))
	for i := range 3 {
		resp, body, onLoop := fx.get(d, "GET", "/big.txt")
		if onLoop || resp.StatusCode != 200 || !bytes.Equal(body, big) {
			t.Fatalf("request %d: status %d, %d bytes, on the loop %v", i, resp.StatusCode, len(body), onLoop)
		}
		if want := (answer{"GET", 200, len(big), true}); d.last != want {
			t.Errorf("reported %+v, want %+v", d.last, want)
		}
	}
	if d.writes < 4 {
		t.Errorf("%d writes: the body was not streamed in chunks", d.writes)
	}
	if e := fx.s.files.get([]byte("/big.txt")); e == nil || !e.stream {
		t.Errorf("a file over the limit: entry %+v, want a stream entry", e)
	}
	// It shrinks under the limit: cached at the next check.
	writeFile(t, fx.public, "big.txt", "small now")
	fx.advance(time.Duration(fileRevalidate))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body, _ := fx.get(d, "GET", "/big.txt")
		if string(body) == "small now" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d bytes after the file shrank", len(body))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, _, onLoop := fx.get(d, "GET", "/big.txt"); !onLoop {
		t.Errorf("the shrunk file is not answered on the loop")
	}
}

func TestFileCacheBudget(t *testing.T) {
	dir := t.TempDir()
	fc := newFileCache(dir)
	noise := make([]byte, 1000)
	r := rand.NewChaCha8([32]byte{2})
	_, _ = r.Read(noise)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		writeFile(t, dir, name, string(noise))
	}
	writeFile(t, dir, "huge", strings.Repeat("x", 2000))
	fc.maxFile = 1500
	if fc.load("/huge", 1) != nil {
		t.Fatalf("a file over maxFile was cached")
	}
	fc.remove("/huge") // its stream entry
	a := fc.load("/a", 1)
	if a == nil {
		t.Fatal("a not cached")
	}
	fc.budget = 4*a.mem + a.mem/2 // four entries fit, five do not
	for i, name := range []string{"b", "c", "d"} {
		if fc.load("/"+name, int64(2+i)) == nil {
			t.Fatalf("%s not cached", name)
		}
	}
	a.touch(10) // a is now the most recently used
	if fc.load("/e", 11) == nil {
		t.Fatal("e not cached")
	}
	has := func(name string) bool { return fc.get([]byte("/"+name)) != nil }
	if !has("a") || !has("e") || has("b") {
		t.Errorf("after eviction: a %v b %v c %v d %v e %v; want a and e kept, b (least recently used) gone",
			has("a"), has("b"), has("c"), has("d"), has("e"))
	}
	fc.mu.RLock()
	mem, n := fc.mem, len(fc.m)
	var sum int64
	for _, e := range fc.m {
		sum += e.mem
	}
	fc.mu.RUnlock()
	if mem > fc.budget || mem != sum {
		t.Errorf("%d entries charge %d bytes (sum %d), budget %d", n, mem, sum, fc.budget)
	}
	// An entry bigger than the whole budget is not kept.
	writeFile(t, dir, "f", string(noise))
	fc.budget = a.mem - 1
	if fc.load("/f", 12); has("f") {
		t.Errorf("an entry over the budget is cached")
	}
}
