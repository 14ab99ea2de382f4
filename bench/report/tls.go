package main

import (
	"fmt"
	"strings"
)

// tlsMethod says how the generator read the TLS servers' deliveries:
// samples counts the subscribers that decrypted everything when the others
// counted deliveries from record sizes (load --tls-sample).
func tlsMethod(samples val) string {
	if !samples.ok {
		return "Every wss:// subscriber decrypts every delivery (through the generator's crypto/tls bridge)."
	}
	return "wss:// subscribers, nginx's and ZenConn's: a sample (TLS_SAMPLE, 1 in 50 by default, and TLS_SAMPLE_MIN, 20, at least) decrypts and checks every delivery " +
		"(content, order, latency); the others, after a real handshake and subscribe, count deliveries from the sizes of " +
		"the TLS records they receive, undecrypted, whole frames only, and each must count every publish. Centrifugo's " +
		"subscribers all decrypt (a frame of Centrifugo's may carry several pushes). See the notes below."
}

// tlsCols: the servers of bench/run-tls.sh, ZenConn with TLS first.
var tlsCols = []column{{"zenconn-tls", "ZenConn, TLS"}, {"zenconn", "ZenConn, plain"},
	{"nginx-tls", "nginx TLS → baseline"}, {"centrifugo-tls", "Centrifugo, TLS"}}

// renderTLS: bench/run-tls.sh (load summarize --targets tls): ZenConn
// terminating TLS on its loops, plain ZenConn, nginx terminating TLS in
// front of the baseline (serving the static file itself for handshakes)
// and Centrifugo with TLS.
func renderTLS(_ *renderer, res map[string]any, e *Envelope) (string, []target) {
	var b strings.Builder
	z := func(test, f string) val { return numAt(res, "medians", test, "zenconn-tls", f) }
	fmt.Fprintf(&b, "ECDSA P-256 certificate for 127.0.0.1 from a test CA made by the script, verified by every client; "+
		"key exchange X25519 for every server. Each server (nginx and the baseline together) on one CPU, the generator "+
		"on the other. %s Medians of %s run(s) per server.\n\n",
		tlsMethod(z("max", "tls_count.sample_conns")), firstOK(z("idle", "runs"), z("max", "runs"), z("handshake", "runs")).fmt(num))
	fmt.Fprintf(&b, "Idle: %s subscribed connections; RSS of the server's processes before and after:\n\n",
		firstOK(z("idle", "conns"), envNum(e, "CONNS")).fmt(num))
	m := func(test, f string) func(string) val { return medianOf(res, test, f) }
	b.WriteString(figTable(tlsCols, []int{1, 2, 3}, []fig{
		{label: "connections subscribed", get: m("idle", "conns_ok"), f: num},
		{label: "RSS before", get: m("idle", "rss_before_kib"), f: kib},
		{label: "RSS after", get: m("idle", "rss_after_kib"), f: kib},
		{label: "RSS per connection", get: m("idle", "kib_per_conn"), f: kib},
		{label: "dial errors (all runs)", get: lostOf(res, "idle", "dial_errors"), f: num, noRatio: true},
		{label: "disconnects (all runs)", get: lostOf(res, "idle", "disconnects"), f: num, noRatio: true},
	}))
	fmt.Fprintf(&b, "\nMaximum fan-out: %s subscribers, %s-byte publishes, %s per run:\n\n",
		firstOK(z("max", "subs"), envNum(e, "SUBS")).fmt(num), z("max", "size").fmt(num), z("max", "duration_s").fmt(seconds))
	b.WriteString(figTable(tlsCols, []int{1, 2, 3}, []fig{
		{label: "deliveries/s", get: m("max", "deliveries_per_sec"), f: num},
		{label: "server CPU (share of one CPU)", get: m("max", "server_cpu_share"), f: share},
		{label: "server CPU µs per delivery", get: m("max", "server_cpu_us_per_delivery"), f: dec(3)},
		{label: "generator CPU (share)", get: m("max", "gen_cpu_share"), f: share, noRatio: true},
		{label: "subscribers decrypting every delivery", get: m("max", "tls_count.sample_conns"), f: num, noRatio: true},
		{label: "latency p99", get: m("max", "latency_us.p99"), f: micros},
		{label: "messages lost (all runs)", get: lostOf(res, "max", "missing_deliveries"), f: num, noRatio: true},
		{label: "disconnects (all runs)", get: lostOf(res, "max", "disconnects"), f: num, noRatio: true},
		{label: "other processes' CPU (share)", get: m("max", "other_cpu_share"), f: share, noRatio: true},
	}))
	fmt.Fprintf(&b, "\nFull handshakes (no resumption), each followed by one GET of a static file "+
		"(Centrifugo: /health; plain ZenConn: the same loop without TLS), %s in flight. Per core: 1 s ÷ the server's "+
		"CPU per handshake, since the generator, on one core too, may not keep the server's core busy:\n\n",
		z("handshake", "conc").fmt(num))
	b.WriteString(figTable(tlsCols, []int{1, 2, 3}, []fig{
		{label: "handshakes/s per core", get: m("handshake", "handshakes_per_core_s"), f: num},
		{label: "handshakes/s measured", get: m("handshake", "handshakes_per_s"), f: num},
		{label: "server CPU µs per handshake", get: m("handshake", "server_cpu_us_per_handshake"), f: dec(1)},
		{label: "server CPU (share of one CPU)", get: m("handshake", "server_cpu_share"), f: share},
		{label: "failures (all runs)", get: lostOf(res, "handshake", "failures"), f: num, noRatio: true},
	}))
	ts := tlsTargets(res)
	b.WriteString("\n" + targetsTable(ts) + "\n")
	b.WriteString(problemsBlock(res))
	return b.String(), ts
}

// tlsTargets: ≤ 6 KiB per idle TLS connection; TLS fan-out ≥ 0.6× plain
// ZenConn's and ≥ 3× Centrifugo's with TLS; handshakes per core ≥ nginx's.
func tlsTargets(res map[string]any) []target {
	get := func(test, srv, f string) val { return numAt(res, "medians", test, srv, f) }
	ours := get("idle", "zenconn-tls", "kib_per_conn")
	idle := target{name: "RSS per idle TLS connection", ours: ours, ref: get("idle", "zenconn", "kib_per_conn"),
		refName: "plain ZenConn", goal: "≤ 6 KiB", f: kib}
	if ours.ok {
		idle.met = boolp(ours.v <= 6)
	}
	if c := get("idle", "zenconn-tls", "conns_ok"); c.ok && c.v != 15000 {
		idle.note = "measured at " + num(c.v) + " connections"
	}
	fan := get("max", "zenconn-tls", "deliveries_per_sec")
	return []target{
		idle,
		minRatio("TLS max deliveries/s", fan, get("max", "zenconn", "deliveries_per_sec"), "plain ZenConn", 0.6, num),
		minRatio("TLS max deliveries/s", fan, get("max", "centrifugo-tls", "deliveries_per_sec"), "Centrifugo TLS", 3, num),
		minRatio("full TLS handshakes/s per core", get("handshake", "zenconn-tls", "handshakes_per_core_s"),
			get("handshake", "nginx-tls", "handshakes_per_core_s"), "nginx", 1, num),
	}
}
