package agent

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/zenconn/server/cluster"
	"github.com/zenconn/server/nodemsg"
)

// The cluster seam: with Config.Cluster set, the agent joins the other
// nodes through package cluster. Every local publish goes to the cluster
// after the local workers (forward), messages of other nodes come back
// through Deliver, the table's channel changes become NATS interest, and
// connections and subscriptions are announced as events. Without it none
// of this runs: a.cl is nil.

// startCluster joins the cluster when the node is configured for one.
func (a *Agent) startCluster() error {
	if a.cfg.Cluster == nil {
		return nil
	}
	cfg := *a.cfg.Cluster
	cfg.Node, cfg.Log = a.cfg.Node, a.log
	a.mu.Lock()
	a.tab.onChannel = nil
	a.mu.Unlock()
	cl, err := cluster.Start(cfg, &clusterHost{a: a})
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.cl = cl
	a.tab.onChannel = cl.Want
	for ch := range a.tab.interest {
		cl.Want(ch, true)
	}
	a.mu.Unlock()
	return nil
}

// clusterHost is the agent as package cluster sees it.
type clusterHost struct {
	a *Agent
	// touched: the workers given records since the last Flush; only the
	// cluster's reader goroutine uses it.
	touched [nodemsg.MaxWorkers]bool
}

// Deliver hands a message of another node to the local workers with
// subscribers of its channel (every worker for a broadcast); the workers
// are woken by Flush.
func (h *clusterHost) Deliver(rec []byte, m *nodemsg.Msg) {
	a := h.a
	var buf [nodemsg.MaxWorkers]int
	a.mu.Lock()
	targets := a.tab.targets(buf[:0], -1, m.Channel, false)
	a.mu.Unlock()
	for _, w := range targets {
		a.put(a.slots[w], rec, false)
		h.touched[w] = true
	}
}

// Flush wakes the workers Deliver gave records to.
func (h *clusterHost) Flush() {
	for w, t := range h.touched[:len(h.a.slots)] {
		if t {
			h.a.release(h.a.slots[w])
			h.touched[w] = false
		}
	}
}

func (h *clusterHost) Beat() cluster.Beat {
	a := h.a
	a.mu.Lock()
	b := cluster.Beat{Workers: len(a.slots), Channels: a.tab.channelCount(), Started: a.started}
	b.Connections, b.Subscriptions = a.tab.totals()
	a.mu.Unlock()
	return b
}

func (h *clusterHost) API() http.Handler { return h.a.api }

// emit announces an event when the node is in a cluster.
func (a *Agent) emit(kind string, ev cluster.Event) {
	if a.cl != nil {
		a.cl.Emit(kind, ev)
	}
}

// whenLive wraps done, the answer to a subscription to ch, so that it is
// sent only once messages published on any node of the cluster reach ch
// here.
func (a *Agent) whenLive(ch string, done func(error)) func(error) {
	if a.cl == nil || done == nil {
		return done
	}
	return func(err error) {
		if err != nil {
			done(err)
			return
		}
		a.cl.Live(ch, done)
	}
}

// writeClusterMetrics renders the zenconn_cluster_ families.
func (a *Agent) writeClusterMetrics(b *strings.Builder) {
	if a.cl == nil {
		return
	}
	st := a.cl.Stats()
	up, down := a.cl.Peers()
	up++ // this node
	gauge := func(name, help string, v any) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
	}
	gauge("zenconn_cluster_connected", "1 while the node's agent is connected to NATS.", boolNum(st.Connected))
	gauge("zenconn_cluster_channels", "Channel subjects the node subscribes to in NATS.", st.Channels)
	fmt.Fprintf(b, "# HELP zenconn_cluster_nodes Nodes of the cluster, this one included, by state.\n# TYPE zenconn_cluster_nodes gauge\n"+
		"zenconn_cluster_nodes{state=\"up\"} %d\nzenconn_cluster_nodes{state=\"down\"} %d\n", up, down)
	fmt.Fprintf(b, "# HELP zenconn_cluster_published_total Messages this node sent to the cluster.\n# TYPE zenconn_cluster_published_total counter\n"+
		"zenconn_cluster_published_total %d\n", st.Published)
	fmt.Fprintf(b, "# HELP zenconn_cluster_received_total Messages of other nodes received.\n# TYPE zenconn_cluster_received_total counter\n"+
		"zenconn_cluster_received_total %d\n", st.Received)
	fmt.Fprintf(b, "# HELP zenconn_cluster_dropped_total Cluster messages and events lost: refused while NATS was unreachable and "+
		"the buffer full (buffer_full), or dropped because this node read them too slowly (slow_consumer).\n"+
		"# TYPE zenconn_cluster_dropped_total counter\nzenconn_cluster_dropped_total{reason=\"buffer_full\"} %d\n"+
		"zenconn_cluster_dropped_total{reason=\"slow_consumer\"} %d\n", st.DroppedBuffer, st.DroppedSlow)
}

func boolNum(b bool) int {
	if b {
		return 1
	}
	return 0
}
