package e2e

// The cluster's connection events (heard with a plain NATS client) and the
// server API with scope=cluster. Part of TestCluster.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// clEvent is the JSON of a zenconn.event.<node>.<kind> message.
type clEvent struct {
	subject string
	keys    map[string]json.RawMessage
	raw     []byte

	Node     string `json:"node"`
	Conn     string `json:"conn"`
	User     string `json:"user"`
	Worker   *int   `json:"worker"`
	Channel  string `json:"channel"`
	Remote   string `json:"remote"`
	Protocol string `json:"protocol"`
	Code     *int   `json:"code"`
	Time     string `json:"time"`
}

func (e clEvent) String() string { return e.subject + " " + string(e.raw) }

// clEventKeys are the fields every event carries, and those of each kind.
var clEventKeys = map[string][]string{
	"":            {"node", "conn", "user", "worker", "time"},
	"connect":     {"remote", "protocol"},
	"subscribe":   {"channel"},
	"unsubscribe": {"channel"},
	"disconnect":  {"code"},
}

// clTestEvents: a NATS client subscribed to zenconn.event.> sees connect,
// subscribe, unsubscribe and disconnect of a connection made to A, in that order,
// with the fields of the documented JSON.
func clTestEvents(t *testing.T, cl *clCluster) {
	nc := natsClient(t, cl.nats)
	sub, err := nc.SubscribeSync("zenconn.event.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c := clDial(t, cl.a, "eve", ibGrants{})
	c.sub(1, "ev-news")
	c.ok(2, `{"id":2,"op":"unsubscribe","channel":"ev-news"}`)
	_ = c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"), time.Now().Add(defaultTimeout))
	c.expectCloseCode(1000, defaultTimeout)

	var got []clEvent
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 4 {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("events of %s: %v after %d of 4: %v", c.name, err, len(got), got)
		}
		e := clEvent{subject: m.Subject, raw: m.Data}
		if err := json.Unmarshal(m.Data, &e.keys); err != nil {
			t.Fatalf("event %s %q: not a JSON object: %v", m.Subject, m.Data, err)
		}
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatalf("event %s %q: %v", m.Subject, m.Data, err)
		}
		if e.Conn == c.ID {
			got = append(got, e)
		}
	}
	for i, kind := range []string{"connect", "subscribe", "unsubscribe", "disconnect"} {
		clCheckEvent(t, got[i], kind, cl.a, c, start)
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil && strings.Contains(string(m.Data), c.ID) {
		t.Errorf("a fifth event of %s: %s %s", c.name, m.Subject, m.Data)
	}
}

// clCheckEvent checks one event of connection c on node n.
func clCheckEvent(t *testing.T, e clEvent, kind string, n *clusterNode, c *ibConn, start time.Time) {
	t.Helper()
	if want := "zenconn.event." + n.ID + "." + kind; e.subject != want {
		t.Fatalf("event %s: subject, want %s (events in order connect, subscribe, unsubscribe, disconnect)", e, want)
	}
	for _, k := range append(append([]string(nil), clEventKeys[""]...), clEventKeys[kind]...) {
		if _, ok := e.keys[k]; !ok {
			t.Errorf("event %s: no %q field", e, k)
		}
	}
	if e.Node != n.ID || e.User != "eve" || e.Worker == nil || *e.Worker < 0 || *e.Worker >= n.workerCount() {
		t.Errorf("event %s: want node %s, user eve, worker 0..%d", e, n.ID, n.workerCount()-1)
	}
	ts, err := time.Parse(time.RFC3339Nano, e.Time)
	if err != nil || ts.Before(start.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
		t.Errorf("event %s: time %q (%v), want RFC 3339 between the dial and now", e, e.Time, err)
	}
	switch kind {
	case "connect":
		if e.Remote != c.c.LocalAddr().String() || e.Protocol != "json" {
			t.Errorf("event %s: want remote %s, protocol json", e, c.c.LocalAddr())
		}
	case "subscribe", "unsubscribe":
		if e.Channel != "ev-news" {
			t.Errorf("event %s: want channel ev-news", e)
		}
	case "disconnect":
		if e.Code == nil || *e.Code != 1000 {
			t.Errorf("event %s: want code 1000", e)
		}
	}
}

// clConn is an entry of GET /api/connections?scope=cluster.
type clConn struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Channels []string `json:"channels"`
	Node     string   `json:"node"`
}

// clScope is the common part of the scope=cluster answers.
type clScope struct {
	Nodes   []string `json:"nodes"`
	Missing []string `json:"missing"`
}

func (s clScope) complete(cl *clCluster) string {
	got := append([]string(nil), s.Nodes...)
	sort.Strings(got)
	want := []string{cl.a.ID, cl.b.ID, cl.c.ID}
	sort.Strings(want)
	if fmt.Sprint(got) != fmt.Sprint(want) || len(s.Missing) != 0 {
		return fmt.Sprintf("nodes %v missing %v, want nodes %v and none missing", s.Nodes, s.Missing, want)
	}
	return ""
}

// clTestAPI: /api/nodes on every node; scope=cluster listings of connections,
// channels, sessions and audit records on a node other than theirs.
func clTestAPI(t *testing.T, cl *clCluster) {
	clients := map[string]*ibConn{}
	for _, n := range cl.nodes() {
		c := clDial(t, n, "apiuser", ibGrants{})
		c.sub(1, "api-all")
		c.sub(2, "api-"+strings.ToLower(n.Name))
		c.pub(3, "api-pub", fmt.Sprintf(`{"from":%q}`, n.Name))
		clients[n.ID] = c
	}
	clCheckNodes(t, cl, 5*time.Second)
	for _, n := range cl.nodes() {
		clCheckConnections(t, cl, n, clients)
	}
	var ch struct {
		clScope
		Channels []apiChannelInfo `json:"channels"`
	}
	apiOK(t, cl.b.serverProc, "GET", "/api/channels?scope=cluster", "", &ch)
	got := map[string]int{}
	for _, e := range ch.Channels {
		got[e.Name] = e.Subscribers
	}
	if why := ch.complete(cl); why != "" || got["api-all"] != 3 || got["api-a"] != 1 || got["api-b"] != 1 || got["api-c"] != 1 {
		t.Errorf("GET /api/channels?scope=cluster on B: %v %s; want api-all 3, api-a, api-b, api-c 1", got, why)
	}
	clCheckRecords(t, cl, clients)
	clCheckStatus(t, cl)
	for _, q := range []string{"/api/sessions?scope=cluster&cursor=x", "/api/audit?scope=cluster&cursor=x",
		"/api/connections?scope=everywhere", "/api/audit?scope=world"} {
		apiFails(t, cl.a.serverProc, "GET", q, ibAPIKey, "", http.StatusBadRequest)
	}
}

// clCheckNodes requires GET /api/nodes on every node to list the three nodes up,
// with their workers and (once a heartbeat has told) one connection each.
func clCheckNodes(t *testing.T, cl *clCluster, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() string {
		for _, n := range cl.nodes() {
			ns := apiNodes(t, n.serverProc)
			m := ns.byID()
			if ns.Cluster == nil || *ns.Cluster != "zenconn" || ns.Connected == nil || !*ns.Connected || len(ns.Nodes) != 3 {
				return fmt.Sprintf("GET /api/nodes on %s: %s, want cluster zenconn, connected, 3 nodes", n, ns)
			}
			for _, w := range cl.nodes() {
				e := m[w.ID]
				if !e.Up || e.Self != (w == n) || e.Workers != w.workerCount() || e.Connections != 1 || e.Subscriptions != 2 ||
					e.Address == "" || time.Since(e.LastSeen) > 3*time.Second {
					return fmt.Sprintf("GET /api/nodes on %s: %s; want %s up, self %v, %d workers, 1 connection, 2 subscriptions, an address, seen < 3 s ago",
						n, ns, w, w == n, w.workerCount())
				}
			}
		}
		return ""
	})
}

// clCheckConnections requires GET /api/connections?scope=cluster on n to list
// the three clients with their node and channels.
func clCheckConnections(t *testing.T, cl *clCluster, n *clusterNode, clients map[string]*ibConn) {
	t.Helper()
	var out struct {
		clScope
		Connections []clConn `json:"connections"`
	}
	apiOK(t, n.serverProc, "GET", "/api/connections?scope=cluster", "", &out)
	if why := out.complete(cl); why != "" {
		t.Errorf("GET /api/connections?scope=cluster on %s: %s", n, why)
	}
	byID := map[string]clConn{}
	for _, e := range out.Connections {
		byID[e.ID] = e
	}
	for node, c := range clients {
		e, ok := byID[c.ID]
		if !ok || e.Node != node || e.User != "apiuser" || len(e.Channels) != 2 || !slices.Contains(e.Channels, "api-all") {
			t.Errorf("GET /api/connections?scope=cluster on %s: %s is %+v (listed %v), want node %s, user apiuser, 2 channels",
				n, c.name, e, ok, node)
		}
	}
	var local struct {
		Connections []clConn `json:"connections"`
	}
	apiOK(t, n.serverProc, "GET", "/api/connections", "", &local)
	for _, e := range local.Connections {
		if e.Node != n.ID {
			t.Errorf("GET /api/connections on %s lists %+v: want only this node's, each with node %s", n, e, n.ID)
		}
	}
}

// clCheckRecords requires /api/sessions and /api/audit with scope=cluster on C
// to return the records of every node (each with its node id).
func clCheckRecords(t *testing.T, cl *clCluster, clients map[string]*ibConn) {
	t.Helper()
	eventually(t, 5*time.Second, func() string {
		var ss struct {
			clScope
			Sessions []auSession `json:"sessions"`
		}
		apiOK(t, cl.c.serverProc, "GET", "/api/sessions?scope=cluster&user=apiuser&active=true", "", &ss)
		nodes := map[string]string{}
		for _, s := range ss.Sessions {
			nodes[s.Conn] = s.Node
		}
		for node, c := range clients {
			if nodes[c.ID] != node {
				return fmt.Sprintf("GET /api/sessions?scope=cluster on C: %v (%s); want %s with node %s", nodes, ss.complete(cl), c.name, node)
			}
		}
		var au struct {
			clScope
			Records []auRecord `json:"records"`
		}
		apiOK(t, cl.c.serverProc, "GET", "/api/audit?scope=cluster&channel=api-pub&op=publish", "", &au)
		recs := map[string]string{}
		for _, r := range au.Records {
			recs[r.Conn] = r.Node
		}
		for node, c := range clients {
			if recs[c.ID] != node {
				return fmt.Sprintf("GET /api/audit?scope=cluster on C: %v (%s); want the publish of %s with node %s", recs, au.complete(cl), c.name, node)
			}
		}
		return ss.complete(cl) + au.complete(cl)
	})
}

// clCheckStatus: `zenconn status` of B prints the cluster's three nodes.
func clCheckStatus(t *testing.T, cl *clCluster) {
	t.Helper()
	out, code := runCLI(t, 20*time.Second, nil, "status", "--url", "http://"+cl.b.Addr, "--api-key", ibAPIKey)
	if code != 0 || !strings.Contains(out, "cluster zenconn") || !strings.Contains(out, cl.b.ID+" (this)") {
		t.Errorf("zenconn status of B: exit %d, want the cluster zenconn with %s (this)\n%s", code, cl.b.ID, out)
	}
	for _, n := range cl.nodes() {
		if !strings.Contains(out, n.ID) || !strings.Contains(out, n.Addr) {
			t.Errorf("zenconn status of B does not show node %s at %s\n%s", n, n.Addr, out)
		}
	}
}
