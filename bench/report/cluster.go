package main

import (
	"fmt"
	"strconv"
	"strings"
)

// renderCluster: bench/run-cluster.sh (load summarize --targets cluster):
// ZenConn's nodes joined through NATS, one ZenConn node with the same
// subscribers, and Centrifugo's nodes on the same NATS broker setup.
func renderCluster(_ *renderer, res map[string]any, e *Envelope) (string, []target) {
	var b strings.Builder
	// A setting's value, from whichever system has a median.
	z := func(test, f string) val {
		return firstOK(numAt(res, "medians", test, "zenconn-cluster", f), numAt(res, "medians", test, "zenconn", f),
			numAt(res, "medians", test, "centrifugo", f))
	}
	nodes := firstOK(envNum(e, "NODES"), some(3))
	if v, err := strconv.ParseFloat(strAt(res, "meta", "nodes"), 64); err == nil {
		nodes = some(v)
	}
	subs := firstOK(z("max", "subs"), z("fixed", "subs"), envNum(e, "SUBS"))
	rate := z("fixed", "rate_target")
	fixed := firstOK(envNum(e, "FIXED_DELIVERIES"), some(20000))
	if rate.ok && subs.ok {
		fixed = some(rate.v * subs.v)
	}
	n := nodes.fmt(num)
	fmt.Fprintf(&b, "%s subscribers spread evenly over %s ZenConn nodes joined through one nats-server (%s), "+
		"the publisher on the first node, against one ZenConn node (the same binary, without `--nats`) with the same "+
		"subscribers, and against %s Centrifugo nodes (%s) with its NATS broker on a nats-server of their own. "+
		"Every server process (the nodes and nats-server) on one CPU, the generator on the other; "+
		"%s-byte publish requests, %s per run, medians of %s run(s) per system. Server CPU sums the nodes and nats-server.\n\n",
		subs.fmt(num), n, orDash(strAt(res, "meta", "nats_server")), n, orDash(strAt(res, "meta", "centrifugo")),
		firstOK(z("max", "size"), z("fixed", "size")).fmt(num), firstOK(z("max", "duration_s"), z("fixed", "duration_s")).fmt(seconds),
		firstOK(z("max", "runs"), z("fixed", "runs")).fmt(num))
	cols := []column{{"zenconn-cluster", "ZenConn, " + n + " nodes"}, {"zenconn", "ZenConn, 1 node"}, {"centrifugo", "Centrifugo, " + n + " nodes"}}
	b.WriteString("Maximum rate:\n\n")
	b.WriteString(figTable(cols, []int{1, 2}, clusterFigs(res, "max")))
	fmt.Fprintf(&b, "\nFixed rate: %s deliveries/s (%s publishes/s):\n\n", fixed.fmt(num), rate.fmt(num))
	b.WriteString(figTable(cols, []int{1, 2}, clusterFigs(res, "fixed")))
	ts := clusterTargets(res, n)
	b.WriteString("\n" + targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// clusterFigs are the rows of one test's table.
func clusterFigs(res map[string]any, test string) []fig {
	m := func(f string) func(string) val { return medianOf(res, test, f) }
	return []fig{
		{label: "deliveries/s", get: m("deliveries_per_sec"), f: num},
		{label: "publishes/s", get: m("publishes_per_sec"), f: num},
		{label: "server CPU (share of one CPU)", get: m("server_cpu_share"), f: share},
		{label: "server CPU µs per delivery", get: m("server_cpu_us_per_delivery"), f: dec(3)},
		{label: "generator CPU (share)", get: m("gen_cpu_share"), f: share, noRatio: true},
		{label: "latency p50", get: m("latency_us.p50"), f: micros},
		{label: "latency p99", get: m("latency_us.p99"), f: micros},
		{label: "latency p99.9", get: m("latency_us.p999"), f: micros},
		{label: "latency max", get: m("latency_us.max"), f: micros},
		{label: "messages lost (all runs)", get: lostOf(res, test, "missing_deliveries"), f: num, noRatio: true},
		{label: "reordered (all runs)", get: lostOf(res, test, "gaps_or_reorders"), f: num, noRatio: true},
		{label: "disconnects (all runs)", get: lostOf(res, test, "disconnects"), f: num, noRatio: true},
		{label: "other processes' CPU (share)", get: m("other_cpu_share"), f: share, noRatio: true},
	}
}

// clusterTargets: the cluster's maximum deliveries/s at least 0.75× one
// node's and 3× Centrifugo's; its median latency at the fixed rate at most
// 1 ms above one node's (what the NATS hop adds).
func clusterTargets(res map[string]any, nodes string) []target {
	get := func(test, srv, f string) val { return numAt(res, "medians", test, srv, f) }
	cl, one := get("fixed", "zenconn-cluster", "latency_us.p50"), get("fixed", "zenconn", "latency_us.p50")
	hop := target{name: "NATS hop: median latency at the fixed rate, " + nodes + " nodes", ours: cl, ref: one,
		refName: "one node", goal: "≤ one node's + 1 ms", f: micros}
	if cl.ok && one.ok {
		hop.met = boolp(cl.v-one.v <= 1000)
		hop.note = "difference " + micros(cl.v-one.v)
	}
	return []target{
		minRatio("cluster of "+nodes+" nodes: max deliveries/s", get("max", "zenconn-cluster", "deliveries_per_sec"),
			get("max", "zenconn", "deliveries_per_sec"), "one node", 0.75, num),
		minRatio("cluster of "+nodes+" nodes: max deliveries/s", get("max", "zenconn-cluster", "deliveries_per_sec"),
			get("max", "centrifugo", "deliveries_per_sec"), "Centrifugo", 3, num),
		hop,
	}
}
