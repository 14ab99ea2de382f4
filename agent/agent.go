package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/cluster"
	"github.com/zenconn/server/internal/keyguard"
	"github.com/zenconn/server/internal/memtrim"
	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/store"
)

// Config configures an Agent. Zero durations and sizes take the defaults
// named on each field.
type Config struct {
	// Workers is the number of worker processes (1 to nodemsg.MaxWorkers).
	Workers int
	// Loops is the number of event loops per worker; each gets a ring.
	Loops int
	// Command returns the program and arguments that start worker id. The
	// rings are passed as ExtraFiles (fds 3, 4, …): for each ring to the
	// agent (Loops+1 of them) then the ring from the agent, three fds each
	// (memfd, data eventfd, space eventfd).
	Command func(id int) (string, []string)
	// Env is the workers' environment.
	Env []string
	// Socket is the unix socket path the server API listens on.
	Socket string
	// RingSize is each ring's capacity in bytes. Default 4 MiB.
	RingSize int
	// QueueBytes bounds, per worker, the records waiting for room in the
	// ring to that worker; a worker whose queue would exceed it has
	// failed (see the package doc). Default 4 × RingSize.
	QueueBytes int
	// StallTimeout is how long the ring to a worker may accept nothing
	// while records wait for it before that worker has failed. Default 5 s.
	StallTimeout time.Duration
	// MaxConnsPerUser bounds the WebSocket connections of one user (a
	// token's sub) on the node ("--max-conns-per-user"): a connection
	// that opens or authenticates past it is closed with 4009. 0: no bound.
	MaxConnsPerUser int
	// MinBackoff, MaxBackoff, StableAfter and ShutdownGrace: see the
	// package doc. Defaults 100 ms, 5 s, 30 s, 5 s.
	MinBackoff, MaxBackoff, StableAfter, ShutdownGrace time.Duration
	// InProcess, when set, runs worker id inside this process instead of
	// starting Command: it serves with the given rings until ctx ends. A
	// worker that returns before ctx ends, or that fails to take its
	// records, stops the agent with its error (nothing restarts it). This
	// is the single-process mode.
	InProcess func(ctx context.Context, id int, rings *link.Rings) error
	// Ready, if set, is called once when every worker has reported ready
	// for the first time.
	Ready func()
	// Node is the node id written in sessions and audit records.
	Node string
	// Store, when set, receives the node's sessions and audit log.
	Store *store.Store
	// DurableAcks holds back the answers to durable publishes (those with
	// a token) and to subscribes until their audit records are committed
	// as the store's sync mode promises.
	DurableAcks bool
	// MaxQueries bounds the audit and session queries answered at once;
	// past it they get 503. Default 4.
	MaxQueries int
	// Cluster, when set, joins the node to a cluster over NATS (package
	// cluster); its Node and Log are the agent's. Nil: the node is alone.
	Cluster *cluster.Config
	// Registry receives the agent's Prometheus collectors (the store's),
	// rendered in GET /metrics after the per-worker families. Nil: none.
	Registry *prometheus.Registry
	// TicketRotation is how often the agent makes a new TLS
	// session-ticket key for its workers, and TicketKeys how many keys
	// they keep (the newest seals tickets, all open them). Defaults
	// DefaultTicketRotation and DefaultTicketKeys (at most
	// nodemsg.MaxTicketKeys).
	TicketRotation time.Duration
	TicketKeys     int
	Log            *slog.Logger
}

// Agent is a running node agent. Its methods are safe for concurrent use.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	slots []*slot
	st    *store.Store     // nil: no sessions, no audit log
	cl    *cluster.Cluster // nil: the node is alone (cluster.go)
	api   http.Handler
	// started is when the agent was made.
	started time.Time
	fatal   chan error     // errors that stop the agent (in-process worker)
	keys    keyguard.Guard // failed API-key attempts of the node (refused.go)

	mu     sync.Mutex
	tab    *table // under mu
	readyN int    // under mu

	readyOnce sync.Once

	tickets tickets // TLS session-ticket keys (tickets.go)

	userEvictions atomic.Uint64 // connections closed with 4009 (limits.go)
	queries       queryLimit

	// stopping: the node is shutting down; the sessions that end now are
	// not written one by one, the store's stop mark ends them all
	// (audit.go). leftOpen counts those taken off the table meanwhile.
	stopping atomic.Bool
	leftOpen atomic.Int64
}

// New validates cfg and fills in its defaults.
func New(cfg Config) (*Agent, error) {
	if cfg.Workers < 1 || cfg.Workers > nodemsg.MaxWorkers {
		return nil, fmt.Errorf("agent: %d workers is outside 1..%d", cfg.Workers, nodemsg.MaxWorkers)
	}
	if (cfg.Command == nil && cfg.InProcess == nil) || cfg.Socket == "" {
		return nil, errors.New("agent: Command or InProcess, and Socket, are required")
	}
	if cfg.StallTimeout < 0 || cfg.QueueBytes < 0 {
		return nil, errors.New("agent: StallTimeout and QueueBytes must not be negative")
	}
	cfg.Loops = max(cfg.Loops, 1)
	setDefault(&cfg.RingSize, 4<<20)
	setDefault(&cfg.QueueBytes, 4*cfg.RingSize)
	setDefault(&cfg.StallTimeout, 5*time.Second)
	setDefault(&cfg.MinBackoff, 100*time.Millisecond)
	setDefault(&cfg.MaxBackoff, 5*time.Second)
	setDefault(&cfg.StableAfter, 30*time.Second)
	setDefault(&cfg.ShutdownGrace, 5*time.Second)
	setDefault(&cfg.TicketRotation, DefaultTicketRotation)
	setDefault(&cfg.TicketKeys, DefaultTicketKeys)
	if cfg.TicketRotation < 0 || cfg.TicketKeys < 1 || cfg.TicketKeys > nodemsg.MaxTicketKeys {
		return nil, fmt.Errorf("agent: TicketRotation must be positive and TicketKeys 1..%d", nodemsg.MaxTicketKeys)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: cfg.Log, st: cfg.Store, tab: newTable(cfg.Workers),
		fatal: make(chan error, 2*cfg.Workers), started: time.Now().UTC()}
	a.api = a.apiHandler()
	a.tickets.max = cfg.TicketKeys
	for i := range cfg.Workers {
		a.slots = append(a.slots, &slot{id: i})
	}
	a.queries = newQueryLimit(cfg.MaxQueries, cfg.Registry, cfg.Log)
	return a, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Run starts the workers and the API socket and supervises them until ctx
// ends, then drains the workers and returns. It returns early, with the
// error, when the in-process worker stops or fails.
func (a *Agent) Run(ctx context.Context) error {
	_ = os.Remove(a.cfg.Socket)
	ln, err := net.Listen("unix", a.cfg.Socket)
	if err != nil {
		return fmt.Errorf("agent: api socket: %w", err)
	}
	_ = os.Chmod(a.cfg.Socket, 0o600)
	if err := a.startCluster(); err != nil {
		_ = ln.Close()
		return err
	}
	hs := &http.Server{Handler: a.api, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()

	var wg sync.WaitGroup
	// The workers stop only once the agent has set stopping, so every
	// close of the node's stop reaches it counted, never half written.
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	for _, s := range a.slots {
		wg.Add(1)
		go func() { defer wg.Done(); a.supervise(wctx, s) }()
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	go a.rotateTickets(stopped)
	if a.cfg.InProcess == nil {
		// The agent's tables churn with the connections as the workers'
		// heaps do (an in-process worker's engine trims the process).
		t := memtrim.New()
		t.Count = a.connCount
		go t.Run(stopped, time.Second, nil)
	}
	select {
	case <-ctx.Done():
		a.stopping.Store(true)
		stop()
		<-stopped
		a.markStopped()
	case err = <-a.fatal:
		stop()
		select {
		case <-stopped:
		case <-time.After(2 * a.cfg.ShutdownGrace):
			// A worker stuck in this process cannot be drained; the
			// process is about to exit with err.
			a.log.Error("the in-process worker did not stop; leaving it", "err", err)
		}
	}
	if a.cl != nil {
		a.cl.Close()
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	_ = os.Remove(a.cfg.Socket)
	return err
}

// connCount is the number of connections in the node's table.
func (a *Agent) connCount() uint64 {
	a.mu.Lock()
	n, _ := a.tab.totals()
	a.mu.Unlock()
	return uint64(n)
}

// stopWith stops the agent with err (without waiting).
func (a *Agent) stopWith(err error) {
	select {
	case a.fatal <- err:
	default: // the agent is stopping already
	}
}

// Signal sends sig to every running worker (SIGUSR1: reopen logs).
func (a *Agent) Signal(sig os.Signal) {
	for _, s := range a.slots {
		s.mu.Lock()
		p := s.proc
		s.mu.Unlock()
		if p != nil {
			_ = p.Signal(sig)
		}
	}
}
