package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestCompose probes the three nodes of docker-compose.yml, brought up by
// scripts/test-compose.sh (which `make test` runs), through their
// published ports on 127.0.0.1, and drives the containers with
// docker-compose. Environment, set by the script:
//
//	ZENCONN_COMPOSE        the docker-compose command line (-p, --env-file, -f), split on spaces
//	ZENCONN_COMPOSE_PORTS  the host ports of node1, node2 and node3
//	ZENCONN_API_KEY        the nodes' API key (from the script's env file)
//	ZENCONN_COMPOSE_TLS    the host address of the tls profile's node (https, wss)
//	ZENCONN_COMPOSE_TLS_CA its certificate (self-signed)
func TestCompose(t *testing.T) {
	if os.Getenv("ZENCONN_COMPOSE") == "" {
		t.Skip("run by scripts/test-compose.sh against a running docker-compose.yml")
	}
	cl := newComposeCluster(t)
	cl.waitHealthy(t, 120*time.Second)

	t.Log("the demo page on every node")
	for _, n := range cl.nodes {
		resp, body := n.get(t, http.MethodGet, "/")
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "new WebSocket(") {
			t.Fatalf("%s GET /: %d, page without a WebSocket: %.200q", n.Addr, resp.StatusCode, body)
		}
	}

	tag := randomTag(t)
	cl.crossNodePubSub(t, "compose-"+tag)
	token := cl.token(t)
	cl.privateChannel(t, "private-compose-"+tag, token)
	cl.broadcastToOthers(t, token)
	cl.tlsNode(t, "compose-tls-"+tag)
	conn := cl.restartKeepsSessions(t, "node3", 2)
	cl.auditThroughExec(t, "node2", "compose-"+tag)

	t.Log("down, then up: the sessions and the audit log are kept in the named volumes")
	cl.compose(t, 180*time.Second, "down")
	cl.compose(t, 300*time.Second, "up", "-d")
	cl.waitHealthy(t, 120*time.Second)
	if s := cl.session(t, 2, conn); s == nil || s.Disconnected == nil {
		t.Fatalf("after down and up, node3 has no closed session of %s: %+v", conn, s)
	}
	cl.auditThroughExec(t, "node2", "compose-"+tag)
}

type composeCluster struct {
	cmd    []string
	apiKey string
	nodes  [3]*serverProc
}

func newComposeCluster(t *testing.T) *composeCluster {
	cl := &composeCluster{cmd: strings.Fields(os.Getenv("ZENCONN_COMPOSE")), apiKey: os.Getenv("ZENCONN_API_KEY")}
	ports := strings.Fields(os.Getenv("ZENCONN_COMPOSE_PORTS"))
	if len(ports) != 3 || cl.apiKey == "" {
		t.Fatalf("ZENCONN_COMPOSE_PORTS %q (want three ports) and ZENCONN_API_KEY (set: %v)", ports, cl.apiKey != "")
	}
	for i, p := range ports {
		tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
		cl.nodes[i] = &serverProc{t: t, Addr: "127.0.0.1:" + p, HTTP: &http.Client{Timeout: defaultTimeout, Transport: tr}}
		t.Cleanup(tr.CloseIdleConnections)
	}
	return cl
}

// compose runs docker-compose with args, bounded by timeout, and returns
// its output; a failure fails the test.
func (cl *composeCluster) compose(t *testing.T, timeout time.Duration, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cl.cmd[0], append(cl.cmd[1:], args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose %s: %v (within %v)\n%s", strings.Join(args, " "), err, timeout, out)
	}
	return string(out)
}

// waitHealthy waits until every node answers /healthz and sees the two
// others up in /api/nodes.
func (cl *composeCluster) waitHealthy(t *testing.T, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() string {
		for _, n := range cl.nodes {
			resp, err := n.HTTP.Get(n.URL("/healthz"))
			if err != nil {
				return err.Error()
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Sprintf("%s /healthz: %d", n.Addr, resp.StatusCode)
			}
			var nodes struct {
				Nodes []struct {
					ID string `json:"id"`
					Up bool   `json:"up"`
				} `json:"nodes"`
			}
			if why := n.getJSON("/api/nodes", cl.apiKey, &nodes); why != "" {
				return why
			}
			up := 0
			for _, x := range nodes.Nodes {
				if x.Up {
					up++
				}
			}
			if up < 3 {
				return fmt.Sprintf("%s sees %d nodes up: %+v", n.Addr, up, nodes.Nodes)
			}
		}
		return ""
	})
}

// getJSON GETs path with key into v; "" or why not.
func (n *serverProc) getJSON(path, key string, v any) string {
	req, _ := http.NewRequest(http.MethodGet, n.URL(path), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := n.HTTP.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("%s %s: %d", n.Addr, path, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 8<<20)).Decode(v); err != nil {
		return fmt.Sprintf("%s %s: %v", n.Addr, path, err)
	}
	return ""
}

// crossNodePubSub: a subscriber on each node gets what a publisher on
// each node publishes.
func (cl *composeCluster) crossNodePubSub(t *testing.T, channel string) {
	t.Log("cross-node pub/sub on", channel)
	var subs [3]*wsClient
	for i, n := range cl.nodes {
		subs[i] = n.dialWS(t)
		subs[i].subscribe(1, channel)
		if !strings.HasPrefix(subs[i].Welcome.Node, "n") {
			t.Fatalf("%s: welcome from node %q, want n1..n3 (--node)", n.Addr, subs[i].Welcome.Node)
		}
	}
	for i, n := range cl.nodes {
		pub := n.dialWS(t)
		data := fmt.Sprintf(`{"from_node":%d}`, i+1)
		pub.request(1, fmt.Sprintf(`{"id":1,"op":"publish","channel":%q,"data":%s}`, channel, data))
		for j, s := range subs {
			m := s.expect("message", 0)
			if m.Channel != channel || !jsonEqual(m.Data, []byte(data)) {
				t.Fatalf("subscriber on node%d got %s, want %s from node%d", j+1, m, data, i+1)
			}
		}
	}
}

// token makes a client token with `zenconn token` in node1's container.
func (cl *composeCluster) token(t *testing.T) string {
	out := cl.compose(t, 60*time.Second, "exec", "-T", "node1", "/zenconn", "token", "--sub", "compose-probe",
		"--subscribe", "private-compose-*", "--publish", "private-compose-*", "--broadcast", "--ttl", "10m")
	tok := strings.TrimSpace(out)
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("zenconn token printed %q", out)
	}
	return tok
}

// privateChannel: a private channel needs a grant; with the token a
// subscriber on node2 gets what a publisher on node3 sends.
func (cl *composeCluster) privateChannel(t *testing.T, channel, token string) {
	t.Log("private channel", channel)
	anon := cl.nodes[0].dialWS(t)
	anon.send(fmt.Sprintf(`{"id":1,"op":"subscribe","channel":%q}`, channel))
	if m := anon.expect("error", 1); m.Code == "" {
		t.Fatalf("anonymous subscribe to %s: %s, want an error code", channel, m)
	}
	sub := cl.nodes[1].dialWSToken(t, token)
	sub.subscribe(1, channel)
	pub := cl.nodes[2].dialWSToken(t, token)
	pub.request(1, fmt.Sprintf(`{"id":1,"op":"publish","channel":%q,"data":"secret"}`, channel))
	if m := sub.expect("message", 0); m.Channel != channel || string(m.Data) != `"secret"` {
		t.Fatalf("private subscriber got %s", m)
	}
	anon.pingPong()
}

// broadcastToOthers: a broadcast from node1 reaches the connections of
// node2 and node3, not its sender.
func (cl *composeCluster) broadcastToOthers(t *testing.T, token string) {
	t.Log("broadcast to the others")
	sender := cl.nodes[0].dialWSToken(t, token)
	a, b := cl.nodes[1].dialWS(t), cl.nodes[2].dialWS(t)
	a.pingPong()
	b.pingPong()
	sender.request(1, `{"id":1,"op":"broadcast","data":{"all":true}}`)
	for _, c := range []*wsClient{a, b} {
		if m := c.expect("message", 0); m.Channel != "" || m.From != sender.Welcome.Conn || !jsonEqual(m.Data, []byte(`{"all":true}`)) {
			t.Fatalf("broadcast got %s", m)
		}
	}
	if got := sender.messagesUntilPong(); len(got) != 0 {
		t.Fatalf("the sender got its own broadcast: %v", got)
	}
}

// tlsNode: the tls profile's node serves the demo page over https and
// its WebSocket clients over wss get what a node without TLS publishes.
func (cl *composeCluster) tlsNode(t *testing.T, channel string) {
	addr, caFile := os.Getenv("ZENCONN_COMPOSE_TLS"), os.Getenv("ZENCONN_COMPOSE_TLS_CA")
	if addr == "" || caFile == "" {
		t.Fatal("ZENCONN_COMPOSE_TLS and ZENCONN_COMPOSE_TLS_CA are not set")
	}
	t.Log("the tls profile's node on", addr)
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", caFile)
	}
	tlsCfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	tr := &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	n := &serverProc{t: t, Addr: addr, HTTP: &http.Client{Timeout: defaultTimeout, Transport: tr}, tlsClient: tlsCfg}
	eventually(t, 60*time.Second, func() string {
		resp, err := n.HTTP.Get(n.URL("/"))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "new WebSocket(") {
			return fmt.Sprintf("GET %s: %d", n.URL("/"), resp.StatusCode)
		}
		return ""
	})
	c := n.dialWS(t)
	c.subscribe(1, channel)
	pub := cl.nodes[0].dialWS(t)
	pub.request(1, fmt.Sprintf(`{"id":1,"op":"publish","channel":%q,"data":"over tls"}`, channel))
	if m := c.expect("message", 0); m.Channel != channel || string(m.Data) != `"over tls"` {
		t.Fatalf("the wss client got %s", m)
	}
}

// dialWSToken dials /ws on n with the token in the Authorization header.
func (n *serverProc) dialWSToken(t *testing.T, token string) *wsClient {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout}
	c, resp, err := d.Dial("ws://"+n.Addr+"/ws", http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		if resp != nil {
			t.Fatalf("dial %s with a token: %v (status %d)", n.Addr, err, resp.StatusCode)
		}
		t.Fatalf("dial %s with a token: %v", n.Addr, err)
	}
	wc := &wsClient{t: t, c: c}
	t.Cleanup(func() { c.Close() })
	wc.Welcome = wc.expect("welcome", 0)
	return wc
}

// composeSession is a session of /api/sessions.
type composeSession struct {
	Conn         string   `json:"conn"`
	Node         string   `json:"node"`
	Disconnected *string  `json:"disconnected"`
	CloseCode    *int     `json:"close_code"`
	Channels     []string `json:"channels"`
}

// session returns node i's session of conn, or nil.
func (cl *composeCluster) session(t *testing.T, i int, conn string) *composeSession {
	t.Helper()
	var out struct {
		Sessions []composeSession `json:"sessions"`
	}
	if why := cl.nodes[i].getJSON("/api/sessions?limit=1000", cl.apiKey, &out); why != "" {
		t.Fatal(why)
	}
	for k := range out.Sessions {
		if out.Sessions[k].Conn == conn {
			return &out.Sessions[k]
		}
	}
	return nil
}

// restartKeepsSessions restarts service (node i) with a client on it:
// the client is closed, and the node's session of it is kept, closed,
// in its volume; `zenconn sessions` in the container lists it.
func (cl *composeCluster) restartKeepsSessions(t *testing.T, service string, i int) string {
	t.Log("restart", service)
	c := cl.nodes[i].dialWS(t)
	c.subscribe(1, "restart-probe")
	conn := c.Welcome.Conn
	if s := cl.session(t, i, conn); s == nil || s.Disconnected != nil {
		t.Fatalf("before the restart, no open session of %s: %+v", conn, s)
	}
	cl.compose(t, 120*time.Second, "restart", service)
	if _, err := c.readE(30 * time.Second); err == nil {
		t.Fatalf("%s: the client of %s got a message after the restart, want its connection closed", service, conn)
	} else {
		t.Logf("the client of %s: %v", conn, err)
	}
	cl.waitHealthy(t, 120*time.Second)
	s := cl.session(t, i, conn)
	if s == nil || s.Disconnected == nil || s.CloseCode == nil || len(s.Channels) != 1 || s.Channels[0] != "restart-probe" {
		t.Fatalf("after the restart, session of %s: %+v, want it closed with a code and channel restart-probe", conn, s)
	}
	t.Logf("session %s closed with %d at %s", conn, *s.CloseCode, *s.Disconnected)
	out := cl.compose(t, 60*time.Second, "exec", "-T", service, "/zenconn", "sessions", "--url", "http://127.0.0.1:8080")
	if !strings.Contains(out, `"conn":"`+conn+`"`) {
		t.Fatalf("zenconn sessions in %s does not list %s:\n%s", service, conn, out)
	}
	return conn
}

// auditThroughExec reads the audit log of channel with `zenconn audit` in
// the service's container: the publish from that node is there.
func (cl *composeCluster) auditThroughExec(t *testing.T, service, channel string) {
	t.Log("audit log of", channel, "in", service)
	out := cl.compose(t, 60*time.Second, "exec", "-T", service, "/zenconn", "audit", "--url", "http://127.0.0.1:8080", "--channel", channel)
	found := false
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("zenconn audit printed %q: %v", line, err)
		}
		if r["op"] == "publish" && r["channel"] == channel {
			found = true
		}
	}
	if !found {
		t.Fatalf("zenconn audit in %s has no publish on %s:\n%s", service, channel, out)
	}
}

func randomTag(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
