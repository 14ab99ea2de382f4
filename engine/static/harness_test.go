package static

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/internal/httpresp"
)

// memConn is an in-memory Conn: it records (or only counts) what the
// workers write, runs their callbacks at once (the harness runs the jobs
// on the test's goroutine, which stands for the loop), and keeps what
// Answered reported.
type memConn struct {
	record bool
	out    []byte
	writes int // non-empty writes
	nbytes int // bytes written in total
	// unsent is what the connection reports as not yet accepted by the
	// kernel: tests set it to simulate a slow reader.
	unsent int
	sent   int // bytes reported by Sent
	last   answer
}

// answer is what the engine's access log writes of a response: method,
// status, body bytes, and whether the connection stays open.
type answer struct {
	method    string
	status    int
	body      int
	keepAlive bool
}

func newMemConn() *memConn { return &memConn{record: true} }

func (c *memConn) write(p []byte) {
	if len(p) == 0 {
		return
	}
	c.writes++
	c.nbytes += len(p)
	if c.record {
		c.out = append(c.out, p...)
	}
}

func (c *memConn) AsyncWrite(p []byte, done func(int, error)) error {
	c.write(p)
	done(c.unsent, nil)
	return nil
}

var memAddr net.Addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

func (c *memConn) RemoteAddr() net.Addr { return memAddr }

func (c *memConn) Sent(n int) { c.sent += n }

func (c *memConn) Answered(r *Result) {
	c.last = answer{"", r.Status, r.Body, r.KeepAlive}
	if c.record { // benchmarks count allocations
		c.last.method = string(r.Request.Header.Method())
	}
}

// takeOut returns and forgets what was written so far.
func (c *memConn) takeOut() []byte {
	b := c.out
	c.out = nil
	return b
}

// newTestServer builds a Server (not started: tests run its jobs with
// RunPending) over root, with a temporary compression folder.
func newTestServer(tb testing.TB, root string, clock *atomic.Int64) *Server {
	tb.Helper()
	clock.Store(time.Now().UnixNano())
	s, err := New(Options{Root: root, CompressDir: tb.TempDir(), Clock: clock})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// fileEnv is a server over a public folder, driven as an event loop
// drives it: a request is answered from memory if AppendCached can,
// handed to Go otherwise.
//
//	base/secret.txt            outside the public folder
//	base/public/index.html
//	base/public/app.css        compressible text
//	base/public/noise.bin      random bytes (not compressible)
//	base/public/empty.txt
//	base/public/sub/index.html
//	base/public/.env           a dotfile
//	base/public/link.txt       symbolic link to ../secret.txt
type fileEnv struct {
	t      *testing.T
	s      *Server
	clock  atomic.Int64
	public string
	css    []byte
	noise  []byte

	// The loop's state.
	hdr  fasthttp.RequestHeader
	date Date
	resp []byte
}

const (
	fileIndex    = "<!doctype html><title>cache</title>\n"
	fileSubIndex = "<!doctype html><title>sub</title>\n"
	fileSecret   = "TOP-SECRET outside the public folder\n"
)

func newFileEnv(t *testing.T) *fileEnv {
	t.Helper()
	base := t.TempDir()
	public := filepath.Join(base, "public")
	if err := os.MkdirAll(filepath.Join(public, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	fx := &fileEnv{t: t, public: public}
	var css strings.Builder
	for i := 0; css.Len() < 3000; i++ {
		fmt.Fprintf(&css, ".card-%d { margin: 0 %dpx; padding: 4px 8px; }\n", i, i%16)
	}
	fx.css = []byte(css.String())
	fx.noise = make([]byte, 2000)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(fx.noise)
	writeFile(t, base, "secret.txt", fileSecret)
	writeFile(t, public, "index.html", fileIndex)
	writeFile(t, public, "app.css", string(fx.css))
	writeFile(t, public, "noise.bin", string(fx.noise))
	writeFile(t, public, "empty.txt", "")
	writeFile(t, public, "sub/index.html", fileSubIndex)
	writeFile(t, public, ".env", "SECRET=must-not-leak\n")
	if err := os.Symlink("../secret.txt", filepath.Join(public, "link.txt")); err != nil {
		t.Fatal(err)
	}
	fx.s = newTestServer(t, public, &fx.clock)
	return fx
}

// serve parses one request head and answers it as a loop does: from
// memory, or by handing it to a worker (the job then waits for
// RunPending). It reports whether it answered from memory.
func (fx *fileEnv) serve(c *memConn, req string) bool {
	fx.t.Helper()
	h := &fx.hdr
	h.Reset()
	if err := h.Read(bufio.NewReader(strings.NewReader(req))); err != nil {
		fx.t.Fatalf("request head %q: %v", req, err)
	}
	keepAlive := !h.ConnectionClose()
	b, status, body, ok := fx.s.AppendCached(fx.resp[:0], &fx.date, h, c.unsent, keepAlive)
	if ok {
		fx.resp = b
		c.write(b)
		c.last = answer{string(h.Method()), status, body, keepAlive}
		return true
	}
	if !fx.s.Go(c, h, nil, c.unsent, keepAlive, nil) {
		fx.t.Fatalf("the workers' queue is full")
	}
	return false
}

// do sends one request on c and returns the response bytes, and whether
// it was answered from memory (no job was started).
func (fx *fileEnv) do(c *memConn, req string) ([]byte, bool) {
	fx.t.Helper()
	onLoop := fx.serve(c, req)
	fx.s.RunPending()
	return c.takeOut(), onLoop
}

// get sends a GET or HEAD with extra header lines and parses the response.
func (fx *fileEnv) get(c *memConn, method, target string, headers ...string) (*http.Response, []byte, bool) {
	fx.t.Helper()
	req := method + " " + target + " HTTP/1.1\r\nHost: x\r\n"
	for _, h := range headers {
		req += h + "\r\n"
	}
	out, onLoop := fx.do(c, req+"\r\n")
	resps := httpresp.Read(fx.t, out, method)
	return resps[0].Resp, resps[0].Body, onLoop
}

// setFile replaces a file's content and gives it an mtime that no earlier
// version had.
func (fx *fileEnv) setFile(name, content string, mtime time.Time) {
	fx.t.Helper()
	p := filepath.Join(fx.public, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		fx.t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		fx.t.Fatal(err)
	}
}

// advance moves the coarse clock on, as the engine's ticker would.
func (fx *fileEnv) advance(d time.Duration) { fx.clock.Add(int64(d)) }

func writeFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}
