// Package agent supervises a node's worker processes and is the node's
// single point of truth: it keeps the connection table and the channel →
// workers interest map from the workers' records, forwards each published
// message only to the workers that have subscribers of its channel (every
// other worker for a broadcast), and answers the server API for the whole
// node over a unix socket that the workers proxy to.
//
// The agent does not import the engine: it speaks to workers only through
// shared-memory rings (package shm, laid out by package link) carrying
// nodemsg records.
//
// Supervision policy (fields of Config): a worker that exits is restarted
// after a backoff that starts at MinBackoff and doubles up to MaxBackoff,
// reset once a worker has stayed up for StableAfter; its connections leave
// the table at once. On shutdown the workers get SIGTERM and ShutdownGrace
// to drain, then SIGKILL. Workers die with the agent (PR_SET_PDEATHSIG).
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
	"github.com/zenconn/server/store"
)

// Config configures an Agent.
type Config struct {
	// Workers is the number of worker processes (1 to nodemsg.MaxWorkers).
	Workers int
	// Loops is the number of event loops per worker; each gets a ring.
	Loops int
	// Command returns the program and arguments that start worker id. Its
	// rings are passed as ExtraFiles, laid out as package link describes;
	// the worker needs Loops to attach them.
	Command func(id int) (string, []string)
	// Env is the workers' environment.
	Env []string
	// Socket is the unix socket path the server API listens on.
	Socket string
	// RingSize is each ring's capacity in bytes. Default 4 MiB.
	RingSize int
	// MinBackoff, MaxBackoff, StableAfter and ShutdownGrace: see the
	// package doc. Defaults 100 ms, 5 s, 30 s, 5 s.
	MinBackoff, MaxBackoff, StableAfter, ShutdownGrace time.Duration
	// InProcess, when set, runs worker id inside this process instead of
	// starting Command: it serves with the given rings until ctx ends. A
	// worker that returns before ctx ends stops the agent with its error
	// (nothing restarts it). This is the single-process mode.
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
	// Registry receives the agent's Prometheus collectors (the store's),
	// rendered in GET /metrics after the per-worker families. Nil: none.
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// Agent is a running node agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	slots []*slot
	st    *store.Store // nil: no sessions, no audit log

	mu       sync.Mutex
	conns    map[string]*connRec
	interest map[string][]int // channel → subscriber count per worker

	readyOnce sync.Once
	readyN    int
}

type connRec struct {
	worker                int
	user, remote, protocl string
	chans                 map[string]struct{}
	// Session fields, kept only with a Store.
	userAgent string
	connected time.Time
	joined    []string // every channel joined, in order
}

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

	prodMu sync.Mutex
	prod   *shm.Producer // agent → worker, nil while the worker is down

	rings []*shm.Ring // worker → agent rings of the running process (under mu)
}

// New validates cfg.
func New(cfg Config) (*Agent, error) {
	if cfg.Workers < 1 || cfg.Workers > nodemsg.MaxWorkers {
		return nil, fmt.Errorf("agent: %d workers is outside 1..%d", cfg.Workers, nodemsg.MaxWorkers)
	}
	if cfg.Loops < 1 {
		cfg.Loops = 1
	}
	if (cfg.Command == nil && cfg.InProcess == nil) || cfg.Socket == "" {
		return nil, errors.New("agent: Command or InProcess, and Socket, are required")
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = 4 << 20
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.StableAfter == 0 {
		cfg.StableAfter = 30 * time.Second
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	a := &Agent{cfg: cfg, log: cfg.Log, st: cfg.Store, conns: map[string]*connRec{}, interest: map[string][]int{}}
	for i := range cfg.Workers {
		a.slots = append(a.slots, &slot{id: i})
	}
	return a, nil
}

// Run starts the workers and the API socket and supervises them until ctx
// ends, then drains the workers and returns.
func (a *Agent) Run(ctx context.Context) error {
	_ = os.Remove(a.cfg.Socket)
	ln, err := net.Listen("unix", a.cfg.Socket)
	if err != nil {
		return fmt.Errorf("agent: api socket: %w", err)
	}
	_ = os.Chmod(a.cfg.Socket, 0o600)
	hs := &http.Server{Handler: a.apiHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()

	var wg sync.WaitGroup
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	fatal := make(chan error, len(a.slots))
	for _, s := range a.slots {
		wg.Add(1)
		go func() { defer wg.Done(); a.supervise(wctx, s, fatal) }()
	}
	select {
	case <-ctx.Done():
	case err = <-fatal:
		stop()
	}
	wg.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	_ = os.Remove(a.cfg.Socket)
	return err
}

// supervise runs worker s, restarting it with backoff, until ctx ends. An
// in-process worker is not restarted: its end is sent to fatal.
func (a *Agent) supervise(ctx context.Context, s *slot, fatal chan<- error) {
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
			fatal <- err
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

// startReaders marks slot s as running a new process, reads its rings,
// and returns the function to call once the process has ended: it reads
// what the process left in its rings (a crashed worker's last records are
// still there: the memory is the agent's too), then forgets the process
// and its connections.
func (a *Agent) startReaders(s *slot, pid int, proc *os.Process, rings *link.Rings) func() {
	toAgent := rings.ToAgent()
	s.mu.Lock()
	s.pid, s.started, s.proc, s.up, s.stats = pid, time.Now(), proc, false, nodemsg.Stats{}
	s.rings = toAgent
	s.mu.Unlock()
	s.prodMu.Lock()
	s.prod = rings.FromAgent().Producer()
	s.prodMu.Unlock()
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
		s.prodMu.Lock()
		s.prod = nil
		s.prodMu.Unlock()
		s.mu.Lock()
		s.up, s.proc, s.rings = false, nil, nil
		s.mu.Unlock()
		a.dropWorker(s.id)
	}
}

// busyPoll is how often a reader polls its ring while records keep
// coming. Woken per record, the reader costs the worker an eventfd write
// and the core a thread switch for every connection, subscription and
// publish; when wake-ups come closer than busyPoll apart, the reader
// sleeps busyPoll between reads instead, without announcing it, so the
// worker does not wake it, and goes back to wake-ups once a read finds
// nothing. A record then waits up to busyPoll to be applied (a
// subscription acknowledged by the agent, a query's settle).
const busyPoll = 500 * time.Microsecond

// readWorker applies the records of one ring from worker s until stop.
func (a *Agent) readWorker(s *slot, r *shm.Ring, stop <-chan struct{}) {
	c := r.Consumer()
	var m nodemsg.Msg
	var (
		busy     bool
		lastWake time.Time
		tick     *time.Timer
	)
	for {
		if busy {
			if tick == nil {
				tick = time.NewTimer(busyPoll)
			} else {
				tick.Reset(busyPoll)
			}
			select {
			case <-tick.C:
			case <-stop:
			}
		} else {
			c.Wait(-1) // returns at once after Interrupt
		}
		stopped := false
		select {
		case <-stop:
			// The process is gone: this Read takes its last records.
			stopped = true
		default:
		}
		n, err := c.Read(func(rec []byte) {
			if err := nodemsg.Decode(rec, &m); err != nil {
				a.log.Error("bad record from a worker", "worker", s.id, "err", err)
				return
			}
			a.apply(s, &m)
		})
		if err != nil {
			a.log.Error("ring from a worker", "worker", s.id, "err", err)
			return
		}
		if stopped {
			return
		}
		switch now := time.Now(); {
		case n == 0:
			busy = false
		case !busy:
			busy = now.Sub(lastWake) < busyPoll
			lastWake = now
		}
	}
}

// apply handles one record from worker s.
func (a *Agent) apply(s *slot, m *nodemsg.Msg) {
	w := s.id
	switch m.Kind {
	case nodemsg.KindReady:
		s.mu.Lock()
		s.up = true
		s.mu.Unlock()
		a.log.Info("worker ready", "worker", w, "pid", m.PID)
		a.mu.Lock()
		a.readyN++
		all := a.readyN >= len(a.slots)
		a.mu.Unlock()
		if all && a.cfg.Ready != nil {
			a.readyOnce.Do(a.cfg.Ready)
		}
	case nodemsg.KindStats:
		s.mu.Lock()
		s.stats = m.Stats
		s.mu.Unlock()
	case nodemsg.KindOpened:
		c := &connRec{worker: w, user: m.User, remote: m.Remote, protocl: m.Proto, chans: map[string]struct{}{}}
		if a.st != nil {
			c.userAgent, c.connected = m.Agent, time.Now()
		}
		a.mu.Lock()
		a.conns[m.Conn] = c
		a.mu.Unlock()
		if a.st != nil {
			a.putSession(m.Conn, c, time.Time{}, 0)
			a.audit(&store.Record{Worker: w, Conn: m.Conn, User: m.User, Op: store.OpConnect, Remote: m.Remote}, nil)
		}
	case nodemsg.KindClosed:
		a.mu.Lock()
		c := a.conns[m.Conn]
		if c != nil {
			for ch := range c.chans {
				a.dropInterestLocked(ch, w)
			}
			delete(a.conns, m.Conn)
		}
		a.mu.Unlock()
		if c != nil && a.st != nil {
			a.closeSession(m.Conn, c, int(m.Status))
		}
	case nodemsg.KindUser:
		a.mu.Lock()
		c := a.conns[m.Conn]
		if c != nil {
			c.user = m.User
		}
		a.mu.Unlock()
		if c != nil && a.st != nil {
			a.putSession(m.Conn, c, time.Time{}, 0)
			a.audit(&store.Record{Worker: w, Conn: m.Conn, User: m.User, Op: store.OpAuth}, nil)
		}
	case nodemsg.KindSub:
		a.mu.Lock()
		c := a.conns[m.Conn]
		added := false
		if c != nil {
			if _, ok := c.chans[m.Channel]; !ok {
				added = true
				c.chans[m.Channel] = struct{}{}
				counts := a.interest[m.Channel]
				if counts == nil {
					counts = make([]int, len(a.slots))
					a.interest[m.Channel] = counts
				}
				counts[w]++
				if a.st != nil && !slices.Contains(c.joined, m.Channel) {
					c.joined = append(c.joined, m.Channel)
				}
			}
		}
		a.mu.Unlock()
		// The interest is recorded before the answer: a publish read after
		// this point, from any worker, reaches the subscriber.
		var done func(error)
		if m.Token != 0 {
			done = a.answer(s, m.Token)
		}
		if a.st == nil || c == nil || !added {
			if done != nil {
				done(nil)
			}
			return
		}
		user := a.putSession(m.Conn, c, time.Time{}, 0)
		a.audit(&store.Record{Worker: w, Conn: m.Conn, User: user, Op: store.OpSubscribe, Channel: m.Channel}, done)
	case nodemsg.KindUnsub:
		a.mu.Lock()
		c := a.conns[m.Conn]
		removed, user := false, ""
		if c != nil {
			if _, ok := c.chans[m.Channel]; ok {
				removed, user = true, c.user
				delete(c.chans, m.Channel)
				a.dropInterestLocked(m.Channel, w)
			}
		}
		a.mu.Unlock()
		if removed && a.st != nil {
			a.audit(&store.Record{Worker: w, Conn: m.Conn, User: user, Op: store.OpUnsubscribe, Channel: m.Channel}, nil)
		}
	case nodemsg.KindPublish:
		opaque := m.Flags&nodemsg.FlagOpaque != 0
		a.forward(w, m.Channel, m.From, m.Data, opaque)
		if a.st == nil {
			if m.Token != 0 {
				a.send(s, nodemsg.AppendDone(nil, m.Token, false))
			}
			return
		}
		op := store.OpPublish
		if m.Channel == "" {
			op = store.OpBroadcast
		}
		a.mu.Lock()
		user := ""
		if c := a.conns[m.From]; c != nil {
			user = c.user
		}
		a.mu.Unlock()
		var done func(error)
		if m.Token != 0 {
			done = a.answer(s, m.Token)
		}
		a.audit(&store.Record{Worker: w, Conn: m.From, User: user, Op: op, Channel: m.Channel, Data: m.Data, Opaque: opaque}, done)
	case nodemsg.KindRefused:
		if a.st != nil {
			a.audit(&store.Record{Worker: w, Conn: m.Conn, User: m.User, Op: store.OpRefused, Attempt: m.Op,
				Channel: m.Channel, Error: m.Code, Remote: m.Remote, Data: m.Data, Opaque: m.Flags&nodemsg.FlagOpaque != 0}, nil)
		}
	}
}

func (a *Agent) dropInterestLocked(ch string, w int) {
	counts := a.interest[ch]
	if counts == nil {
		return
	}
	if counts[w] > 0 {
		counts[w]--
	}
	for _, n := range counts {
		if n > 0 {
			return
		}
	}
	delete(a.interest, ch)
}

// dropWorker removes a dead worker's connections and interest; their
// sessions end with 1006.
func (a *Agent) dropWorker(w int) {
	gone := map[string]*connRec{}
	defer func() {
		if a.st == nil {
			return
		}
		for id, c := range gone {
			a.closeSession(id, c, closeAbnormal)
		}
	}()
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, c := range a.conns {
		if c.worker == w {
			delete(a.conns, id)
			gone[id] = c
		}
	}
	for ch, counts := range a.interest {
		counts[w] = 0
		empty := true
		for _, n := range counts {
			if n > 0 {
				empty = false
			}
		}
		if empty {
			delete(a.interest, ch)
		}
	}
}

// forward sends a message published on worker origin (-1 for the API) to
// every other worker with subscribers of channel, or every other worker
// for a broadcast.
//
// A node whose only worker acknowledges subscriptions itself (in this
// process, without durable acks) may not have applied yet a subscription
// its client already saw acknowledged: there every message goes to that
// worker, which delivers it to its local subscribers, if any.
func (a *Agent) forward(origin int, channel, from string, data []byte, opaque bool) {
	var targets []*slot
	all := channel == "" || (a.cfg.InProcess != nil && !a.cfg.DurableAcks)
	a.mu.Lock()
	counts := a.interest[channel]
	for _, s := range a.slots {
		if s.id == origin {
			continue
		}
		if all || (counts != nil && counts[s.id] > 0) {
			targets = append(targets, s)
		}
	}
	a.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	rec := nodemsg.AppendDeliver(nil, channel, from, opaque, data)
	for _, s := range targets {
		a.send(s, rec)
	}
}

// send writes a record to worker s, waiting a little when its ring is
// full; a record that still does not fit is logged, not silently lost.
func (a *Agent) send(s *slot, rec []byte) {
	s.prodMu.Lock()
	defer s.prodMu.Unlock()
	if s.prod == nil {
		return
	}
	if err := s.prod.Write(rec, time.Second); err != nil {
		a.log.Error("ring to worker full: record dropped", "worker", s.id, "err", err)
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
}

// Workers lists the workers, with connections and subscriptions counted
// from the agent's table and message counters from the workers' reports.
func (a *Agent) Workers() []WorkerInfo {
	conns := make([]int, len(a.slots))
	subs := make([]int, len(a.slots))
	a.mu.Lock()
	for _, c := range a.conns {
		conns[c.worker]++
		subs[c.worker] += len(c.chans)
	}
	a.mu.Unlock()
	out := make([]WorkerInfo, 0, len(a.slots))
	for _, s := range a.slots {
		s.mu.Lock()
		out = append(out, WorkerInfo{
			ID: s.id, PID: s.pid, Started: s.started, Restarts: s.restarts, Up: s.up,
			Connections: conns[s.id], Subscriptions: subs[s.id],
			MessagesIn: s.stats.MessagesIn, MessagesOut: s.stats.MessagesOut,
		})
		s.mu.Unlock()
	}
	return out
}

// connList returns the connection table, sorted by id.
func (a *Agent) connList() []connInfo {
	a.mu.Lock()
	out := make([]connInfo, 0, len(a.conns))
	for id, c := range a.conns {
		chans := make([]string, 0, len(c.chans))
		for ch := range c.chans {
			chans = append(chans, ch)
		}
		sort.Strings(chans)
		out = append(out, connInfo{ID: id, User: c.user, Remote: c.remote, Protocol: c.protocl, Channels: chans, Worker: c.worker})
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

type connInfo struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Remote   string   `json:"remote"`
	Protocol string   `json:"protocol"`
	Channels []string `json:"channels"`
	Worker   int      `json:"worker"`
}

// kick asks the worker holding conn to close it; false if unknown.
func (a *Agent) kick(conn string) bool {
	a.mu.Lock()
	c := a.conns[conn]
	a.mu.Unlock()
	if c == nil {
		return false
	}
	a.send(a.slots[c.worker], nodemsg.AppendKick(nil, conn))
	return true
}
