package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/zenconn/server/cluster"
)

// clusterOptions are the serve flags that join a node to a cluster over
// NATS (package cluster). Only the agent uses them.
type clusterOptions struct {
	nats, name, advertise         string
	listen, clusterListen, routes string
	creds, user, password, token  string
	ca, cert, key                 string
	buffer                        byteSize
}

func registerClusterFlags(fs *flag.FlagSet, o *clusterOptions) {
	fs.StringVar(&o.nats, "nats", "", `join a cluster through NATS: nats://host:port[,nats://…], or "embedded" to run a NATS server in the agent (empty: the node is alone)`)
	fs.StringVar(&o.name, "cluster-name", "zenconn", "the cluster's subject prefix (1-64 of A-Z a-z 0-9 _ -): several clusters can share one NATS")
	fs.StringVar(&o.advertise, "cluster-advertise", "", "this node's address shown to the cluster in /api/nodes (default: --addr)")
	fs.StringVar(&o.listen, "nats-listen", "127.0.0.1:4222", "client address of the embedded NATS server (--nats embedded)")
	fs.StringVar(&o.clusterListen, "nats-cluster-listen", "", `route address of the embedded NATS server (default ":6222" with --nats-routes)`)
	fs.StringVar(&o.routes, "nats-routes", "", "comma-separated route URLs (nats://host:port) of the other nodes' embedded NATS servers")
	fs.StringVar(&o.creds, "nats-creds", "", "NATS credentials file (.creds)")
	fs.StringVar(&o.user, "nats-user", "", "NATS user")
	fs.StringVar(&o.password, "nats-password", "", "NATS password (better in ZENCONN_NATS_PASSWORD)")
	fs.StringVar(&o.token, "nats-token", "", "NATS token (better in ZENCONN_NATS_TOKEN)")
	fs.StringVar(&o.ca, "nats-ca", "", "PEM file of the CA that signs the NATS servers' certificates (TLS to NATS)")
	fs.StringVar(&o.cert, "nats-cert", "", "PEM client certificate for NATS (with --nats-key)")
	fs.StringVar(&o.key, "nats-key", "", "PEM key of --nats-cert")
	o.buffer = 8 << 20
	fs.Var(&o.buffer, "nats-buffer", "bytes of messages for other nodes kept while NATS is unreachable; past it they are dropped and counted (zenconn_cluster_dropped_total)")
}

// clusterConfig checks the cluster flags; nil without --nats. node and
// address are filled in later (agentConfig).
func clusterConfig(fs *flag.FlagSet, o *clusterOptions) (*cluster.Config, error) {
	if o.nats == "" {
		var given []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name != "nats" && (strings.HasPrefix(f.Name, "nats-") || strings.HasPrefix(f.Name, "cluster-")) {
				given = append(given, "--"+f.Name)
			}
		})
		if len(given) > 0 {
			return nil, fmt.Errorf("%s: need --nats", strings.Join(given, ", "))
		}
		return nil, nil
	}
	cfg := &cluster.Config{NATS: o.nats, Name: o.name, Address: o.advertise, Listen: o.listen, ClusterListen: o.clusterListen,
		Creds: o.creds, User: o.user, Password: o.password, Token: o.token, CA: o.ca, Cert: o.cert, Key: o.key, Buffer: int(o.buffer)}
	for _, r := range strings.Split(o.routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.Routes = append(cfg.Routes, r)
		}
	}
	var errs []error
	for _, f := range []struct{ path, flag string }{{o.creds, "--nats-creds"}, {o.ca, "--nats-ca"}, {o.cert, "--nats-cert"}, {o.key, "--nats-key"}} {
		if f.path != "" {
			if _, err := os.ReadFile(f.path); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f.flag, err))
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	return cfg, errors.Join(errs...)
}

// connPrefix makes the connection ids of a clustered node unique in the
// cluster: <node>-<seq>.
func connPrefix(o *serveOptions, node string) string {
	if o.cluster.nats == "" || node == "" {
		return ""
	}
	return node + "-"
}
