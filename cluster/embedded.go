package cluster

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// startEmbedded runs the NATS server of a node started with --nats
// embedded: clients on cfg.Listen, routes on cfg.ClusterListen to
// cfg.Routes. It returns once the server takes clients.
func startEmbedded(cfg *Config) (*server.Server, error) {
	opts := &server.Options{ServerName: cfg.Node, NoLog: true, NoSigs: true, MaxPayload: 8 << 20}
	var err error
	if opts.Host, opts.Port, err = hostPort(cfg.Listen); err != nil {
		return nil, fmt.Errorf("--nats-listen: %w", err)
	}
	if cfg.ClusterListen != "" {
		opts.Cluster.Name = cfg.Name
		if opts.Cluster.Host, opts.Cluster.Port, err = hostPort(cfg.ClusterListen); err != nil {
			return nil, fmt.Errorf("--nats-cluster-listen: %w", err)
		}
		for _, r := range cfg.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("--nats-routes: %w", err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	if err := free(cfg.Listen, "--nats-listen"); err != nil {
		return nil, err
	}
	if err := free(cfg.ClusterListen, "--nats-cluster-listen"); err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(5 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("embedded NATS: not listening on %s (--nats-listen) or %s (--nats-cluster-listen): is the port taken?",
			cfg.Listen, cfg.ClusterListen)
	}
	return srv, nil
}

func hostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q", p)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, port, nil
}

// free fails at once, naming flag, when addr cannot be listened on (the
// server itself would only stay silent).
func free(addr, flag string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return ln.Close()
}
