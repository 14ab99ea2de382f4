package engine

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/proto"
)

// Limits bound what one client address, one connection and one user may
// make a server hold or do. Each field's zero value means its default.
// Config embeds it.
type Limits struct {
	// MaxConnsPerIP bounds open connections from one client address (an
	// IPv6 address counts with its whole /64) on this process
	// ("--max-conns-per-ip"); past it a new connection gets a 429 and is
	// closed. Default 1000.
	MaxConnsPerIP int
	// ConnRatePerIP bounds new connections per second from one client
	// address on this process, with a burst of one second's worth
	// ("--conn-rate-per-ip"); past it a new connection gets a 429. Default 100.
	ConnRatePerIP int
	// MaxConnsPerUser bounds the WebSocket connections of one user (a
	// token's sub) on this process ("--max-conns-per-user"): a handshake
	// past it gets 429, an auth op limit_exceeded. The node-wide bound is
	// the agent's. Default 100.
	MaxConnsPerUser int
	// PublishRate, SubscribeRate and AuthRate are per-connection token
	// buckets, in ops per second with a burst of one second's worth
	// ("--publish-rate", "--subscribe-rate", "--auth-rate"): publish and
	// broadcast; subscribe and unsubscribe; auth. An op past its bucket is
	// answered rate_limited and not performed (nor audited); a connection
	// that keeps going is closed with 4008. Defaults 200, 100 and 5.
	PublishRate, SubscribeRate, AuthRate int
	// TrustedProxies lists the peers whose PROXY protocol header (v1 or
	// v2) or X-Forwarded-For header names the client ("--trusted-proxies").
	// Empty: the TCP peer is the client.
	TrustedProxies []netip.Prefix
	// AllowedOrigins lists the Origin values a WebSocket handshake may
	// carry ("--allowed-origins"): "https://app.example.com" exactly, or
	// "https://*.example.com" for every subdomain. A handshake with any
	// other Origin gets 403; a handshake without Origin (not from a
	// browser) is accepted. Empty: any Origin.
	AllowedOrigins []string
}

// Defaults of the client limits (the flags of zenconn serve show them).
const (
	DefaultMaxConnsPerIP   = 1000
	DefaultConnRatePerIP   = 100
	DefaultMaxConnsPerUser = 100
	DefaultPublishRate     = 200
	DefaultSubscribeRate   = 100
	DefaultAuthRate        = 5
	// maxRate bounds every rate flag: past it the bucket's interval would
	// round to nothing.
	maxRate = 1_000_000
)

// Strikes: a connection answered rate_limited more than strikeBurst times
// beyond strikeRate per second is closed with 4008, and its address may
// then open no new connection for strikePenalty (so that reconnecting
// does not refill the buckets). A client that backs off on rate_limited
// never gets near it.
const (
	strikeRate    = 10
	strikeBurst   = 100
	strikePenalty = time.Second
)

func (lm *Limits) fillDefaults() {
	for _, f := range []struct {
		v   *int
		def int
	}{
		{&lm.MaxConnsPerIP, DefaultMaxConnsPerIP}, {&lm.ConnRatePerIP, DefaultConnRatePerIP},
		{&lm.MaxConnsPerUser, DefaultMaxConnsPerUser}, {&lm.PublishRate, DefaultPublishRate},
		{&lm.SubscribeRate, DefaultSubscribeRate}, {&lm.AuthRate, DefaultAuthRate},
	} {
		if *f.v == 0 {
			*f.v = f.def
		}
	}
}

// check reports every limit outside its range, by flag name.
func (lm *Limits) check() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"--max-conns-per-ip", lm.MaxConnsPerIP}, {"--conn-rate-per-ip", lm.ConnRatePerIP},
		{"--max-conns-per-user", lm.MaxConnsPerUser}, {"--publish-rate", lm.PublishRate},
		{"--subscribe-rate", lm.SubscribeRate}, {"--auth-rate", lm.AuthRate},
	} {
		if f.v < 1 || f.v > maxRate {
			errs = append(errs, fmt.Errorf("%s: %d is outside 1..%d", f.name, f.v, maxRate))
		}
	}
	for _, o := range lm.AllowedOrigins {
		if err := checkOriginPattern(o); err != nil {
			errs = append(errs, fmt.Errorf("--allowed-origins: %w", err))
		}
	}
	return errors.Join(errs...)
}

// bucket is a token bucket kept as one number, in the form of the generic
// cell rate algorithm: its theoretical arrival time. An op at now is
// allowed when tat - now ≤ tolerance; it then advances tat by the
// interval. The zero value is a full bucket.
type bucket struct{ tat int64 }

// rate is a bucket's interval and tolerance, in ns.
type rate struct{ interval, tolerance int64 }

// newRate is perSecond ops per second with a burst of the same number.
func newRate(perSecond int) rate {
	iv := int64(time.Second) / int64(perSecond)
	return rate{interval: iv, tolerance: iv * int64(perSecond-1)}
}

// take reports whether an op may run at now (ns) and, if so, uses a token.
func (b *bucket) take(now int64, r rate) bool {
	tat := max(b.tat, now)
	if tat-now > r.tolerance {
		return false
	}
	b.tat = tat + r.interval
	return true
}

// connLimits is a connection's share of the limits: 56 bytes (a
// forwarded record is added only for connections from trusted proxies).
type connLimits struct {
	publish, subscribe, auth, strikes bucket
	// peer is the connection's entry in the per-address table while it
	// counts there; nil for a trusted proxy's own connection.
	peer *ipEntry
	// fwd is set for a connection from a trusted proxy (see proxy.go).
	fwd *forwarded
	// userHeld: the connection counts for its user in the user table.
	userHeld bool
}

// limiter is the server's side of the limits.
type limiter struct {
	publish, subscribe, auth, strikes rate

	ips   ipTable
	users userTable

	refusedIP, refusedIPRate, refusedUser, refusedOrigin atomic.Uint64
	rateLimited                                          [3]atomic.Uint64 // publish, subscribe, auth
	rateClosed                                           atomic.Uint64
	logged                                               atomic.Int64 // last limit log line, ns
}

// initLimits prepares the limiter from the validated configuration.
func (s *Server) initLimits() {
	lm := &s.cfg.Limits
	s.lim.publish, s.lim.subscribe, s.lim.auth = newRate(lm.PublishRate), newRate(lm.SubscribeRate), newRate(lm.AuthRate)
	s.lim.strikes = rate{interval: int64(time.Second) / strikeRate, tolerance: int64(time.Second) / strikeRate * (strikeBurst - 1)}
	s.lim.ips.init(int32(lm.MaxConnsPerIP), newRate(lm.ConnRatePerIP))
	s.lim.users.m = map[string]int32{}
	s.lim.users.max = int32(lm.MaxConnsPerUser)
}

// logLimit writes a limit's log line, at most one a second for the
// process (the metrics count every case).
func (s *Server) logLimit(msg string, args ...any) {
	now := s.clock.Load()
	last := s.lim.logged.Load()
	if now-last < int64(time.Second) || !s.lim.logged.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn(msg, args...)
}

var (
	errRateLimited  = &proto.Error{Code: proto.CodeRateLimited, Message: "too many operations of this kind on this connection; slow down"}
	errTooManyUser  = &proto.Error{Code: proto.CodeLimitExceeded, Message: "this user has too many connections"}
	tooManyFromAddr = []byte("HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\ntoo many connections from this address")
)

// allowOp runs a client op through its connection's bucket. A refused op
// is answered rate_limited; a connection that keeps going is closed with
// 4008. It reports whether the op may run.
func (c *Conn) allowOp(m *proto.ClientMsg) bool {
	s := c.srv
	var b *bucket
	var r rate
	var kind int
	switch m.Op {
	case proto.OpPublish, proto.OpBroadcast:
		b, r, kind = &c.lim.publish, s.lim.publish, 0
	case proto.OpSubscribe, proto.OpUnsubscribe:
		b, r, kind = &c.lim.subscribe, s.lim.subscribe, 1
	case proto.OpAuth:
		b, r, kind = &c.lim.auth, s.lim.auth, 2
	default:
		return true
	}
	now := c.lastRead
	if b.take(now, r) {
		return true
	}
	s.lim.rateLimited[kind].Add(1)
	if !c.lim.strikes.take(now, s.lim.strikes) {
		s.lim.rateClosed.Add(1)
		if c.lim.peer != nil {
			s.lim.ips.penalize(c.lim.peer, now)
		}
		s.logLimit("connection closed for exceeding its rate limits", "conn", c.id, "remote", c.remoteIP())
		c.fail(proto.CloseRateLimited, "rate limit exceeded")
		return false
	}
	c.replyError(m.ID, errRateLimited)
	return false
}

// ipTable counts open connections and paces new ones per client address,
// for the whole process. Entries live while connections count in them or
// their pace bucket is not full; sweep removes the others.
type ipTable struct {
	seed   maphash.Seed
	max    int32
	pace   rate
	shards [16]ipShard
}

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]*ipEntry
}

// ipEntry is one client address (an IPv6 /64).
type ipEntry struct {
	key   netip.Addr
	conns int32
	pace  bucket
}

func (t *ipTable) init(maxConns int32, pace rate) {
	t.seed, t.max, t.pace = maphash.MakeSeed(), maxConns, pace
	for i := range t.shards {
		t.shards[i].m = map[netip.Addr]*ipEntry{}
	}
}

// ipKey is the address a client counts under: IPv4 as is, IPv6 by /64
// (one subscriber line holds a whole /64).
func ipKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (t *ipTable) shard(key netip.Addr) *ipShard {
	b := key.As16()
	return &t.shards[maphash.Bytes(t.seed, b[:])%uint64(len(t.shards))]
}

// errPerIP and errPerIPRate say which per-address limit refused.
var (
	errPerIP     = errors.New("too many connections from this address")
	errPerIPRate = errors.New("too many new connections per second from this address")
)

// admit counts a new connection from a at now, or refuses it.
func (t *ipTable) admit(a netip.Addr, now int64) (*ipEntry, error) {
	key := ipKey(a)
	sh := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e == nil {
		e = &ipEntry{key: key}
		sh.m[key] = e
	}
	if e.conns >= t.max {
		return nil, errPerIP
	}
	if !e.pace.take(now, t.pace) {
		return nil, errPerIPRate
	}
	e.conns++
	return e, nil
}

// penalize refuses new connections from e's address for strikePenalty.
func (t *ipTable) penalize(e *ipEntry, now int64) {
	sh := t.shard(e.key)
	sh.mu.Lock()
	e.pace.tat = max(e.pace.tat, now+t.pace.tolerance+int64(strikePenalty))
	sh.mu.Unlock()
}

// release uncounts a connection admitted on e.
func (t *ipTable) release(e *ipEntry) {
	sh := t.shard(e.key)
	sh.mu.Lock()
	e.conns--
	sh.mu.Unlock()
}

// sweep forgets the addresses without connections whose pace bucket is
// full again.
func (t *ipTable) sweep(now int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.conns <= 0 && e.pace.tat <= now {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

// userTable counts this process's WebSocket connections per user.
type userTable struct {
	mu  sync.Mutex
	max int32
	m   map[string]int32
}

// full reports whether user has no connection slot left.
func (t *userTable) full(user string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[user] >= t.max
}

func (t *userTable) add(user string, d int32) {
	t.mu.Lock()
	if n := t.m[user] + d; n > 0 {
		t.m[user] = n
	} else {
		delete(t.m, user)
	}
	t.mu.Unlock()
}

// admitPeer counts a new transport connection under its peer's address;
// it returns the response to close a refused one with. A trusted proxy's
// connection is counted once its client is known (proxy.go).
func (s *Server) admitPeer(remote net.Addr, lim *connLimits) []byte {
	a, ok := addrOf(remote)
	if !ok {
		return nil
	}
	if s.trustedPeer(a) {
		lim.fwd = &forwarded{awaitHeader: true}
		return nil
	}
	e, err := s.lim.ips.admit(a, time.Now().UnixNano())
	if err != nil {
		s.countIPRefusal(err, a)
		return tooManyFromAddr
	}
	lim.peer = e
	return nil
}

func (s *Server) countIPRefusal(err error, a netip.Addr) {
	if errors.Is(err, errPerIPRate) {
		s.lim.refusedIPRate.Add(1)
	} else {
		s.lim.refusedIP.Add(1)
	}
	s.logLimit("connection refused", "remote", a.String(), "reason", err.Error())
}

// addrOf returns a transport address's IP.
func addrOf(remote net.Addr) (netip.Addr, bool) {
	switch a := remote.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ip.Unmap(), ok
	case nil:
		return netip.Addr{}, false
	default:
		ap, err := netip.ParseAddrPort(a.String())
		return ap.Addr().Unmap(), err == nil
	}
}

// releaseLimits gives back what a closed connection counted for.
func (c *Conn) releaseLimits() {
	if c.lim.peer != nil {
		c.srv.lim.ips.release(c.lim.peer)
		c.lim.peer = nil
	}
	if c.lim.userHeld {
		c.srv.lim.users.add(c.user(), -1)
		c.lim.userHeld = false
	}
}

// userChanged moves the connection's count from one user to another on an
// open WebSocket ("" is anonymous and counts for nobody).
func (c *Conn) userChanged(before, after string) {
	if c.lim.userHeld {
		c.srv.lim.users.add(before, -1)
		c.lim.userHeld = false
	}
	if after != "" && c.state == stateWS {
		c.srv.lim.users.add(after, 1)
		c.lim.userHeld = true
	}
}

// userFull reports (and counts) a user at its connection limit.
func (s *Server) userFull(user string) bool {
	if user == "" || !s.lim.users.full(user) {
		return false
	}
	s.lim.refusedUser.Add(1)
	s.logLimit("connection refused: too many connections for this user", "user", user)
	return true
}

// Evict closes connection conn, if it is on this process, with code and
// reason (a limit the node enforces, such as connections per user). Safe
// for concurrent use; it does not wait.
func (s *Server) Evict(conn string, code uint16, reason string) {
	for _, l := range s.hub.allLoops() {
		l := l
		_ = l.exec.Execute(func() {
			for c := range l.conns {
				if c.id == conn && c.state == stateWS {
					c.fail(code, reason)
					return
				}
			}
		})
	}
}

// checkOriginPattern checks one --allowed-origins entry:
// scheme://host[:port], where host may start with "*.".
func checkOriginPattern(p string) error {
	scheme, host, ok := strings.Cut(p, "://")
	if !ok || scheme == "" || host == "" || strings.ContainsAny(host, "/?#") {
		return fmt.Errorf("%q is not scheme://host[:port]", p)
	}
	if strings.Contains(strings.TrimPrefix(host, "*."), "*") {
		return fmt.Errorf("%q: a wildcard is only allowed as the first label (*.example.com)", p)
	}
	return nil
}

// originAllowed reports whether a handshake's Origin passes
// AllowedOrigins; a handshake without Origin (not from a browser)
// passes. Matching is case-insensitive; "*.example.com" matches
// any subdomain of example.com at any depth, not example.com itself.
func (s *Server) originAllowed(origin []byte) bool {
	allowed := s.cfg.AllowedOrigins
	if len(allowed) == 0 || len(origin) == 0 {
		// No list, or no browser: Origin guards browsers' requests only.
		return true
	}
	o := strings.ToLower(string(origin))
	for _, p := range allowed {
		p = strings.ToLower(p)
		if o == p {
			return true
		}
		if i := strings.Index(p, "://*."); i >= 0 {
			prefix, suffix := p[:i+3], p[i+4:] // "https://", ".example.com"
			if strings.HasPrefix(o, prefix) && strings.HasSuffix(o, suffix) && len(o) > len(prefix)+len(suffix) &&
				!strings.ContainsAny(o[len(prefix):len(o)-len(suffix)], "/:@") {
				return true
			}
		}
	}
	return false
}

// registerLimitMetrics adds the limits' counters to r.
func (s *Server) registerLimitMetrics(r *prometheus.Registry) {
	refused := func(limit string, n *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_limit_refused_total",
			Help: "Connections or handshakes refused by a client limit.", ConstLabels: prometheus.Labels{"limit": limit}},
			func() float64 { return float64(n.Load()) })
	}
	limited := func(op string, n *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_rate_limited_total",
			Help: "Client ops answered rate_limited, by op bucket.", ConstLabels: prometheus.Labels{"op": op}},
			func() float64 { return float64(n.Load()) })
	}
	r.MustRegister(
		refused("conns_per_ip", &s.lim.refusedIP), refused("conn_rate_per_ip", &s.lim.refusedIPRate),
		refused("conns_per_user", &s.lim.refusedUser), refused("origin", &s.lim.refusedOrigin),
		limited("publish", &s.lim.rateLimited[0]), limited("subscribe", &s.lim.rateLimited[1]), limited("auth", &s.lim.rateLimited[2]),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_rate_limit_closed_total",
			Help: "Connections closed with 4008 for going on past their rate limits."},
			func() float64 { return float64(s.lim.rateClosed.Load()) }),
	)
}

// releaseIf uncounts e when it is not nil.
func (t *ipTable) releaseIf(e *ipEntry) {
	if e != nil {
		t.release(e)
	}
}
