package engine

import (
	"bytes"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/engine/static"
)

// The engine's side of static files and of the requests answered off the
// loops: a loop asks the static server to answer a file from memory
// (serveFile), and hands everything else to its workers (startJob) with
// the connection busy until the response is queued (fileConn.Answered).

// newFiles prepares the static server over the public folder and the
// handlers of the requests that its workers run for the engine.
func (s *Server) newFiles() (*static.Server, error) {
	s.serveMetricsFn, s.serveAPIFn = s.metricsHandler(), s.serveAPI
	s.localKeys.log = s.log
	return static.New(static.Options{
		Root:        s.publicAbs,
		CompressDir: s.cfg.CompressDir,
		Clock:       &s.clock,
		Logger:      s.log,
		HSTS:        s.hstsValue(),
	})
}

// serveFile answers a GET or HEAD for a fresh cached file on the loop and
// reports whether it did; otherwise the request goes to a file worker.
func (c *Conn) serveFile(req *requestInfo, keepAlive bool) bool {
	l, s := c.loop, c.srv
	b, status, sent, ok := s.files.AppendCachedSecure(l.respBuf[:0], &l.date, &l.http.hdr, c.t.Buffered(), keepAlive, c.secure())
	if !ok {
		return false
	}
	c.writeNow(b)
	if cap(b) > 2*static.MaxFile {
		b = nil
	}
	l.respBuf = b
	s.countStatus(status)
	s.accessLog(c, req, status, sent)
	if !keepAlive {
		c.linger()
	}
	return true
}

// startJob hands the request to the static server's workers: handler
// answers it, nil serves a file. Input stays buffered (busy) until the
// response is fully queued.
func (c *Conn) startJob(handler fasthttp.RequestHandler, req *requestInfo, keepAlive bool, body []byte) {
	c.busy = true
	if !c.srv.files.Go((*fileConn)(c), &c.loop.http.hdr, body, c.t.Buffered(), keepAlive, handler) {
		// Every file worker is busy and the queue is full.
		c.busy = false
		c.respondSimple(req, 503, "server busy, retry\n", false, false, []byte("Retry-After: 1\r\n"))
	}
}

// fileConn is a Conn as the static server's workers see it
// (static.Conn): a conversion of *Conn, so that these methods stay off
// Conn's own API.
type fileConn Conn

func (fc *fileConn) AsyncWrite(p []byte, done func(int, error)) error {
	return fc.t.AsyncWrite(p, done)
}

func (fc *fileConn) RemoteAddr() net.Addr { return fc.t.RemoteAddr() }

// Secure makes fileConn a static.SecureConn: responses over TLS carry
// Config.HSTS.
func (fc *fileConn) Secure() bool { return (*Conn)(fc).secure() }

// secure tells whether the connection is served over TLS.
func (c *Conn) secure() bool {
	_, ok := c.t.(*tlsConn)
	return ok
}

// hstsValue is the Strict-Transport-Security value of Config.HSTS, "" when
// off.
func (s *Server) hstsValue() string {
	if s.cfg.HSTS <= 0 {
		return ""
	}
	return "max-age=" + strconv.FormatInt(int64(s.cfg.HSTS/time.Second), 10)
}

func (fc *fileConn) Sent(n int) { fc.loop.stats.bytesOut.Add(uint64(n)) }

// Answered runs on the loop once a worker's response was taken: it logs
// and counts the request, then hands the connection back: the next
// pipelined request is parsed on the loop.
func (fc *fileConn) Answered(r *static.Result) {
	c, s := (*Conn)(fc), fc.srv
	if s.cfg.AccessLog != nil {
		h := &r.Request.Header
		info := requestInfo{
			method:    h.Method(),
			uri:       h.RequestURI(),
			protocol:  h.Protocol(),
			referer:   h.Referer(),
			userAgent: h.UserAgent(),
		}
		s.accessLog(c, &info, r.Status, r.Body)
	}
	s.countStatus(r.Status)
	if c.state == stateClosed {
		return
	}
	c.busy = false
	if !r.KeepAlive {
		c.linger()
		return
	}
	if len(c.in) > 0 {
		// Pipelined requests wait in the held input.
		c.t.Wake()
	}
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
