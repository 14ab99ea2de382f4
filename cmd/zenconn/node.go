package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/accesslog"
	"github.com/zenconn/server/agent"
	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/engine"
	"github.com/zenconn/server/link"
	"github.com/zenconn/server/store"
	"github.com/zenconn/server/worker"
)

// agentSocket is where the agent answers the server API for its workers:
// in the data folder, or in a private temporary folder when that path is
// too long for a unix socket.
func agentSocket(data string) (string, error) {
	abs, err := filepath.Abs(filepath.Join(data, "agent.sock"))
	if err == nil && len(abs) < 100 {
		return abs, nil
	}
	dir, err := os.MkdirTemp("", "zenconn-agent-")
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "agent.sock"), nil
}

// runNode is "zenconn serve": an agent that owns the data folder's store
// and supervises --workers worker processes (this binary's hidden
// "worker" subcommand) serving --addr together with SO_REUSEPORT. With
// --workers 0 the agent and a single worker share this process, talking
// through the same rings.
//
// The steps: lock the data folder, check the configuration once (not in
// a crash loop of workers), claim the port and the agent's socket, open
// the store, then run the agent until a signal or its failure. An error
// before the node serves is a startError.
func runNode(o *serveOptions, args []string, verifier *auth.Verifier, log *slog.Logger) error {
	unlock, err := claimData(o.data)
	if err != nil {
		return startError{err}
	}
	defer unlock()
	n, err := planNode(o, args, verifier, log)
	if err != nil {
		return startError{err}
	}
	// The placeholder goes once the workers listen, or when serving ends.
	defer n.release()
	if err := n.reserve(); err != nil {
		return startError{err}
	}
	st, reg, err := openStore(o, log)
	if err != nil {
		return startError{err}
	}
	if st != nil {
		defer func() {
			if err := st.Close(); err != nil {
				log.Warn("closing the store", "err", err)
			}
		}()
		defer closeLeftovers(st, time.Now(), log)()
	}
	log.Info("starting", "node", n.node, "workers", o.workers, "loops_per_worker", n.loops, "public", o.public, "data", o.data,
		"tokens", n.verifier != nil, "anonymous", o.anonymous, "api", o.apiKey != "", "audit", st != nil, "audit_sync", o.auditSync)
	cfg, err := n.agentConfig(st, reg)
	if err != nil {
		return startError{err}
	}
	n.served = make(chan struct{})
	stopACME, err := startACME(o, n.served, reg, log) // acme.go: the agent alone talks to the CA
	if err != nil {
		return startError{err}
	}
	defer stopACME()
	return n.run(cfg)
}

// nodePlan is what runNode settles before it starts the agent.
type nodePlan struct {
	o        *serveOptions
	args     []string // the serve flags, passed on to every worker
	log      *slog.Logger
	node     string // node id
	workers  int    // worker processes (1 with --workers 0)
	loops    int    // event loops per worker
	verifier *auth.Verifier

	addr        string    // --addr with its port resolved
	tlsAddr     string    // --tls-addr with its port resolved, or ""
	placeholder io.Closer // holds the port until the workers listen
	tlsHolder   io.Closer // holds --tls-addr's port until the workers listen
	sock        string    // the agent's API socket

	alogs atomicLog                        // the in-process worker's access log, for SIGUSR1
	certs atomic.Pointer[engine.CertFiles] // the in-process worker's TLS certificate, for SIGHUP

	served chan struct{} // closed once the workers listen (ACME orders wait for it)
}

// planNode reads the node id and checks the files the workers will open
// (--public, --access-log) once, here, rather than in a crash loop of
// workers; checkServeFlags has checked the engine's configuration.
func planNode(o *serveOptions, args []string, verifier *auth.Verifier, log *slog.Logger) (*nodePlan, error) {
	node, err := prepare(o, log)
	if err != nil {
		return nil, err
	}
	n := &nodePlan{o: o, args: args, log: log, node: node, workers: max(o.workers, 1), loops: o.loops, verifier: verifier}
	if n.loops <= 0 {
		n.loops = max(1, availableCPUs/n.workers)
	}
	if err := errors.Join(checkPublic(o.public), checkAccessLog(o.accessLog)); err != nil {
		return nil, err
	}
	return n, nil
}

// compressDir is the folder of the static files' compressed copies.
func (n *nodePlan) compressDir() string { return filepath.Join(n.o.data, "cache", "compressed") }

// reserve claims the listening port (refused if another process serves
// it; held by a placeholder until the workers listen on it with
// SO_REUSEPORT), picks the agent's socket and starts the agent's pprof
// server.
func (n *nodePlan) reserve() error {
	var err error
	n.addr, n.placeholder, err = claimPort("--addr", n.o.addr)
	if err != nil {
		return err
	}
	if n.o.tls.addr != "" {
		if n.tlsAddr, n.tlsHolder, err = claimPort("--tls-addr", n.o.tls.addr); err != nil {
			return err
		}
	}
	if n.sock, err = agentSocket(n.o.data); err != nil {
		return err
	}
	if n.o.pprof != "" {
		return servePprof(n.o.pprof, n.log)
	}
	return nil
}

// release lets go of the placeholder of the port, once.
func (n *nodePlan) release() {
	if n.placeholder != nil {
		_ = n.placeholder.Close()
		n.placeholder = nil
	}
	if n.tlsHolder != nil {
		_ = n.tlsHolder.Close()
		n.tlsHolder = nil
	}
}

// agentConfig is the agent's configuration: workers in this process
// (--workers 0) or as child processes of this executable.
func (n *nodePlan) agentConfig(st *store.Store, reg *prometheus.Registry) (agent.Config, error) {
	cfg := agent.Config{
		Workers: n.workers,
		Loops:   n.loops,
		Env:     workerEnv(n.o),
		Socket:  n.sock,
		Node:    n.node,
		Log:     n.log,

		Registry:     reg,
		DurableAcks:  n.o.audit && n.o.auditSync == "always",
		StallTimeout: n.o.stallTimeout,

		MaxConnsPerUser: n.o.limits.maxConnsPerUser,
		MaxQueries:      n.o.auditMaxQueries,
	}
	if st != nil {
		cfg.Store = st
	}
	if c := n.o.clusterCfg; c != nil {
		cc := *c
		if cc.Address == "" {
			cc.Address = n.addr
		}
		cfg.Cluster = &cc
	}
	if n.o.workers == 0 {
		spareProc(n.loops, false, n.log)
		cfg.InProcess = n.runInProcess
		return cfg, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return cfg, err
	}
	cfg.Command = func(id int) (string, []string) {
		wargs := append([]string{"worker"}, withoutSecrets(n.args)...)
		wargs = append(wargs,
			"--addr", n.addr, "--loops", strconv.Itoa(n.loops),
			"--worker-id", strconv.Itoa(id), "--node-id", n.node, "--agent-socket", n.sock)
		if n.tlsAddr != "" {
			wargs = append(wargs, "--tls-addr", n.tlsAddr)
		}
		return exe, wargs
	}
	return cfg, nil
}

// runInProcess serves the node's only worker in this process (--workers
// 0) on the rings the agent made.
func (n *nodePlan) runInProcess(ctx context.Context, id int, rings *link.Rings) error {
	wo := *n.o
	wo.addr, wo.loops, wo.tls.addr = n.addr, n.loops, n.tlsAddr
	ecfg, alog, closeLog, err := engineConfig(&wo, n.verifier, n.log, n.node, n.compressDir())
	if err != nil {
		return err
	}
	defer closeLog()
	n.alogs.set(alog)
	defer n.alogs.set(nil)
	n.certs.Store(ecfg.TLSCertificates)
	defer n.certs.Store(nil)
	return worker.Run(ctx, ecfg, worker.Config{ID: id, Rings: rings, AgentSocket: n.sock, Log: n.log,
		OnStart: accessLogMetric(alog), Alone: n.o.clusterCfg == nil})
}

// run starts the agent and serves until SIGTERM or SIGINT (then drains)
// or until the agent fails; SIGUSR1 reopens the access logs, SIGHUP
// reloads the TLS certificate (every worker process reloads its own).
func (n *nodePlan) run(cfg agent.Config) error {
	ready := make(chan struct{})
	cfg.Ready = func() { close(ready) }
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for {
		select {
		case <-ready:
			ready = nil
			n.release()
			close(n.served)
			if n.tlsAddr != "" {
				n.log.Info("listening", "addr", n.addr, "tls_addr", n.tlsAddr, "workers", n.o.workers)
			} else {
				n.log.Info("listening", "addr", n.addr, "workers", n.o.workers)
			}
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				a.Signal(syscall.SIGUSR1)
				n.alogs.reopen(n.log)
				continue
			}
			if sig == syscall.SIGHUP {
				a.Signal(syscall.SIGHUP)
				reloadCertificates(n.certs.Load(), n.log)
				continue
			}
			n.log.Info("shutting down", "signal", sig.String())
			cancel()
			err := <-done
			n.log.Info("stopped")
			return err
		case err := <-done:
			if err != nil && ready != nil {
				return startError{err} // never served: a worker could not start
			}
			if err != nil {
				n.log.Error("serving stopped; exiting so that a supervisor restarts the node", "err", err)
			}
			return err
		}
	}
}

// openStore opens the node's Pebble store in --data/pebble unless --audit
// is off, and closes the sessions a previous run left open.
func openStore(o *serveOptions, log *slog.Logger) (*store.Store, *prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	if !o.audit {
		return nil, reg, nil
	}
	mode, _ := store.ParseSyncMode(o.auditSync)
	st, err := store.Open(filepath.Join(o.data, "pebble"), store.Options{
		Sync: mode, SyncInterval: o.auditSyncInterval, Retention: o.auditRetention,
		MaxData: int(o.auditMaxData), Quota: int64(o.auditQuota),
		Registerer: reg, Log: log,
	})
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("--data %s is in use by another running node", o.data)
	}
	if err != nil {
		return nil, nil, err
	}
	return st, reg, nil
}

// closeLeftovers ends, in the background, the sessions earlier runs left
// open (store.CloseActive: at their run's stop mark, or with 1006 if it
// did not stop cleanly); the function it returns stops it and waits.
func closeLeftovers(st *store.Store, start time.Time, log *slog.Logger) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, err := st.CloseActive(ctx, start, 1006)
		switch {
		case err == nil && n > 0:
			log.Info("sessions left open by earlier runs ended", "sessions", n, "seconds", time.Since(start).Seconds())
		case errors.Is(err, context.Canceled) || errors.Is(err, store.ErrClosed):
			log.Info("the node stops before it ended every session left open by earlier runs: the next start ends the rest",
				"ended", n, "seconds", time.Since(start).Seconds())
		case err != nil:
			log.Warn("ending the sessions left open by earlier runs", "err", err, "ended", n)
		}
	}()
	return func() { cancel(); <-done }
}

// accessLogMetric registers the access log's dropped-lines counter on a
// worker's engine.
func accessLogMetric(alog *accesslog.Writer) func(*engine.Server) {
	return func(srv *engine.Server) {
		if alog == nil {
			return
		}
		srv.Registry().MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "zenconn_access_log_dropped_total",
			Help: "Access-log lines dropped because the log file fell more than 16 MiB behind.",
		}, func() float64 { return float64(alog.Dropped()) }))
	}
}

// reloadCertificates reloads the TLS certificate on SIGHUP; a pair that
// fails to load is logged and the certificate in use stays.
func reloadCertificates(certs *engine.CertFiles, log *slog.Logger) {
	if certs == nil {
		log.Info("SIGHUP: no TLS certificate to reload")
		return
	}
	_ = certs.Reload(log, "SIGHUP")
}

// atomicLog holds the in-process worker's access log for SIGUSR1.
type atomicLog struct {
	mu  sync.Mutex
	log *accesslog.Writer
}

func (a *atomicLog) set(l *accesslog.Writer) {
	a.mu.Lock()
	a.log = l
	a.mu.Unlock()
}

func (a *atomicLog) reopen(log *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		return
	}
	if err := a.log.Reopen(); err != nil {
		log.Error("reopening access log", "err", err)
	} else {
		log.Info("access log reopened")
	}
}

// workerMain is the hidden "zenconn worker" subcommand, started by the
// agent with its rings as extra files.
func workerMain(args []string) int {
	// A SIGHUP the agent forwards while this worker starts must not end
	// it: it loads the certificate files as they are now anyway.
	signal.Ignore(syscall.SIGHUP)
	var o serveOptions
	fs := newServeFlags(&o)
	id := fs.Int("worker-id", 0, "worker id (set by the agent)")
	node := fs.String("node-id", "", "node id (set by the agent)")
	sock := fs.String("agent-socket", "", "agent's API socket (set by the agent)")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		usageError(os.Stderr, "serve", err)
		return agent.ExitConfig
	}
	err := applyEnv(fs)
	clearSecretEnv()
	if err != nil {
		usageError(os.Stderr, "serve", err)
		return agent.ExitConfig
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(o.logLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("worker", *id)
	if err := runWorker(&o, *id, *node, *sock, log); err != nil {
		var se startError
		if errors.As(err, &se) || errors.Is(err, worker.ErrStart) {
			// The agent stops the node rather than restart this worker.
			usageError(os.Stderr, "serve", err)
			return agent.ExitConfig
		}
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}

// runWorker serves as worker id of the node: it attaches the rings it
// inherited from the agent (package link) and runs the engine on them
// until SIGTERM or SIGINT.
func runWorker(o *serveOptions, id int, node, sock string, log *slog.Logger) error {
	if o.loops < 1 {
		return errors.New("--loops must be set by the agent")
	}
	spareProc(o.loops, o.workers > availableCPUs, log)
	if o.pprof != "" {
		if err := servePprof(pprofAddrFor(o.pprof, id), log); err != nil {
			log.Warn("no profiles for this worker", "err", err)
		}
	}
	// The rings stay mapped until the process exits.
	rings, err := link.Attach(o.loops)
	if err != nil {
		return err
	}
	verifier, err := newVerifier(o)
	if err != nil {
		return startError{err}
	}
	cfg, alog, closeLog, err := engineConfig(o, verifier, log, node,
		filepath.Join(o.data, "cache", "compressed", "w"+strconv.Itoa(id)))
	if err != nil {
		return startError{err}
	}
	defer closeLog()
	ctx, stop := workerSignals(alog, cfg.TLSCertificates, log)
	defer stop()
	return worker.Run(ctx, cfg, worker.Config{ID: id, Rings: rings, AgentSocket: sock, Log: log,
		OnStart: accessLogMetric(alog)})
}

// workerSignals returns a context that ends on SIGTERM or SIGINT, reopens
// alog on SIGUSR1 and reloads the TLS certificate on SIGHUP; stop releases
// the signals.
func workerSignals(alog *accesslog.Writer, certs *engine.CertFiles, log *slog.Logger) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGHUP {
				reloadCertificates(certs, log)
				continue
			}
			if sig == syscall.SIGUSR1 {
				if alog != nil {
					if err := alog.Reopen(); err != nil {
						log.Error("reopening access log", "err", err)
					}
				}
				continue
			}
			cancel()
			return
		}
	}()
	return ctx, func() { signal.Stop(sigs); cancel() }
}

// spareProc makes sure the Go runtime has one processor (P) more than the
// process has event loops. A loop waits for events inside epoll_wait and
// keeps its P there until the runtime's monitor takes it back, which can
// take up to 10 ms when the goroutine that needs it waits on the network
// poller or a timer: with as many Ps as loops (GOMAXPROCS=1 under
// `taskset -c 1` with one loop), the ring readers, the store's writer, the
// API and the timers all wait that long, and the core sits idle meanwhile
// (bench/notes/churn.md).
//
// A worker of a node with more workers than CPUs (crowded: a node sized
// for more connections than one process may hold per CPU) gets as many Ps
// as loops instead. Its CPUs are shared with the other workers, so a P
// held in epoll_wait leaves no core idle; and the spare P costs a wake-up
// of another thread each time the loop runs out of events and the Go
// scheduler looks for work for it, which with 56 workers on 2 CPUs was
// about a quarter of the workers' CPU (bench/notes/scale-1m.md). An
// explicit GOMAXPROCS is kept, with a warning when it leaves no spare P
// in a process that should have one.
func spareProc(loops int, crowded bool, log *slog.Logger) {
	n := runtime.GOMAXPROCS(0)
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		if n <= loops && !crowded {
			log.Warn("GOMAXPROCS is not above the number of event loops: the other goroutines wait for a processor, set it to at least loops+1",
				"gomaxprocs", n, "loops", loops)
		}
		return
	}
	if crowded {
		runtime.GOMAXPROCS(loops)
		return
	}
	if n <= loops {
		runtime.GOMAXPROCS(loops + 1)
	}
}
