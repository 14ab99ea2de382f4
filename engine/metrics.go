package engine

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/zenconn/server/nodemsg"
)

// registerMetrics builds the registry behind /metrics. Hot-path counters
// live in per-loop atomics and are summed at scrape time, so delivering a
// message never touches a shared cache line.
func (s *Server) registerMetrics() {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sumInt := func(f func(*loopStats) int64) func() float64 {
		return func() float64 {
			var n int64
			for _, l := range s.hub.allLoops() {
				n += f(&l.stats)
			}
			return float64(n)
		}
	}
	sumUint := func(f func(*loopStats) uint64) func() float64 {
		return func() float64 {
			var n uint64
			for _, l := range s.hub.allLoops() {
				n += f(&l.stats)
			}
			return float64(n)
		}
	}
	r.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_connections", Help: "Open TCP connections (HTTP and WebSocket)."},
			sumInt(func(st *loopStats) int64 { return st.connections.Load() })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_websocket_connections", Help: "Open WebSocket connections."},
			sumInt(func(st *loopStats) int64 { return st.websockets.Load() })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_subscriptions", Help: "Channel subscriptions held by open connections."},
			sumInt(func(st *loopStats) int64 { return st.subscriptions.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_messages_in_total", Help: "WebSocket data messages received from clients."},
			sumUint(func(st *loopStats) uint64 { return st.messagesIn.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_messages_out_total", Help: "WebSocket messages queued to clients (deliveries, acks, errors, pings)."},
			sumUint(func(st *loopStats) uint64 { return st.messagesOut.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_bytes_in_total", Help: "Bytes read from client sockets."},
			sumUint(func(st *loopStats) uint64 { return st.bytesIn.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_bytes_out_total", Help: "Bytes written to client sockets."},
			sumUint(func(st *loopStats) uint64 { return st.bytesOut.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_slow_consumer_disconnects_total", Help: "Connections closed (4001) because the bytes waiting to be sent to them exceeded --max-outbound."},
			sumUint(func(st *loopStats) uint64 { return st.slowClosed.Load() })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "zenconn_connections_refused_total", Help: "Connections refused with 503 because --max-connections was reached."},
			func() float64 { return float64(s.refused.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_channels", Help: "Channels with at least one subscriber on this node."},
			func() float64 {
				s.hub.mu.RLock()
				defer s.hub.mu.RUnlock()
				return float64(len(s.hub.interest))
			}),
	)
	r.MustRegister(s.inputMetrics()...)
	s.httpByCode = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "zenconn_http_requests_total", Help: "HTTP requests answered, by status code (101 for WebSocket upgrades).",
	}, []string{"code"})
	r.MustRegister(s.httpByCode)
	s.registerKeyMetrics(r)
	s.registerLimitMetrics(r)
	if s.cfg.TLS != nil {
		s.registerTLSMetrics(r)
	}
	s.registry = r
}

// countStatus counts one HTTP response by status code.
func (s *Server) countStatus(status int) {
	if c, ok := s.statusCache.Load(status); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := s.httpByCode.WithLabelValues(strconv.Itoa(status))
	s.statusCache.Store(status, c)
	c.Inc()
}

// loopStats are counters read by the metrics collector. They are atomics so
// that a scrape from another goroutine is race free; each is written by one
// loop only, so the adds are uncontended.
type loopStats struct {
	connections   atomic.Int64
	websockets    atomic.Int64
	subscriptions atomic.Int64
	messagesIn    atomic.Uint64
	messagesOut   atomic.Uint64
	bytesIn       atomic.Uint64
	bytesOut      atomic.Uint64
	slowClosed    atomic.Uint64
}

// Stats returns this process's counters, the ones a worker reports to its
// agent.
func (s *Server) Stats() nodemsg.Stats {
	var n nodemsg.Stats
	for _, l := range s.hub.allLoops() {
		st := &l.stats
		n.Connections += uint64(max(st.websockets.Load(), 0))
		n.Subscriptions += uint64(max(st.subscriptions.Load(), 0))
		n.MessagesIn += st.messagesIn.Load()
		n.MessagesOut += st.messagesOut.Load()
		n.BytesIn += st.bytesIn.Load()
		n.BytesOut += st.bytesOut.Load()
		n.SlowClosed += st.slowClosed.Load()
	}
	return n
}
