package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// defaultMaxQueries is Config.MaxQueries when not set.
const defaultMaxQueries = 4

// queryLimitLogEvery is how often a refused query is logged at most.
const queryLimitLogEvery = 10 * time.Second

// queryLimit bounds the audit and session queries answered at once: each
// holds a page of up to store.DefaultMaxBytes while it is built and sent.
type queryLimit struct {
	slots     chan struct{}
	refused   prometheus.Counter
	abandoned prometheus.Counter
	log       *slog.Logger

	mu     sync.Mutex
	logged time.Time
	unsaid int
}

func newQueryLimit(n int, reg *prometheus.Registry, log *slog.Logger) queryLimit {
	if n <= 0 {
		n = defaultMaxQueries
	}
	refused := register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_api_queries_refused_total",
		Help: "Audit and session queries answered 503 because --audit-max-queries were running."}))
	abandoned := register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_api_queries_abandoned_total",
		Help: "Audit and session queries stopped before their end because nobody waited for the answer any more."}))
	return queryLimit{slots: make(chan struct{}, n), refused: refused, abandoned: abandoned, log: log}
}

// register registers c in reg (if not nil), or returns the counter of the
// same name registered before.
func register(reg *prometheus.Registry, c prometheus.Counter) prometheus.Counter {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(prometheus.Counter); ok {
				return old
			}
		}
	}
	return c
}

// gone counts a query whose client went away, if the store stopped it
// before its end (err is the context's).
func (l *queryLimit) gone(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		l.abandoned.Inc()
	}
}

// enter takes a query slot, or answers 503 and reports false when all are
// taken. A true answer must be followed by leave.
func (l *queryLimit) enter(w http.ResponseWriter) bool {
	select {
	case l.slots <- struct{}{}:
		return true
	default:
	}
	l.refused.Inc()
	l.mu.Lock()
	l.unsaid++
	n, due := l.unsaid, time.Since(l.logged) >= queryLimitLogEvery
	if due {
		l.unsaid, l.logged = 0, time.Now()
	}
	l.mu.Unlock()
	if due {
		l.log.Warn("audit/session query refused: too many at once (--audit-max-queries)", "max", cap(l.slots), "times", n)
	}
	w.Header().Set("Retry-After", "1")
	reply(w, http.StatusServiceUnavailable, apiError{"too many audit and session queries at once; retry"})
	return false
}

func (l *queryLimit) leave() { <-l.slots }
