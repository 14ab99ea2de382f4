//go:build !race

package static

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestAppendCachedAllocs proves that answering a request for a cached
// file from memory (200, HEAD, 304, a compressed variant) allocates
// nothing.
func TestAppendCachedAllocs(t *testing.T) {
	fx := newFileEnv(t)
	c := newMemConn()
	fx.get(c, "GET", "/app.css") // fills the cache
	fx.get(c, "GET", "/")
	etag := fx.s.files.get([]byte("/app.css")).etag
	for _, tc := range []struct{ name, req, status string }{
		{"GET", "GET /app.css HTTP/1.1\r\nHost: x\r\nUser-Agent: wrk\r\n\r\n", "200"},
		{"GET index", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200"},
		{"HEAD", "HEAD /app.css HTTP/1.1\r\nHost: x\r\n\r\n", "200"},
		{"If-None-Match", "GET /app.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n", "304"},
		{"gzip", "GET /app.css?v=2 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n", "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h fasthttp.RequestHeader
			if err := h.Read(bufio.NewReader(strings.NewReader(tc.req))); err != nil {
				t.Fatal(err)
			}
			var (
				date Date
				out  []byte
			)
			serve := func() {
				resp, _, _, ok := fx.s.AppendCached(out[:0], &date, &h, 0, true)
				if !ok {
					t.Fatalf("not answered from memory")
				}
				out = resp
			}
			serve()
			if !strings.HasPrefix(string(out), "HTTP/1.1 "+tc.status+" ") {
				t.Fatalf("response %.60q, want %s", out, tc.status)
			}
			if n := testing.AllocsPerRun(1000, serve); n != 0 {
				t.Errorf("%s: %v allocations per request, want 0", tc.name, n)
			}
		})
	}
}
