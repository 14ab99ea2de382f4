package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"
)

// Embedded is the address of NATS for a node that runs its own server.
const Embedded = "embedded"

// Config configures a node's membership in a cluster.
type Config struct {
	// NATS is "embedded" or a comma-separated list of nats:// (or tls://)
	// URLs of one NATS cluster.
	NATS string
	// Name prefixes every subject (1-64 of A-Z a-z 0-9 _ -).
	Name string
	// Node is this node's id; Address the address shown for it to others.
	Node, Address string
	// Listen, ClusterListen and Routes configure the embedded server: its
	// client address, its route address ("" for none) and the route URLs
	// of the other nodes' servers.
	Listen, ClusterListen string
	Routes                []string
	// Credentials: a .creds file, a user and password, or a token.
	Creds, User, Password, Token string
	// TLS towards NATS: a CA to verify the server, a client certificate.
	CA, Cert, Key string
	// Buffer bounds the bytes of outgoing messages kept while NATS is
	// unreachable. Default 8 MiB.
	Buffer int
	// Beat is the heartbeat interval (default 1 s); a peer is down after
	// DownAfter without one (default 3 × Beat).
	Beat, DownAfter time.Duration
	Log             *slog.Logger
}

// Validate checks the configuration and fills in its defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Name == "" {
		c.Name = "zenconn"
	}
	if !validName(c.Name) {
		errs = append(errs, fmt.Errorf("--cluster-name %q: use 1-64 of A-Z a-z 0-9 _ -", c.Name))
	}
	if c.Node != "" && !validNode(c.Node) {
		errs = append(errs, fmt.Errorf("node id %q (the node-id file in --data): a cluster needs 1-64 of A-Z a-z 0-9 _", c.Node))
	}
	errs = append(errs, c.checkURLs(), c.checkEmbedded())
	if (c.Cert == "") != (c.Key == "") {
		errs = append(errs, errors.New("--nats-cert and --nats-key go together"))
	}
	if c.Creds != "" && (c.User != "" || c.Token != "") {
		errs = append(errs, errors.New("--nats-creds excludes --nats-user and --nats-token"))
	}
	if c.Buffer < 0 {
		errs = append(errs, errors.New("--nats-buffer must not be negative"))
	}
	if c.Buffer == 0 {
		c.Buffer = 8 << 20
	}
	if c.Beat <= 0 {
		c.Beat = time.Second
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 3 * c.Beat
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return errors.Join(errs...)
}

func (c *Config) checkURLs() error {
	if c.NATS == Embedded {
		return nil
	}
	for _, u := range strings.Split(c.NATS, ",") {
		p, err := url.Parse(strings.TrimSpace(u))
		if err != nil || p.Host == "" || (p.Scheme != "nats" && p.Scheme != "tls") {
			return fmt.Errorf("--nats %q: want \"embedded\" or nats://host:port[,nats://host:port…]", c.NATS)
		}
	}
	return nil
}

func (c *Config) checkEmbedded() error {
	if c.NATS != Embedded {
		if len(c.Routes) > 0 || c.ClusterListen != "" {
			return errors.New("--nats-routes and --nats-cluster-listen need --nats embedded")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--nats-listen %q: %w", c.Listen, err)
	}
	if len(c.Routes) > 0 && c.ClusterListen == "" {
		c.ClusterListen = ":6222"
	}
	if c.ClusterListen != "" {
		if _, _, err := net.SplitHostPort(c.ClusterListen); err != nil {
			return fmt.Errorf("--nats-cluster-listen %q: %w", c.ClusterListen, err)
		}
	}
	for _, r := range c.Routes {
		if p, err := url.Parse(r); err != nil || p.Host == "" {
			return fmt.Errorf("--nats-routes: %q is not a URL (nats://host:port)", r)
		}
	}
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := range len(s) {
		if !plain(s[i]) || s[i] == ':' || s[i] == '@' {
			return false
		}
	}
	return true
}

// validNode: a node id is a subject token and the prefix of connection
// ids (<node>-<seq>), so it holds no '-'.
func validNode(s string) bool {
	return validName(s) && !strings.Contains(s, "-")
}

// plain reports whether b stands for itself in a subject token.
func plain(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-' || b == ':' || b == '@'
}

// AppendToken appends channel as a subject token: bytes outside
// [A-Za-z0-9_:@-] are written %XX.
func AppendToken(dst []byte, channel string) []byte {
	const hex = "0123456789ABCDEF"
	for i := range len(channel) {
		b := channel[i]
		if plain(b) {
			dst = append(dst, b)
			continue
		}
		dst = append(dst, '%', hex[b>>4], hex[b&15])
	}
	return dst
}
