package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/panjf2000/gnet/v2"
	"github.com/panjf2000/gnet/v2/pkg/logging"
	"golang.org/x/sys/unix"
)

// gnetTransportServer runs the engine on gnet event loops.
type gnetTransportServer struct {
	gnet.BuiltinEventEngine
	s       *Server
	eng     gnet.Engine
	addr    net.Addr
	tlsAddr *net.TCPAddr // Config.TLSAddr resolved, or nil
	booted  chan struct{}
	runErr  chan error

	mu       sync.Mutex
	loops    map[gnet.EventLoop]*loop
	yielders []*yielder

	writes *writeWatcher // gnetwritable.go
}

func startGnet(s *Server) (*gnetTransportServer, error) {
	g := &gnetTransportServer{
		s:      s,
		booted: make(chan struct{}),
		runErr: make(chan error, 1),
		loops:  make(map[gnet.EventLoop]*loop),
	}
	// Every loop has its own SO_REUSEPORT listener and accepts for itself,
	// so a connection is opened (and counted against MaxConnections) in
	// the same loop pass that accepted it. Port 0 is resolved first, with
	// a placeholder listener in the same reuseport group, so that every
	// loop binds the same port.
	resolved, placeholder, err := ReservePort(s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("engine: listen on %s: %w", s.cfg.Addr, err)
	}
	if placeholder != nil {
		defer placeholder.Close()
	}
	if g.addr, err = net.ResolveTCPAddr("tcp", resolved); err != nil {
		return nil, fmt.Errorf("engine: listen on %s: %w", s.cfg.Addr, err)
	}
	addrs := []string{"tcp://" + resolved}
	if s.cfg.TLSAddr != "" {
		tlsResolved, tlsPlaceholder, err := ReservePort(s.cfg.TLSAddr)
		if err != nil {
			return nil, fmt.Errorf("engine: listen on %s: %w", s.cfg.TLSAddr, err)
		}
		if tlsPlaceholder != nil {
			defer tlsPlaceholder.Close()
		}
		if g.tlsAddr, err = net.ResolveTCPAddr("tcp", tlsResolved); err != nil {
			return nil, fmt.Errorf("engine: listen on %s: %w", s.cfg.TLSAddr, err)
		}
		addrs = append(addrs, "tcp://"+tlsResolved)
		s.tlsPort = g.tlsAddr.Port // before the loops run: they read it
	}
	if g.writes, err = newWriteWatcher(); err != nil {
		return nil, fmt.Errorf("engine: write watcher: %w", err)
	}
	go func() {
		g.runErr <- gnet.Rotate(g, addrs,
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.cfg.Loops),
			gnet.WithReusePort(true),
			gnet.WithReuseAddr(true),
			gnet.WithTCPNoDelay(gnet.TCPNoDelay),
			gnet.WithLoadBalancing(gnet.LeastConnections),
			gnet.WithLogger(gnetLogger{s}),
			gnet.WithLogLevel(logging.ErrorLevel),
		)
	}()
	select {
	case <-g.booted:
		return g, nil
	case err := <-g.runErr:
		g.writes.stop()
		return nil, fmt.Errorf("engine: listen on %s: %w", s.cfg.Addr, err)
	}
}

func (g *gnetTransportServer) stop(ctx context.Context) error {
	defer g.writes.stop()
	if err := g.eng.Stop(ctx); err != nil {
		return err
	}
	defer func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, y := range g.yielders {
			y.close()
		}
	}()
	select {
	case <-g.runErr:
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
	}
	return nil
}

// OnBoot records the engine once every loop listens.
func (g *gnetTransportServer) OnBoot(eng gnet.Engine) gnet.Action {
	g.eng = eng
	close(g.booted)
	return gnet.None
}

// ReservePort resolves port 0 in addr to a free port. It returns the
// address to bind and, when it picked a port, the placeholder listener
// holding it (SO_REUSEPORT, so the real listeners, in this process or
// others, can join it), to close once they are bound.
func ReservePort(addr string) (string, io.Closer, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, err
	}
	if port != "0" {
		return addr, nil, nil
	}
	ln, err := ListenReusePort(addr)
	if err != nil {
		return "", nil, err
	}
	return net.JoinHostPort(host, strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)), ln, nil
}

// ListenReusePort listens on addr with SO_REUSEPORT, as a worker's event
// loops do, so that they can join the listener.
func ListenReusePort(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", addr)
}

func (g *gnetTransportServer) loopFor(el gnet.EventLoop) *loop {
	g.mu.Lock()
	defer g.mu.Unlock()
	l := g.loops[el]
	if l == nil {
		y, err := newYielder(el)
		if err != nil {
			g.s.log.Warn("loop without yields: its passes run whole", "err", err)
		} else {
			g.yielders = append(g.yielders, y)
		}
		l = g.s.hub.addLoop(g.s, gnetExecutor{el, y})
		l.http = newHTTPParser()
		g.loops[el] = l
	}
	return l
}

func (g *gnetTransportServer) OnOpen(c gnet.Conn) ([]byte, gnet.Action) {
	if y, ok := c.Context().(*yielder); ok {
		y.ready = true
		return nil, gnet.None
	}
	if g.s.draining.Load() {
		return nil, gnet.Close
	}
	var lim connLimits
	isTLS := g.servesTLS(c)
	if refusal := g.s.admitPeer(c.RemoteAddr(), &lim); refusal != nil {
		return plainAnswer(refusal, isTLS), gnet.Close
	}
	l := g.loopFor(c.EventLoop())
	if l == nil {
		g.s.lim.ips.releaseIf(lim.peer)
		return nil, gnet.Close
	}
	if g.s.overCapacity(l) {
		g.s.lim.ips.releaseIf(lim.peer)
		return plainAnswer(busyResponse, isTLS), gnet.Close
	}
	gc := &gnetConn{c: c, w: g.writes}
	var t Transport = gc
	if isTLS {
		t = newTLSConn(g.s, l, gc)
	}
	conn := g.s.open(l, t)
	conn.lim = lim
	c.SetContext(conn)
	return nil, gnet.None
}

// servesTLS tells whether c serves TLS: every connection with Config.TLS
// alone, those accepted on Config.TLSAddr's port with it.
func (g *gnetTransportServer) servesTLS(c gnet.Conn) bool {
	if g.s.cfg.TLS == nil {
		return false
	}
	if g.tlsAddr == nil {
		return true
	}
	local, ok := c.LocalAddr().(*net.TCPAddr)
	return ok && local.Port == g.tlsAddr.Port
}

// plainAnswer is an HTTP answer written before a connection is served, or
// nil with TLS: it cannot be sent before the TLS handshake, so the
// connection is just closed.
func plainAnswer(b []byte, isTLS bool) []byte {
	if isTLS {
		return nil
	}
	return b
}

func (g *gnetTransportServer) OnTraffic(c gnet.Conn) gnet.Action {
	conn, ok := c.Context().(*Conn)
	if !ok {
		if y, ok := c.Context().(*yielder); ok {
			y.traffic(c)
			return gnet.None
		}
		return gnet.Close
	}
	in, _ := c.Peek(-1)
	gc := gnetOf(conn.t)
	if gc != nil {
		gc.serving = true
	}
	if tc, ok := conn.t.(*tlsConn); ok {
		if n := tc.traffic(conn, in); n > 0 {
			_, _ = c.Discard(n)
		}
	} else if n := conn.Serve(in); n > 0 {
		_, _ = c.Discard(n)
	}
	if gc != nil {
		gc.serving = false
		if gc.closeNow {
			return gnet.Close
		}
	}
	return gnet.None
}

func (g *gnetTransportServer) OnClose(c gnet.Conn, _ error) gnet.Action {
	if y, ok := c.Context().(*yielder); ok {
		y.closed()
	}
	if conn, ok := c.Context().(*Conn); ok {
		if gc := gnetOf(conn.t); gc != nil {
			gc.gone = true
			if gc.waited {
				g.writes.forget(gc)
			}
		}
		if tc, ok := conn.t.(*tlsConn); ok {
			tc.closed()
		}
		conn.Closed()
	}
	return gnet.None
}

// gnetOf returns the gnet connection under t, nil if there is none.
func gnetOf(t Transport) *gnetConn {
	switch t := t.(type) {
	case *gnetConn:
		return t
	case *tlsConn:
		return t.gc
	}
	return nil
}

// gnetConn adapts gnet.Conn to Transport.
type gnetConn struct {
	c gnet.Conn
	// serving is set while OnTraffic serves this connection; a Close
	// meanwhile sets closeNow and OnTraffic closes it on return, in the
	// same pass (gnet's Close from the loop is a queued task).
	serving, closeNow bool
	// gone is set once gnet closed the connection; w tells it when its
	// socket is writable again (gnetwritable.go).
	gone, waited bool
	w            *writeWatcher
}

// Write writes straight to the socket with a raw write(2) when nothing is
// queued (a non-blocking socket never blocks, so the runtime's syscall
// bookkeeping is not needed), and leaves what the kernel did not take to
// gnet's outbound buffer, which then waits for writability.
func (t *gnetConn) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	if t.c.OutboundBuffered() == 0 {
		n, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(t.c.Fd()), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			if int(n) == len(p) {
				return
			}
			p = p[n:]
		case unix.EAGAIN:
		default:
			_ = t.c.Close()
			return
		}
	}
	_, _ = t.c.Write(p)
}

func (t *gnetConn) Buffered() int { return t.c.OutboundBuffered() }

func (t *gnetConn) CloseWrite() {
	if t.c.OutboundBuffered() == 0 {
		_ = unix.Shutdown(t.c.Fd(), unix.SHUT_WR)
	}
}

func (t *gnetConn) ResetOnClose() {
	_ = unix.SetsockoptLinger(t.c.Fd(), unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1})
}

func (t *gnetConn) Close() {
	if t.serving {
		t.closeNow = true
		return
	}
	_ = t.c.Close()
}

func (t *gnetConn) Wake() { _ = t.c.Wake(nil) }

func (t *gnetConn) RemoteAddr() net.Addr { return t.c.RemoteAddr() }

func (t *gnetConn) AsyncWrite(p []byte, done func(int, error)) error {
	return t.c.AsyncWrite(p, func(c gnet.Conn, err error) error {
		if err != nil {
			done(0, err)
			return nil
		}
		done(c.OutboundBuffered(), nil)
		return nil
	})
}

// gnetExecutor runs functions on one gnet event loop.
type gnetExecutor struct {
	el gnet.EventLoop
	y  *yielder // nil: Yield is Execute
}

type runFunc func()

func (f runFunc) Run(context.Context) error { f(); return nil }

func (e gnetExecutor) Execute(fn func()) error {
	return e.el.Execute(context.Background(), runFunc(fn))
}

func (e gnetExecutor) Yield(fn func()) error {
	if e.y.yield(fn) {
		return nil
	}
	return e.Execute(fn)
}

// gnetLogger sends gnet's messages to the application log.
type gnetLogger struct{ s *Server }

func (l gnetLogger) Debugf(format string, args ...any) {
	l.s.log.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (l gnetLogger) Infof(format string, args ...any) {
	l.s.log.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (l gnetLogger) Warnf(format string, args ...any) {
	l.s.log.Warn("gnet: " + fmt.Sprintf(format, args...))
}
func (l gnetLogger) Errorf(format string, args ...any) {
	l.s.log.Error("gnet: " + fmt.Sprintf(format, args...))
}
func (l gnetLogger) Fatalf(format string, args ...any) {
	l.s.log.Error("gnet: " + fmt.Sprintf(format, args...))
}
