package e2e

// The cluster harness: a NATS server embedded in the test process (on a fixed
// port, so that a test can stop it and start it again on the same address), nodes
// started with --nats, and the JSON of GET /api/nodes. The nodes are real zenconn
// processes like every other; only the NATS server runs in the test.
//
// With ZENCONN_E2E_CLUSTER=1 startServer starts two nodes of one cluster (a shared
// NATS server, one --cluster-name per pair) and the WebSocket dial helpers
// alternate between them (serverProc.wsAddr), so that the protocol suites run with
// a subscriber and a publisher usually on different nodes.

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsProc is an embedded NATS server on 127.0.0.1:Port.
type natsProc struct {
	Port int

	mu  sync.Mutex
	srv *natsserver.Server
}

// freePort is a loopback port free at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNATS starts a NATS server on a free port; it is shut down at cleanup.
func startNATS(t *testing.T) *natsProc {
	t.Helper()
	n := &natsProc{Port: freePort(t)}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n
}

// URL is the client URL of the server.
func (n *natsProc) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Start starts the server on its port (again, after Stop) and waits until it
// accepts clients.
func (n *natsProc) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return nil
	}
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: n.Port, NoLog: true, NoSigs: true})
	if err != nil {
		return fmt.Errorf("NATS server on port %d: %w", n.Port, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("NATS server on port %d not ready within 10 s", n.Port)
	}
	n.srv = srv
	return nil
}

// Stop shuts the server down (closing every client connection) and waits until
// it has.
func (n *natsProc) Stop() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv == nil {
		return
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// natsClient connects a plain NATS client to n; it is closed at cleanup.
func natsClient(t *testing.T, n *natsProc) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL(), nats.Timeout(defaultTimeout), nats.NoReconnect())
	if err != nil {
		t.Fatalf("NATS client to %s: %v", n.URL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// ---------------------------------------------------------------------------
// Nodes.

// clNodeInfo is one entry of GET /api/nodes.
type clNodeInfo struct {
	ID            string    `json:"id"`
	Address       string    `json:"address"`
	Workers       int       `json:"workers"`
	Connections   int       `json:"connections"`
	Subscriptions int       `json:"subscriptions"`
	LastSeen      time.Time `json:"last_seen"`
	Up            bool      `json:"up"`
	Self          bool      `json:"self"`
}

// clNodes is the answer of GET /api/nodes.
type clNodes struct {
	Cluster   *string      `json:"cluster"`
	Connected *bool        `json:"connected"`
	Nodes     []clNodeInfo `json:"nodes"`
}

func (n clNodes) byID() map[string]clNodeInfo {
	m := map[string]clNodeInfo{}
	for _, e := range n.Nodes {
		m[e.ID] = e
	}
	return m
}

func (n clNodes) String() string {
	var s []string
	for _, e := range n.Nodes {
		s = append(s, fmt.Sprintf("{%s up=%v self=%v workers=%d conns=%d subs=%d addr=%s seen=%s}",
			e.ID, e.Up, e.Self, e.Workers, e.Connections, e.Subscriptions, e.Address, e.LastSeen.Format(time.StampMilli)))
	}
	sort.Strings(s)
	c, conn := "<none>", "<none>"
	if n.Cluster != nil {
		c = *n.Cluster
	}
	if n.Connected != nil {
		conn = strconv.FormatBool(*n.Connected)
	}
	return fmt.Sprintf("cluster %q connected %s nodes %v", c, conn, s)
}

// clusterNode is a node started with --nats.
type clusterNode struct {
	*serverProc
	ID      string // node id (the welcome's "node", /api/nodes "self")
	Workers int    // --workers
	Name    string // A, B, C: for messages
}

// workerCount is the number of workers the node reports: --workers 0 runs one
// worker in the agent's process.
func (n *clusterNode) workerCount() int { return max(n.Workers, 1) }

// apiNodes is GET /api/nodes.
func apiNodes(t *testing.T, s *serverProc) clNodes {
	t.Helper()
	var out clNodes
	apiOK(t, s, "GET", "/api/nodes", "", &out)
	return out
}

// startClusterNode starts a node of cluster (the default when empty) on the NATS
// at url with workers worker processes, the API key and the JWT secret of the other tests, and
// returns it once GET /api/nodes names it (and its workers are up).
func startClusterNode(t *testing.T, name, url, cluster string, workers int, extra ...string) *clusterNode {
	t.Helper()
	args := []string{"--workers", strconv.Itoa(workers), "--api-key", ibAPIKey, "--jwt-secret", ibSecret, "--nats", url}
	if cluster != "" {
		args = append(args, "--cluster-name", cluster)
	}
	args = append(args, extra...)
	s := startServerIn(t, t.TempDir(), nil, nil, args...) // one node, in cluster mode too
	n := &clusterNode{serverProc: s, Workers: workers, Name: name}
	eventually(t, 10*time.Second, func() string {
		ns := apiNodes(t, s)
		for _, e := range ns.Nodes {
			if e.Self {
				n.ID = e.ID
			}
		}
		if n.ID == "" {
			return fmt.Sprintf("node %s: GET /api/nodes has no self entry: %s", name, ns)
		}
		if workers > 0 {
			for _, w := range wkWorkersN(t, s, workers) {
				if !w.Up {
					return fmt.Sprintf("node %s: worker %d not up", name, w.ID)
				}
			}
		}
		return ""
	})
	return n
}

// wkWorkersN is GET /api/workers of a node with n workers.
func wkWorkersN(t *testing.T, s *serverProc, n int) []wkInfo {
	t.Helper()
	var out struct {
		Workers []wkInfo `json:"workers"`
	}
	apiOK(t, s, "GET", "/api/workers", "", &out)
	if len(out.Workers) != n {
		t.Fatalf("GET /api/workers lists %d workers, want %d", len(out.Workers), n)
	}
	return out.Workers
}

// clWaitUp polls GET /api/nodes on every node in nodes until each answers
// connected and lists every node of want up (and, when exact, no other node).
func clWaitUp(t *testing.T, timeout time.Duration, nodes []*clusterNode, want []*clusterNode) {
	t.Helper()
	eventually(t, timeout, func() string {
		for _, n := range nodes {
			ns := apiNodes(t, n.serverProc)
			if ns.Connected == nil || !*ns.Connected {
				return fmt.Sprintf("node %s: %s, want connected", n.Name, ns)
			}
			m := ns.byID()
			for _, w := range want {
				if e, ok := m[w.ID]; !ok || !e.Up {
					return fmt.Sprintf("node %s: %s, want %s (%s) up", n.Name, ns, w.Name, w.ID)
				}
			}
		}
		return ""
	})
}

// clMetric is the sum of the samples of name (with a label value matching
// label, when not nil) on /metrics of s.
func clMetric(t *testing.T, s *serverProc, name string, label *regexp.Regexp) float64 {
	t.Helper()
	return metricValue(t, s, name, label)
}

// ---------------------------------------------------------------------------
// ZENCONN_E2E_CLUSTER=1: the protocol suites over two clustered nodes.

// clusterMode reports whether startServer starts two clustered nodes.
func clusterMode() bool { return os.Getenv("ZENCONN_E2E_CLUSTER") != "" }

var (
	sharedNATSOnce sync.Once
	sharedNATSProc *natsProc
	sharedNATSErr  error
	clusterSeq     atomic.Int64
)

// sharedNATS is the NATS server of every pair started in cluster mode; TestMain
// stops it at the end.
func sharedNATS(t *testing.T) *natsProc {
	t.Helper()
	sharedNATSOnce.Do(func() {
		sharedNATSProc = &natsProc{Port: freePort(t)}
		sharedNATSErr = sharedNATSProc.Start()
	})
	if sharedNATSErr != nil {
		t.Fatal(sharedNATSErr)
	}
	return sharedNATSProc
}

// stopSharedNATS stops the server of sharedNATS, if it was started.
func stopSharedNATS() {
	if sharedNATSProc != nil {
		sharedNATSProc.Stop()
	}
}

// clusterConnectedRE is the log line of a node that reached NATS.
var clusterConnectedRE = regexp.MustCompile(`msg="?cluster: (re)?connected"?`)

// startClusterPair starts two nodes of a fresh cluster with the same flags: the
// first is returned and dials alternate between it and its peer.
func startClusterPair(t *testing.T, prefix, env []string, extra ...string) *serverProc {
	t.Helper()
	name := fmt.Sprintf("e2e%d", clusterSeq.Add(1))
	extra = append(append([]string(nil), extra...), "--nats", sharedNATS(t).URL(), "--cluster-name", name)
	a := startServerIn(t, t.TempDir(), prefix, env, extra...)
	b := startServerIn(t, t.TempDir(), prefix, env, extra...)
	for _, s := range []*serverProc{a, b} {
		if _, err := s.Stderr.WaitMatch(clusterConnectedRE, startTimeout, s.done); err != nil {
			t.Fatalf("cluster node %s did not log \"cluster: connected\": %v\n%s", s.Addr, err, s.Logs())
		}
	}
	a.peer = b
	return a
}

// wsAddr is the address a WebSocket client of s dials: s.Addr, or, for a node of
// a pair (cluster mode), its address and its peer's in turn.
func (s *serverProc) wsAddr() string {
	if s.peer == nil || s.dials.Add(1)%2 == 1 {
		return s.Addr
	}
	return s.peer.Addr
}
