package main

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/zenconn/server/accesslog"
	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/cluster"
	"github.com/zenconn/server/engine"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/proto"
	"github.com/zenconn/server/store"
)

// serveOptions are the flags of "zenconn serve".
type serveOptions struct {
	addr         string
	public       string
	data         string
	node         string
	accessLog    string
	workers      int
	loops        int
	stallTimeout time.Duration
	maxConns     int
	maxMessage   byteSize
	maxOutbound  byteSize
	pingInterval time.Duration
	idleTimeout  time.Duration
	pingRate     int
	logLevel     string

	handshakeTimeout time.Duration
	headerTimeout    time.Duration
	bodyTimeout      time.Duration
	messageTimeout   time.Duration
	maxPendingInput  byteSize

	jwtSecret     string
	jwtPublicKey  string
	jwtIssuer     string
	jwtAudience   string
	anonymous     bool
	publicPublish string
	apiKey        string

	audit             bool
	auditSync         string
	auditSyncInterval time.Duration
	auditRetention    time.Duration
	auditMaxData      byteSize
	auditQuota        byteSize
	auditMaxQueries   int
	pprof             string
	metrics           string

	tls     tlsOptions     // tlsflags.go
	acme    acmeOptions    // acme.go
	limits  limitOptions   // limits.go
	cluster clusterOptions // cluster.go
	// clusterCfg is the checked cluster configuration, nil when alone.
	clusterCfg *cluster.Config
}

func newServeFlags(o *serveOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", ":8080", "TCP address to listen on; port 0 picks a free port (logged)")
	fs.StringVar(&o.public, "public", "./public", `folder served as static files; it must exist and be readable ("off": no static files)`)
	fs.StringVar(&o.data, "data", "./data", "data folder (node id, store, compressed file cache), locked by the running node; created if missing (files 0600, folders 0700)")
	fs.StringVar(&o.node, "node", "", "this node's id (1-64 of A-Z a-z 0-9 _), kept in --data's node-id file, which must not name another (empty: the id in that file, else a random one)")
	fs.StringVar(&o.accessLog, "access-log", "-", `access log in combined format: a file path, "-" for stdout, or "off"`)
	fs.IntVar(&o.workers, "workers", defaultWorkers(), "worker processes under an agent process; 0 serves in this process")
	fs.IntVar(&o.loops, "loops", 0, "event loops per process; 0 means one per CPU the node may use (divided among the workers)")
	fs.DurationVar(&o.stallTimeout, "worker-stall-timeout", 5*time.Second, "a worker whose ring from the agent takes nothing this long while records wait for it is killed and restarted (with --workers 0: the node exits)")
	fs.IntVar(&o.maxConns, "max-connections", 0, "open connections accepted before new ones get 503 (or take the slot of a request head under way for 1 s or more); 0 means the open-file limit less 512 and two per event loop")
	o.maxMessage = 1 << 20
	fs.Var(&o.maxMessage, "max-message", "largest WebSocket message accepted (bytes; K/KiB, M/MiB suffixes); larger ones are closed with 1009")
	o.maxOutbound = 4 << 20
	fs.Var(&o.maxOutbound, "max-outbound", "per-connection outbound buffer; past it the connection is closed with 4001 (slow consumer)")
	fs.DurationVar(&o.pingInterval, "ping-interval", 25*time.Second, "server ping to a WebSocket silent this long, plus up to a tenth of it for each connection")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 60*time.Second, "close a connection silent this long (WebSocket: code 4000)")
	fs.IntVar(&o.pingRate, "ping-rate", defaultPingRate, "server pings the node sends a second at most: with more than this × --ping-interval WebSockets, each is pinged less often and its --idle-timeout grows in proportion (0: no cap)")
	addInputFlags(fs, o)
	fs.StringVar(&o.logLevel, "log-level", "info", "application log level: debug, info, warn, error")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HMAC secret for client tokens (HS256/HS384/HS512), at least 32 bytes")
	fs.StringVar(&o.jwtPublicKey, "jwt-public-key", "", "PEM file with the public key for client tokens (RS256, ES256 or EdDSA)")
	fs.StringVar(&o.jwtIssuer, "jwt-issuer", "", "required iss claim of client tokens (empty: not checked)")
	fs.StringVar(&o.jwtAudience, "jwt-audience", "", "required aud claim of client tokens (empty: not checked)")
	fs.BoolVar(&o.anonymous, "anonymous", true, "accept WebSocket connections without a token (false: 401 without one)")
	fs.StringVar(&o.publicPublish, "public-publish", "open", `who may publish on public channels: "open" (anyone) or "granted" (a publish grant)`)
	fs.StringVar(&o.apiKey, "api-key", "", "enables the server API under /api/ with this key (at least 16 characters)")
	fs.BoolVar(&o.audit, "audit", true, "record sessions and the audit log of every message in Pebble, in --data (false: neither)")
	fs.StringVar(&o.auditSync, "audit-sync", "batch", `when the audit log reaches the disk: "always" (acks wait for fsync), "batch" (fsync every --audit-sync-interval) or "none" (left to the OS); see README`)
	fs.DurationVar(&o.auditSyncInterval, "audit-sync-interval", 100*time.Millisecond, "fsync period of --audit-sync=batch: the most a power loss can take")
	fs.DurationVar(&o.auditRetention, "audit-retention", 30*24*time.Hour, "trim audit records and ended sessions older than this (0: keep them until --audit-quota needs room)")
	o.auditMaxData, o.auditQuota = store.DefaultMaxData, 10<<30
	fs.Var(&o.auditMaxData, "audit-max-data", "data kept whole in an audit record; longer data keeps its size, SHA-256 and first bytes")
	fs.Var(&o.auditQuota, "audit-quota", "disk space of the audit databases (at least 64MiB, at most half the filesystem); past it the oldest records are trimmed")
	fs.IntVar(&o.auditMaxQueries, "audit-max-queries", 4, "audit and session API queries answered at once; more get 503")
	fs.StringVar(&o.metrics, "metrics", "open", `who may read /metrics on --addr: "open" (anyone), "key" (requests with the --api-key, like /api/) or "off" (404)`)
	fs.StringVar(&o.pprof, "pprof", "", "serve net/http/pprof on this loopback address (the agent; worker i on the port after it plus i)")
	registerTLSFlags(fs, &o.tls)
	registerACMEFlags(fs, &o.acme)
	registerLimitFlags(fs, &o.limits)
	registerClusterFlags(fs, &o.cluster)
	return fs
}

// addInputFlags adds the deadlines and the budget of client input.
func addInputFlags(fs *flag.FlagSet, o *serveOptions) {
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 10*time.Second, "a new connection's first request head (the WebSocket handshake; with TLS, the TLS handshake before it) must arrive this soon after connecting, else 408 and close")
	fs.DurationVar(&o.headerTimeout, "header-timeout", 10*time.Second, "a request head must be complete this soon after its first byte, else 408 and close")
	fs.DurationVar(&o.bodyTimeout, "body-timeout", 30*time.Second, "a request body must be complete this soon after its head, else 408 and close")
	fs.DurationVar(&o.messageTimeout, "message-timeout", 30*time.Second, "a WebSocket message must be complete this soon after its first byte, else close 4004")
	o.maxPendingInput = engine.DefaultInputBudget
	fs.Var(&o.maxPendingInput, "max-pending-input", "bytes the node holds in partial request heads, bodies and WebSocket messages, divided evenly among the worker processes (each gets at least one largest message or request); past it 503 or close 1013")
}

// checkInputFlags refuses zero deadlines and budget, which the engine
// would otherwise read as "the default"; it checks the rest.
func checkInputFlags(o *serveOptions) error {
	var errs []error
	for _, d := range []struct {
		v    time.Duration
		flag string
	}{{o.handshakeTimeout, "--handshake-timeout"}, {o.headerTimeout, "--header-timeout"},
		{o.bodyTimeout, "--body-timeout"}, {o.messageTimeout, "--message-timeout"}} {
		if d.v < time.Second {
			errs = append(errs, fmt.Errorf("%s: %s is below 1s", d.flag, d.v))
		}
	}
	if least := engine.MinInputBudget(int(o.maxMessage)); int(o.maxPendingInput) < least {
		errs = append(errs, fmt.Errorf("--max-pending-input: %d bytes is below one largest message or request (%d bytes)", o.maxPendingInput, least))
	}
	return errors.Join(errs...)
}

// inputShare is one worker process's share of --max-pending-input: an
// even share, but at least room for one largest message or request.
func inputShare(o *serveOptions) int {
	return max(int(o.maxPendingInput)/max(o.workers, 1), engine.MinInputBudget(int(o.maxMessage)))
}

// defaultPingRate is --ping-rate when not given: the keep-alive of
// 250,000 WebSockets at the default 25 s interval. Past it the pings and
// their pongs would take a large share of a small machine's CPU (a
// million at 25 s: 40,000 a second, ~19 µs of the node's CPU each on
// loopback; bench/notes/keepalive.md).
const defaultPingRate = 10000

// defaultWorkers is --workers when not given: one worker per CPU the
// process may use (availableCPUs), at most nodemsg.MaxWorkers.
func defaultWorkers() int { return min(availableCPUs, nodemsg.MaxWorkers) }

// availableCPUs is the number of CPUs this process may use: the CPUs it
// may run on (runtime.NumCPU), fewer under a CPU limit of its cgroup (a
// container's --cpus, rounded up; the runtime does not go below 2 for a
// limit) or with GOMAXPROCS in the environment. It is Go's default
// GOMAXPROCS, read before spareProc changes it.
var availableCPUs = max(1, min(runtime.NumCPU(), runtime.GOMAXPROCS(0)))

func printServeFlags(w io.Writer) {
	var o serveOptions
	fs := newServeFlags(&o)
	fs.SetOutput(w)
	fmt.Fprintln(w, "Flags of zenconn serve (environment: ZENCONN_<FLAG>):")
	fs.PrintDefaults()
}

// applyEnv sets every flag not given on the command line from its
// ZENCONN_<FLAG> environment variable.
func applyEnv(fs *flag.FlagSet) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		key := "ZENCONN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", key, err))
			}
		}
	})
	return errors.Join(errs...)
}

func serve(args []string) int {
	var o serveOptions
	fs := newServeFlags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Println("Usage: zenconn serve [flags]")
			fmt.Println()
			printServeFlags(os.Stdout)
			return 0
		}
		return usageError(os.Stderr, "serve", fmt.Errorf("%v (see zenconn serve --help)", err))
	}
	level, verifier, err := checkServeFlags(fs, &o)
	if err != nil {
		return usageError(os.Stderr, "serve", err)
	}
	restrictFiles()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := runNode(&o, args, verifier, log); err != nil {
		var se startError
		if errors.As(err, &se) {
			return usageError(os.Stderr, "serve", se.err)
		}
		log.Error("serve failed", "err", err)
		return 1
	}
	return 0
}

// checkServeFlags applies the environment to the flags not given and
// checks the values that need no file or socket, the engine's among them;
// it returns the log level and the token verifier.
func checkServeFlags(fs *flag.FlagSet, o *serveOptions) (slog.Level, *auth.Verifier, error) {
	var level slog.Level
	if fs.NArg() > 0 {
		return level, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs); err != nil {
		return level, nil, err
	}
	clearSecretEnv()
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return level, nil, fmt.Errorf("--log-level: %w", err)
	}
	if _, _, err := parseAddr("--addr", o.addr); err != nil {
		return level, nil, err
	}
	if o.tls.addr != "" {
		if _, _, err := parseAddr("--tls-addr", o.tls.addr); err != nil {
			return level, nil, err
		}
	}
	if err := checkValues(o); err != nil {
		return level, nil, err
	}
	var err error
	if o.clusterCfg, err = clusterConfig(fs, &o.cluster); err != nil {
		return level, nil, err
	}
	verifier, err := newVerifier(o)
	if err != nil {
		return level, nil, err
	}
	// The engine's own checks, before anything touches the disk.
	check := *o
	check.accessLog = "off"
	ecfg, _, _, err := engineConfig(&check, verifier, nil, "", "")
	if err != nil {
		return level, nil, err
	}
	return level, verifier, ecfg.Validate()
}

// checkValues checks the flags whose values stand alone: worker count,
// modes, durations, the pprof address and the audit limits.
func checkValues(o *serveOptions) error {
	if o.workers < 0 || o.workers > nodemsg.MaxWorkers {
		return fmt.Errorf("--workers: %d is outside 0..%d (a worker takes connections up to its "+
			"open-file limit: for more connections raise that limit, ulimit -n)", o.workers, nodemsg.MaxWorkers)
	}
	if o.pingRate < 0 {
		return fmt.Errorf("--ping-rate: %d is negative (0: no cap)", o.pingRate)
	}
	if o.node != "" && !validNodeID(o.node) {
		return fmt.Errorf("--node: %q is not 1-64 of A-Z a-z 0-9 _", o.node)
	}
	if o.publicPublish != "open" && o.publicPublish != "granted" {
		return fmt.Errorf("--public-publish: %q is neither open nor granted", o.publicPublish)
	}
	if _, err := store.ParseSyncMode(o.auditSync); err != nil {
		return fmt.Errorf("--audit-sync: %q is not always, batch or none", o.auditSync)
	}
	if o.pprof != "" {
		if err := checkPprofAddr(o.pprof); err != nil {
			return err
		}
	}
	switch {
	case o.stallTimeout <= 0:
		return errors.New("--worker-stall-timeout: must be positive")
	case o.auditSyncInterval <= 0:
		return errors.New("--audit-sync-interval: must be positive")
	case o.auditRetention < 0:
		return errors.New("--audit-retention: must not be negative")
	}
	return checkAuditLimits(o)
}

// checkAuditLimits checks the audit log's limits.
func checkAuditLimits(o *serveOptions) error {
	switch {
	case o.auditQuota < store.MinQuota:
		return fmt.Errorf("--audit-quota: must be at least %dMiB", store.MinQuota>>20)
	case o.auditMaxQueries < 1:
		return errors.New("--audit-max-queries: must be at least 1")
	}
	return nil
}

// newVerifier builds the token verifier from the --jwt-* flags, nil when no
// key is configured.
func newVerifier(o *serveOptions) (*auth.Verifier, error) {
	if o.jwtSecret == "" && o.jwtPublicKey == "" {
		if o.jwtIssuer != "" || o.jwtAudience != "" {
			return nil, errors.New("--jwt-issuer/--jwt-audience: need --jwt-secret or --jwt-public-key")
		}
		return nil, nil
	}
	cfg := auth.Config{Secret: []byte(o.jwtSecret), Issuer: o.jwtIssuer, Audience: o.jwtAudience}
	if o.jwtPublicKey != "" {
		pem, err := os.ReadFile(o.jwtPublicKey)
		if err != nil {
			return nil, fmt.Errorf("--jwt-public-key: %w", err)
		}
		cfg.PublicKey = pem
	}
	v, err := auth.NewVerifier(cfg)
	if err != nil {
		if len(o.jwtSecret) > 0 && len(o.jwtSecret) < auth.MinSecretLen {
			return nil, fmt.Errorf("--jwt-secret: %d bytes; at least %d are required", len(o.jwtSecret), auth.MinSecretLen)
		}
		return nil, fmt.Errorf("--jwt-public-key: %w", err)
	}
	return v, nil
}

// prepare loads the node id from the data folder (claimData made it).
func prepare(o *serveOptions, log *slog.Logger) (string, error) {
	if err := proto.Pretouch(); err != nil {
		log.Warn("json codec pretouch failed", "err", err)
	}
	return loadNodeID(o.data, o.node)
}

// engineConfig builds the engine configuration from the flags, opening
// the access log; closeLog flushes and closes it.
func engineConfig(o *serveOptions, verifier *auth.Verifier, log *slog.Logger, node, compressDir string) (cfg engine.Config, alog *accesslog.Writer, closeLog func(), err error) {
	if err := checkInputFlags(o); err != nil {
		return cfg, nil, nil, err
	}
	cfg = engine.Config{
		Addr:           o.addr,
		PublicDir:      o.public,
		NoStatic:       noStatic(o.public),
		Metrics:        o.metrics,
		CompressDir:    compressDir,
		Loops:          o.loops,
		MaxConnections: o.maxConns,
		MaxMessage:     int(o.maxMessage),
		MaxOutbound:    int(o.maxOutbound),
		PingInterval:   o.pingInterval,
		IdleTimeout:    o.idleTimeout,
		PingRate:       float64(o.pingRate) / float64(max(o.workers, 1)),

		HandshakeTimeout: o.handshakeTimeout,
		HeaderTimeout:    o.headerTimeout,
		BodyTimeout:      o.bodyTimeout,
		MessageTimeout:   o.messageTimeout,
		InputBudget:      inputShare(o),
		Node:             node,
		ConnPrefix:       connPrefix(o, node),
		Logger:           log,

		Verifier:             verifier,
		RequireToken:         !o.anonymous,
		PublicPublishGranted: o.publicPublish == "granted",
		APIKey:               o.apiKey,
		DurableAcks:          o.audit && o.auditSync == "always",
	}
	if err = applyLimits(&cfg, o); err != nil {
		return cfg, nil, nil, err
	}
	if _, err = checkACME(o); err != nil { // acme.go: --acme-domain excludes --tls-cert
		return cfg, nil, nil, err
	}
	if cfg.TLS, cfg.TLSCertificates, err = tlsConfig(&o.tls); err != nil {
		return cfg, nil, nil, err
	}
	if err = applyACME(&cfg, o); err != nil {
		return cfg, nil, nil, err
	}
	cfg.TLSAddr, cfg.TLSRedirect, cfg.HSTS = o.tls.addr, o.tls.redirect, o.tls.hsts
	cfg.MaxTLSHandshakes = o.tls.handshakes
	if o.accessLog != "off" {
		if alog, err = accesslog.Open(o.accessLog); err != nil {
			return cfg, nil, nil, fmt.Errorf("--access-log: %w", err)
		}
		cfg.AccessLog = alog
	}
	closeLog = func() {
		if alog != nil {
			if err := alog.Close(); err != nil {
				log.Warn("closing access log", "err", err)
			}
			if n := alog.Dropped(); n > 0 {
				log.Warn("access log lines dropped", "lines", n)
			}
		}
	}
	return cfg, alog, closeLog, nil
}

// loadNodeID returns the node id kept in the data folder. Without one
// there it writes want, or a random id when want is empty; an id there
// other than want (when given) is refused: the folder's sessions and
// audit records carry it.
func loadNodeID(dir, want string) (string, error) {
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			if want != "" && id != want {
				return "", fmt.Errorf("--node: %q, but --data %s belongs to node %q (its node-id file): give that id, or another --data", want, dir, id)
			}
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading node id: %w", err)
	}
	id := want
	if id == "" {
		var raw [5]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return "", err
		}
		id = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw[:]))
	}
	if err := os.WriteFile(path, []byte(id+"\n"), fileMode); err != nil {
		return "", fmt.Errorf("writing node id: %w", err)
	}
	return id, nil
}

// validNodeID: a node id is a NATS subject token and the prefix of
// clustered connection ids (<node>-<seq>): 1-64 of A-Z a-z 0-9 _.
func validNodeID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_') {
			return false
		}
	}
	return true
}

// byteSize is a flag value in bytes with optional K, KiB, M, MiB, G, GiB
// suffixes (all binary).
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, suf := range []struct {
		s string
		m int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if strings.HasSuffix(s, suf.s) {
			s, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return fmt.Errorf("invalid size %q", s)
	}
	*b = byteSize(n * mult)
	return nil
}
