package agent

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/common/expfmt"
)

// metrics renders the node-wide families, per worker, in the Prometheus
// text format; workers append them to their own /metrics.
func (a *Agent) metrics(w http.ResponseWriter, _ *http.Request) {
	ws := a.Workers()
	a.mu.Lock()
	channels := a.tab.channelCount()
	a.mu.Unlock()
	var b strings.Builder
	family := func(name, typ, help string, value func(WorkerInfo) float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, wi := range ws {
			fmt.Fprintf(&b, "%s{worker=\"%d\"} %g\n", name, wi.ID, value(wi))
		}
	}
	up := func(wi WorkerInfo) float64 {
		if wi.Up {
			return 1
		}
		return 0
	}
	family("zenconn_node_worker_up", "gauge", "1 while the worker process serves.", up)
	family("zenconn_node_worker_restarts_total", "counter", "Times the agent restarted the worker.", func(wi WorkerInfo) float64 { return float64(wi.Restarts) })
	writeFailures(&b, ws)
	family("zenconn_node_connections", "gauge", "WebSocket connections per worker, from the agent's table.", func(wi WorkerInfo) float64 { return float64(wi.Connections) })
	family("zenconn_node_subscriptions", "gauge", "Subscriptions per worker, from the agent's table.", func(wi WorkerInfo) float64 { return float64(wi.Subscriptions) })
	family("zenconn_node_messages_in_total", "counter", "Client messages received, per worker (reported every second).", func(wi WorkerInfo) float64 { return float64(wi.MessagesIn) })
	family("zenconn_node_messages_out_total", "counter", "Messages queued to clients, per worker (reported every second).", func(wi WorkerInfo) float64 { return float64(wi.MessagesOut) })
	fmt.Fprintf(&b, "# HELP zenconn_node_user_limit_closed_total Connections closed with 4009: their user held more than --max-conns-per-user on the node.\n# TYPE zenconn_node_user_limit_closed_total counter\nzenconn_node_user_limit_closed_total %d\n", a.userEvictions.Load())
	fmt.Fprintf(&b, "# HELP zenconn_node_channels Channels with subscribers on the node.\n# TYPE zenconn_node_channels gauge\nzenconn_node_channels %d\n", channels)
	a.writeClusterMetrics(&b)
	if a.cfg.Registry != nil {
		if mfs, err := a.cfg.Registry.Gather(); err == nil {
			enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
			for _, mf := range mfs {
				_ = enc.Encode(mf)
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = io.WriteString(w, b.String())
}

// writeFailures renders zenconn_node_worker_failures_total, per worker and
// reason.
func writeFailures(b *strings.Builder, ws []WorkerInfo) {
	const name = "zenconn_node_worker_failures_total"
	fmt.Fprintf(b, "# HELP %s Times the agent killed the worker because it did not take its records "+
		"(reason %s: its ring took nothing for the stall timeout; %s: its queue reached its bound).\n# TYPE %s counter\n",
		name, reasonStalled, reasonQueueFull, name)
	for _, wi := range ws {
		for i, r := range failureReasons {
			fmt.Fprintf(b, "%s{worker=\"%d\",reason=%q} %d\n", name, wi.ID, r, wi.failures[i])
		}
	}
}
