package static

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// Options configures a Server.
type Options struct {
	// Root is the public folder. A missing folder serves 404s. Required.
	Root string
	// CompressDir holds the compressed copies of static files that
	// fasthttp's FS makes on first use. Default: a folder under the
	// system's temporary folder.
	CompressDir string
	// Clock is the coarse wall clock (Unix ns) that dates responses and
	// times revalidation; its owner advances it (every 250 ms in the
	// engine). Required.
	Clock *atomic.Int64
	// Logger receives debug messages of the workers and of fasthttp.
	// Default: discard.
	Logger *slog.Logger
	// HSTS, when set, is the value of a Strict-Transport-Security header
	// added to every response to a secure connection (AppendCachedSecure
	// with secure set; a Conn given to Go that is a SecureConn reporting
	// true). Default: none.
	HSTS string
}

// SecureConn is a Conn that tells whether it is secure (TLS): responses
// to it carry Options.HSTS.
type SecureConn interface {
	Conn
	Secure() bool
}

// Server answers static-file requests from the public folder: from
// memory on the caller's event loop when it can (AppendCached), otherwise
// on its pool of workers (Go), which also runs requests with handlers of
// their own. Start starts the workers, Close stops them.
//
// AppendCached and Go are called on event loops, any number of them at
// once; Start and Close once each, by the owner.
type Server struct {
	root  string
	clock *atomic.Int64
	log   *slog.Logger
	fhLog fasthttp.Logger
	hsts  string // Options.HSTS

	files  *fileCache              // small files, answered on the loops
	fs     fasthttp.RequestHandler // everything else, on the workers
	fsStop chan struct{}           // stops fs's cache cleaner

	jobs chan *job
	done chan struct{}
	wg   sync.WaitGroup
}

// Conn is the connection a request handed to Go came on, as the workers
// see it. The engine implements it on its connections.
type Conn interface {
	// AsyncWrite queues p on the connection's loop; done then runs on the
	// loop with the bytes still unsent, or a non-nil error when the
	// connection is gone. p is not modified until done runs. Called from
	// a worker.
	AsyncWrite(p []byte, done func(unsent int, err error)) error
	// RemoteAddr is the peer's address. Called from a worker.
	RemoteAddr() net.Addr
	// Sent runs on the loop when the loop took n bytes of the response.
	Sent(n int)
	// Answered runs on the loop once the whole response was taken, or
	// failed; r is valid only during the call. The connection belongs to
	// its loop again afterwards.
	Answered(r *Result)
}

// Result describes a response produced by a worker, for the access log,
// the metrics and the connection's next state.
type Result struct {
	// Request is the request answered (its head, for the access log).
	Request *fasthttp.Request
	// Status is the response's status code.
	Status int
	// Body is the number of body bytes taken by the loop.
	Body int
	// KeepAlive is set when the connection stays open for the next
	// request: the request asked for it and the response went out whole.
	KeepAlive bool
	// Err is why the response did not go out whole, or nil.
	Err error
}

// workers is the number of goroutines that answer requests off the loops;
// queueLen bounds the requests waiting for one.
const (
	workers  = 16
	queueLen = 1024
)

// New prepares a Server over opts.Root; Start starts its workers.
func New(opts Options) (*Server, error) {
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, fmt.Errorf("static: public folder: %w", err)
	}
	compress := opts.CompressDir
	if compress == "" {
		compress = filepath.Join(os.TempDir(), "zenconn-compressed")
	}
	if err := os.MkdirAll(compress, 0o700); err != nil {
		return nil, fmt.Errorf("static: compressed file cache: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{
		root:   root,
		hsts:   opts.HSTS,
		clock:  opts.Clock,
		log:    log,
		fhLog:  fasthttpLogger{log},
		files:  newFileCache(root),
		fsStop: make(chan struct{}),
		jobs:   make(chan *job, queueLen),
		done:   make(chan struct{}),
	}
	s.fs = newFS(root, compress, s.fsStop)
	return s, nil
}

// Start starts the workers.
func (s *Server) Start() {
	for range workers {
		s.wg.Add(1)
		go s.runJobs()
	}
}

// Close stops the workers and fasthttp's cache cleaner and waits for the
// workers to return. A response being streamed is abandoned. Call it once,
// after the loops stopped handing requests over; it needs no Start.
func (s *Server) Close() {
	close(s.done)
	close(s.fsStop)
	s.wg.Wait()
}

// AppendCached answers a GET or HEAD for a fresh cached file from memory,
// on the caller's loop: it appends the whole response to dst and returns
// it, with its status and the body bytes it holds. ok is false when the
// request needs a worker (not cached, a Range, a congested connection, an
// entry due for a check: the caller then hands it to Go); dst is then
// returned as it was.
//
// h is the parsed request head; unsent is the connection's bytes not yet
// accepted by the kernel; date is the loop's. It never touches the disk
// and does not allocate.
func (s *Server) AppendCached(dst []byte, date *Date, h *fasthttp.RequestHeader, unsent int, keepAlive bool) (resp []byte, status, body int, ok bool) {
	return s.AppendCachedSecure(dst, date, h, unsent, keepAlive, false)
}

// AppendCachedSecure is AppendCached for a connection that may be secure:
// with secure set the response carries Options.HSTS.
func (s *Server) AppendCachedSecure(dst []byte, date *Date, h *fasthttp.RequestHeader, unsent int, keepAlive, secure bool) (resp []byte, status, body int, ok bool) {
	key, ok := cachePath(h.RequestURI())
	if !ok {
		return dst, 0, 0, false
	}
	e := s.files.get(key)
	if e == nil || e.stream || len(h.Peek(fasthttp.HeaderRange)) > 0 {
		return dst, 0, 0, false
	}
	if unsent > streamHighWater {
		// A peer that does not read: the workers pace the response.
		return dst, 0, 0, false
	}
	now := s.clock.Load()
	if !e.fresh(now) {
		return dst, 0, 0, false
	}
	e.touch(now)
	notMod := e.notModified(h)
	status = fasthttp.StatusOK
	if notMod {
		status = fasthttp.StatusNotModified
	}
	hsts := ""
	if secure {
		hsts = s.hsts
	}
	resp, body = appendFileResponse(dst, e.pick(h), notMod, date.Get(now), h.IsHead(), keepAlive, hsts)
	return resp, status, body, true
}

// Go hands a request to the workers and reports whether they took it
// (false: every worker is busy and the queue is full; the caller answers
// 503). Called on the connection's loop, which must not hand c another
// request until c.Answered ran.
//
// It copies the head h and the body. handler answers the request; nil
// serves a static file. unsent is the connection's bytes not yet accepted
// by the kernel: over the high mark, the response waits for them.
func (s *Server) Go(c Conn, h *fasthttp.RequestHeader, body []byte, unsent int, keepAlive bool, handler fasthttp.RequestHandler) bool {
	j := jobPool.Get().(*job)
	j.srv, j.c, j.handler, j.keepAlive = s, c, handler, keepAlive
	if sc, ok := c.(SecureConn); ok && s.hsts != "" && sc.Secure() {
		j.hsts = s.hsts
	}
	j.congested = unsent > streamHighWater
	h.CopyTo(&j.req.Header)
	j.req.SetBody(body)
	select {
	case s.jobs <- j:
		return true
	default:
		j.release()
		return false
	}
}

// Pending is the number of requests waiting for a worker.
func (s *Server) Pending() int { return len(s.jobs) }

// RunPending runs the waiting requests on the calling goroutine, until
// none is left, and returns how many it ran. It is for harnesses that
// drive connections by hand, without Start; Conn.AsyncWrite must then run
// done before it returns.
func (s *Server) RunPending() int {
	n := 0
	for {
		select {
		case j := <-s.jobs:
			s.runJob(j)
			n++
		default:
			return n
		}
	}
}

// DropPending forgets the waiting requests without answering them (a
// harness's cleanup): their connections never see Answered.
func (s *Server) DropPending() {
	for {
		select {
		case j := <-s.jobs:
			j.release()
		default:
			return
		}
	}
}
