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
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/accesslog"
	"github.com/zenconn/server/agent"
	"github.com/zenconn/server/engine"
	"github.com/zenconn/server/shm"
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
func runNode(o *serveOptions, args []string, log *slog.Logger) error {
	node, err := prepare(o, log)
	if err != nil {
		return err
	}
	inProcess := o.workers == 0
	workers := max(o.workers, 1)
	loops := o.loops
	if loops <= 0 {
		loops = max(1, runtime.NumCPU()/workers)
	}
	// Refuse a bad configuration here, once, rather than in a crash loop
	// of workers.
	check := *o
	check.accessLog = "off"
	verifier, err := newVerifier(o)
	if err != nil {
		return err
	}
	ecfg, _, _, err := engineConfig(&check, verifier, log, node, filepath.Join(o.data, "cache", "compressed"))
	if err == nil {
		ecfg.Loops = loops
		err = ecfg.Validate()
	}
	if err != nil {
		return err
	}
	resolved, placeholder, err := engine.ReservePort(o.addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	sock, err := agentSocket(o.data)
	if err != nil {
		return err
	}
	if o.pprof != "" {
		if err := servePprof(o.pprof, log); err != nil {
			return err
		}
	}
	st, reg, err := openStore(o, log)
	if err != nil {
		if placeholder != nil {
			_ = placeholder.Close()
		}
		return err
	}
	if st != nil {
		defer func() {
			if err := st.Close(); err != nil {
				log.Warn("closing the store", "err", err)
			}
		}()
	}
	log.Info("starting", "node", node, "workers", o.workers, "loops_per_worker", loops, "public", o.public, "data", o.data,
		"tokens", verifier != nil, "anonymous", o.anonymous, "api", o.apiKey != "", "audit", st != nil, "audit_sync", o.auditSync)
	cfg := agent.Config{
		Workers: workers,
		Loops:   loops,
		Env:     os.Environ(),
		Socket:  sock,
		Node:    node,
		Log:     log,

		Registry:     reg,
		DurableAcks:  o.audit && o.auditSync == "always",
		StallTimeout: o.stallTimeout,
	}
	if st != nil {
		cfg.Store = st
	}
	// alogs holds the in-process worker's access log, to reopen on SIGUSR1.
	var alogs atomicLog
	if inProcess {
		spareProc(loops, log)
		cfg.InProcess = func(ctx context.Context, id int, toAgent []*shm.Ring, fromAgent *shm.Ring) error {
			wo := *o
			wo.addr, wo.loops = resolved, loops
			ecfg, alog, closeLog, err := engineConfig(&wo, verifier, log, node, filepath.Join(o.data, "cache", "compressed"))
			if err != nil {
				return err
			}
			defer closeLog()
			alogs.set(alog)
			defer alogs.set(nil)
			return worker.Run(ctx, ecfg, worker.Config{ID: id, ToAgent: toAgent, FromAgent: fromAgent, AgentSocket: sock, Log: log,
				OnStart: accessLogMetric(alog), Alone: true})
		}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfg.Command = func(id int) (string, []string) {
			wargs := append([]string{"worker"}, args...)
			wargs = append(wargs,
				"--addr", resolved, "--loops", strconv.Itoa(loops),
				"--worker-id", strconv.Itoa(id), "--node-id", node, "--agent-socket", sock)
			return exe, wargs
		}
	}
	ready := make(chan struct{})
	cfg.Ready = func() { close(ready) }
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	for {
		select {
		case <-ready:
			ready = nil
			if placeholder != nil {
				_ = placeholder.Close()
			}
			log.Info("listening", "addr", resolved, "workers", o.workers)
		case sig := <-sigs:
			if sig == syscall.SIGUSR1 {
				a.Signal(syscall.SIGUSR1)
				alogs.reopen(log)
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			cancel()
			err := <-done
			log.Info("stopped")
			return err
		case err := <-done:
			if err != nil {
				log.Error("serving stopped; exiting so that a supervisor restarts the node", "err", err)
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
		Registerer: reg, Log: log,
	})
	if errors.Is(err, store.ErrLocked) {
		return nil, nil, fmt.Errorf("--data %s is in use by another running node", o.data)
	}
	if err != nil {
		return nil, nil, err
	}
	if n, err := st.CloseActive(time.Now(), 1006); err != nil {
		_ = st.Close()
		return nil, nil, err
	} else if n > 0 {
		log.Warn("sessions left open by the previous run closed with 1006", "sessions", n)
	}
	return st, reg, nil
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
	var o serveOptions
	fs := newServeFlags(&o)
	id := fs.Int("worker-id", 0, "worker id (set by the agent)")
	node := fs.String("node-id", "", "node id (set by the agent)")
	sock := fs.String("agent-socket", "", "agent's API socket (set by the agent)")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(os.Stderr, "zenconn worker: %v\n", err)
		return 2
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(os.Stderr, "zenconn worker: %v\n", err)
		return 2
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(o.logLevel))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("worker", *id)
	if err := runWorker(&o, *id, *node, *sock, log); err != nil {
		log.Error("worker failed", "err", err)
		return 1
	}
	return 0
}

func runWorker(o *serveOptions, id int, node, sock string, log *slog.Logger) error {
	if o.loops < 1 {
		return errors.New("--loops must be set by the agent")
	}
	spareProc(o.loops, log)
	if o.pprof != "" {
		if err := servePprof(pprofAddrFor(o.pprof, id), log); err != nil {
			log.Warn("no profiles for this worker", "err", err)
		}
	}
	attach := func(i int) (*shm.Ring, error) {
		return shm.Attach(3+3*i, 4+3*i, 5+3*i)
	}
	var toAgent []*shm.Ring
	for i := 0; i <= o.loops; i++ {
		r, err := attach(i)
		if err != nil {
			return fmt.Errorf("ring %d: %w", i, err)
		}
		toAgent = append(toAgent, r)
	}
	fromAgent, err := attach(o.loops + 1)
	if err != nil {
		return fmt.Errorf("ring from the agent: %w", err)
	}
	verifier, err := newVerifier(o)
	if err != nil {
		return err
	}
	cfg, alog, closeLog, err := engineConfig(o, verifier, log, node,
		filepath.Join(o.data, "cache", "compressed", "w"+strconv.Itoa(id)))
	if err != nil {
		return err
	}
	defer closeLog()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
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
	return worker.Run(ctx, cfg, worker.Config{ID: id, ToAgent: toAgent, FromAgent: fromAgent, AgentSocket: sock, Log: log,
		OnStart: accessLogMetric(alog)})
}

// spareProc makes sure the Go runtime has one processor (P) more than the
// process has event loops. A loop waits for events inside epoll_wait and
// keeps its P there until the runtime's monitor takes it back, which can
// take up to 10 ms when the goroutine that needs it waits on the network
// poller or a timer: with as many Ps as loops (GOMAXPROCS=1 under
// `taskset -c 1` with one loop), the ring readers, the store's writer, the
// API and the timers all wait that long, and the core sits idle meanwhile
// (bench/notes/churn.md). An explicit GOMAXPROCS is kept, with a warning.
func spareProc(loops int, log *slog.Logger) {
	n := runtime.GOMAXPROCS(0)
	if n > loops {
		return
	}
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		log.Warn("GOMAXPROCS is not above the number of event loops: the other goroutines wait for a processor, set it to at least loops+1",
			"gomaxprocs", n, "loops", loops)
		return
	}
	runtime.GOMAXPROCS(loops + 1)
}
