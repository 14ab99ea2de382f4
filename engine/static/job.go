package static

import (
	"bufio"
	"bytes"
	"errors"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// job is one HTTP request answered off the event loops: a static file
// that the file cache cannot answer on the loop (disk reads and first-time
// compression would stall it), or a request with a handler of its own
// (/metrics, the server API).
//
// A job is pooled with everything it needs (a 64 KiB response buffer, a
// timer, its callbacks) so that running one allocates little. The worker
// hands every chunk but the last to the loop and waits for it to be taken;
// the last chunk goes with finishFn, which runs on the loop, reports the
// response to the connection and returns the job to the pool: the worker
// never touches the job after that hand-over.
type job struct {
	srv       *Server
	c         Conn
	handler   fasthttp.RequestHandler // nil: a static file
	keepAlive bool
	hsts      string // Strict-Transport-Security value, "" for none
	// congested is set when the connection had over streamHighWater
	// bytes unsent as the job started: the response waits for them.
	congested bool
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
	hdrLen   int   // response head bytes, for the body bytes reported
	last     int   // bytes of the last chunk
	err      error // from the earlier chunks
	res      Result
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

func (j *job) release() {
	if j.abandoned {
		return
	}
	j.srv, j.c, j.handler, j.err, j.congested, j.hsts = nil, nil, nil, nil, false, ""
	j.res = Result{}
	j.req.Reset()
	j.ctx.Response.Reset()
	j.bw.Reset(&j.cw)
	if cap(j.raw) > 2*MaxFile {
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
	defer s.wg.Done()
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
	ctx.Init(&j.req, j.c.RemoteAddr(), s.fhLog)
	j.cw.reset()
	if j.handler == nil && s.serveCachedFile(j) {
		return
	}
	if j.handler != nil {
		j.handler(ctx)
	} else {
		s.serveFS(ctx)
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
	var date Date
	b, body := appendFileResponse(j.raw[:0], e.pick(h), notMod, date.Get(now), h.IsHead(), j.keepAlive, j.hsts)
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
		case <-j.srv.done:
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
	if err := j.c.AsyncWrite(b, j.ackFn); err != nil {
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
		return errStalled
	case <-j.srv.done:
		j.abandoned = true
		return errClosed
	}
}

// ack runs on the loop when a chunk other than the last was taken.
func (j *job) ack(buffered int, err error) {
	if err == nil && j.chunk > 0 {
		j.c.Sent(j.chunk)
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
	// Browsers take the file for its Content-Type, not for what its bytes
	// look like.
	resp.Header.Set("X-Content-Type-Options", "nosniff")
	if j.hsts != "" {
		resp.Header.Set("Strict-Transport-Security", j.hsts)
	}
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
	s := j.srv
	if err := j.c.AsyncWrite(b, j.finishFn); err != nil {
		// The loop is gone: finish will not run.
		s.log.Debug("resume after response", "err", err)
	}
}

// finish runs on the loop once the last chunk was taken: it reports the
// response to the connection, which hands itself back to its loop (the
// next pipelined request is parsed there), and returns the job to the
// pool.
func (j *job) finish(_ int, err error) {
	c := j.c
	if err == nil && j.last > 0 {
		c.Sent(j.last)
	}
	if err != nil && j.err == nil {
		j.err = err
	}
	sent := j.cw.sent
	if j.err == nil {
		sent += j.last
	}
	j.res = Result{
		Request:   &j.ctx.Request,
		Status:    j.status,
		Body:      max(sent-j.hdrLen, 0),
		KeepAlive: j.keepAlive && j.err == nil,
		Err:       j.err,
	}
	c.Answered(&j.res)
	j.release()
}

var (
	errClosed  = errors.New("static: server closed")
	errStalled = errors.New("static: response stalled")
)
