package agent

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/zenconn/server/cluster"
	"github.com/zenconn/server/store"
)

// The server API of a cluster: GET /api/nodes, the scope=cluster form of
// the listings (every node answers for itself, over NATS, within
// cluster.AskTimeout; this node merges) and disconnects of connections
// held by other nodes.

func (a *Agent) apiNodes(w http.ResponseWriter, _ *http.Request) {
	if a.cl == nil {
		b := (&clusterHost{a: a}).Beat()
		b.ID = a.cfg.Node
		self := cluster.Node{Beat: b, LastSeen: time.Now().UTC(), Up: true, Self: true}
		reply(w, http.StatusOK, map[string]any{"cluster": "", "connected": false, "nodes": []cluster.Node{self}})
		return
	}
	reply(w, http.StatusOK, map[string]any{"cluster": a.cl.Name(), "connected": a.cl.Stats().Connected, "nodes": a.cl.Nodes()})
}

// scoped serves a listing named key (connections, channels, sessions,
// records): this node's (no scope, or scope=node) or, with scope=cluster,
// every node's merged.
func (a *Agent) scoped(key string, local http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		scope := q.Get("scope")
		q.Del("scope")
		r.URL.RawQuery = q.Encode()
		switch scope {
		case "", "node":
			local(w, r)
		case "cluster":
			a.gather(w, r, key, local)
		default:
			reply(w, http.StatusBadRequest, apiError{"scope must be node or cluster"})
		}
	}
}

// gather answers a scope=cluster listing from this node and every peer up.
func (a *Agent) gather(w http.ResponseWriter, r *http.Request, key string, local http.HandlerFunc) {
	if r.URL.Query().Has("cursor") {
		reply(w, http.StatusBadRequest, apiError{"cursor is per node: page without scope=cluster, on the node that gave it"})
		return
	}
	status, body := cluster.Record(local, r)
	if status != http.StatusOK {
		replyRaw(w, status, body)
		return
	}
	answers := []cluster.Answer{{Node: a.cfg.Node, Status: status, Body: body}}
	if a.cl != nil {
		answers = append(answers, a.cl.AskAll(r.Context(), http.MethodGet, r.URL.RequestURI())...)
	}
	var items []json.RawMessage
	nodes, missing := []string{}, []string{}
	for _, ans := range answers {
		part, ok := listOf(ans, key)
		if !ok {
			a.log.Warn("cluster query: no answer from a node", "node", ans.Node, "status", ans.Status, "err", ans.Err)
			missing = append(missing, ans.Node)
			continue
		}
		nodes = append(nodes, ans.Node)
		items = append(items, part...)
	}
	limit, _ := parseLimit(r.URL.Query())
	merged, err := mergeList(key, items, limit)
	if err != nil {
		reply(w, http.StatusBadGateway, apiError{"a node answered a listing that could not be read"})
		return
	}
	reply(w, http.StatusOK, map[string]any{key: merged, "nodes": nodes, "missing": missing})
}

// listOf returns the array named key of a node's answer.
func listOf(ans cluster.Answer, key string) ([]json.RawMessage, bool) {
	if ans.Err != nil || ans.Status != http.StatusOK {
		return nil, false
	}
	var body map[string]json.RawMessage
	var list []json.RawMessage
	if json.Unmarshal(ans.Body, &body) != nil || json.Unmarshal(body[key], &list) != nil {
		return nil, false
	}
	return list, true
}

// sortKey is what a merged listing is ordered by.
type sortKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Conn      string    `json:"conn"`
	Node      string    `json:"node"`
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Connected time.Time `json:"connected"`
	// Subscribers of a channel, summed over nodes.
	Subscribers int `json:"subscribers"`
}

// mergeList orders the items of every node: connections by id, channels
// by name (one entry per channel, subscribers summed), sessions by
// connection time, audit records by time; then keeps limit of them (0:
// the store's default). Each node answered its first page of limit, so
// what is kept is the cluster's first page: an entry past a node's page
// has limit entries of that node before it.
func mergeList(key string, items []json.RawMessage, limit int) (any, error) {
	keys := make([]sortKey, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &keys[i]); err != nil {
			return nil, err
		}
	}
	if limit == 0 {
		limit = store.DefaultLimit
	}
	if key == "channels" {
		chans := mergeChannels(keys)
		return chans[:min(limit, len(chans))], nil
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(x, y int) bool { return keys[idx[x]].less(&keys[idx[y]], key) })
	idx = idx[:min(limit, len(idx))]
	out := make([]json.RawMessage, len(idx))
	for i, j := range idx {
		out[i] = items[j]
	}
	return out, nil
}

func (k *sortKey) less(o *sortKey, key string) bool {
	switch key {
	case "sessions":
		if !k.Connected.Equal(o.Connected) {
			return k.Connected.Before(o.Connected)
		}
		return k.Conn < o.Conn
	case "records":
		if !k.Time.Equal(o.Time) {
			return k.Time.Before(o.Time)
		}
		if k.Node != o.Node {
			return k.Node < o.Node
		}
		return k.Seq < o.Seq
	}
	return k.ID < o.ID
}

func mergeChannels(keys []sortKey) []channelInfo {
	sum := map[string]int{}
	for _, k := range keys {
		sum[k.Name] += k.Subscribers
	}
	out := make([]channelInfo, 0, len(sum))
	for name, n := range sum {
		out = append(out, channelInfo{name, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// connNode is the node of a cluster connection id (<node>-<seq>), or "".
func connNode(id string) string {
	node, _, ok := strings.Cut(id, "-")
	if !ok {
		return ""
	}
	return node
}

// relayDisconnect asks the node holding conn to close it and answers
// with that node's answer.
func (a *Agent) relayDisconnect(w http.ResponseWriter, r *http.Request, node, conn string) {
	body, _ := json.Marshal(map[string]string{"conn": conn})
	ans := a.cl.Ask(r.Context(), node, http.MethodPost, "/api/disconnect", body)
	if errors.Is(ans.Err, nats.ErrNoResponders) {
		reply(w, http.StatusNotFound, apiError{"no such connection: its node (" + node + ") is not in the cluster"})
		return
	}
	if ans.Err != nil {
		reply(w, http.StatusBadGateway, apiError{"the node holding the connection (" + node + ") did not answer: " + ans.Err.Error()})
		return
	}
	replyRaw(w, ans.Status, ans.Body)
}
