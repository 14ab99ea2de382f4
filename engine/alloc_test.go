//go:build !race

package engine

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/accesslog"
	"github.com/zenconn/server/proto"
)

// TestFanoutAllocs proves that delivering a frame to a subscriber and
// flushing it allocates nothing once buffers reached their steady size.
func TestFanoutAllocs(t *testing.T) {
	for _, n := range []int{1, 10, 100, -1, -10, -100} {
		direct := n < 0 // negative: the direct path (isolated deliveries)
		n = max(n, -n)
		t.Run(strconv.Itoa(n)+map[bool]string{true: "-direct"}[direct], func(t *testing.T) {
			fx := newFanoutFixture(t, n, 64)
			fx.direct = direct
			for range 10 { // warm-up: out buffers and the dirty list grow
				fx.pass()
			}
			before := fx.written()
			allocs := testing.AllocsPerRun(200, fx.pass)
			if allocs != 0 {
				t.Errorf("deliver+flushDirty to %d subscribers: %v allocations per pass, want 0", n, allocs)
			}
			// AllocsPerRun makes one extra warm-up call.
			if got, want := fx.written()-before, 201*n*len(fx.frame); got != want {
				t.Errorf("wrote %d bytes, want %d: the fan-out did not run", got, want)
			}
		})
	}
}

// TestFanoutAllocsPerSubscriber runs a whole loop pass the way the engine
// does (deliver, then the flush task queued through the executor) and
// checks that its allocations do not grow with the number of subscribers.
func TestFanoutAllocsPerSubscriber(t *testing.T) {
	perPass := func(n int) float64 {
		fx := newFanoutFixture(t, n, 64)
		run := func() {
			fx.l.deliver(fx.msg, nil, false)
			fx.exec.run()
		}
		for range 10 {
			run()
		}
		return testing.AllocsPerRun(200, run)
	}
	one, many := perPass(1), perPass(500)
	if many != one {
		t.Errorf("a pass allocates %v times with 1 subscriber, %v with 500: fan-out allocates per subscriber", one, many)
	}
	t.Logf("allocations per loop pass (independent of subscribers): %v", one)
}

// TestFrameEncodeAllocs: building a message frame into a reused buffer
// allocates nothing.
func TestFrameEncodeAllocs(t *testing.T) {
	for _, size := range []int{0, 64, 200, 70000} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			data := []byte(`"` + strings.Repeat("x", size) + `"`)
			buf := make([]byte, 0, size+256)
			var frame []byte
			allocs := testing.AllocsPerRun(500, func() {
				buf = newFrameBuf(buf)
				buf = proto.AppendMessage(buf, "room:lobby", "k3j2h1x", data)
				frame = finishFrame(buf, ws.OpText)
			})
			if allocs != 0 {
				t.Errorf("frame encode: %v allocations, want 0", allocs)
			}
			checkServerFrame(t, frame, ws.OpText, buf[frameHeadroom:])
		})
	}
}

// TestFrameParseAllocs: parsing a client frame header and unmasking its
// payload allocates nothing.
func TestFrameParseAllocs(t *testing.T) {
	frame := clientFrame(true, ws.OpText, []byte(`{"op":"publish","channel":"c","data":`+strings.Repeat("1", 300)+`}`))
	allocs := testing.AllocsPerRun(500, func() {
		h, ok, err := parseFrameHeader(frame)
		if !ok || err != nil {
			panic("parse failed")
		}
		ws.Cipher(frame[h.size:], h.Mask, 0)
	})
	if allocs != 0 {
		t.Errorf("frame parse: %v allocations, want 0", allocs)
	}
}

// TestAccessLogAllocs proves that formatting an access-log line into the
// loop's scratch buffer and handing it to the log writer allocates
// nothing in the steady state.
func TestAccessLogAllocs(t *testing.T) {
	w, err := accesslog.Open(filepath.Join(t.TempDir(), "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := &Server{}
	s.clock.Store(time.Now().UnixNano())
	remote := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	req := &requestInfo{method: []byte("GET"), uri: []byte("/app.js?v=3"), protocol: []byte("HTTP/1.1"),
		referer: []byte("http://localhost/"), userAgent: []byte(`Mozilla/5.0 "quoted"`)}
	var buf []byte
	line := func() {
		buf = s.appendAccess(buf[:0], remote, req, 200, 1234)
		w.WriteLine(buf)
	}
	line()
	want := `127.0.0.1 - - [`
	if !strings.HasPrefix(string(buf), want) || !strings.HasSuffix(string(buf), `"GET /app.js?v=3 HTTP/1.1" 200 1234 "http://localhost/" "Mozilla/5.0 \x22quoted\x22"`+"\n") {
		t.Fatalf("line %q", buf)
	}
	if n := testing.AllocsPerRun(1000, line); n != 0 {
		t.Errorf("access-log line: %v allocations, want 0", n)
	}
}

// TestFileCacheServeAllocs proves that answering a request for a cached
// file on the loop (200, HEAD, 304, a compressed variant), with its
// access-log line, allocates nothing.
func TestFileCacheServeAllocs(t *testing.T) {
	w, err := accesslog.Open(filepath.Join(t.TempDir(), "access.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := newTestServer(t, Config{AccessLog: w})
	writeFile(t, s.cfg.PublicDir, "app.css", strings.Repeat(".card { margin: 0 4px; }\n", 40))
	l, e := newTestLoop(t, s)
	d := newConnDriver(t, s, l, e)
	d.feed([]byte("GET /app.css HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")) // fills the cache
	first := string(d.t.takeOut())
	d.t.record = false
	_, etag, _ := strings.Cut(first, "ETag: ")
	etag, _, _ = strings.Cut(etag, "\r\n")
	if !strings.HasPrefix(etag, `W/"`) {
		t.Fatalf("no ETag in %q", first)
	}
	for _, tc := range []struct{ name, req, status string }{
		{"GET", "GET /app.css HTTP/1.1\r\nHost: x\r\nUser-Agent: wrk\r\n\r\n", "200"},
		{"GET index", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "200"},
		{"HEAD", "HEAD /app.css HTTP/1.1\r\nHost: x\r\n\r\n", "200"},
		{"If-None-Match", "GET /app.css HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n", "304"},
		{"gzip", "GET /app.css?v=2 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n", "200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := []byte(tc.req)
			var out []byte
			d.t.check = func(p []byte) { out = p }
			serve := func() {
				if n := d.c.Serve(req); n != len(req) || s.files.Pending() != 0 {
					t.Fatalf("consumed %d of %d bytes, %d jobs: not answered on the loop", n, len(req), s.files.Pending())
				}
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
	d.t.check = nil
	d.close()
}
