package engine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
)

type jobKind uint8

const (
	jobStatic jobKind = iota
	jobMetrics
	jobAPI
)

// job is one HTTP request answered off the event loops: static files (disk
// reads and first-time compression would stall a loop) and /metrics.
type job struct {
	kind      jobKind
	c         *Conn
	t         Transport
	keepAlive bool
	remote    net.Addr
	req       fasthttp.Request
	ctx       fasthttp.RequestCtx
	acked     chan jobAck
	// abandoned is set when a hand-over was given up: a late callback may
	// still use acked, so the job is not reused.
	abandoned bool
}

type jobAck struct {
	buffered int
	err      error
}

var jobPool = sync.Pool{New: func() any { return &job{acked: make(chan jobAck, 1)} }}

// Off-loop response streaming: a chunk is handed to the loop, and the next
// one waits until the connection's unsent bytes fall under the high mark.
const (
	streamChunk     = 64 << 10
	streamHighWater = 512 << 10
	streamStall     = 30 * time.Second // give up on a peer that reads nothing
)

// startJob copies the request head and runs the job on the server's pool.
// Input stays buffered (busy) until the job's response is fully queued.
func (c *Conn) startJob(kind jobKind, req *requestInfo, keepAlive bool, body []byte) {
	j := jobPool.Get().(*job)
	j.kind, j.c, j.t, j.keepAlive, j.remote = kind, c, c.t, keepAlive, c.t.RemoteAddr()
	c.loop.http.hdr.CopyTo(&j.req.Header)
	j.req.SetBody(body)
	c.busy = true
	select {
	case c.srv.jobs <- j:
	default:
		// Every file worker is busy and the queue is full.
		c.busy = false
		j.release()
		c.respondSimple(req, 503, "server busy, retry\n", false, false, []byte("Retry-After: 1\r\n"))
	}
}

func (j *job) release() {
	if j.abandoned {
		return
	}
	j.c, j.t, j.remote = nil, nil, nil
	j.req.Reset()
	j.ctx.Response.Reset()
	select {
	case <-j.acked:
	default:
	}
	jobPool.Put(j)
}

// runJobs is one file worker.
func (s *Server) runJobs() {
	defer s.jobsWG.Done()
	for {
		select {
		case j := <-s.jobs:
			s.runJob(j)
		case <-s.done:
			return
		}
	}
}

func (s *Server) runJob(j *job) {
	defer j.release()
	ctx := &j.ctx
	ctx.Init(&j.req, j.remote, fasthttpLogger{s})
	switch j.kind {
	case jobMetrics:
		s.serveMetrics(ctx)
	case jobAPI:
		s.serveAPI(ctx)
	default:
		s.serveStatic(ctx)
	}
	if ctx.Request.Header.IsHead() {
		ctx.Response.SkipBody = true
	}
	if !j.keepAlive {
		ctx.Response.SetConnectionClose()
	}
	status := ctx.Response.StatusCode()
	sent, err := j.writeResponse()
	info := requestInfo{
		method:    ctx.Method(),
		uri:       ctx.RequestURI(),
		protocol:  ctx.Request.Header.Protocol(),
		referer:   ctx.Referer(),
		userAgent: ctx.UserAgent(),
	}
	var line []byte
	if s.cfg.AccessLog != nil {
		line = s.appendAccess(make([]byte, 0, 160+len(info.uri)+len(info.userAgent)), j.remote, &info, status, sent)
	}
	s.countStatus(status)
	keep := j.keepAlive && err == nil
	c := j.c
	// Hand the connection back to its loop: the next pipelined request is
	// parsed there. The line is logged on the loop, after the response.
	if err := j.t.AsyncWrite(nil, func(int, error) {
		if s.cfg.AccessLog != nil {
			s.cfg.AccessLog.WriteLine(line)
		}
		if c.state == stateClosed {
			return
		}
		c.busy = false
		if !keep {
			c.linger()
			return
		}
		c.t.Wake()
	}); err != nil {
		s.log.Debug("resume after response", "err", err)
	}
}

// chunkWriter hands response bytes to the connection's loop in chunks, with
// flow control; it runs on a file worker.
type chunkWriter struct {
	j       *job
	sent    int
	lastAck int // the connection's unsent bytes at the last hand-over
	err     error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	buf := make([]byte, len(p))
	copy(buf, p)
	if err := w.handOver(buf); err != nil {
		w.err = err
		return 0, err
	}
	w.sent += len(p)
	for {
		a := w.lastAck
		if a < streamHighWater {
			return len(p), nil
		}
		select {
		case <-time.After(2 * time.Millisecond):
		case <-w.j.c.srv.done:
			w.err = errClosed
			return 0, w.err
		}
		if err := w.handOver(nil); err != nil {
			w.err = err
			return 0, err
		}
	}
}

// handOver queues b on the loop and waits for the loop to take it.
func (w *chunkWriter) handOver(b []byte) error {
	j := w.j
	if err := j.t.AsyncWrite(b, func(buffered int, err error) {
		if err == nil && len(b) > 0 {
			j.c.loop.stats.bytesOut.Add(uint64(len(b)))
		}
		select {
		case j.acked <- jobAck{buffered, err}:
		default:
		}
	}); err != nil {
		return err
	}
	select {
	case a := <-j.acked:
		if a.err != nil {
			return a.err
		}
		w.lastAck = a.buffered
		return nil
	case <-time.After(streamStall):
		j.abandoned = true
		return errors.New("engine: response stalled")
	case <-j.c.srv.done:
		j.abandoned = true
		return errClosed
	}
}

// writeResponse streams ctx.Response to the connection and returns the
// body bytes sent.
func (j *job) writeResponse() (int, error) {
	cw := &chunkWriter{j: j}
	bw := bufio.NewWriterSize(cw, streamChunk)
	resp := &j.ctx.Response
	resp.Header.Set("Server", "zenconn")
	err := resp.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hdrLen := len(resp.Header.Header())
	body := cw.sent - hdrLen
	if body < 0 {
		body = 0
	}
	return body, err
}

// serveStatic answers from the public folder through fasthttp's FS, with
// dotfiles refused and a weak ETag added.
func (s *Server) serveStatic(ctx *fasthttp.RequestCtx) {
	p := string(ctx.Path()) // normalized and percent-decoded by fasthttp
	for _, seg := range strings.Split(p, "/") {
		if strings.HasPrefix(seg, ".") || strings.ContainsRune(seg, 0) || strings.ContainsRune(seg, '\\') {
			ctx.Error("not found\n", fasthttp.StatusNotFound)
			return
		}
	}
	etag := s.etagFor(p)
	if etag != "" {
		if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatch(inm, etag) {
			ctx.Response.Header.Set("ETag", etag)
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			ctx.Response.SkipBody = true
			return
		}
	}
	s.fsHandler(ctx)
	if st := ctx.Response.StatusCode(); etag != "" && (st == 200 || st == 206 || st == 304) {
		ctx.Response.Header.Set("ETag", etag)
	}
}

// etagFor returns a weak validator for the file behind URL path p, or ""
// when there is none: W/"<size>-<mtime>" in hex.
func (s *Server) etagFor(p string) string {
	name := filepath.Join(s.publicAbs, filepath.FromSlash(p))
	fi, err := os.Stat(name)
	if err == nil && fi.IsDir() {
		fi, err = os.Stat(filepath.Join(name, "index.html"))
	}
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return `W/"` + strconv.FormatInt(fi.Size(), 16) + "-" + strconv.FormatInt(fi.ModTime().UnixNano(), 16) + `"`
}

// etagMatch implements the weak comparison of If-None-Match (RFC 9110
// section 13.1.2).
func etagMatch(header []byte, etag string) bool {
	weak := strings.TrimPrefix(etag, "W/")
	for _, f := range bytes.Split(header, []byte(",")) {
		f = bytes.TrimSpace(f)
		if string(f) == "*" || strings.TrimPrefix(string(f), "W/") == weak {
			return true
		}
	}
	return false
}

func (s *Server) serveMetrics(ctx *fasthttp.RequestCtx) {
	mfs, err := s.registry.Gather()
	if err != nil {
		s.log.Warn("gathering metrics", "err", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			ctx.Error("encoding metrics failed\n", fasthttp.StatusInternalServerError)
			return
		}
	}
	if s.cfg.MetricsExtra != nil {
		buf.Write(s.cfg.MetricsExtra())
	}
	ctx.SetContentType(string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	ctx.SetBody(buf.Bytes())
}

// fasthttpLogger routes fasthttp's messages to the application log.
type fasthttpLogger struct{ s *Server }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.s.log.Debug("fasthttp", "msg", strings.TrimSpace(fmt.Sprintf(format, args...)))
}
