// Package worker runs one worker process of a node: the event-loop engine
// serving clients, bridged to the node's agent through shared-memory
// rings.
//
// Rings (package link): one from each event loop to the agent (so every
// ring has a single producer), one more from the worker's housekeeping
// goroutine (ready and stats records), and one from the agent to the
// worker. Records are those of package nodemsg.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/engine"
	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/proto"
	"github.com/zenconn/server/shm"
)

// Config is what a worker needs besides its engine configuration.
type Config struct {
	ID int
	// Rings are the worker's rings to and from the agent; the engine gets
	// one event loop per loop ring.
	Rings *link.Rings
	// AgentSocket is the agent's unix socket for server-API requests.
	AgentSocket string
	// Alone says this is the node's only worker: a subscription is live
	// on the whole node as soon as this process has it, so it is
	// acknowledged without waiting for the agent (unless the engine's
	// DurableAcks makes acks wait for the audit log).
	Alone bool
	// OnStart, if set, is called with the engine before it starts (to
	// register metrics).
	OnStart func(*engine.Server)
	Log     *slog.Logger
}

var errNotWritten = errors.New("worker: the agent could not write the record")

// bridge implements engine.Bridge over the rings.
type bridge struct {
	prods   []*shm.Producer // per loop, owned by that loop
	scratch [][]byte        // per loop
	backlog [][][]byte      // per loop: records that found the ring full

	alone bool // the node's only worker, without durable acks

	mu      sync.Mutex
	pending map[uint64]func(error)
	token   atomic.Uint64
}

func newBridge(rings *link.Rings) *bridge {
	loops := rings.Loops()
	b := &bridge{pending: make(map[uint64]func(error))}
	for i := range loops {
		b.prods = append(b.prods, rings.Loop(i).Producer())
	}
	b.scratch = make([][]byte, loops)
	b.backlog = make([][][]byte, loops)
	return b
}

// send writes a record on the loop's ring. Records that must not be lost
// (connection table events) wait in a backlog when the ring is full and
// go out, in order, before the loop's next record or at its next Tick.
func (b *bridge) send(loop int, rec []byte, mustKeep bool) error {
	p := b.prods[loop]
	if b.writeBacklog(loop) {
		if err := p.TryWrite(rec); err == nil {
			p.Flush()
			return nil
		} else if !errors.Is(err, shm.ErrFull) {
			return err
		}
	}
	p.Flush()
	if !mustKeep {
		return shm.ErrFull
	}
	b.backlog[loop] = append(b.backlog[loop], append([]byte(nil), rec...))
	return nil
}

// writeBacklog writes what it can of the loop's backlog onto its ring
// (unpublished) and reports whether the backlog is empty.
func (b *bridge) writeBacklog(loop int) bool {
	for len(b.backlog[loop]) > 0 {
		if b.prods[loop].TryWrite(b.backlog[loop][0]) != nil {
			return false
		}
		b.backlog[loop][0] = nil
		b.backlog[loop] = b.backlog[loop][1:]
	}
	return true
}

// Tick sends the loop's backlog, so that table events that found the ring
// full go out even when the loop has nothing more to say, and gives back
// the pages of the loop's ring that its traffic left (Producer.Release).
func (b *bridge) Tick(loop int) {
	p := b.prods[loop]
	if len(b.backlog[loop]) > 0 {
		b.writeBacklog(loop)
		p.Flush()
	}
	p.Release(time.Now())
}

func (b *bridge) Opened(loop int, si engine.SessionInfo) {
	b.scratch[loop] = nodemsg.AppendOpened(b.scratch[loop][:0], si.Conn, si.User, si.Remote, si.UserAgent, si.Protocol, si.TLSVersion, si.TLSCipher)
	_ = b.send(loop, b.scratch[loop], true)
}

func (b *bridge) Closed(loop int, conn string, code uint16) {
	b.scratch[loop] = nodemsg.AppendClosed(b.scratch[loop][:0], conn, code)
	_ = b.send(loop, b.scratch[loop], true)
}

func (b *bridge) Refused(loop int, r engine.Refusal) {
	b.scratch[loop] = nodemsg.AppendRefused(b.scratch[loop][:0], r.Conn, r.User, r.Op, r.Channel, r.Code, r.Remote, r.Opaque, r.Data)
	// Kept like the table events: the audit log must not miss it.
	_ = b.send(loop, b.scratch[loop], true)
}

func (b *bridge) Identified(loop int, conn, user string) {
	b.scratch[loop] = nodemsg.AppendUser(b.scratch[loop][:0], conn, user)
	_ = b.send(loop, b.scratch[loop], true)
}

func (b *bridge) Subscribed(loop int, conn, channel string, live func(error)) (bool, error) {
	if b.alone {
		// Token 0: the agent records it and does not answer.
		b.scratch[loop] = nodemsg.AppendSub(b.scratch[loop][:0], 0, conn, channel)
		err := b.send(loop, b.scratch[loop], true)
		return err == nil, err
	}
	tok := b.await(live)
	b.scratch[loop] = nodemsg.AppendSub(b.scratch[loop][:0], tok, conn, channel)
	if err := b.send(loop, b.scratch[loop], true); err != nil {
		b.settle(tok, err)
	}
	return false, nil
}

// await registers a callback for the agent's Done record and returns its
// token.
func (b *bridge) await(fn func(error)) uint64 {
	tok := b.token.Add(1)
	b.mu.Lock()
	b.pending[tok] = fn
	b.mu.Unlock()
	return tok
}

func (b *bridge) Unsubscribed(loop int, conn, channel string) {
	b.scratch[loop] = nodemsg.AppendUnsub(b.scratch[loop][:0], conn, channel)
	_ = b.send(loop, b.scratch[loop], true)
}

// Published writes the message to the loop's ring and flushes it before
// returning, so an ack the engine sends afterwards follows a record the
// agent will read even if this process dies: the ring's memory is the
// agent's too.
func (b *bridge) Published(loop int, channel, from string, data []byte, opaque bool, durable func(error)) error {
	var tok uint64
	if durable != nil {
		tok = b.await(durable)
	}
	b.scratch[loop] = nodemsg.AppendPublish(b.scratch[loop][:0], tok, channel, from, opaque, data)
	err := b.send(loop, b.scratch[loop], false)
	if err != nil && tok != 0 {
		b.mu.Lock()
		delete(b.pending, tok)
		b.mu.Unlock()
	}
	return err
}

// settle runs the pending subscription callback for tok.
func (b *bridge) settle(tok uint64, err error) {
	b.mu.Lock()
	live := b.pending[tok]
	delete(b.pending, tok)
	b.mu.Unlock()
	if live != nil {
		live(err)
	}
}

// ErrStart wraps the errors of a worker that could not start serving (its
// configuration refused, its port not bound): restarting it would fail
// the same way.
var ErrStart = errors.New("worker: not started")

// Run serves until ctx ends (then drains the engine) and returns.
func Run(ctx context.Context, ecfg engine.Config, cfg Config) error {
	if cfg.Rings == nil {
		return errors.New("worker: rings missing")
	}
	ecfg.Loops = cfg.Rings.Loops()
	ecfg.WorkerID = cfg.ID
	b := newBridge(cfg.Rings)
	b.alone = cfg.Alone && !ecfg.DurableAcks
	ecfg.Bridge = b
	if cfg.AgentSocket != "" {
		proxyToAgent(&ecfg, cfg.AgentSocket, cfg.ID)
	}
	var early [][]byte
	if ecfg.TLS != nil {
		early = awaitTickets(cfg.Rings.FromAgent(), &ecfg, ticketsWait, cfg.Log)
	}
	srv, err := engine.New(ecfg)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	if cfg.OnStart != nil {
		cfg.OnStart(srv)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("%w: %w", ErrStart, err)
	}
	house := cfg.Rings.Housekeeping().Producer()
	if err := house.Write(nodemsg.AppendReady(nil, cfg.ID, os.Getpid()), 5*time.Second); err != nil {
		return fmt.Errorf("worker: telling the agent it is ready: %w", err)
	}

	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	ra := &agentReader{srv: srv, b: b, ecfg: &ecfg, log: cfg.Log}
	go func() { defer wg.Done(); ra.run(cfg.Rings.FromAgent(), early, done) }()
	go func() { defer wg.Done(); reportStats(house, srv, done) }()

	var fatal error
	select {
	case <-ctx.Done():
	case fatal = <-srv.Fatal():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		// Expected with many connections on a loaded machine: the process
		// exits, and the kernel closes what is left (1006 for the clients).
		cfg.Log.Warn("shutdown: the grace period ended before every connection was closed; the rest close with the process")
		err = nil
	}
	close(done)
	cfg.Rings.FromAgent().Interrupt()
	wg.Wait()
	if fatal != nil {
		return fatal
	}
	return err
}

// proxyToAgent makes the engine hand server-API requests to the agent's
// socket, keep failed API keys with the agent (node-wide; agentKeys), and
// append the agent's node-wide families to GET /metrics.
func proxyToAgent(ecfg *engine.Config, socket string, id int) {
	hc := &fasthttp.HostClient{
		Addr: "agent",
		Dial: func(string) (net.Conn, error) { return net.Dial("unix", socket) },
	}
	ecfg.APIProxy = func(req *fasthttp.Request, resp *fasthttp.Response) error {
		return hc.DoTimeout(req, resp, 5*time.Second)
	}
	ecfg.KeyAttempts = agentKeys{hc: hc, worker: id}
	ecfg.MetricsExtra = func() []byte {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://agent/metrics")
		if err := hc.DoTimeout(req, resp, 2*time.Second); err != nil || resp.StatusCode() != 200 {
			return []byte("# the node agent did not answer\n")
		}
		return append([]byte(nil), resp.Body()...)
	}
}

// reportStats writes the engine's counters on the housekeeping ring every
// second until done is closed. A report that finds the ring full is
// skipped: the next one carries the totals.
func reportStats(house *shm.Producer, srv *engine.Server, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var rec []byte
	for {
		select {
		case <-t.C:
			st := srv.Stats()
			rec = nodemsg.AppendStats(rec[:0], &st)
			_ = house.Write(rec, 100*time.Millisecond)
			house.Release(time.Now())
		case <-done:
			return
		}
	}
}

// agentReader applies the agent's records.
type agentReader struct {
	srv  *engine.Server
	b    *bridge
	ecfg *engine.Config // for the TLS session-ticket keys
	log  *slog.Logger
	m    nodemsg.Msg
}

// run applies early (records read before the engine started), then the
// records of r until done is closed.
func (ra *agentReader) run(r *shm.Ring, early [][]byte, done <-chan struct{}) {
	for _, rec := range early {
		ra.apply(rec)
	}
	c := r.Consumer()
	for {
		select {
		case <-done:
			return
		default:
		}
		if !c.Wait(-1) { // false after Interrupt
			continue
		}
		if _, err := c.Read(ra.apply); err != nil {
			ra.log.Error("ring from the agent", "err", err)
			return
		}
	}
}

// apply applies one record from the agent.
func (ra *agentReader) apply(rec []byte) {
	m := &ra.m
	if err := nodemsg.Decode(rec, m); err != nil {
		ra.log.Error("bad record from the agent", "err", err)
		return
	}
	switch m.Kind {
	case nodemsg.KindDone:
		var err error
		if m.Status != 0 {
			err = errNotWritten
		}
		ra.b.settle(m.Token, err)
	case nodemsg.KindDeliver:
		ra.srv.Deliver(m.Channel, m.From, m.Data, m.Flags&nodemsg.FlagOpaque != 0)
	case nodemsg.KindKick:
		ra.srv.Kick(m.Conn)
	case nodemsg.KindEvict:
		evict(ra.srv, m)
	case nodemsg.KindTickets:
		ra.ecfg.SetTicketKeys(nodemsg.TicketKeys(m.Data))
	}
}

// ticketsWait bounds how long a TLS worker waits for the node's
// session-ticket keys before it serves.
const ticketsWait = 5 * time.Second

// awaitTickets reads, before the engine serves, the agent's first record:
// the node's TLS session-ticket keys (nodemsg's Tickets), so that no
// ticket this worker seals is one the other workers cannot open. Records
// that came with it are returned, copied, for the agent reader. Without
// keys by timeout the worker serves with keys of its own until they come.
func awaitTickets(r *shm.Ring, ecfg *engine.Config, timeout time.Duration, log *slog.Logger) [][]byte {
	c := r.Consumer()
	deadline := time.Now().Add(timeout)
	var early [][]byte
	got := false
	for !got {
		left := time.Until(deadline)
		if left <= 0 || !c.Wait(left) {
			log.Warn("no TLS session-ticket keys from the agent yet: serving with keys of this worker until they come")
			return early
		}
		_, _ = c.Read(func(rec []byte) {
			if !got && len(rec) > 0 && rec[0] == nodemsg.KindTickets {
				var m nodemsg.Msg
				if nodemsg.Decode(rec, &m) == nil {
					ecfg.SetTicketKeys(nodemsg.TicketKeys(m.Data))
					got = true
					return
				}
			}
			early = append(early, append([]byte(nil), rec...))
		})
	}
	return early
}

// agentKeys is the engine's KeyAttempts in a worker: the agent counts the
// failed API-key attempts of the whole node and audits them, so that an
// address is refused on every worker at once.
type agentKeys struct {
	hc     *fasthttp.HostClient
	worker int
}

// Blocked asks the agent (GET /internal/blocked?addr=IP, answered in
// milliseconds); an agent that does not answer refuses no one (the API
// request would fail anyway).
func (k agentKeys) Blocked(addr netip.Addr) time.Duration {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://agent/internal/blocked")
	req.URI().QueryArgs().Set("addr", addr.String())
	if err := k.hc.DoTimeout(req, resp, 2*time.Second); err != nil || resp.StatusCode() != fasthttp.StatusOK {
		return 0
	}
	ms, err := strconv.ParseInt(string(resp.Body()), 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// Failed tells the agent (POST /internal/refused?worker=W&remote=ADDR).
func (k agentKeys) Failed(remote string) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://agent/internal/refused")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.URI().QueryArgs().Set("remote", remote)
	req.URI().QueryArgs().SetUint("worker", k.worker)
	_ = k.hc.DoTimeout(req, resp, 2*time.Second)
}

// evict closes the connection an Evict record names with its code.
func evict(srv *engine.Server, m *nodemsg.Msg) {
	switch m.Status {
	case proto.CloseUserLimit:
		srv.Evict(m.Conn, proto.CloseUserLimit, "too many connections for this user")
	default:
		srv.Evict(m.Conn, uint16(m.Status), "closed by the node")
	}
}
