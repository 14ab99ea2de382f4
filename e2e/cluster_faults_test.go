package e2e

// Faults of a cluster: NATS stopped and started again, a node killed with
// SIGKILL, NATS unreachable at start, flags refused at start; and two nodes
// forming a cluster with `--nats embedded` (no other component).

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	clOutage   = 5 * time.Second // how long NATS is stopped
	clOutageN  = 50              // messages each publisher sends during it
	clDownWait = 5 * time.Second // a killed node shown down by the others
)

// clSeen records, per subscriber, the seqs received from each publisher in
// arrival order.
type clSeen map[string][]int

// clDrain reads the messages of s on ch until none arrives for quiet (at most
// 1000 of them), appending their seqs to seen.
func clDrain(t *testing.T, s *ibConn, ch string, seen clSeen, quiet time.Duration) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		f, err := s.nextE(quiet)
		if errors.Is(err, errIBTimeout) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		m, err := ibParseJSON(f.p)
		var d clSeq
		if err != nil || m.Op != "message" || m.Channel != ch || json.Unmarshal(m.Data, &d) != nil {
			t.Fatalf("%s: got %s, want a message on %s", s.name, describeIB(f), ch)
		}
		seen[m.From] = append(seen[m.From], d.Seq)
	}
}

// clInOrder requires seqs to be strictly increasing (no duplicate, no reordering).
func clInOrder(t *testing.T, what string, seqs []int) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] <= seqs[i-1] {
			t.Errorf("%s: seq %d after %d (a duplicate or reordering): %v", what, seqs[i], seqs[i-1], seqs)
			return
		}
	}
}

// clCountIn counts the seqs in [lo, hi].
func clCountIn(seqs []int, lo, hi int) int {
	n := 0
	for _, s := range seqs {
		if s >= lo && s <= hi {
			n++
		}
	}
	return n
}

// clWaitConnected polls zenconn_cluster_connected on every node until it is want.
func clWaitConnected(t *testing.T, nodes []*clusterNode, want float64, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() string {
		for _, n := range nodes {
			if v := clMetric(t, n.serverProc, "zenconn_cluster_connected", nil); v != want {
				return fmt.Sprintf("node %s: zenconn_cluster_connected %v, want %v", n, v, want)
			}
		}
		return ""
	})
}

// clTestOutage: NATS is stopped for 5 s and started again on the same port.
// Meanwhile each node delivers its own publishers' messages to its own
// subscribers; afterwards cross-node delivery resumes, and every message a
// remote subscriber missed is counted as dropped.
func clTestOutage(t *testing.T, cl *clCluster) {
	nodes := cl.nodes()
	subs := map[*clusterNode]*ibConn{}
	seen := map[*clusterNode]clSeen{}
	for _, n := range nodes {
		subs[n] = clDial(t, n, "", ibGrants{})
		subs[n].sub(1, "outage")
		seen[n] = clSeen{}
	}
	pa, pc := clDial(t, cl.a, "", ibGrants{}), clDial(t, cl.c, "", ibGrants{})
	pubs := map[*ibConn]*clusterNode{pa: cl.a, pc: cl.c}
	for p := range pubs {
		p.pub(1, "outage", `{"seq":0}`)
		for _, n := range nodes {
			subs[n].expectMsg("outage", p.ID, `{"seq":0}`)
		}
	}
	dropped0 := map[*clusterNode]float64{}
	for _, n := range nodes {
		dropped0[n] = clMetric(t, n.serverProc, "zenconn_cluster_dropped_total", nil)
	}

	stopped := time.Now()
	cl.nats.Stop()
	clWaitConnected(t, nodes, 0, clOutage)
	t.Logf("every node reports zenconn_cluster_connected 0 %v after NATS stopped", time.Since(stopped).Round(time.Millisecond))
	for p, home := range pubs {
		for i := 1; i <= clOutageN; i++ {
			p.pub(i+1, "outage", fmt.Sprintf(`{"seq":%d}`, i))
		}
		// Local delivery goes on.
		clExpectSeqs(t, subs[home], "outage", p.ID, 1, clOutageN)
	}
	time.Sleep(time.Until(stopped.Add(clOutage))) // the outage lasts clOutage, whatever the checks took
	if err := cl.nats.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	clWaitConnected(t, nodes, 1, 15*time.Second)
	t.Logf("every node reports zenconn_cluster_connected 1 %v after NATS restarted", time.Since(restarted).Round(time.Millisecond))

	last := clProbe(t, cl, subs, seen, pubs)
	t.Logf("cross-node delivery resumed %v after NATS restarted", time.Since(restarted).Round(time.Millisecond))
	clOutageAccount(t, cl, subs, seen, pubs, dropped0, last)
}

// clExpectSeqs requires the next n messages of s on ch to be from from with seqs
// first..first+n-1 in order (data {"seq":…}).
func clExpectSeqs(t *testing.T, s *ibConn, ch, from string, first, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		s.expectMsg(ch, from, fmt.Sprintf(`{"seq":%d}`, first+i))
	}
}

// clProbe publishes a message from each publisher every 200 ms until every
// subscriber on another node than the publisher's has received one of them
// (bounded by 15 s); it returns the last seq published.
func clProbe(t *testing.T, cl *clCluster, subs map[*clusterNode]*ibConn, seen map[*clusterNode]clSeen, pubs map[*ibConn]*clusterNode) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	first := clOutageN + 1
	for seq := first; ; seq++ {
		for p := range pubs {
			p.pub(seq+1, "outage", fmt.Sprintf(`{"seq":%d}`, seq))
		}
		for _, n := range cl.nodes() {
			clDrain(t, subs[n], "outage", seen[n], 200*time.Millisecond/3)
		}
		var waiting []string
		for p, home := range pubs {
			for _, n := range cl.nodes() {
				if ss := seen[n][p.ID]; (n != home) && clCountIn(ss, first, seq) == 0 {
					waiting = append(waiting, fmt.Sprintf("%s from %s", n.Name, home.Name))
				}
			}
		}
		if len(waiting) == 0 {
			return seq
		}
		if time.Now().After(deadline) {
			t.Fatalf("cross-node delivery did not resume within 15 s of NATS restarting: %s got none of seqs %d..%d", strings.Join(waiting, ", "), first, seq)
		}
	}
}

// clOutageAccount checks what each remote subscriber got of the outage's
// messages: in order, and those missing at most the dropped count of the two
// nodes involved.
func clOutageAccount(t *testing.T, cl *clCluster, subs map[*clusterNode]*ibConn, seen map[*clusterNode]clSeen,
	pubs map[*ibConn]*clusterNode, dropped0 map[*clusterNode]float64, last int) {
	t.Helper()
	for _, n := range cl.nodes() {
		clDrain(t, subs[n], "outage", seen[n], 300*time.Millisecond)
	}
	dropped := map[*clusterNode]float64{}
	for _, n := range cl.nodes() {
		dropped[n] = clMetric(t, n.serverProc, "zenconn_cluster_dropped_total", nil) - dropped0[n]
		t.Logf("node %s: zenconn_cluster_dropped_total +%v during the outage; published %v, received %v in all",
			n, dropped[n], clMetric(t, n.serverProc, "zenconn_cluster_published_total", nil),
			clMetric(t, n.serverProc, "zenconn_cluster_received_total", nil))
	}
	for p, home := range pubs {
		for _, n := range cl.nodes() {
			if n == home {
				if extra := seen[n][p.ID]; clCountIn(extra, 1, clOutageN) != 0 {
					t.Errorf("%s: the outage's messages from its own node came again after it: %v", subs[n].name, extra)
				}
				continue
			}
			ss := seen[n][p.ID]
			what := fmt.Sprintf("%s, from %s", subs[n].name, home)
			clInOrder(t, what, ss)
			got := clCountIn(ss, 1, clOutageN)
			missing := clOutageN - got
			t.Logf("%s: %d of the outage's %d messages delivered after it, %d missing; after it %d of %d probes", what,
				got, clOutageN, missing, clCountIn(ss, clOutageN+1, last), last-clOutageN)
			if float64(missing) > dropped[home]+dropped[n] {
				t.Errorf("%s: %d of the outage's messages missing, but only %v counted as dropped on %s and %v on %s: lost silently",
					what, missing, dropped[home], home.Name, dropped[n], n.Name)
			}
		}
	}
}

// clTestKill: SIGKILL to B's agent takes its workers with it; A and C show B down
// within clDownWait and keep delivering between themselves.
func clTestKill(t *testing.T, cl *clCluster) {
	workers := wkWorkersN(t, cl.b.serverProc, cl.b.Workers)
	sa, sc := clDial(t, cl.a, "", ibGrants{}), clDial(t, cl.c, "", ibGrants{})
	sa.sub(1, "afterkill")
	sc.sub(1, "afterkill")
	sb := clDial(t, cl.b, "", ibGrants{})
	sb.sub(1, "afterkill")

	killed := time.Now()
	cl.b.Signal(syscall.SIGKILL)
	if ok, _ := cl.b.WaitExit(5 * time.Second); !ok {
		t.Fatalf("node B did not exit within 5 s of SIGKILL")
	}
	eventually(t, clDownWait, func() string {
		for _, n := range []*clusterNode{cl.a, cl.c} {
			ns := apiNodes(t, n.serverProc)
			if e, ok := ns.byID()[cl.b.ID]; ok && e.Up {
				return fmt.Sprintf("GET /api/nodes on %s %v after B was killed: %s, want B down", n, time.Since(killed).Round(time.Millisecond), ns)
			}
		}
		return ""
	})
	t.Logf("A and C show B down %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	eventually(t, 5*time.Second, func() string {
		for _, w := range workers {
			if p, ok := wkReadProc(w.PID); ok && p.running() {
				return fmt.Sprintf("worker %d (pid %d) of the killed node still runs", w.ID, w.PID)
			}
		}
		return ""
	})
	for _, n := range []*clusterNode{cl.a, cl.c} {
		if down := clMetric(t, n.serverProc, "zenconn_cluster_nodes", regexp.MustCompile("^down$")); down != 1 {
			t.Errorf("node %s: zenconn_cluster_nodes{state=\"down\"} %v, want 1", n, down)
		}
	}

	pa, pc := clDial(t, cl.a, "", ibGrants{}), clDial(t, cl.c, "", ibGrants{})
	pa.pub(1, "afterkill", `"from A"`)
	for _, s := range []*ibConn{sa, sc} {
		s.expectMsg("afterkill", pa.ID, `"from A"`)
	}
	pc.pub(1, "afterkill", `"from C"`)
	for _, s := range []*ibConn{sa, sc} {
		s.expectMsg("afterkill", pc.ID, `"from C"`)
		s.quiet(100 * time.Millisecond)
	}
}

// TestClusterNATSUnreachable: a node whose NATS does not answer serves at once
// (WebSocket, local pub/sub), says so in its log and metrics, and joins once
// NATS is started there.
func TestClusterNATSUnreachable(t *testing.T) {
	n := &natsProc{Port: freePort(t)}
	t.Cleanup(n.Stop)
	start := time.Now()
	node := startClusterNode(t, "A", n.URL(), "", 0)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a node with NATS unreachable took %v to serve", d)
	}
	s, p := clDial(t, node, "", ibGrants{}), clDial(t, node, "", ibGrants{})
	s.sub(1, "alone")
	p.pub(1, "alone", `"local"`)
	s.expectMsg("alone", p.ID, `"local"`)
	unreachable := regexp.MustCompile(`msg="?cluster: NATS unreachable`)
	if _, err := node.Stderr.WaitMatch(unreachable, 5*time.Second, node.done); err != nil {
		t.Errorf("no log line \"cluster: NATS unreachable…\": %v", err)
	}
	if v := clMetric(t, node.serverProc, "zenconn_cluster_connected", nil); v != 0 {
		t.Errorf("zenconn_cluster_connected %v with NATS unreachable, want 0", v)
	}
	if ns := apiNodes(t, node.serverProc); ns.Connected == nil || *ns.Connected {
		t.Errorf("GET /api/nodes with NATS unreachable: %s, want connected false", ns)
	}

	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	clWaitConnected(t, []*clusterNode{node}, 1, 15*time.Second)
	if _, err := node.Stderr.WaitMatch(clusterConnectedRE, 5*time.Second, node.done); err != nil {
		t.Errorf("no log line \"cluster: connected\" once NATS started: %v", err)
	}
	// The subscription made before is in the cluster now: a message published on
	// NATS reaches it through a second node.
	other := startClusterNode(t, "B", n.URL(), "", 0)
	q := clDial(t, other, "", ibGrants{})
	eventually(t, 10*time.Second, func() string {
		q.pub(1, "alone", `"remote"`)
		f, err := s.nextE(200 * time.Millisecond)
		if err != nil {
			return "the subscriber on the first node got nothing from the second: " + err.Error()
		}
		if m, err := ibParseJSON(f.p); err != nil || m.From != q.ID {
			t.Fatalf("%s: got %s, want the message of %s", s.name, describeIB(f), q.name)
		}
		return ""
	})
}

// TestClusterBadFlags: flags that cannot work stop the start at once, naming
// the flag.
func TestClusterBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"--nats", "nats://127.0.0.1:4222", "--cluster-name", "a.b"}, "--cluster-name"},
		{[]string{"--nats", "nats://127.0.0.1:4222", "--cluster-name", strings.Repeat("x", 65)}, "--cluster-name"},
		{[]string{"--nats", "foo://x"}, "--nats"},
		{[]string{"--nats", "nats://127.0.0.1:4222", "--nats-routes", "nats://127.0.0.1:6222"}, "--nats-routes"},
		{[]string{"--nats-routes", "nats://127.0.0.1:6222"}, "--nats-routes"},
	} {
		start := time.Now()
		out, code := suServe(t, "0", tc.args...)
		line := suErrorLine.FindString(out)
		// The flag package writes flags with one dash.
		if code == 0 || !strings.Contains(line, tc.flag[1:]) || strings.Contains(line, "not defined") {
			t.Errorf("serve %q: exit %d, error line %q, want a failure naming %s\n%s", tc.args, code, line, tc.flag, out)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("serve %q took %v to fail", tc.args, d)
		}
	}
}

// TestClusterEmbedded: two nodes, each running its own NATS server
// (--nats embedded) routed to the other's, form one cluster.
func TestClusterEmbedded(t *testing.T) {
	client := []int{freePort(t), freePort(t)}
	route := []int{freePort(t), freePort(t)}
	var nodes []*clusterNode
	for i, name := range []string{"A", "B"} {
		nodes = append(nodes, startClusterNode(t, name, "embedded", "", 1-i,
			"--nats-listen", fmt.Sprintf("127.0.0.1:%d", client[i]),
			"--nats-cluster-listen", fmt.Sprintf("127.0.0.1:%d", route[i]),
			"--nats-routes", fmt.Sprintf("nats://127.0.0.1:%d", route[1-i])))
	}
	clWaitUp(t, 15*time.Second, nodes, nodes)
	for i := range nodes {
		s, p := clDial(t, nodes[i], "", ibGrants{}), clDial(t, nodes[1-i], "", ibGrants{})
		s.sub(1, "embedded")
		clPublishMany(t, p, "embedded", "e", 0, 20)
		clExpectSeq(t, s, "embedded", p.ID, "e", 0, 20)
		s.quiet(100 * time.Millisecond)
	}
}

// TestClusterNames: two clusters (--cluster-name red, blue) share one NATS
// server and see nothing of each other: nodes, messages, broadcasts, events.
func TestClusterNames(t *testing.T) {
	n := startNATS(t)
	nc := natsClient(t, n)
	events, err := nc.SubscribeSync("blue.event.>")
	if err != nil || nc.Flush() != nil {
		t.Fatalf("subscribing to blue.event.>: %v", err)
	}
	red1 := startClusterNode(t, "red1", n.URL(), "red", 0)
	red2 := startClusterNode(t, "red2", n.URL(), "red", 0)
	blue := startClusterNode(t, "blue", n.URL(), "blue", 0)
	reds := []*clusterNode{red1, red2}
	clWaitUp(t, 10*time.Second, reds, reds)
	for _, r := range reds {
		if ns := apiNodes(t, r.serverProc); len(ns.Nodes) != 2 || *ns.Cluster != "red" {
			t.Errorf("GET /api/nodes on %s: %s, want the two red nodes only", r, ns)
		}
	}
	if ns := apiNodes(t, blue.serverProc); len(ns.Nodes) != 1 || *ns.Cluster != "blue" {
		t.Errorf("GET /api/nodes on blue: %s, want itself only", ns)
	}
	s := clDial(t, red1, "", ibGrants{})
	s.sub(1, "shared")
	bs := clDial(t, blue, "", ibGrants{})
	bs.sub(1, "shared")
	pb := clDial(t, blue, "caster", ibGrants{Broadcast: true})
	pb.pub(1, "shared", `"blue"`)
	pb.ok(2, `{"id":2,"op":"broadcast","data":"blue"}`)
	bs.expectMsg("shared", pb.ID, `"blue"`)
	bs.expectMsg("", pb.ID, `"blue"`)
	pr := clDial(t, red2, "", ibGrants{})
	pr.pub(1, "shared", `"red"`)
	s.expectMsg("shared", pr.ID, `"red"`) // and nothing of blue's before it
	s.quiet(200 * time.Millisecond)
	bs.quiet(10 * time.Millisecond)
	connects := 0
	for {
		m, err := events.NextMsg(200 * time.Millisecond)
		if err != nil {
			break
		}
		if !strings.HasPrefix(m.Subject, "blue.event."+blue.ID+".") {
			t.Errorf("an event of another cluster on blue.event.>: %s %s", m.Subject, m.Data)
		}
		if strings.HasSuffix(m.Subject, ".connect") {
			connects++
		}
	}
	if connects != 2 {
		t.Errorf("blue.event.>: %d connect events, want those of blue's two connections", connects)
	}
}
