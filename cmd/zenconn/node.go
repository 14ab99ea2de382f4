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
	"syscall"

	"github.com/zenconn/server/agent"
	"github.com/zenconn/server/engine"
	"github.com/zenconn/server/shm"
	"github.com/zenconn/server/worker"
)

// loopsPerWorker divides the CPUs among the workers unless --loops says.
func loopsPerWorker(o *serveOptions) int {
	if o.loops > 0 {
		return o.loops
	}
	return max(1, runtime.NumCPU()/o.workers)
}

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

// runAgent is "zenconn serve --workers N": it starts and supervises N
// worker processes (this binary's hidden "worker" subcommand) that serve
// --addr together with SO_REUSEPORT.
func runAgent(o *serveOptions, args []string, log *slog.Logger) error {
	node, err := prepare(o, log)
	if err != nil {
		return err
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
		ecfg.Loops = loopsPerWorker(o)
		err = ecfg.Validate()
	}
	if err != nil {
		return err
	}
	exe, err := os.Executable()
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
	loops := loopsPerWorker(o)
	log.Info("starting", "node", node, "workers", o.workers, "loops_per_worker", loops, "public", o.public, "data", o.data)
	ready := make(chan struct{})
	a, err := agent.New(agent.Config{
		Workers: o.workers,
		Loops:   loops,
		Command: func(id int) (string, []string) {
			wargs := append([]string{"worker"}, args...)
			wargs = append(wargs,
				"--addr", resolved, "--loops", strconv.Itoa(loops),
				"--worker-id", strconv.Itoa(id), "--node-id", node, "--agent-socket", sock)
			return exe, wargs
		},
		Env:    os.Environ(),
		Socket: sock,
		Ready:  func() { close(ready) },
		Log:    log,
	})
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
				continue
			}
			log.Info("shutting down", "signal", sig.String())
			cancel()
			err := <-done
			log.Info("stopped")
			return err
		case err := <-done:
			return err
		}
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
	return worker.Run(ctx, cfg, worker.Config{ID: id, ToAgent: toAgent, FromAgent: fromAgent, AgentSocket: sock, Log: log})
}
