// Package httpresp reads HTTP/1.1 responses back from the raw bytes a
// server wrote, for tests that drive a connection without a socket (the
// engine's in-memory transport, the static-file package's harness).
package httpresp

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// Parsed is one response and its whole body.
type Parsed struct {
	Resp *http.Response
	Body []byte
}

// Read parses one response per request method from out, and fails the
// test if anything is left after them.
func Read(t testing.TB, out []byte, methods ...string) []Parsed {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(out))
	var rs []Parsed
	for i, m := range methods {
		resp, err := http.ReadResponse(br, &http.Request{Method: m})
		if err != nil {
			t.Fatalf("response %d: %v in %q", i, err, out)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("response %d body: %v", i, err)
		}
		rs = append(rs, Parsed{resp, body})
	}
	if n := br.Buffered(); n > 0 {
		t.Fatalf("%d bytes after %d responses: %q", n, len(methods), out[len(out)-n:])
	}
	return rs
}
