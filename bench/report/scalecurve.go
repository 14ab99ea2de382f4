package main

// The scale curve (bench/run-scale-curve.sh, bench/results/scale-curve.json):
// memory per connection and fan-out deliveries/s against the number of
// connections, drawn as bench/scale-curve.svg beside RESULTS.md, with the
// table of its points.

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// scaleCurveSVG is the plot's file name, in the folder of RESULTS.md.
const scaleCurveSVG = "scale-curve.svg"

// curveServer is how a server of the curve is drawn.
type curveServer struct {
	key, name, color, marker string
}

var curveServers = []curveServer{
	{"zenconn", "ZenConn", "#1f63b4", "circle"},
	{"baseline", "baseline (one process)", "#e07b10", "square"},
	{"centrifugo", "Centrifugo (one process)", "#2a9a3a", "triangle"},
}

// curveStyle is the drawing of a server, a grey one for a server not listed.
func curveStyle(key string) curveServer {
	for _, s := range curveServers {
		if s.key == key {
			return s
		}
	}
	return curveServer{key, key, "#777777", "circle"}
}

// curvePoint is one point of the curve.
type curvePoint struct {
	server    string
	conns     val // the step
	connected val // conns_ok of the idle test
	pss       val // PSS of all the server's processes per connection
	rss       val // growth of their summed RSS per connection
	dps       val // fan-out deliveries/s
	missing   val // fan-out deliveries expected but not received
	refused   val // publishes the server refused
	other     val // CPUs other processes kept busy during the fan-out
	exit      val
}

// curvePoints reads the points, in the order of curveServers (others after,
// by name), then of connections.
func curvePoints(res map[string]any) []curvePoint {
	var out []curvePoint
	for _, e := range listAt(res, "points") {
		p, ok := e.(map[string]any)
		if !ok {
			continue
		}
		out = append(out, curvePoint{
			server: strAt(p, "server"), conns: numAt(p, "conns"), connected: numAt(p, "idle", "conns_ok"),
			pss: numAt(p, "idle", "pss_kib_per_conn_total"), rss: numAt(p, "idle", "kib_per_conn"),
			dps: numAt(p, "fanout", "deliveries_per_sec"), missing: numAt(p, "fanout", "missing_deliveries"),
			refused: numAt(p, "fanout", "refused"), other: numAt(p, "fanout", "other_cpu_share"), exit: numAt(p, "exit"),
		})
	}
	rank := func(s string) int {
		for i, c := range curveServers {
			if c.key == s {
				return i
			}
		}
		return len(curveServers)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if rank(a.server) != rank(b.server) {
			return rank(a.server) < rank(b.server)
		}
		if a.server != b.server {
			return a.server < b.server
		}
		return a.conns.v < b.conns.v
	})
	return out
}

// curveKeys are the servers to draw: those the run was asked for
// (settings.servers), then any other with points.
func curveKeys(res map[string]any, pts []curvePoint) []string {
	var keys []string
	seen := map[string]bool{}
	add := func(k string) {
		if k != "" && !seen[k] {
			keys, seen[k] = append(keys, k), true
		}
	}
	for _, k := range strings.Fields(strAt(res, "settings", "servers")) {
		add(k)
	}
	for _, p := range pts {
		add(p.server)
	}
	return keys
}

// scaleCurveChart builds the plot of a scale-curve result.
func scaleCurveChart(res map[string]any) *chart {
	pts := curvePoints(res)
	mem := panel{title: "User-space memory per connection (PSS of all the server's processes)",
		ylabel: "KiB per connection", ytick: kib}
	fan := panel{title: "Fan-out to every connection, as fast as it goes",
		ylabel: "deliveries/s", ytick: siCount}
	c := &chart{title: "Memory and fan-out against the number of connections", xlabel: "connections (log scale)",
		xtick: siCount, xmin: 1e4, xmax: 1e6}
	onePro := false
	for _, k := range curveKeys(res, pts) {
		st := curveStyle(k)
		m := series{key: k, name: st.name, color: st.color, marker: st.marker}
		f := m
		for _, p := range pts {
			if p.server != k || !p.conns.ok {
				continue
			}
			if p.pss.ok {
				m.points = append(m.points, xy{p.conns.v, p.pss.v})
			}
			if p.dps.ok {
				f.points = append(f.points, xy{p.conns.v, p.dps.v})
			}
		}
		mem.series, fan.series = append(mem.series, m), append(fan.series, f)
		l := m
		l.points = append(append([]xy(nil), m.points...), f.points...)
		c.legend = append(c.legend, l)
		onePro = onePro || k != "zenconn"
	}
	c.panels = []panel{mem, fan}
	if lim := numAt(res, "open_file_limit"); lim.ok && onePro {
		c.vlines = []vline{{lim.v, "one process: open-file limit (" + thousands(int64(lim.v)) + ")"}}
	}
	return c
}

// siCount formats a count as 10k, 2.5M.
func siCount(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e6:
		return trimZeros(v/1e6) + "M"
	case a >= 1e3:
		return trimZeros(v/1e3) + "k"
	}
	return trimZeros(v)
}

func trimZeros(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// renderScaleCurve: the plot (written as scaleCurveSVG) and its points.
func renderScaleCurve(r *renderer, res map[string]any, _ *Envelope) (string, []target) {
	if res == nil {
		return "", nil
	}
	if r != nil {
		r.addFile(scaleCurveSVG, scaleCurveChart(res).svg())
	}
	var b strings.Builder
	lim := numAt(res, "open_file_limit")
	fmt.Fprintf(&b, "ZenConn: `PHASES=idle,fanout CONNS=N bash bench/run-scale.sh` at each step (one node of several worker "+
		"processes, not pinned, sharing both cores with the generator). The baseline and Centrifugo are one process each, "+
		"so they stop below the open-file limit of one process (%s here): run-idle.sh's idle test and run-fanout.sh's "+
		"max-rate fan-out, each on a fresh server pinned to one core (`taskset -c %s`, the generator on `%s`). "+
		"Memory: the PSS of all the server's processes with every connection open and subscribed, divided by the "+
		"connections (the processes' own memory included); \"RSS growth\" is what the connections added. "+
		"Fan-out: one publisher, 64-byte publishes as fast as the ack window and delivery lag allow, to all of them; "+
		"\"missing\" are the deliveries of its publishes (refused ones included) not received within the drain (5 s), "+
		"\"other CPU\" the CPUs other processes of the machine kept busy meanwhile (out of %s). "+
		"Both axes are logarithmic. One run per point.\n\n",
		lim.fmt(num), orDash(strAt(res, "meta", "server_cpu")), orDash(strAt(res, "meta", "load_cpu")),
		orDash(strAt(res, "meta", "nproc")))
	fmt.Fprintf(&b, "![Memory per connection and fan-out deliveries/s against the number of connections](%s)\n\n", scaleCurveSVG)
	t := newTable("server", "connections", "connected", "PSS per connection, all processes", "RSS growth per connection",
		"fan-out deliveries/s", "missing", "publishes refused", "other CPU", "exit status")
	for _, p := range curvePoints(res) {
		t.add(curveStyle(p.server).name, p.conns.fmt(num), p.connected.fmt(num), p.pss.fmt(kib), p.rss.fmt(kib),
			p.dps.fmt(num), p.missing.fmt(num), p.refused.fmt(num), p.other.fmt(share), p.exit.fmt(num))
	}
	b.WriteString(t.String())
	fmt.Fprintf(&b, "\nSettings of the latest run: steps %s (ZenConn), %s (one-process servers), fan-out for %s",
		orDash(strAt(res, "settings", "steps")), orDash(strAt(res, "settings", "one_process_steps")),
		orDash(strAt(res, "settings", "duration")))
	if k := numAt(res, "kept_points"); k.ok && k.v > 0 {
		fmt.Fprintf(&b, "; %s point(s) kept from earlier runs (`KEEP_POINTS=1`)", k.fmt(num))
	}
	b.WriteString(". The commands and the time of every point are in the JSON.\n\n")
	return b.String(), nil
}
