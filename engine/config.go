package engine

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/nodemsg"
	"golang.org/x/sys/unix"
)

// Config configures a Server. The zero value of each field means the
// default documented on it; Validate fills the defaults in and reports every
// problem by its flag name.
type Config struct {
	// Addr is the TCP address to listen on ("--addr"); port 0 picks a free
	// port, reported by Server.Addr. Default ":8080".
	Addr string
	// PublicDir is the folder served as static files ("--public"). Default
	// "./public". A missing folder serves 404s (zenconn serve refuses one
	// at start; NoStatic serves no files).
	PublicDir string
	// CompressDir holds the compressed copies of static files that the file
	// server makes on first use. Default: a temporary folder.
	CompressDir string
	// Loops is the number of event loops. Default: the number of CPUs,
	// at most 64.
	Loops int
	// MaxMessage is the largest WebSocket message accepted, in bytes
	// ("--max-message"). Default 1 MiB.
	MaxMessage int
	// MaxOutbound is the per-connection outbound limit in bytes
	// ("--max-outbound"); a connection whose unsent bytes exceed it is closed
	// with 4001. Unsent bytes are those the connection holds back from the
	// kernel: copies of small frames, and large fan-out frames it references
	// (held once for all subscribers, counted in full by each). Default
	// 4 MiB.
	MaxOutbound int
	// MaxConnections bounds open TCP connections ("--max-connections");
	// past it a new connection gets a 503 and is closed, unless the slot of
	// an incomplete request head can be reclaimed (loop.reclaimSlot). Default: the
	// process's open-file limit less 512 descriptors (half of a limit of
	// 1024 or less) kept for files, logs and the listeners, and two per
	// event loop (its yield socket pair), so that accept never fails for
	// lack of one.
	MaxConnections int
	// MaxSubscriptions bounds the channels one connection may join. Default 1024.
	MaxSubscriptions int
	// PingInterval is how often an otherwise silent WebSocket gets a server
	// ping ("--ping-interval"). Default 25 s.
	PingInterval time.Duration
	// IdleTimeout closes a WebSocket (4000) or an idle keep-alive HTTP
	// connection that sent nothing for this long ("--idle-timeout").
	// Default 60 s.
	IdleTimeout time.Duration
	// PingRate caps the server pings this process sends a second, shared
	// by its loops: a loop whose connections would take more at
	// PingInterval pings each of its WebSockets less often, and stretches
	// their IdleTimeout in the same proportion (loop.setKeepAlive), so
	// the keep-alive of a million connections costs what that of
	// PingRate × PingInterval does. 0 (the default): no cap.
	PingRate float64
	// HandshakeTimeout bounds the time from accepting a connection to the
	// end of its first request head, the WebSocket handshake for a client
	// ("--handshake-timeout"). Default 10 s.
	HandshakeTimeout time.Duration
	// HeaderTimeout bounds a later request head, from its first byte
	// ("--header-timeout"). Default 10 s.
	HeaderTimeout time.Duration
	// BodyTimeout bounds a request body, from the end of its head
	// ("--body-timeout"). Default 30 s.
	BodyTimeout time.Duration
	// MessageTimeout bounds a WebSocket message, from its first byte to its
	// last fragment ("--message-timeout"); past it the connection is closed
	// with 4004. Default 30 s.
	MessageTimeout time.Duration
	// InputBudget bounds the bytes this process holds in partial request
	// heads, bodies and WebSocket messages; past it a connection with new
	// partial input gets 503 or close 1013. The node's "--max-pending-input"
	// is divided among its worker processes, each getting at least
	// MinInputBudget. Default 16 MiB.
	InputBudget int
	// Node is this node's id, sent in welcome. Default "local".
	Node string
	// ConnPrefix starts every connection id: a clustered node's
	// "<node>-", so that ids are unique across the cluster. Default none.
	ConnPrefix string
	// TLS, when set, serves every connection of Addr over TLS with this
	// configuration ("--tls-cert", "--tls-key"); nil serves plain TCP. It
	// must not be modified once the server runs.
	TLS *tls.Config
	// TLSAddr, when set (with TLS), is a second address, served with TLS,
	// while Addr serves plain TCP ("--tls-addr"); port 0 picks a free one.
	TLSAddr string
	// TLSRedirect answers every plain-text HTTP request on Addr but
	// /healthz and /metrics, WebSocket handshakes included, with 308 to
	// the same path on https:// at TLSAddr's port ("--tls-redirect").
	// Needs TLSAddr.
	TLSRedirect bool
	// HSTS, when positive, adds "Strict-Transport-Security: max-age=" (in
	// seconds) to the HTTP responses sent over TLS: files, /healthz,
	// /metrics, the server API, errors ("--hsts"). Needs TLS. Default: off.
	HSTS time.Duration
	// TLSCertificates, when set, are the files TLS's certificate comes
	// from (TLS serves them through its GetCertificate, see
	// CertFiles.TLSConfig): while the server runs it looks at them every
	// CertPollInterval and reloads them when they change.
	TLSCertificates *CertFiles
	// MaxTLSHandshakes bounds the TLS handshakes in progress in the
	// process, each on a goroutine of its own until it ends; a connection
	// whose ClientHello arrives while that many are under way is closed.
	// Default DefaultMaxTLSHandshakes, at most MaxTLSHandshakesLimit
	// ("--max-tls-handshakes").
	MaxTLSHandshakes int
	// ACMEHTTP01, when set, answers GET /.well-known/acme-challenge/<token>
	// (HTTP-01, see acme.go): the body for a token, or false for 404. It is
	// called off the loop, with a base64url token of at most 128 bytes.
	ACMEHTTP01 func(token string) ([]byte, bool)
	// Logger receives application logs. Default: discard.
	Logger *slog.Logger
	// AccessLog receives one combined-format line per HTTP request and per
	// WebSocket handshake. Nil disables access logging.
	AccessLog LineWriter

	// Verifier checks client tokens ("--jwt-secret", "--jwt-public-key").
	// Nil: no token is accepted; every connection is anonymous.
	Verifier *auth.Verifier
	// RequireToken refuses WebSocket handshakes without a valid token with
	// 401 ("--anonymous=false"). Needs a Verifier.
	RequireToken bool
	// PublicPublishGranted requires a publish grant to publish on public
	// channels too ("--public-publish=granted"). Default: open.
	PublicPublishGranted bool
	// Bridge connects this process to its node's agent. Required: a
	// worker passes its ring bridge; tests of the engine alone pass
	// NopBridge.
	Bridge Bridge
	// DurableAcks delays the ack of a publish or broadcast until the
	// bridge reports the message on disk ("--audit-sync=always").
	DurableAcks bool
	// WorkerID (0 to nodemsg.MaxWorkers-1) makes connection ids unique
	// across the node's processes.
	WorkerID int
	// APIProxy answers server-API requests once their key is checked: a
	// worker hands them to its agent, which serves the API with the whole
	// node's view. Required with APIKey.
	APIProxy func(req *fasthttp.Request, resp *fasthttp.Response) error
	// MetricsExtra, when set, returns Prometheus text appended to /metrics
	// (a worker adds the node-wide families its agent keeps).
	MetricsExtra func() []byte
	// APIKey enables the server API under /api/ ("--api-key"). Empty: the
	// API answers 404.
	APIKey string
	// KeyAttempts keeps the failed API-key attempts per address for the
	// whole node and audits them (a worker passes its agent's). Nil: this
	// engine counts them alone and audits nothing.
	KeyAttempts KeyAttempts
	// Metrics says who may read /metrics ("--metrics"): MetricsOpen (the
	// default, ""), MetricsKey (the API key, like /api/) or MetricsOff.
	Metrics string
	// NoStatic answers 404 to every path that is not /ws, /healthz,
	// /metrics or /api/ ("--public off"): no static files at all.
	NoStatic bool

	// Limits bound each client address, connection and user (limits.go).
	Limits
}

// LineWriter takes access-log lines. WriteLine must not block for long and
// must not retain line after it returns; it is called on event loops.
type LineWriter interface {
	WriteLine(line []byte)
}

const (
	defaultMaxMessage  = 1 << 20
	defaultMaxOutbound = 4 << 20
	// DefaultInputBudget is the default of --max-pending-input, for the
	// whole node.
	DefaultInputBudget = 16 << 20
	maxLoops           = 64
	// maxHeadSize is the largest HTTP request head accepted (431 past it).
	maxHeadSize = 16 << 10
	// maxBodySize is the largest HTTP request body accepted (413 past it).
	maxBodySize = 1 << 20
)

// Validate fills in defaults and returns every problem found in the
// settings that come from flags. New also checks what the worker process
// provides (checkWiring), which a supervisor validating the flags before it
// starts its workers does not have yet.
func (c *Config) Validate() error {
	c.fillDefaults()
	var errWorker error
	if c.WorkerID < 0 || c.WorkerID >= nodemsg.MaxWorkers {
		errWorker = fmt.Errorf("worker id %d is outside 0..%d", c.WorkerID, nodemsg.MaxWorkers-1)
	}
	return errors.Join(c.checkLimits(), c.Limits.check(), c.checkInput(), c.checkAccess(), c.checkMetrics(), c.checkTLS(), errWorker)
}

// fillDefaults replaces every zero field that has a default by it.
func (c *Config) fillDefaults() {
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.PublicDir == "" {
		c.PublicDir = "./public"
	}
	if c.Loops == 0 {
		c.Loops = runtime.NumCPU()
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = defaultMaxMessage
	}
	if c.MaxOutbound == 0 {
		c.MaxOutbound = defaultMaxOutbound
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = defaultMaxConnections(c.Loops)
	}
	if c.MaxSubscriptions == 0 {
		c.MaxSubscriptions = 1024
	}
	if c.PingInterval == 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	c.fillInputDefaults()
	if c.MaxTLSHandshakes == 0 {
		c.MaxTLSHandshakes = DefaultMaxTLSHandshakes
	}
	if c.Node == "" {
		c.Node = "local"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c.Limits.fillDefaults()
}

// fillInputDefaults fills in the input deadlines and budget.
func (c *Config) fillInputDefaults() {
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.HandshakeTimeout, 10 * time.Second}, {&c.HeaderTimeout, 10 * time.Second},
		{&c.BodyTimeout, 30 * time.Second}, {&c.MessageTimeout, 30 * time.Second}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if c.InputBudget == 0 {
		c.InputBudget = DefaultInputBudget
	}
}

// checkInput checks the input deadlines and budget. Deadlines are checked
// once a second, so shorter ones are refused.
func (c *Config) checkInput() error {
	var errs []error
	for _, d := range []struct {
		v    time.Duration
		flag string
	}{{c.HandshakeTimeout, "--handshake-timeout"}, {c.HeaderTimeout, "--header-timeout"},
		{c.BodyTimeout, "--body-timeout"}, {c.MessageTimeout, "--message-timeout"}} {
		if d.v < time.Second {
			errs = append(errs, fmt.Errorf("%s: %s is below 1s", d.flag, d.v))
		}
	}
	if need := MinInputBudget(c.MaxMessage); c.InputBudget < need {
		errs = append(errs, fmt.Errorf("--max-pending-input: %d bytes per worker process is below the largest message or request (%d bytes)", c.InputBudget, need))
	}
	return errors.Join(errs...)
}

// MinInputBudget is the smallest input budget of a process: room for one
// whole message of maxMessage bytes, or one whole request.
func MinInputBudget(maxMessage int) int {
	return max(maxMessage+maxFrameHeader, maxHeadSize+maxBodySize)
}

// maxFrameHeader is the largest client frame header: 2 + 8 + 4 (mask).
const maxFrameHeader = 14

// defaultMaxConnections is the process's open-file limit less the
// descriptors kept for files, logs, the listeners and the loops' yield
// socket pairs (see MaxConnections).
func defaultMaxConnections(loops int) int {
	var lim unix.Rlimit
	switch err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); {
	case err != nil || lim.Cur >= 1<<31:
		return 1 << 20
	case lim.Cur > 1024:
		return int(lim.Cur) - 512 - 2*loops
	default:
		return max(int(lim.Cur)/2-2*loops, 1)
	}
}

// checkLimits checks the sizes, counts and durations.
func (c *Config) checkLimits() error {
	var errs []error
	if c.Loops < 0 || c.Loops > maxLoops {
		errs = append(errs, fmt.Errorf("loops: %d is outside 1..%d", c.Loops, maxLoops))
	}
	if c.MaxMessage < 128 {
		errs = append(errs, fmt.Errorf("--max-message: %d is below 128 bytes", c.MaxMessage))
	}
	if c.MaxOutbound < 4096 {
		errs = append(errs, fmt.Errorf("--max-outbound: %d is below 4096 bytes", c.MaxOutbound))
	}
	if c.MaxConnections < 0 {
		errs = append(errs, errors.New("--max-connections: must not be negative"))
	}
	if c.PingInterval < 0 {
		errs = append(errs, errors.New("--ping-interval: must be positive"))
	}
	if c.PingRate < 0 || math.IsNaN(c.PingRate) || math.IsInf(c.PingRate, 0) {
		errs = append(errs, fmt.Errorf("--ping-rate: %v is not a rate of pings a second (0: no cap)", c.PingRate))
	}
	if c.IdleTimeout <= c.PingInterval {
		errs = append(errs, fmt.Errorf("--idle-timeout: %s must exceed --ping-interval %s", c.IdleTimeout, c.PingInterval))
	}
	return errors.Join(errs...)
}

// checkAccess checks the token and API-key settings.
func (c *Config) checkAccess() error {
	var errs []error
	if c.RequireToken && c.Verifier == nil {
		errs = append(errs, errors.New("--anonymous=false: needs --jwt-secret or --jwt-public-key"))
	}
	if c.APIKey != "" && len(c.APIKey) < 16 {
		errs = append(errs, errors.New("--api-key: at least 16 characters"))
	}
	return errors.Join(errs...)
}

// checkWiring checks what the worker process provides: its bridge and the
// proxy to its agent's API.
func (c *Config) checkWiring() error {
	var errs []error
	if c.Bridge == nil {
		errs = append(errs, errors.New("engine: Config.Bridge is required (NopBridge for an engine without a node)"))
	}
	if c.APIKey != "" && c.APIProxy == nil {
		errs = append(errs, errors.New("engine: Config.APIProxy is required with an API key"))
	}
	return errors.Join(errs...)
}

// checkTLS checks the second, TLS address and the redirect to it.
func (c *Config) checkTLS() error {
	switch {
	case c.HSTS < 0:
		return errors.New("--hsts: must not be negative")
	case c.HSTS > 0 && c.TLS == nil:
		return errors.New("--hsts: needs --tls-cert and --tls-key")
	case c.MaxTLSHandshakes < 0 || c.MaxTLSHandshakes > MaxTLSHandshakesLimit:
		return fmt.Errorf("--max-tls-handshakes: %d is outside 1..%d", c.MaxTLSHandshakes, MaxTLSHandshakesLimit)
	}
	if c.TLSAddr == "" {
		if c.TLSRedirect {
			return errors.New("--tls-redirect: needs --tls-addr")
		}
		return nil
	}
	if c.TLS == nil {
		return errors.New("--tls-addr: needs --tls-cert and --tls-key")
	}
	_, tlsPort, err := net.SplitHostPort(c.TLSAddr)
	if err != nil {
		return fmt.Errorf("--tls-addr: %w", err)
	}
	if _, port, err := net.SplitHostPort(c.Addr); err == nil && port == tlsPort && port != "0" {
		return fmt.Errorf("--tls-addr: port %s is --addr's; the TLS address needs a port of its own", port)
	}
	return nil
}
