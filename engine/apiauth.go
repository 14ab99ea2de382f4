package engine

import (
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/internal/keyguard"
)

// Who may read /metrics ("--metrics"), Config.Metrics.
const (
	MetricsOpen = "open" // anyone (the default)
	MetricsKey  = "key"  // requests carrying the API key, like /api/
	MetricsOff  = "off"  // nobody: 404
)

// KeyAttempts keeps the failed API-key attempts of a node
// (Config.KeyAttempts); the engine consults it before it checks a key and
// tells it every failure. Its methods run on file workers, never on a
// loop, and must be safe for concurrent use.
type KeyAttempts interface {
	// Blocked reports how long the address stays refused with 429 (0:
	// it is not).
	Blocked(addr netip.Addr) time.Duration
	// Failed records one failed attempt from remote ("ip:port"): it is
	// counted against its address and audited.
	Failed(remote string)
}

// localAttempts is the engine's own KeyAttempts when Config.KeyAttempts
// is nil: counted in this process, not audited.
type localAttempts struct {
	g   keyguard.Guard
	log *slog.Logger
}

func (l *localAttempts) Blocked(addr netip.Addr) time.Duration {
	return l.g.Blocked(addr, time.Now())
}

func (l *localAttempts) Failed(remote string) {
	now := time.Now()
	addr := keyguard.Addr(remote)
	if l.g.Fail(addr, now) && l.g.ShouldLog(now) {
		l.log.Warn("too many failed API-key attempts; address refused with 429", "remote", addr.String(),
			"failures", keyguard.MaxFailures, "window", keyguard.Window)
	}
}

var (
	apiLimited = []byte(`{"error":"too many failed API-key attempts from this address; retry later"}` + "\n")
	// errMetricsKey is Validate's complaint about --metrics=key without a key.
	errMetricsKey = errors.New("--metrics=key: needs --api-key")
)

// keyCounters count what checkKey refused, for /metrics.
type keyCounters struct {
	failures atomic.Uint64 // failed attempts (401)
	limited  atomic.Uint64 // requests answered 429
}

// keyAttempts is Config.KeyAttempts, or the engine's own.
func (s *Server) keyAttempts() KeyAttempts {
	if s.cfg.KeyAttempts != nil {
		return s.cfg.KeyAttempts
	}
	return &s.localKeys
}

// checkKey answers a request to a keyed endpoint that must not go on: 429
// for an address past keyguard.MaxFailures failures (asked before the key
// is looked at, so that a refused address learns nothing about its
// guesses), 401 for a missing or wrong key (a failure told to
// KeyAttempts). It reports whether the request may go on.
func (s *Server) checkKey(ctx *fasthttp.RequestCtx) bool {
	ka := s.keyAttempts()
	if left := ka.Blocked(remoteAddr(ctx.RemoteAddr())); left > 0 {
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
	s.keys.failures.Add(1)
	ka.Failed(ctx.RemoteAddr().String())
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="zenconn-api"`)
	ctx.SetStatusCode(fasthttp.StatusUnauthorized)
	ctx.SetBody(apiUnauthorized)
	return false
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

// keyFailedQueue bounds the failed attempts waiting to be told to
// KeyAttempts from the loops (a worker's asks its agent over a socket).
const keyFailedQueue = 1024

// keyFailed counts a failed API-key attempt seen on a loop and hands it,
// without waiting, to the goroutine that tells KeyAttempts. When that
// queue is full the attempt is still counted here, and a log line (at
// most one a second) says that some were not audited.
func (s *Server) keyFailed(remote string) {
	s.keys.failures.Add(1)
	select {
	case s.keyFails <- remote:
	default:
		now := time.Now().UnixNano()
		if last := s.keyFailsLogged.Load(); now-last > int64(time.Second) && s.keyFailsLogged.CompareAndSwap(last, now) {
			s.log.Warn("failed API-key attempts arrive faster than they can be audited; some are counted but not audited")
		}
	}
}

// tellKeyFailures tells KeyAttempts the failures keyFailed queued, until
// the server stops.
func (s *Server) tellKeyFailures() {
	defer s.jobsWG.Done()
	ka := s.keyAttempts()
	for {
		select {
		case remote := <-s.keyFails:
			ka.Failed(remote)
		case <-s.done:
			return
		}
	}
}
