package engine

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zenconn/server/internal/httpresp"
)

// The static server's own behaviour (cache, revalidation, conditional
// requests, compression, refusals, streaming) is tested in engine/static;
// these tests cover how the engine routes to it and what it does with
// the answers: access log, pipelining, Connection: close, real sockets.

// fileEnv is a server (not started) over a public folder, one loop and
// one connection driver per test, with the access log captured.
//
//	public/index.html
//	public/app.css        compressible text
//	public/sub/index.html
type fileEnv struct {
	t      *testing.T
	s      *Server
	l      *loop
	e      *memExec
	public string
	log    *lineLog
	css    []byte
}

const (
	fileIndex    = "<!doctype html><title>cache</title>\n"
	fileSubIndex = "<!doctype html><title>sub</title>\n"
)

func newFileEnv(t *testing.T) *fileEnv {
	t.Helper()
	public := t.TempDir()
	if err := os.MkdirAll(filepath.Join(public, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	fx := &fileEnv{t: t, public: public, log: &lineLog{}}
	var css strings.Builder
	for i := 0; css.Len() < 3000; i++ {
		fmt.Fprintf(&css, ".card-%d { margin: 0 %dpx; padding: 4px 8px; }\n", i, i%16)
	}
	fx.css = []byte(css.String())
	writeFile(t, public, "index.html", fileIndex)
	writeFile(t, public, "app.css", string(fx.css))
	writeFile(t, public, "sub/index.html", fileSubIndex)
	fx.s = newTestServer(t, Config{PublicDir: public, AccessLog: fx.log})
	fx.l, fx.e = newTestLoop(t, fx.s)
	return fx
}

// lineLog keeps the access-log lines.
type lineLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineLog) WriteLine(b []byte) {
	l.mu.Lock()
	l.lines = append(l.lines, string(b))
	l.mu.Unlock()
}

func (l *lineLog) last() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == 0 {
		return ""
	}
	return l.lines[len(l.lines)-1]
}

// do sends one request on d and returns the response bytes, and whether
// the loop answered it itself (no job was started).
func (fx *fileEnv) do(d *connDriver, req string) ([]byte, bool) {
	fx.t.Helper()
	if len(d.buf) != 0 {
		fx.t.Fatalf("unconsumed input before %q", req)
	}
	d.buf = append(d.buf, req...)
	n := d.c.Serve(d.buf)
	d.buf = append(d.buf[:0], d.buf[n:]...)
	onLoop := fx.s.files.Pending() == 0 && !d.c.busy
	d.exec.run()
	d.runJobs()
	if d.t.wakes.Swap(0) > 0 {
		d.serve()
	}
	return d.t.takeOut(), onLoop
}

// Responses from memory and from a worker are logged and counted alike:
// status and body bytes (0 for HEAD and 304), for small and streamed
// files.
func TestFileCacheAccessLog(t *testing.T) {
	fx := newFileEnv(t)
	d := newConnDriver(t, fx.s, fx.l, fx.e)
	big := strings.Repeat("z", 3<<20/2)
	writeFile(t, fx.public, "big.txt", big)
	for _, tc := range []struct {
		name, req, line string
		onLoop          bool
	}{
		{"miss", "GET /app.css HTTP/1.1", fmt.Sprintf(`"GET /app.css HTTP/1.1" 200 %d `, len(fx.css)), false},
		{"hit", "GET /app.css HTTP/1.1", fmt.Sprintf(`"GET /app.css HTTP/1.1" 200 %d `, len(fx.css)), true},
		{"HEAD hit", "HEAD /app.css HTTP/1.1", `"HEAD /app.css HTTP/1.1" 200 0 `, true},
		{"304 hit", "GET /app.css HTTP/1.1\r\nIf-Modified-Since: Fri, 31 Dec 2100 00:00:00 GMT", `"GET /app.css HTTP/1.1" 304 0 `, true},
		{"range", "GET /app.css HTTP/1.1\r\nRange: bytes=1-2", `"GET /app.css HTTP/1.1" 206 2 `, false},
		{"missing", "GET /nope.txt HTTP/1.1", `"GET /nope.txt HTTP/1.1" 404 10 `, false},
		{"streamed", "GET /big.txt HTTP/1.1\r\nUser-Agent: probe", fmt.Sprintf(`"GET /big.txt HTTP/1.1" 200 %d "-" "probe"`, len(big)), false},
		{"streamed HEAD", "HEAD /big.txt HTTP/1.1", `"HEAD /big.txt HTTP/1.1" 200 0 `, false},
	} {
		_, onLoop := fx.do(d, tc.req+"\r\nHost: x\r\n\r\n")
		if onLoop != tc.onLoop {
			t.Errorf("%s: answered on the loop %v, want %v", tc.name, onLoop, tc.onLoop)
		}
		if line := fx.log.last(); !strings.Contains(line, tc.line) {
			t.Errorf("%s: access-log line %q, want %q in it", tc.name, line, tc.line)
		}
	}
	d.close()
}

func TestFileCacheConnectionAndPipelining(t *testing.T) {
	fx := newFileEnv(t)
	d := newConnDriver(t, fx.s, fx.l, fx.e)
	// A miss, hits, a worker's answer and a loop's answer in one read.
	d.feed([]byte("GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" +
		"HEAD /sub/ HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /sub/ HTTP/1.1\r\nHost: x\r\n\r\n" +
		"GET /app.css HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n" +
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" +
		"GET /app.css HTTP/1.1\r\nHost: x\r\n\r\n"))
	rs := httpresp.Read(t, d.t.takeOut(), "GET", "GET", "GET", "HEAD", "GET", "GET", "GET")
	want := []struct {
		status int
		body   string
	}{{200, string(fx.css)}, {200, string(fx.css)}, {200, "ok"}, {200, ""}, {200, fileSubIndex}, {206, string(fx.css[1:3])}, {200, fileIndex}}
	for i, w := range want {
		if rs[i].Resp.StatusCode != w.status || string(rs[i].Body) != w.body {
			t.Errorf("response %d: %d %.40q, want %d %.40q", i, rs[i].Resp.StatusCode, rs[i].Body, w.status, w.body)
		}
	}
	if !rs[6].Resp.Close {
		t.Errorf("Connection: close not echoed")
	}
	if d.c.state != stateClosing {
		t.Errorf("state %d after Connection: close, want closing", d.c.state)
	}
	d.close()

	// Connection: close on a hit.
	d = newConnDriver(t, fx.s, fx.l, fx.e)
	out, onLoop := fx.do(d, "GET /app.css HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if r := httpresp.Read(t, out, "GET"); !onLoop || !r[0].Resp.Close || d.c.state != stateClosing {
		t.Errorf("hit with Connection: close: on the loop %v, close %v, state %d", onLoop, r[0].Resp.Close, d.c.state)
	}
	d.close()
}

// Real sockets: concurrent clients on two loops while the file changes;
// every response is one of the versions, whole, and the last version is
// served within a few seconds.
func TestFileCacheRealSockets(t *testing.T) {
	public := t.TempDir()
	writeFile(t, public, "v.txt", "version 00")
	s := startServer(t, Config{PublicDir: public})
	addr := s.Addr().String()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			br := bufio.NewReader(nc)
			for {
				select {
				case <-stop:
					return
				default:
				}
				_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := nc.Write([]byte("GET /v.txt HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				body, err := io.ReadAll(resp.Body)
				if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "version ") || len(body) != 10 {
					errs <- fmt.Errorf("status %d body %q err %v", resp.StatusCode, body, err)
					return
				}
			}
		}()
	}
	base := time.Now().Add(-time.Hour)
	for i := 1; i <= 3; i++ {
		time.Sleep(100 * time.Millisecond)
		p := filepath.Join(public, "v.txt")
		if err := os.WriteFile(p, fmt.Appendf(nil, "version %02d", i), 0o644); err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(i) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v.txt")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) == "version 03" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %q 5 s after the last edit", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	http.DefaultClient.CloseIdleConnections()
}

// BenchmarkHTTPCachedFile serves a 1 KiB and a 100 KiB cached file on one
// keep-alive connection through the whole loop path: head parsing,
// routing, the answer from memory and its access-log line. The static
// server alone is measured by engine/static's BenchmarkStaticFile.
func BenchmarkHTTPCachedFile(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dk", size>>10), func(b *testing.B) {
			s := newTestServer(b, Config{})
			writeFile(b, s.cfg.PublicDir, "f.js", strings.Repeat("x", size))
			l, e := newTestLoop(b, s)
			d := newConnDriver(b, s, l, e)
			d.t.record = false
			req := []byte("GET /f.js HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\n\r\n")
			d.feed(req)
			before := d.t.nbytes
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				d.feed(req)
			}
			b.StopTimer()
			if per := (d.t.nbytes - before) / b.N; per < size {
				b.Fatalf("%d bytes per response, want at least %d", per, size)
			}
			d.close()
		})
	}
}
