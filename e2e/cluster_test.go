package e2e

// A cluster of three nodes over a real NATS server (embedded in the test process):
// A and B with two worker processes each, C without. Clients on different nodes
// publish, subscribe, broadcast; the server API answers for the cluster; an
// application listens to the connection events with a plain NATS client; a node is
// killed with SIGKILL and NATS is stopped and started again. Other tests: a node
// whose NATS is unreachable at start, flags refused at start, two nodes forming a
// cluster with `--nats embedded` and no other component.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// clCluster is the three-node cluster of TestCluster.
type clCluster struct {
	nats    *natsProc
	a, b, c *clusterNode
}

func (cl *clCluster) nodes() []*clusterNode { return []*clusterNode{cl.a, cl.b, cl.c} }

// TestCluster runs the cluster checks in order on one cluster; the last two
// (NATS outage, a node killed) are the destructive ones.
func TestCluster(t *testing.T) {
	n := startNATS(t)
	cl := &clCluster{nats: n}
	cl.a = startClusterNode(t, "A", n.URL(), "", 2)
	cl.b = startClusterNode(t, "B", n.URL(), "", 2)
	cl.c = startClusterNode(t, "C", n.URL(), "", 0)
	clWaitUp(t, 10*time.Second, cl.nodes(), cl.nodes())
	ids := map[string]bool{cl.a.ID: true, cl.b.ID: true, cl.c.ID: true}
	if len(ids) != 3 {
		t.Fatalf("node ids %q %q %q: want three different ids", cl.a.ID, cl.b.ID, cl.c.ID)
	}

	for _, st := range []struct {
		name string
		f    func(*testing.T, *clCluster)
	}{
		{"Publish", clTestPublish},
		{"Private", clTestPrivate},
		{"Broadcast", clTestBroadcast},
		{"APIPublish", clTestAPIPublish},
		{"DottedChannel", clTestDotted},
		{"Events", clTestEvents},
		{"API", clTestAPI},
		{"Disconnect", clTestDisconnect},
		{"NATSOutage", clTestOutage},
		{"KillNode", clTestKill},
	} {
		if !t.Run(st.name, func(t *testing.T) { st.f(t, cl) }) && st.name == "Publish" {
			t.FailNow() // the later checks would fail for the same reason
		}
	}
}

// clDial connects a JSON client to node n, with a token for user with grants when
// user is not empty.
func clDial(t *testing.T, n *clusterNode, user string, g ibGrants) *ibConn {
	t.Helper()
	tok := ""
	if user != "" {
		tok = ibToken(t, user, g)
	}
	c := ibDialJSON(t, n.serverProc, tok)
	c.name = fmt.Sprintf("conn %s on %s", c.ID, n.Name)
	if c.Node != n.ID {
		t.Fatalf("%s: welcome node %q, want %q", c.name, c.Node, n.ID)
	}
	if !strings.HasPrefix(c.ID, n.ID+"-") {
		t.Errorf("%s: conn id %q, want <node id>-<base36> (%s-…)", c.name, c.ID, n.ID)
	}
	return c
}

// clSeq is the data of the numbered messages of these tests.
type clSeq struct {
	Seq int    `json:"seq"`
	Tag string `json:"tag"`
}

// clPublishMany sends n publishes of {"seq":first+i,"tag":tag} on ch without
// waiting, then requires their n acks in order.
func clPublishMany(t *testing.T, p *ibConn, ch, tag string, first, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		p.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":{"seq":%d,"tag":%q}}`, i+1, ch, first+i, tag))
	}
	for i := 0; i < n; i++ {
		if m := p.readJSON(); m.Op != "ack" || string(m.ID) != fmt.Sprint(i+1) {
			t.Fatalf("%s: publish %d of %d answered %s, want ack id %d", p.name, i+1, n, m, i+1)
		}
	}
}

// clExpectSeq requires the next n messages of s to be first..first+n-1 of tag on
// ch from from, in that order.
func clExpectSeq(t *testing.T, s *ibConn, ch, from, tag string, first, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		m := s.readJSON()
		var d clSeq
		if m.Op != "message" || m.Channel != ch || m.From != from || json.Unmarshal(m.Data, &d) != nil || d.Tag != tag {
			t.Fatalf("%s: message %d of %d is %s, want channel %q from %s tag %q", s.name, i+1, n, m, ch, from, tag)
		}
		if d.Seq != first+i {
			what := "a gap or reordering"
			if d.Seq < first+i {
				what = "a duplicate or reordering"
			}
			t.Fatalf("%s: message %d of %d has seq %d, want %d (%s)", s.name, i+1, n, d.Seq, first+i, what)
		}
	}
}

// clTestPublish: subscribers on A and B, a publisher on C; 200 acknowledged
// publishes reach each subscriber once, in order. Then the other way round.
func clTestPublish(t *testing.T, cl *clCluster) {
	const n = 200
	sa, sb := clDial(t, cl.a, "", ibGrants{}), clDial(t, cl.b, "", ibGrants{})
	sa.sub(1, "xnode")
	sb.sub(1, "xnode")
	p := clDial(t, cl.c, "", ibGrants{})
	clPublishMany(t, p, "xnode", "c", 0, n)
	clExpectSeq(t, sa, "xnode", p.ID, "c", 0, n)
	clExpectSeq(t, sb, "xnode", p.ID, "c", 0, n)
	sa.quiet(300 * time.Millisecond)
	sb.quiet(10 * time.Millisecond)

	// A publisher on A with a local and two remote subscribers.
	sc := clDial(t, cl.c, "", ibGrants{})
	sc.sub(1, "xnode")
	pa := clDial(t, cl.a, "", ibGrants{})
	clPublishMany(t, pa, "xnode", "a", 0, n)
	for _, s := range []*ibConn{sa, sb, sc} {
		clExpectSeq(t, s, "xnode", pa.ID, "a", 0, n)
	}
	for _, s := range []*ibConn{sa, sb, sc, p} {
		s.quiet(100 * time.Millisecond)
	}
}

// clTestPrivate: a private channel subscribed with a grant on A, published with
// a grant on B; a publish without the grant reaches nobody.
func clTestPrivate(t *testing.T, cl *clCluster) {
	s := clDial(t, cl.a, "alice", ibGrants{Subscribe: []string{"private-team-*"}})
	s.sub(1, "private-team-x")
	anon := clDial(t, cl.c, "", ibGrants{})
	anon.refused(1, `{"id":1,"op":"subscribe","channel":"private-team-x"}`, "unauthorized")

	p := clDial(t, cl.b, "bob", ibGrants{Publish: []string{"private-team-x"}})
	p.pub(1, "private-team-x", `{"text":"for the team"}`)
	s.expectMsg("private-team-x", p.ID, `{"text":"for the team"}`)

	q := clDial(t, cl.c, "carol", ibGrants{Publish: []string{"private-team-y"}})
	q.refused(1, `{"id":1,"op":"publish","channel":"private-team-x","data":1}`, "forbidden")
	p.pub(2, "private-team-x", `{"text":"second"}`)
	s.expectMsg("private-team-x", p.ID, `{"text":"second"}`)
	s.quiet(200 * time.Millisecond)
	anon.quiet(10 * time.Millisecond)
}

// clTestBroadcast: a broadcast from A reaches every other connection on A, B and
// C once, and not its sender.
func clTestBroadcast(t *testing.T, cl *clCluster) {
	sender := clDial(t, cl.a, "caster", ibGrants{Broadcast: true})
	var others []*ibConn
	for _, n := range cl.nodes() {
		for i := 0; i < 2; i++ {
			others = append(others, clDial(t, n, "", ibGrants{}))
		}
	}
	sender.ok(1, `{"id":1,"op":"broadcast","data":{"text":"to all"}}`)
	for _, o := range others {
		o.expectMsg("", sender.ID, `{"text":"to all"}`)
	}
	sender.quiet(300 * time.Millisecond)
	for _, o := range others {
		o.quiet(10 * time.Millisecond)
	}
	// An anonymous connection may not broadcast, wherever it is.
	others[5].refused(1, `{"id":1,"op":"broadcast","data":1}`, "unauthorized")
}

// clTestAPIPublish: POST /api/publish on B reaches the subscribers on A and C.
func clTestAPIPublish(t *testing.T, cl *clCluster) {
	sa, sc := clDial(t, cl.a, "", ibGrants{}), clDial(t, cl.c, "", ibGrants{})
	sa.sub(1, "api-news")
	sc.sub(1, "api-news")
	for i := 0; i < 3; i++ {
		apiOK(t, cl.b.serverProc, "POST", "/api/publish", fmt.Sprintf(`{"channel":"api-news","data":{"seq":%d,"tag":"api"}}`, i), nil)
	}
	clExpectSeq(t, sa, "api-news", "api", "api", 0, 3)
	clExpectSeq(t, sc, "api-news", "api", "api", 0, 3)
	sa.quiet(200 * time.Millisecond)
	sc.quiet(10 * time.Millisecond)
}

// clTestDotted: channel names with '.', ':' and '@' (not NATS subject tokens as
// they are) work across nodes, and a message of "room.1" reaches neither "room"
// nor "room.2" nor "room.1.x".
func clTestDotted(t *testing.T, cl *clCluster) {
	subs := map[string]*ibConn{}
	for _, ch := range []string{"room", "room.1", "room.2", "room.1.x", "a:b@c-d_e.f"} {
		s := clDial(t, cl.a, "", ibGrants{})
		s.sub(1, ch)
		subs[ch] = s
	}
	p := clDial(t, cl.b, "", ibGrants{})
	p.pub(1, "room.1", `"one"`)
	p.pub(2, "a:b@c-d_e.f", `"odd"`)
	subs["room.1"].expectMsg("room.1", p.ID, `"one"`)
	subs["a:b@c-d_e.f"].expectMsg("a:b@c-d_e.f", p.ID, `"odd"`)
	for _, s := range subs {
		s.quiet(200 * time.Millisecond)
	}
	// And the other way: a subscriber on C of "room.1", a publisher on A.
	sc := clDial(t, cl.c, "", ibGrants{})
	sc.sub(1, "room.1")
	pa := clDial(t, cl.a, "", ibGrants{})
	pa.pub(1, "room.1", `"two"`)
	sc.expectMsg("room.1", pa.ID, `"two"`)
	subs["room.1"].expectMsg("room.1", pa.ID, `"two"`)
}

// clTestDisconnect: POST /api/disconnect on A closes a connection held by C
// (close 4100); a second request and an unknown id get 404.
func clTestDisconnect(t *testing.T, cl *clCluster) {
	victim := clDial(t, cl.c, "", ibGrants{})
	victim.sub(1, "victim")
	bystander := clDial(t, cl.c, "", ibGrants{})
	var out struct {
		Disconnected *bool `json:"disconnected"`
	}
	apiOK(t, cl.a.serverProc, "POST", "/api/disconnect", fmt.Sprintf(`{"conn":%q}`, victim.ID), &out)
	if out.Disconnected == nil || !*out.Disconnected {
		t.Fatalf("POST /api/disconnect on A for %s: %+v, want disconnected true", victim.name, out)
	}
	victim.expectCloseCode(4100, defaultTimeout)
	eventually(t, 5*time.Second, func() string {
		code, _, b := apiCall(t, cl.a.serverProc, "POST", "/api/disconnect", ibAPIKey, fmt.Sprintf(`{"conn":%q}`, victim.ID))
		if code != http.StatusNotFound {
			return fmt.Sprintf("second POST /api/disconnect of %s: %d %s, want 404", victim.ID, code, b)
		}
		return ""
	})
	// An id no node holds: of a node of the cluster, of no node, of no shape.
	for _, id := range []string{cl.c.ID + "-zzzzzz", "nosuchnode-1", "no-such-conn"} {
		apiFails(t, cl.b.serverProc, "POST", "/api/disconnect", ibAPIKey, fmt.Sprintf(`{"conn":%q}`, id), http.StatusNotFound)
	}
	bystander.pingPong()
}

// String names the node in messages: "A (node id)".
func (n *clusterNode) String() string { return fmt.Sprintf("%s (%s)", n.Name, n.ID) }
