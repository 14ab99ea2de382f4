package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/zenconn/server/engine"
)

// limitOptions are the serve flags that bound each client address,
// connection and user (engine.Limits).
type limitOptions struct {
	maxConnsPerIP   int
	connRatePerIP   int
	maxConnsPerUser int
	publishRate     int
	subscribeRate   int
	authRate        int
	trustedProxies  string
	allowedOrigins  string
}

func registerLimitFlags(fs *flag.FlagSet, o *limitOptions) {
	fs.IntVar(&o.maxConnsPerIP, "max-conns-per-ip", engine.DefaultMaxConnsPerIP, "open connections from one client address (IPv6: per /64) per node; past it 429 (each worker enforces its share)")
	fs.IntVar(&o.connRatePerIP, "conn-rate-per-ip", engine.DefaultConnRatePerIP, "new connections per second from one client address per node, burst of one second's worth; past it 429 (each worker enforces its share)")
	fs.IntVar(&o.maxConnsPerUser, "max-conns-per-user", engine.DefaultMaxConnsPerUser, "WebSocket connections of one user (token sub) per node; past it the handshake gets 429 or the connection is closed with 4009")
	fs.IntVar(&o.publishRate, "publish-rate", engine.DefaultPublishRate, "publish and broadcast ops per second per connection (burst of one second's worth); past it rate_limited, then close 4008")
	fs.IntVar(&o.subscribeRate, "subscribe-rate", engine.DefaultSubscribeRate, "subscribe and unsubscribe ops per second per connection; past it rate_limited, then close 4008")
	fs.IntVar(&o.authRate, "auth-rate", engine.DefaultAuthRate, "auth ops per second per connection; past it rate_limited, then close 4008")
	fs.StringVar(&o.trustedProxies, "trusted-proxies", "", "comma-separated CIDRs or addresses of proxies whose PROXY protocol header (v1/v2) or X-Forwarded-For names the client, for the limits and the access log")
	fs.StringVar(&o.allowedOrigins, "allowed-origins", "", `comma-separated Origin values accepted on WebSocket handshakes ("https://app.example.com", "https://*.example.com"); others get 403. Empty: any`)
}

// applyLimits sets cfg's limits from the flags. With worker processes,
// --max-connections is divided equally among the workers (each gets the
// floor of its share, so the node never holds more), and the per-address
// limits too (each gets the ceiling of its share: the kernel spreads one
// address's connections evenly over the workers' listeners).
func applyLimits(cfg *engine.Config, o *serveOptions) error {
	lo := &o.limits
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"--max-conns-per-ip", lo.maxConnsPerIP}, {"--conn-rate-per-ip", lo.connRatePerIP},
		{"--max-conns-per-user", lo.maxConnsPerUser}, {"--publish-rate", lo.publishRate},
		{"--subscribe-rate", lo.subscribeRate}, {"--auth-rate", lo.authRate},
	} {
		if f.v < 1 {
			errs = append(errs, fmt.Errorf("%s: %d; at least 1", f.name, f.v))
		}
	}
	prefixes, err := parsePrefixes(lo.trustedProxies)
	if err != nil {
		errs = append(errs, fmt.Errorf("--trusted-proxies: %w", err))
	}
	if w := o.workers; w > 0 {
		if o.maxConns > 0 && o.maxConns < w {
			errs = append(errs, fmt.Errorf("--max-connections: %d is less than one per worker (--workers %d)", o.maxConns, w))
		}
		cfg.MaxConnections = o.maxConns / w
		lo2 := *lo
		lo2.maxConnsPerIP = ceilDiv(lo.maxConnsPerIP, w)
		lo2.connRatePerIP = ceilDiv(lo.connRatePerIP, w)
		lo = &lo2
	}
	cfg.Limits = engine.Limits{
		MaxConnsPerIP: lo.maxConnsPerIP, ConnRatePerIP: lo.connRatePerIP, MaxConnsPerUser: lo.maxConnsPerUser,
		PublishRate: lo.publishRate, SubscribeRate: lo.subscribeRate, AuthRate: lo.authRate,
		TrustedProxies: prefixes, AllowedOrigins: splitList(lo.allowedOrigins),
	}
	return errors.Join(errs...)
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parsePrefixes parses CIDRs and bare addresses (one address each).
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range splitList(s) {
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", item)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
