package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/engine/static"
	"github.com/zenconn/server/nodemsg"
)

// Server is one ZenConn node serving HTTP and WebSocket clients on event
// loops. Its exported methods are safe for concurrent use.
type Server struct {
	cfg       Config
	log       *slog.Logger
	publicAbs string
	hsts      string         // the Strict-Transport-Security value (Config.HSTS), "" when off
	tlsPort   int            // Config.TLSAddr's port once bound, for redirects
	files     *static.Server // static files, and the workers that answer off the loops
	hub       *hub

	// Handlers that the file workers run for /metrics and /api/.
	serveMetricsFn, serveAPIFn fasthttp.RequestHandler

	clock    atomic.Int64 // coarse wall clock, ns, updated by the ticker
	connSeq  atomic.Uint64
	draining atomic.Bool

	registry    *prometheus.Registry
	httpByCode  *prometheus.CounterVec
	statusCache sync.Map // int → prometheus.Counter

	jobsWG sync.WaitGroup // the ticker, tellKeyFailures, trimMemory, the certificate watch
	done   chan struct{}

	transport *gnetTransportServer
	stopOnce  sync.Once

	keys           keyCounters   // API keys refused (apiauth.go)
	localKeys      localAttempts // failed API-key attempts without Config.KeyAttempts
	keyFails       chan string   // failed attempts seen on loops, for KeyAttempts (apiauth.go)
	keyFailsLogged atomic.Int64  // when the last "not audited" line was logged
	lim            limiter       // client limits (limits.go)
	input          inputBudget   // bytes held in partial input, deadlines passed (input.go)

	openConns atomic.Int64  // open transport connections, all loops
	refused   atomic.Uint64 // connections refused at MaxConnections
	// TLS (tls.go): handshakes in progress, connections refused at
	// MaxTLSHandshakes, failed handshakes, and when the last warning was
	// logged.
	tlsHandshakes atomic.Int64
	tlsRefused    atomic.Uint64
	tlsFailed     atomic.Uint64
	tlsLogged     atomic.Int64
	fatal         chan error // receives the error if serving stops by itself
}

// shutdownDrain is how long Shutdown waits for WebSocket clients to answer
// the 1001 close before the loops stop; it keeps the whole shutdown well
// inside the 5 s that supervisors allow.
const shutdownDrain = time.Second

// New validates cfg and prepares a server; Start begins serving.
func New(cfg Config) (*Server, error) {
	if err := errors.Join(cfg.Validate(), cfg.checkWiring()); err != nil {
		return nil, err
	}
	publicAbs, err := filepath.Abs(cfg.PublicDir)
	if err != nil {
		return nil, fmt.Errorf("engine: public folder: %w", err)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger,
		publicAbs: publicAbs,
		hub:       newHub(),
		done:      make(chan struct{}),
		fatal:     make(chan error, 1),
	}
	s.hsts = s.hstsValue()
	if s.files, err = s.newFiles(); err != nil {
		return nil, err
	}
	s.initLimits()
	s.input.limit = int64(cfg.InputBudget)
	s.keyFails = make(chan string, keyFailedQueue)
	s.registerMetrics()
	s.clock.Store(time.Now().UnixNano())
	// Ids advance by nodemsg.MaxWorkers from a start unique to this
	// worker, so the node's processes never hand out the same one.
	s.connSeq.Store(uint64(time.Now().UnixMicro())*nodemsg.MaxWorkers + uint64(cfg.WorkerID))
	return s, nil
}

// Start listens and serves in the background; it returns once the listener
// is bound, or with the error that prevented it.
func (s *Server) Start() error {
	s.files.Start()
	s.jobsWG.Add(3)
	go s.tick()
	go s.tellKeyFailures()
	go s.trimMemory()
	if c := s.cfg.TLSCertificates; c != nil {
		s.jobsWG.Add(1)
		go func() {
			defer s.jobsWG.Done()
			c.Watch(s.done, CertPollInterval, s.log)
		}()
	}
	t, err := startGnet(s)
	if err != nil {
		s.stopOnce.Do(s.stop)
		s.jobsWG.Wait()
		return err
	}
	s.transport = t
	go s.watchTransport()
	// The agent announces the node's address once all workers serve.
	attrs := []any{"addr", t.addr.String(), "loops", s.cfg.Loops, "gomaxprocs", runtime.GOMAXPROCS(0), "max_connections", s.cfg.MaxConnections}
	if t.tlsAddr != nil {
		attrs = append(attrs, "tls_addr", t.tlsAddr.String())
	}
	s.log.Info("worker serving", attrs...)
	return nil
}

// watchTransport reports on Fatal an event-loop engine that stops without
// Shutdown (gnet gives up on an accept error it does not retry).
func (s *Server) watchTransport() {
	select {
	case err := <-s.transport.runErr:
		s.transport.runErr <- err // for stop
		if s.draining.Load() {
			return
		}
		if err == nil {
			err = errors.New("engine: event loops stopped")
		}
		s.log.Error("event loops stopped unexpectedly", "err", err)
		s.fatal <- err
	case <-s.done:
	}
}

// Fatal receives an error when the server stops serving on its own; the
// process should then exit so that its supervisor restarts it.
func (s *Server) Fatal() <-chan error { return s.fatal }

// overCapacity reports whether a new connection accepted on loop l would
// exceed MaxConnections (it is counted by open when accepted). At the
// limit, a slot held by an incomplete request head is reclaimed first
// (loop.reclaimSlot).
func (s *Server) overCapacity(l *loop) bool {
	if s.openConns.Load() < int64(s.cfg.MaxConnections) || l.reclaimSlot(time.Now().UnixNano()) {
		return false
	}
	s.refused.Add(1)
	return true
}

// busyResponse is written to a connection refused at MaxConnections.
var busyResponse = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 27\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections, retry")

// TLSAddr returns the bound address of Config.TLSAddr, nil before Start
// or without it.
func (s *Server) TLSAddr() net.Addr {
	if s.transport == nil || s.transport.tlsAddr == nil {
		return nil
	}
	return s.transport.tlsAddr
}

// Addr returns the bound listening address, nil before Start.
func (s *Server) Addr() net.Addr {
	if s.transport == nil {
		return nil
	}
	return s.transport.addr
}

// Registry returns the Prometheus registry behind /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Shutdown stops accepting connections, closes every WebSocket with 1001,
// waits for clients to finish (at most until ctx ends) and stops the loops.
func (s *Server) Shutdown(ctx context.Context) error {
	if !s.draining.CompareAndSwap(false, true) {
		return errors.New("engine: already shut down")
	}
	for _, l := range s.hub.allLoops() {
		l := l
		_ = l.exec.Execute(func() {
			for c := range l.conns {
				switch c.state {
				case stateWS:
					c.fail(1001, "server shutting down")
				case stateHTTP:
					if !c.busy {
						c.t.Close()
					}
				}
			}
		})
	}
	// Wait for the connections to go, up to the grace period.
	grace := time.NewTimer(shutdownDrain)
	defer grace.Stop()
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
wait:
	for s.openConnections() > 0 {
		select {
		case <-poll.C:
		case <-grace.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if s.openConnections() > 0 {
		s.resetRemaining(ctx)
	}
	var err error
	if s.transport != nil {
		err = s.transport.stop(ctx)
	}
	s.stopOnce.Do(s.stop)
	s.jobsWG.Wait()
	return err
}

// resetRemaining makes the connections still open when the grace period
// ends reset as they close (their clients see 1006 either way). Ended
// with FIN, each would cost four segments with a client that is already
// redialling, and a TIME_WAIT entry held for a minute: at a million, the
// kernel closing what is left is most of a stop. It waits for the loops
// until ctx ends.
func (s *Server) resetRemaining(ctx context.Context) {
	loops := s.hub.allLoops()
	done := make(chan struct{}, len(loops))
	for _, l := range loops {
		err := l.exec.Execute(func() {
			for c := range l.conns {
				c.t.ResetOnClose()
			}
			done <- struct{}{}
		})
		if err != nil {
			done <- struct{}{}
		}
	}
	for range loops {
		select {
		case <-done:
		case <-ctx.Done():
			return
		}
	}
}

// stop stops the ticker and the file workers.
func (s *Server) stop() {
	close(s.done)
	s.files.Close()
}

func (s *Server) openConnections() int64 { return s.openConns.Load() }

// tick advances the coarse clock and runs the periodic connection scan on
// every loop.
func (s *Server) tick() {
	defer s.jobsWG.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var n int
	for {
		select {
		case now := <-t.C:
			ns := now.UnixNano()
			s.clock.Store(ns)
			if n++; n%4 != 0 {
				continue
			}
			s.lim.ips.sweep(ns)
			for _, l := range s.hub.allLoops() {
				l := l
				_ = l.exec.Execute(func() { l.scan(ns) })
			}
		case <-s.done:
			return
		}
	}
}

// open registers a new transport connection on loop l.
func (s *Server) open(l *loop, t Transport) *Conn {
	now := time.Now().UnixNano()
	c := &Conn{srv: s, loop: l, t: t, lastRead: now, phase: phaseFirst, phaseStart: now}
	l.conns[c] = struct{}{}
	c.reschedule()
	l.stats.connections.Add(1)
	s.openConns.Add(1)
	return c
}

// nextConnID returns a node-unique connection id: ConnPrefix, then a
// sequence in base 36. The sequence starts at the boot time in
// microseconds, so a restarted node does not reuse ids.
func (s *Server) nextConnID() string {
	var buf [48]byte
	b := append(buf[:0], s.cfg.ConnPrefix...)
	return string(strconv.AppendUint(b, s.connSeq.Add(nodemsg.MaxWorkers), 36))
}

// accessLog writes the combined-format line for a request handled on the
// loop.
func (s *Server) accessLog(c *Conn, req *requestInfo, status, sent int) {
	if s.cfg.AccessLog == nil {
		return
	}
	l := c.loop
	l.logBuf = s.appendAccess(l.logBuf[:0], c.clientAddr(), req, status, sent)
	s.cfg.AccessLog.WriteLine(l.logBuf)
	if cap(l.logBuf) > 16<<10 {
		l.logBuf = nil
	}
}

// appendAccess appends an nginx/apache "combined" log line to b:
// remote - - [time] "request" status bytes "referer" "user-agent".
func (s *Server) appendAccess(b []byte, remote net.Addr, req *requestInfo, status, sent int) []byte {
	a, ok := remote.(*net.TCPAddr)
	var addr netip.Addr
	if ok {
		addr, ok = netip.AddrFromSlice(a.IP)
	}
	if ok {
		b = addr.Unmap().AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " - - ["...)
	b = time.Unix(0, s.clock.Load()).AppendFormat(b, "02/Jan/2006:15:04:05 -0700")
	b = append(b, `] "`...)
	if len(req.uri) == 0 {
		b = append(b, '-')
	} else {
		b = appendLogEscaped(b, req.method)
		b = append(b, ' ')
		b = appendURIRedacted(b, req.uri)
		b = append(b, ' ')
		b = appendLogEscaped(b, req.protocol)
	}
	b = append(b, `" `...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(sent), 10)
	b = append(b, ` "`...)
	if len(req.referer) == 0 {
		b = append(b, '-')
	} else {
		b = appendURIRedacted(b, req.referer) // a page's own ?token= too
	}
	b = append(b, `" "`...)
	b = appendLogField(b, req.userAgent)
	b = append(b, "\"\n"...)
	return b
}

func appendLogField(b, v []byte) []byte {
	if len(v) == 0 {
		return append(b, '-')
	}
	return appendLogEscaped(b, v)
}

// appendLogEscaped escapes quotes, backslashes and control or non-ASCII
// bytes as \xHH, as nginx does.
func appendLogEscaped(b, v []byte) []byte {
	const hex = "0123456789ABCDEF"
	for _, ch := range v {
		if ch == '"' || ch == '\\' || ch < 0x20 || ch >= 0x7f {
			b = append(b, '\\', 'x', hex[ch>>4], hex[ch&0xf])
			continue
		}
		b = append(b, ch)
	}
	return b
}
