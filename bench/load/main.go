package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

type config struct {
	mode         string
	url          string
	targets      []wsTarget // the URLs of --url, in order
	pubTarget    int        // index in targets of the publishers' URL
	protocol     string     // zenconn or centrifugo
	server       string
	label        string
	serverPIDs   []int
	procs        int
	srcIPs       []net.IP
	timeout      time.Duration
	dialConc     int
	channel      string
	conns        int
	settle       time.Duration
	size         int
	rate         float64
	duration     time.Duration
	drain        time.Duration
	window       int
	maxLag       int
	busyPoll     bool
	pubs         int
	metricsURL   string
	childIndex   int
	epochNs      int64 // publish data are µs offsets from this (--epoch-ns; set once per run)
	hold         holdOpts
	churn        churnOpts
	tlsCA        string      // --tls-ca
	tlsName      string      // --tls-server-name
	tls          *tls.Config // for wss:// targets (nil when none)
	tlsSample    int         // --tls-sample
	tlsSampleMin int         // --tls-sample-min

	deadline time.Time
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: load idle|fanout|publish|churn|hold|handshake [flags]   or   load summarize|summarize-churn [flags] FILE...   (load MODE -h for flags)")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	mode := os.Args[1]
	switch mode {
	case "idle", "fanout", "publish", "churn", "hold":
	case "summarize":
		os.Exit(summarize(os.Args[2:]))
	case "summarize-churn":
		os.Exit(summarizeChurn(os.Args[2:]))
	case "handshake":
		os.Exit(runHandshake(os.Args[2:]))
	default:
		usage()
	}
	cfg, err := parseFlags(mode, os.Args[2:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", err)
		os.Exit(2)
	}
	if cfg.childIndex >= 0 {
		runChild(cfg)
		return
	}
	if mode == "hold" {
		os.Exit(runHold(cfg, os.Stdin, os.Stdout))
	}
	out, err := orchestrate(cfg)
	if out != nil {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "load: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(mode string, args []string) (*config, error) {
	cfg := &config{mode: mode}
	fs := flag.NewFlagSet("load "+mode, flag.ContinueOnError)
	fs.StringVar(&cfg.url, "url", "ws://127.0.0.1:8090/ws", "WebSocket URL of the server (IPv4 literal or name); idle and fanout: several, comma-separated, share the subscribers in turn")
	fs.StringVar(&cfg.protocol, "protocol", "zenconn", "client protocol: zenconn (ZenConn's JSON protocol) or centrifugo (Centrifugo's JSON protocol; idle, fanout and churn)")
	fs.IntVar(&cfg.pubTarget, "pub-url", 0, "fanout: index in --url of the URL the publisher connects to")
	fs.StringVar(&cfg.server, "server", "", "label of the server under test, copied to the output")
	fs.StringVar(&cfg.label, "label", "", "label of the test, copied to the output as \"test\"")
	pid := fs.Int("server-pid", 0, "server process id, for RSS and CPU sampling")
	pids := fs.String("server-pids", "", "more server process ids, comma-separated (summed)")
	fs.IntVar(&cfg.procs, "procs", 1, "number of generator processes the connections are split across")
	srcs := fs.String("source-ips", "", "comma-separated local addresses to bind (e.g. 127.0.0.2,127.0.0.3)")
	fs.StringVar(&cfg.tlsCA, "tls-ca", "", "wss:// URLs: PEM file of the certificate authorities trusted (default: the system's); the server's certificate is always verified")
	fs.StringVar(&cfg.tlsName, "tls-server-name", "", "wss:// URLs: the name the server's certificate must carry (default: the URL's host)")
	fs.DurationVar(&cfg.timeout, "timeout", 120*time.Second, "hard limit for the whole run")
	fs.IntVar(&cfg.dialConc, "dial-concurrency", 256, "connection handshakes in flight per process")
	chanDefault := "c"
	if mode == "churn" {
		chanDefault = "churn" // the workers' channels are churn-0, churn-1, ...
	}
	fs.StringVar(&cfg.channel, "channel", chanDefault, "channel to subscribe to (churn: prefix of the workers' channels)")
	fs.IntVar(&cfg.childIndex, "child-index", -1, "internal: index of a child process")
	fs.Int64Var(&cfg.epochNs, "epoch-ns", 0, "internal: the run's time origin (Unix ns) that every process measures delivery latencies from")
	switch mode {
	case "churn":
		churnFlags(fs, cfg)
	case "hold":
		holdFlags(fs, cfg)
	case "idle":
		fs.IntVar(&cfg.conns, "conns", 1000, "connections to open")
		fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "wait after the last ack before sampling RSS")
		sampleFlags(fs, cfg)
	default:
		trafficFlags(fs, cfg)
		sampleFlags(fs, cfg)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.deadline = time.Now().Add(cfg.timeout)
	if cfg.epochNs == 0 {
		cfg.epochNs = time.Now().UnixNano()
	}
	if err := cfg.resolve(*pid, *pids, *srcs); err != nil {
		return nil, err
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if err := checkSample(cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// sampleFlags are the flags of the idle, fanout and publish modes that
// choose which wss:// subscribers decrypt (tlscount.go).
func sampleFlags(fs *flag.FlagSet, cfg *config) {
	fs.IntVar(&cfg.tlsSample, "tls-sample", 0, "wss://: one subscriber in N decrypts and checks every delivery, the others count them from the sizes of the TLS records, undecrypted; 0 = every subscriber decrypts")
	fs.IntVar(&cfg.tlsSampleMin, "tls-sample-min", 20, "wss:// with --tls-sample: at least this many subscribers decrypt")
}

// trafficFlags are the flags of the fanout and publish modes.
func trafficFlags(fs *flag.FlagSet, cfg *config) {
	if cfg.mode == "fanout" {
		fs.IntVar(&cfg.conns, "subs", 1000, "subscriber connections (the publisher is one more)")
		fs.IntVar(&cfg.maxLag, "max-lag", 128, "maximum undelivered messages per subscriber (average) before publishing waits, at any --rate; 0 = no limit")
		fs.IntVar(&cfg.window, "window", 64, "maximum unacknowledged publishes")
	} else {
		fs.IntVar(&cfg.pubs, "pubs", 8, "publisher connections (no subscribers)")
		fs.IntVar(&cfg.window, "window", 64, "maximum unacknowledged publishes per publisher")
	}
	fs.IntVar(&cfg.size, "size", 64, "size in bytes of the first published WebSocket frame, header and mask included (the data keeps its length for the run: a publish grows a byte per digit its id gains)")
	fs.Float64Var(&cfg.rate, "rate", 0, "publishes per second (all publishers together); 0 = as fast as the window allows")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "publishing time")
	fs.DurationVar(&cfg.drain, "drain", 5*time.Second, "time allowed after publishing for the last deliveries and acks")
	fs.BoolVar(&cfg.busyPoll, "busy-poll", false, "spin on epoll instead of sleeping while measuring (uses a whole CPU; see README)")
	fs.StringVar(&cfg.metricsURL, "metrics-url", "", "the server's Prometheus endpoint (http://127.0.0.1:PORT/metrics): audit-log figures are read from it before, at the end of publishing and after the run")
}

// resolve parses the server pids, the source addresses and the URL.
func (cfg *config) resolve(pid int, pids, srcs string) error {
	if pid > 0 {
		cfg.serverPIDs = append(cfg.serverPIDs, pid)
	}
	for f := range strings.SplitSeq(pids, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p <= 0 {
			return fmt.Errorf("bad pid %q", f)
		}
		cfg.serverPIDs = append(cfg.serverPIDs, p)
	}
	for f := range strings.SplitSeq(srcs, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		ip := net.ParseIP(f).To4()
		if ip == nil {
			return fmt.Errorf("bad source ip %q (IPv4 only)", f)
		}
		cfg.srcIPs = append(cfg.srcIPs, ip)
	}
	for f := range strings.SplitSeq(cfg.url, ",") {
		t, err := parseTarget(strings.TrimSpace(f))
		if err != nil {
			return err
		}
		cfg.targets = append(cfg.targets, t)
		if t.tls && cfg.tls == nil {
			var err error
			if cfg.tls, err = tlsClientConfig(cfg.tlsCA, cfg.tlsName); err != nil {
				return err
			}
		}
	}
	return nil
}

// wsTarget is one WebSocket URL of --url, resolved.
type wsTarget struct {
	host, path string
	ip         net.IP
	port       int
	tls        bool // wss://: through a TLS bridge (tlsbridge.go)
}

func parseTarget(s string) (wsTarget, error) {
	u, err := url.Parse(s)
	if err != nil {
		return wsTarget{}, err
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return wsTarget{}, fmt.Errorf("url scheme must be ws or wss: %q", s)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"ws": "80", "wss": "443"}[u.Scheme]
	}
	ta, err := net.ResolveTCPAddr("tcp4", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return wsTarget{}, err
	}
	return wsTarget{host: u.Host, path: u.RequestURI(), ip: ta.IP.To4(), port: ta.Port, tls: u.Scheme == "wss"}, nil
}

// check reports the first setting out of its range.
func (cfg *config) check() error {
	switch {
	case cfg.conns < 0 || (cfg.mode == "idle" && cfg.conns == 0):
		return fmt.Errorf("connection count must be positive")
	case cfg.procs < 1 || cfg.procs > 64:
		return fmt.Errorf("--procs must be 1..64")
	case cfg.dialConc < 1:
		return fmt.Errorf("--dial-concurrency must be positive")
	case cfg.metricsURL != "" && !strings.HasPrefix(cfg.metricsURL, "http://"):
		return fmt.Errorf("--metrics-url must be an http:// URL")
	case cfg.pubTarget < 0 || cfg.pubTarget >= len(cfg.targets):
		return fmt.Errorf("--pub-url must be an index in --url (0..%d)", len(cfg.targets)-1)
	case len(cfg.targets) > 255:
		return fmt.Errorf("at most 255 URLs in --url")
	case len(cfg.targets) > 1 && cfg.mode != "idle" && cfg.mode != "fanout":
		return fmt.Errorf("several URLs in --url: idle and fanout modes only")
	}
	if err := checkProtocol(cfg); err != nil {
		return err
	}
	if check := modeChecks[cfg.mode]; check != nil {
		return check(cfg)
	}
	return nil
}

// modeChecks check the settings of one mode.
var modeChecks = map[string]func(*config) error{
	"churn": checkChurn, "hold": checkHold, "fanout": checkTraffic, "publish": checkTraffic,
}

// centrifugoMode are the modes that speak Centrifugo's protocol too.
var centrifugoMode = map[string]bool{"idle": true, "fanout": true, "churn": true}

// checkProtocol checks --protocol against the mode.
func checkProtocol(cfg *config) error {
	switch {
	case cfg.protocol != "zenconn" && cfg.protocol != "centrifugo":
		return fmt.Errorf("--protocol must be zenconn or centrifugo")
	case cfg.protocol == "centrifugo" && !centrifugoMode[cfg.mode]:
		return fmt.Errorf("--protocol centrifugo: idle, fanout and churn modes only")
	}
	return nil
}

// checkSample checks --tls-sample and --tls-sample-min.
func checkSample(cfg *config) error {
	switch {
	case cfg.tlsSample < 0:
		return fmt.Errorf("--tls-sample must be 0 or more")
	case cfg.tlsSample == 0:
		return nil
	case cfg.tlsSampleMin < 1:
		return fmt.Errorf("--tls-sample-min must be 1 or more")
	case cfg.protocol == "centrifugo":
		// Centrifugo puts several pushes in one frame, one a line: the
		// plaintext sizes do not say how many.
		return fmt.Errorf("--tls-sample: not with --protocol centrifugo (a frame may carry several pushes)")
	}
	return nil
}

// checkTraffic checks the settings of the fanout and publish modes.
func checkTraffic(cfg *config) error {
	switch {
	case cfg.size < 1 || cfg.size > 16<<20:
		return fmt.Errorf("--size must be 1..16MiB")
	case cfg.window < 1 || cfg.rate < 0 || cfg.duration <= 0:
		return fmt.Errorf("bad --window, --rate or --duration")
	case cfg.mode == "publish" && (cfg.pubs < 1 || cfg.pubs > 10000):
		return fmt.Errorf("--pubs must be 1..10000")
	case cfg.mode == "publish" && cfg.procs != 1:
		return fmt.Errorf("publish mode runs in one process (--procs 1)")
	}
	return nil
}

// share is the number of connections of worker i out of n.
func share(total, i, n int) int {
	s := total / n
	if i < total%n {
		s++
	}
	return s
}
