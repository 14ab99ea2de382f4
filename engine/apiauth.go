package engine

import (
	"crypto/subtle"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Who may read /metrics ("--metrics"), Config.Metrics.
const (
	MetricsOpen = "open" // anyone (the default)
	MetricsKey  = "key"  // requests carrying the API key, like /api/
	MetricsOff  = "off"  // nobody: 404
)

// MaxKeyFailures is how many failed API-key attempts one remote address
// may make in KeyFailureWindow (a fixed bound): past it every request of
// that address to /api/ (and to /metrics under --metrics=key) gets 429
// until the window that started with its first failure ends.
const (
	MaxKeyFailures   = 10
	KeyFailureWindow = time.Minute
)

// keyGuardMaxAddrs bounds the addresses the guard remembers; past it the
// entries whose window ended are dropped, and if none has, the new address
// is not remembered (its failures are still refused and audited).
const keyGuardMaxAddrs = 1 << 16

var (
	apiLimited = []byte(`{"error":"too many failed API-key attempts from this address; retry later"}` + "\n")
	// errMetricsKey is Validate's complaint about --metrics=key without a key.
	errMetricsKey = errors.New("--metrics=key: needs --api-key")
)

// keyGuard counts failed API-key attempts per remote address. It is used
// by the file workers (never on a loop), under its mutex.
type keyGuard struct {
	mu    sync.Mutex
	addrs map[netip.Addr]keyFailures

	failures atomic.Uint64 // failed attempts, all addresses
	limited  atomic.Uint64 // requests answered 429
	lastLog  atomic.Int64  // unix ns of the last "address limited" log line
}

type keyFailures struct {
	start time.Time // the window's start: the first failure in it
	n     int
}

// blockedFor reports how long addr stays refused (0: it is not).
func (g *keyGuard) blockedFor(addr netip.Addr, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.addrs[addr]
	if !ok || f.n < MaxKeyFailures {
		return 0
	}
	left := f.start.Add(KeyFailureWindow).Sub(now)
	if left <= 0 {
		delete(g.addrs, addr)
		return 0
	}
	return left
}

// fail counts one failed attempt of addr and reports whether it reached
// the limit with it.
func (g *keyGuard) fail(addr netip.Addr, now time.Time) bool {
	g.failures.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.addrs == nil {
		g.addrs = map[netip.Addr]keyFailures{}
	}
	f, ok := g.addrs[addr]
	if !ok && len(g.addrs) >= keyGuardMaxAddrs {
		for a, e := range g.addrs {
			if now.Sub(e.start) >= KeyFailureWindow {
				delete(g.addrs, a)
			}
		}
		if len(g.addrs) >= keyGuardMaxAddrs {
			return false
		}
	}
	if !ok || now.Sub(f.start) >= KeyFailureWindow {
		f = keyFailures{start: now}
	}
	f.n++
	g.addrs[addr] = f
	return f.n == MaxKeyFailures
}

// checkKey answers a request to a keyed endpoint that must not go on: 429
// for an address past MaxKeyFailures, 401 for a missing or wrong key (a
// refusal reported to Config.APIRefused). It reports whether the request
// may go on.
func (s *Server) checkKey(ctx *fasthttp.RequestCtx) bool {
	now := time.Now()
	addr := remoteAddr(ctx.RemoteAddr())
	if left := s.keys.blockedFor(addr, now); left > 0 {
		s.keys.limited.Add(1)
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("Retry-After", strconv.Itoa(int(left/time.Second)+1))
		ctx.SetStatusCode(fasthttp.StatusTooManyRequests)
		ctx.SetBody(apiLimited)
		return false
	}
	if s.apiAuthorized(ctx) {
		return true
	}
	if s.keys.fail(addr, now) {
		s.logLimited(addr)
	}
	if s.cfg.APIRefused != nil {
		s.cfg.APIRefused(ctx.RemoteAddr().String())
	}
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="zenconn-api"`)
	ctx.SetStatusCode(fasthttp.StatusUnauthorized)
	ctx.SetBody(apiUnauthorized)
	return false
}

// logLimited logs that addr reached the failure limit, at most once a
// second for the whole server.
func (s *Server) logLimited(addr netip.Addr) {
	now := time.Now().UnixNano()
	last := s.keys.lastLog.Load()
	if now-last < int64(time.Second) || !s.keys.lastLog.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("too many failed API-key attempts; address refused with 429", "remote", addr.String(),
		"failures", MaxKeyFailures, "window", KeyFailureWindow)
}

// remoteAddr is the IP of a peer address (the zero Addr when it has none).
func remoteAddr(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(t.IP); ok {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

// apiAuthorized compares the key from "Authorization: Bearer" or
// "X-API-Key" with the configured one in constant time.
func (s *Server) apiAuthorized(ctx *fasthttp.RequestCtx) bool {
	if s.cfg.APIKey == "" {
		return false
	}
	key := bearerToken(ctx.Request.Header.Peek("Authorization"))
	if key == "" {
		key = string(ctx.Request.Header.Peek("X-API-Key"))
	}
	return subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) == 1
}

// metricsHandler is what the file workers run for /metrics: the metrics,
// behind the API key under --metrics=key.
func (s *Server) metricsHandler() fasthttp.RequestHandler {
	if s.cfg.Metrics != MetricsKey {
		return s.serveMetrics
	}
	return func(ctx *fasthttp.RequestCtx) {
		if s.checkKey(ctx) {
			s.serveMetrics(ctx)
		}
	}
}

// checkMetrics checks Config.Metrics.
func (c *Config) checkMetrics() error {
	switch c.Metrics {
	case "", MetricsOpen, MetricsOff:
		return nil
	case MetricsKey:
		if c.APIKey == "" {
			return errMetricsKey
		}
		return nil
	}
	return errors.New("--metrics: " + strconv.Quote(c.Metrics) + " is not open, key or off")
}

// registerKeyMetrics adds the API-key guard's counters to r.
func (s *Server) registerKeyMetrics(r *prometheus.Registry) {
	r.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_api_key_failures_total",
			Help: "Requests to /api/ (or to /metrics under --metrics=key) refused with 401 for a missing or wrong API key."},
			func() float64 { return float64(s.keys.failures.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_api_key_limited_total",
			Help: "Requests refused with 429 because their address made too many failed API-key attempts."},
			func() float64 { return float64(s.keys.limited.Load()) }),
	)
}
