package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
)

// slot is one worker position; its process may be restarted.
type slot struct {
	id int

	mu       sync.Mutex
	pid      int
	started  time.Time
	restarts int
	up       bool
	stats    nodemsg.Stats // the worker's last report
	proc     *os.Process
	failures [len(failureReasons)]int // by failureReasons index

	// out carries records to the running process; nil while it is down.
	out atomic.Pointer[outbox]

	rings []*shm.Ring // worker → agent rings of the running process (under mu)
}

// supervise runs worker s, restarting it with backoff, until ctx ends. An
// in-process worker is not restarted: its end stops the agent.
func (a *Agent) supervise(ctx context.Context, s *slot) {
	backoff := a.cfg.MinBackoff
	for {
		start := time.Now()
		err := a.runWorker(ctx, s)
		if ctx.Err() != nil {
			return
		}
		if a.cfg.InProcess != nil {
			if err == nil {
				err = errors.New("agent: the worker stopped")
			}
			a.stopWith(err)
			return
		}
		if configExit(err) {
			a.stopWith(fmt.Errorf("worker %d could not start with this configuration (exit status %d; its message is above)", s.id, ExitConfig))
			return
		}
		a.log.Error("worker exited; restarting", "worker", s.id, "err", err, "backoff", backoff)
		if time.Since(start) > a.cfg.StableAfter {
			backoff = a.cfg.MinBackoff
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, a.cfg.MaxBackoff)
		s.mu.Lock()
		s.restarts++
		s.mu.Unlock()
	}
}

// runWorker starts one process for slot s with fresh rings and serves its
// records until it exits; on ctx end it drains it.
func (a *Agent) runWorker(ctx context.Context, s *slot) error {
	rings, err := link.Create(s.id, a.cfg.Loops, a.cfg.RingSize)
	if err != nil {
		return err
	}
	defer func() { _ = rings.Close() }()
	if a.cfg.InProcess != nil {
		return a.runInProcess(ctx, s, rings)
	}
	files, err := rings.Files()
	if err != nil {
		return err
	}
	defer func() { link.CloseFiles(files) }()

	prog, args := a.cfg.Command(s.id)
	cmd := exec.Command(prog, args...)
	cmd.Env = a.cfg.Env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	// The child dies with this thread (PR_SET_PDEATHSIG), so the thread
	// stays locked until the child has been waited for.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: false}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("agent: start worker %d: %w", s.id, err)
	}
	link.CloseFiles(files)
	files = nil
	a.log.Info("worker started", "worker", s.id, "pid", cmd.Process.Pid)
	stopReaders := a.startReaders(s, cmd.Process.Pid, cmd.Process, rings)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	select {
	case err = <-exited:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-exited:
		case <-time.After(a.cfg.ShutdownGrace):
			_ = cmd.Process.Kill()
			err = <-exited
		}
	}
	stopReaders()
	return err
}

// runInProcess serves worker s in this process until it returns.
func (a *Agent) runInProcess(ctx context.Context, s *slot, rings *link.Rings) error {
	stopReaders := a.startReaders(s, os.Getpid(), nil, rings)
	err := a.cfg.InProcess(ctx, s.id, rings)
	stopReaders()
	return err
}

// startReaders marks slot s as running a new process, opens its outbox,
// reads its rings, and returns the function to call once the process has
// ended: it reads what the process left in its rings (a crashed worker's
// last records are still there: the memory is the agent's too), closes
// the outbox, then forgets the process and its connections.
func (a *Agent) startReaders(s *slot, pid int, proc *os.Process, rings *link.Rings) func() {
	toAgent, fromAgent := rings.ToAgent(), rings.FromAgent()
	s.mu.Lock()
	s.pid, s.started, s.proc, s.up, s.stats = pid, time.Now(), proc, false, nodemsg.Stats{}
	s.rings = toAgent
	s.mu.Unlock()
	out := newOutbox(fromAgent.Producer(), fromAgent.MaxRecord(), a.cfg.QueueBytes, a.cfg.StallTimeout,
		func(reason string) { a.workerFailed(s, pid, proc, reason) })
	go out.run()
	a.ticketsFirst(s, out)
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for _, r := range toAgent {
		rwg.Add(1)
		go func() { defer rwg.Done(); a.readWorker(s, r, stop) }()
	}
	return func() {
		close(stop)
		for _, r := range toAgent {
			r.Interrupt()
		}
		rwg.Wait()
		s.out.Store(nil)
		out.close()
		s.mu.Lock()
		s.up, s.proc, s.rings = false, nil, nil
		s.mu.Unlock()
		a.dropWorker(s.id)
	}
}

// workerFailed applies the policy for a worker process that does not take
// its records (see the package doc): counted, logged, killed. It is
// called at most once per process, from any goroutine, and does not block.
func (a *Agent) workerFailed(s *slot, pid int, proc *os.Process, reason string) {
	s.mu.Lock()
	for i, r := range failureReasons {
		if r == reason {
			s.failures[i]++
		}
	}
	s.mu.Unlock()
	if proc == nil {
		err := fmt.Errorf("agent: the in-process worker does not take its records (%s)", reason)
		a.log.Error("worker failed: stopping the node", "worker", s.id, "reason", reason, "err", err)
		a.stopWith(err)
		return
	}
	a.log.Error("worker failed: killing it", "worker", s.id, "pid", pid, "reason", reason,
		"queue_bytes", a.cfg.QueueBytes, "stall_timeout", a.cfg.StallTimeout)
	if err := proc.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		a.log.Error("killing a failed worker", "worker", s.id, "pid", pid, "err", err)
	}
}

// WorkerInfo is one worker in GET /api/workers.
type WorkerInfo struct {
	ID            int       `json:"id"`
	PID           int       `json:"pid"`
	Started       time.Time `json:"started"`
	Restarts      int       `json:"restarts"`
	Up            bool      `json:"up"`
	Connections   int       `json:"connections"`
	Subscriptions int       `json:"subscriptions"`
	MessagesIn    uint64    `json:"messages_in"`
	MessagesOut   uint64    `json:"messages_out"`

	failures [len(failureReasons)]int
}

// Workers lists the workers, with connections and subscriptions counted
// from the agent's table and message counters from the workers' reports.
func (a *Agent) Workers() []WorkerInfo {
	a.mu.Lock()
	conns, subs := a.tab.perWorker()
	a.mu.Unlock()
	out := make([]WorkerInfo, 0, len(a.slots))
	for _, s := range a.slots {
		s.mu.Lock()
		out = append(out, WorkerInfo{
			ID: s.id, PID: s.pid, Started: s.started, Restarts: s.restarts, Up: s.up,
			Connections: conns[s.id], Subscriptions: subs[s.id],
			MessagesIn: s.stats.MessagesIn, MessagesOut: s.stats.MessagesOut,
			failures: s.failures,
		})
		s.mu.Unlock()
	}
	return out
}

// configExit reports whether a worker process ended with ExitConfig.
func configExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == ExitConfig
}
