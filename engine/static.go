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

// job is one HTTP request answered off the event loops: static files that
// the file cache cannot answer on the loop (disk reads and first-time
// compression would stall it), /metrics and the server API.
//
// A job is pooled with everything it needs (a 64 KiB response buffer, a
// timer, its callbacks) so that running one allocates little. The worker
// hands every chunk but the last to the loop and waits for it to be taken;
// the last chunk goes with finishFn, which runs on the loop, logs the
// request, hands the connection back and returns the job to the pool: the
// worker never touches the job after that hand-over.
type job struct {
	kind      jobKind
	c         *Conn
	t         Transport
	keepAlive bool
	// congested is set when the connection had over streamHighWater
	// bytes unsent as the job started: the response waits for them.
	congested bool
	remote    net.Addr
	req       fasthttp.Request
	ctx       fasthttp.RequestCtx
	acked     chan jobAck
	// abandoned is set when a hand-over was given up: a late callback may
	// still use acked and the chunk handed over, so the job is not reused.
	abandoned bool

	cw    chunkWriter
	bw    *bufio.Writer // streamChunk bytes, writing to cw
	raw   []byte        // a cached file's response, built by the worker
	stall *time.Timer   // hand-over deadlines and flow-control pauses

	chunk int // bytes of the chunk being handed over, for ack

	// What finish needs, set by the worker before the last hand-over.
	status   int
	hdrLen   int   // response head bytes, for the body bytes logged
	last     int   // bytes of the last chunk
	err      error // from the earlier chunks
	finishFn func(buffered int, err error)
	ackFn    func(buffered int, err error)
}

type jobAck struct {
	buffered int
	err      error
}

// jobPool holds idle jobs (New is set in init: a job's callbacks put it
// back, which would make the initialization a cycle).
var jobPool sync.Pool

func init() { jobPool.New = func() any { return newJob() } }

func newJob() *job {
	j := &job{acked: make(chan jobAck, 1), stall: time.NewTimer(time.Hour)}
	j.stall.Stop()
	j.cw.j = j
	j.bw = bufio.NewWriterSize(&j.cw, streamChunk)
	j.finishFn, j.ackFn = j.finish, j.ack
	return j
}

// Off-loop response streaming: a chunk is handed to the loop, and the next
// one waits until the connection's unsent bytes fall under the high mark.
const (
	streamChunk     = 64 << 10
	streamHighWater = 512 << 10
	streamStall     = 30 * time.Second // give up on a peer that reads nothing
	streamPause     = 2 * time.Millisecond
)

// startJob copies the request head and runs the job on the server's pool.
// Input stays buffered (busy) until the job's response is fully queued.
func (c *Conn) startJob(kind jobKind, req *requestInfo, keepAlive bool, body []byte) {
	j := jobPool.Get().(*job)
	j.kind, j.c, j.t, j.keepAlive, j.remote = kind, c, c.t, keepAlive, c.t.RemoteAddr()
	j.congested = c.t.Buffered() > streamHighWater
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
	j.c, j.t, j.remote, j.err, j.congested = nil, nil, nil, nil, false
	j.req.Reset()
	j.ctx.Response.Reset()
	j.bw.Reset(&j.cw)
	if cap(j.raw) > 2*fileCacheMaxFile {
		j.raw = nil
	}
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

// runJob produces the job's response and hands it to the connection's
// loop; the job belongs to the loop's finish callback afterwards.
func (s *Server) runJob(j *job) {
	ctx := &j.ctx
	ctx.Init(&j.req, j.remote, fasthttpLogger{s})
	j.cw.reset()
	if j.kind == jobStatic && s.serveCachedFile(j) {
		return
	}
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
	j.status = ctx.Response.StatusCode()
	j.writeResponse()
}

// serveCachedFile answers a static request from the file cache, filling or
// revalidating the entry first, and reports whether it did.
func (s *Server) serveCachedFile(j *job) bool {
	h := &j.ctx.Request.Header
	if !h.IsGet() && !h.IsHead() || len(h.Peek(fasthttp.HeaderRange)) > 0 {
		return false
	}
	key, ok := cachePath(h.RequestURI())
	if !ok || !bytes.Equal(key, j.ctx.Path()) {
		return false
	}
	now := s.clock.Load()
	e := s.files.load(string(key), now)
	if e == nil {
		return false
	}
	notMod := e.notModified(h)
	j.status = fasthttp.StatusOK
	if notMod {
		j.status = fasthttp.StatusNotModified
	}
	var date httpDate
	b, body := appendFileResponse(j.raw[:0], e.pick(h), notMod, date.get(now), h.IsHead(), j.keepAlive)
	j.raw = b
	j.hdrLen = len(b) - body
	// Chunks with flow control, as a streamed response.
	err := j.waitCongestion()
	for err == nil && len(b) > streamChunk {
		_, err = j.cw.Write(b[:streamChunk])
		b = b[streamChunk:]
	}
	if err != nil {
		j.err, b = err, nil
	}
	j.handLast(b)
	return true
}

// chunkWriter hands response bytes to the connection's loop, with flow
// control; it runs on a file worker. The loop takes (writes or buffers) a
// chunk before the hand-over returns, so chunks are not copied. In its
// final mode it only keeps the chunk, which the worker hands over last.
type chunkWriter struct {
	j       *job
	sent    int // bytes taken by the loop
	lastAck int // the connection's unsent bytes at the last hand-over
	err     error
	final   bool
	pending []byte
}

func (w *chunkWriter) reset() {
	w.sent, w.lastAck, w.err, w.final, w.pending = 0, 0, nil, false, nil
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.final {
		w.pending = p
		return len(p), nil
	}
	if err := w.handOver(p); err != nil {
		w.err = err
		return 0, err
	}
	w.sent += len(p)
	if err := w.pace(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pace waits while the connection's unsent bytes are over the high mark.
func (w *chunkWriter) pace() error {
	j := w.j
	for w.lastAck >= streamHighWater {
		j.stall.Reset(streamPause)
		select {
		case <-j.stall.C:
		case <-j.c.srv.done:
			j.stall.Stop()
			w.err = errClosed
			return w.err
		}
		if err := w.handOver(nil); err != nil {
			w.err = err
			return err
		}
	}
	return nil
}

// waitCongestion holds the response of a job started on a congested
// connection until its unsent bytes fall under the high mark.
func (j *job) waitCongestion() error {
	if !j.congested {
		return nil
	}
	w := &j.cw
	if err := w.handOver(nil); err != nil {
		w.err = err
		return err
	}
	return w.pace()
}

// handOver queues b on the loop and waits for the loop to take it.
func (w *chunkWriter) handOver(b []byte) error {
	j := w.j
	j.chunk = len(b)
	if err := j.t.AsyncWrite(b, j.ackFn); err != nil {
		return err
	}
	j.stall.Reset(streamStall)
	defer j.stall.Stop()
	select {
	case a := <-j.acked:
		if a.err != nil {
			return a.err
		}
		w.lastAck = a.buffered
		return nil
	case <-j.stall.C:
		j.abandoned = true
		return errors.New("engine: response stalled")
	case <-j.c.srv.done:
		j.abandoned = true
		return errClosed
	}
}

// ack runs on the loop when a chunk other than the last was taken.
func (j *job) ack(buffered int, err error) {
	if err == nil && j.chunk > 0 {
		j.c.loop.stats.bytesOut.Add(uint64(j.chunk))
	}
	select {
	case j.acked <- jobAck{buffered, err}:
	default:
	}
}

// writeResponse streams ctx.Response to the connection: every chunk but
// the last through chunkWriter, the last with finish.
func (j *job) writeResponse() {
	resp := &j.ctx.Response
	resp.Header.Set("Server", "zenconn")
	err := j.waitCongestion()
	if err == nil {
		err = resp.Write(j.bw)
	}
	j.hdrLen = len(resp.Header.Header())
	if err == nil {
		// Flush hands bufio's buffer to pending, not to the loop: bufio
		// still updates itself after the Write, so the hand-over waits
		// until Flush has returned.
		j.cw.final = true
		err = j.bw.Flush()
	}
	if err == nil {
		err = j.cw.err
	}
	last := j.cw.pending
	if err != nil {
		j.err = err
		last = nil
	}
	j.handLast(last)
}

// handLast hands over the last chunk (possibly empty) with finish. The
// worker must not touch the job afterwards.
func (j *job) handLast(b []byte) {
	j.last = len(b)
	if err := j.t.AsyncWrite(b, j.finishFn); err != nil {
		// The loop is gone: finish will not run.
		j.c.srv.log.Debug("resume after response", "err", err)
	}
}

// finish runs on the loop once the last chunk was taken: it logs and
// counts the request, then hands the connection back: the next pipelined
// request is parsed on the loop.
func (j *job) finish(_ int, err error) {
	c, s := j.c, j.c.srv
	if err == nil && j.last > 0 {
		c.loop.stats.bytesOut.Add(uint64(j.last))
	}
	if err != nil && j.err == nil {
		j.err = err
	}
	sent := j.cw.sent
	if j.err == nil {
		sent += j.last
	}
	body := max(sent-j.hdrLen, 0)
	if s.cfg.AccessLog != nil {
		ctx := &j.ctx
		info := requestInfo{
			method:    ctx.Method(),
			uri:       ctx.RequestURI(),
			protocol:  ctx.Request.Header.Protocol(),
			referer:   ctx.Referer(),
			userAgent: ctx.UserAgent(),
		}
		s.accessLog(c, &info, j.status, body)
	}
	s.countStatus(j.status)
	keep := j.keepAlive && j.err == nil
	j.release()
	if c.state == stateClosed {
		return
	}
	c.busy = false
	if !keep {
		c.linger()
		return
	}
	if c.leftover > 0 {
		// Pipelined requests wait in the transport's buffer.
		c.t.Wake()
	}
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
	if inm := ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch); len(inm) > 0 {
		if etag != "" && etagMatch(inm, etag) {
			ctx.Response.Header.Set("ETag", etag)
			ctx.SetStatusCode(fasthttp.StatusNotModified)
			ctx.Response.SkipBody = true
			return
		}
		// If-Modified-Since is ignored when If-None-Match is present
		// (RFC 9110 section 13.1.3); fasthttp's FS, which has no ETag of
		// its own here, would evaluate it.
		ctx.Request.Header.Del(fasthttp.HeaderIfModifiedSince)
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
	for len(header) > 0 {
		f := header
		if i := bytes.IndexByte(header, ','); i >= 0 {
			f, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		f = bytes.TrimSpace(f)
		if len(f) >= 2 && f[0] == 'W' && f[1] == '/' {
			f = f[2:]
		}
		if string(f) == "*" || string(f) == weak {
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
