package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	neturl "net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/zenconn/server/nodemsg"
)

// Host is the node a Cluster serves: the agent.
type Host interface {
	// Deliver hands a message of another node (a checked nodemsg Deliver
	// record, and its decoding) to the local subscribers. It must not
	// block. Flush follows a run of Delivers (they may wait for it).
	// Both are called from one goroutine.
	Deliver(rec []byte, m *nodemsg.Msg)
	Flush()
	// Beat returns this node's figures for its heartbeat.
	Beat() Beat
	// API answers requests from other nodes (cluster queries, disconnects).
	API() http.Handler
}

// Stats are a Cluster's counters.
type Stats struct {
	Connected           bool
	Published, Received uint64
	// DroppedBuffer: outgoing messages and events refused while NATS was
	// unreachable and the reconnect buffer full. DroppedSlow: incoming
	// messages dropped because the reader fell behind.
	DroppedBuffer, DroppedSlow uint64
	// Channels is the number of channel subjects this node subscribes to.
	Channels int
}

// inbox is how many incoming messages wait for the reader; past it NATS
// drops them as a slow consumer (counted).
const inbox = 1 << 16

// Cluster is a node's membership in a cluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	cfg  Config
	host Host
	log  *slog.Logger
	nc   *nats.Conn
	srv  *server.Server // the embedded NATS server, or nil
	msgs chan *nats.Msg // channel messages and broadcasts, for the reader

	bcastSubj string
	interest  *interest
	peers     *peers
	api       *apiServer

	published, received atomic.Uint64
	droppedBuf          atomic.Uint64
	slow                slowSubs
	dropLog             dropLog

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start joins the cluster: it starts the embedded NATS server if asked,
// connects (retrying in the background when NATS is unreachable, while
// the node serves locally) and subscribes to broadcasts, heartbeats,
// events and its API subject. An error means the configuration cannot
// work (a file unreadable, the embedded server's port taken).
func Start(cfg Config, host Host) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, host: host, log: cfg.Log, msgs: make(chan *nats.Msg, inbox),
		bcastSubj: cfg.Name + ".bcast", stop: make(chan struct{})}
	c.peers = newPeers(cfg.Node, cfg.DownAfter, c.log)
	url := cfg.NATS
	if cfg.NATS == Embedded {
		srv, err := startEmbedded(&cfg)
		if err != nil {
			return nil, err
		}
		c.srv, url = srv, srv.ClientURL()
	}
	if err := c.connect(url); err != nil {
		c.shutdownServer()
		return nil, err
	}
	c.interest = newInterest(c.nc, cfg.Name+".msg.", c.msgs, c.log)
	c.interest.retire = c.slow.retire
	c.interest.confirm = c.syncPeers
	if err := c.subscribe(); err != nil {
		c.Close()
		return nil, err
	}
	c.wg.Add(3)
	go func() { defer c.wg.Done(); c.read() }()
	go func() { defer c.wg.Done(); c.interest.run(c.stop) }()
	go func() { defer c.wg.Done(); c.beat() }()
	return c, nil
}

// connect opens the NATS connection; an unreachable NATS is not an
// error (the client keeps trying).
func (c *Cluster) connect(url string) error {
	opts, err := c.options()
	if err != nil {
		return err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("cluster: NATS: %w", err)
	}
	c.nc = nc
	if !nc.IsConnected() {
		c.log.Warn("cluster: NATS unreachable; serving locally and retrying", "url", redact(url))
	}
	return nil
}

// options are the NATS client's options: credentials, TLS, the reconnect
// policy and the handlers that log and count connection changes.
func (c *Cluster) options() ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name("zenconn " + c.cfg.Node), nats.NoEcho(),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond), nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(c.cfg.Buffer), nats.PingInterval(2 * time.Second), nats.MaxPingsOutstanding(2),
		nats.ConnectHandler(func(nc *nats.Conn) {
			c.log.Info("cluster: connected", "url", nc.ConnectedUrlRedacted(), "cluster", c.cfg.Name)
		}),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if nc.IsClosed() {
				return // the node is stopping
			}
			c.log.Warn("cluster: disconnected; local delivery goes on, messages for other nodes are buffered", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.log.Info("cluster: reconnected; interest re-established", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(c.asyncError),
	}
	return append(opts, c.authOptions()...), nil
}

func (c *Cluster) authOptions() []nats.Option {
	var opts []nats.Option
	if c.cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.cfg.Creds))
	}
	if c.cfg.User != "" {
		opts = append(opts, nats.UserInfo(c.cfg.User, c.cfg.Password))
	}
	if c.cfg.Token != "" {
		opts = append(opts, nats.Token(c.cfg.Token))
	}
	if c.cfg.CA != "" {
		opts = append(opts, nats.RootCAs(c.cfg.CA))
	}
	if c.cfg.Cert != "" {
		opts = append(opts, nats.ClientCert(c.cfg.Cert, c.cfg.Key))
	}
	return opts
}

// asyncError counts a slow consumer (messages NATS dropped because the
// reader fell behind) and logs other asynchronous errors.
func (c *Cluster) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		c.slow.add(sub)
		c.dropLog.note(c.log, "slow_consumer")
		return
	}
	c.log.Warn("cluster: NATS", "err", err)
}

// slowSubs counts the messages NATS dropped on subscriptions that fell
// behind: the client counts them per subscription and reports only the
// start of each episode.
type slowSubs struct {
	mu      sync.Mutex
	subs    map[*nats.Subscription]struct{}
	retired uint64
}

func (s *slowSubs) add(sub *nats.Subscription) {
	s.mu.Lock()
	if s.subs == nil {
		s.subs = map[*nats.Subscription]struct{}{}
	}
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
}

// retire keeps the count of a subscription about to end.
func (s *slowSubs) retire(sub *nats.Subscription) {
	s.mu.Lock()
	if _, ok := s.subs[sub]; ok {
		if n, err := sub.Dropped(); err == nil {
			s.retired += uint64(n)
		}
		delete(s.subs, sub)
	}
	s.mu.Unlock()
}

func (s *slowSubs) total() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.retired
	for sub := range s.subs {
		if d, err := sub.Dropped(); err == nil {
			n += uint64(d)
		}
	}
	return n
}

// subscribe takes the subjects every node holds: broadcasts, heartbeats,
// events and this node's API.
func (c *Cluster) subscribe() error {
	if _, err := c.nc.ChanSubscribe(c.bcastSubj, c.msgs); err != nil {
		return err
	}
	if _, err := c.nc.Subscribe(c.cfg.Name+".node.beat", c.onBeat); err != nil {
		return err
	}
	if _, err := c.nc.Subscribe(c.cfg.Name+".event.*.*", c.onEvent); err != nil {
		return err
	}
	c.api = newAPIServer(c.host.API(), c.log)
	_, err := c.nc.Subscribe(c.apiSubject(c.cfg.Node), c.api.serve)
	return err
}

// readRun bounds the messages handed to the host between two Flushes.
const readRun = 256

// read hands the channel messages and broadcasts of other nodes to the
// host, in the order NATS delivered them: what has arrived, up to
// readRun messages, then a Flush, so that a worker takes a run of
// messages in one wake-up and writes them to each subscriber together.
func (c *Cluster) read() {
	var m nodemsg.Msg
	for {
		select {
		case <-c.stop:
			return
		case msg := <-c.msgs:
			c.deliver(msg, &m)
		}
		for n := 1; n < readRun; n++ {
			select {
			case msg := <-c.msgs:
				c.deliver(msg, &m)
				continue
			default:
			}
			break
		}
		c.host.Flush()
	}
}

func (c *Cluster) deliver(msg *nats.Msg, m *nodemsg.Msg) {
	if err := nodemsg.Decode(msg.Data, m); err != nil || m.Kind != nodemsg.KindDeliver {
		c.log.Warn("cluster: not a message record; ignored", "subject", msg.Subject, "bytes", len(msg.Data))
		return
	}
	c.received.Add(1)
	c.host.Deliver(msg.Data, m)
}

// Publish sends rec, a nodemsg Deliver record of a message published on
// this node, to the other nodes: on channel's subject, or to every node
// for a broadcast (channel "").
func (c *Cluster) Publish(channel string, rec []byte) {
	var buf [160]byte
	var subj []byte
	if channel == "" {
		subj = append(buf[:0], c.bcastSubj...)
	} else {
		subj = AppendToken(append(append(buf[:0], c.cfg.Name...), ".msg."...), channel)
	}
	c.send(string(subj), rec)
	c.published.Add(1)
}

// send publishes, counting what the client refuses.
func (c *Cluster) send(subject string, data []byte) {
	if err := c.nc.Publish(subject, data); err != nil {
		c.droppedBuf.Add(1)
		c.dropLog.note(c.log, "buffer_full")
	}
}

// Want says whether this node has subscribers of channel; it never waits.
func (c *Cluster) Want(channel string, on bool) { c.interest.want(channel, on) }

// Live calls done once a message published on any node on channel reaches
// this node (at once if it does already).
func (c *Cluster) Live(channel string, done func(error)) { c.interest.live(channel, done) }

// Stats returns the counters.
func (c *Cluster) Stats() Stats {
	return Stats{Connected: c.nc.IsConnected(), Published: c.published.Load(), Received: c.received.Load(),
		DroppedBuffer: c.droppedBuf.Load(), DroppedSlow: c.slow.total(), Channels: c.interest.count()}
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Close says goodbye to the peers, drains the connection and stops the
// embedded server.
func (c *Cluster) Close() {
	select {
	case <-c.stop:
		return
	default:
	}
	c.sendBeat(true)
	close(c.stop)
	c.wg.Wait()
	_ = c.nc.FlushTimeout(time.Second)
	c.nc.Close()
	c.shutdownServer()
}

func (c *Cluster) shutdownServer() {
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
}

func (c *Cluster) apiSubject(node string) string {
	return c.cfg.Name + ".node." + node + ".api"
}

// dropLog logs drops at most once a second per reason.
type dropLog struct {
	mu   sync.Mutex
	last map[string]time.Time
	n    map[string]int
}

func (d *dropLog) note(log *slog.Logger, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		d.last, d.n = map[string]time.Time{}, map[string]int{}
	}
	d.n[reason]++
	if now := time.Now(); now.Sub(d.last[reason]) >= time.Second {
		log.Warn("cluster: messages dropped", "reason", reason, "count", d.n[reason])
		d.last[reason], d.n[reason] = now, 0
	}
}

// subjectParts returns the node and kind of an event subject
// P.event.<node>.<kind>.
func subjectParts(subject string) (node, kind string) {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 {
		return "", ""
	}
	return parts[2], parts[3]
}

// redact hides the passwords of a list of URLs.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
