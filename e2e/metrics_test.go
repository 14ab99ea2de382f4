package e2e

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
)

// sample is one line of the Prometheus text exposition format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics struct {
	families map[string]string // name from "# TYPE name type" → type
	samples  []sample
	raw      string
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$`)
	labelRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// scrape fetches and parses /metrics.
func (s *serverProc) scrape(t *testing.T) metrics {
	t.Helper()
	resp, err := s.HTTP.Get(s.URL("/metrics"))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics: Content-Type %q, want the Prometheus text format (text/plain)", ct)
	}
	m, err := parseMetrics(string(body))
	if err != nil {
		t.Fatalf("GET /metrics: %v\n%s", err, body)
	}
	return m
}

func parseMetrics(text string) (metrics, error) {
	m := metrics{families: map[string]string{}, raw: text}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 {
				return m, fmt.Errorf("line %d: bad TYPE line %q", n, line)
			}
			m.families[f[2]] = f[3]
		case strings.HasPrefix(line, "#"):
		default:
			g := sampleRE.FindStringSubmatch(line)
			if g == nil {
				return m, fmt.Errorf("line %d: not a sample: %q", n, line)
			}
			v, err := strconv.ParseFloat(g[4], 64)
			if err != nil {
				return m, fmt.Errorf("line %d: bad value in %q", n, line)
			}
			sm := sample{name: g[1], labels: map[string]string{}, value: v}
			for _, l := range labelRE.FindAllStringSubmatch(g[3], -1) {
				sm.labels[l[1]] = l[2]
			}
			m.samples = append(m.samples, sm)
		}
	}
	return m, sc.Err()
}

// zenconnFamilies lists the family names starting with zenconn_.
func (m metrics) zenconnFamilies() []string {
	var names []string
	for name := range m.families {
		if strings.HasPrefix(name, "zenconn_") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// find returns the samples whose name matches nameRE and, when labelVal is not nil, that
// have some label value matching it.
func (m metrics) find(nameRE, labelVal *regexp.Regexp) []sample {
	var out []sample
	for _, s := range m.samples {
		if !nameRE.MatchString(s.name) {
			continue
		}
		if labelVal != nil {
			ok := false
			for _, v := range s.labels {
				if labelVal.MatchString(v) {
					ok = true
				}
			}
			if !ok {
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

func sum(ss []sample) float64 {
	var t float64
	for _, s := range ss {
		t += s.value
	}
	return t
}

// A metric "kind" is found either by its name (zenconn_messages_in_total) or by a
// family name plus a direction label (zenconn_messages_total{direction="in"}).
type metricKind struct {
	what     string
	name     *regexp.Regexp // matches the whole family
	byName   *regexp.Regexp // the name alone identifies it
	labelVal *regexp.Regexp // or: family name plus a label value
	exclude  *regexp.Regexp // names that look alike but are something else
}

var (
	reIn  = regexp.MustCompile(`^(in|inbound|received|recv|rx)$`)
	reOut = regexp.MustCompile(`^(out|outbound|sent|tx)$`)

	slowConsumerRE = regexp.MustCompile(`^zenconn_.*slow`)

	metricKinds = []metricKind{
		{what: "open connections", byName: regexp.MustCompile(`^zenconn_.*conn(ection)?s`),
			exclude: regexp.MustCompile(`disconnect|slow|_total$|_created$|_bucket$|_sum$|_count$`)},
		{what: "subscriptions", byName: regexp.MustCompile(`^zenconn_.*subscri`),
			exclude: regexp.MustCompile(`_total$|_created$`)},
		{what: "messages in", name: regexp.MustCompile(`^zenconn_.*messages`),
			byName: regexp.MustCompile(`^zenconn_.*messages.*(_in|received|inbound)`), labelVal: reIn},
		{what: "messages out", name: regexp.MustCompile(`^zenconn_.*messages`),
			byName: regexp.MustCompile(`^zenconn_.*messages.*(_out|sent|outbound|delivered)`), labelVal: reOut},
		{what: "bytes in", name: regexp.MustCompile(`^zenconn_.*bytes`),
			byName: regexp.MustCompile(`^zenconn_.*bytes.*(_in|received|read|inbound)`), labelVal: reIn},
		{what: "bytes out", name: regexp.MustCompile(`^zenconn_.*bytes`),
			byName: regexp.MustCompile(`^zenconn_.*bytes.*(_out|sent|written|outbound)`), labelVal: reOut},
		{what: "HTTP requests by status", name: regexp.MustCompile(`^zenconn_.*http.*requests`),
			labelVal: regexp.MustCompile(`^[1-5][0-9][0-9]$`)},
		{what: "slow-consumer disconnects", byName: slowConsumerRE},
	}
)

// byName returns the samples of kind k found by name, minus the excluded names.
func (m metrics) byName(k metricKind) []sample {
	var out []sample
	for _, s := range m.find(k.byName, nil) {
		if k.exclude == nil || !k.exclude.MatchString(s.name) {
			out = append(out, s)
		}
	}
	return out
}

func (m metrics) has(k metricKind) bool {
	if k.byName != nil && len(m.byName(k)) > 0 {
		return true
	}
	if k.name != nil && k.labelVal != nil && len(m.find(k.name, k.labelVal)) > 0 {
		return true
	}
	return false
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	// Some traffic first, so that labelled series exist.
	a, b := s.dialWS(t), s.dialWS(t)
	a.subscribe(1, "metrics")
	b.subscribe(1, "metrics")
	a.request(2, `{"id":2,"op":"publish","channel":"metrics","data":{"x":1}}`)
	b.expect("message", 0)
	s.get(t, "GET", "/missing-for-metrics")
	s.get(t, "GET", "/index.html")

	m := s.scrape(t)
	fams := m.zenconnFamilies()
	if len(fams) == 0 {
		t.Fatalf("no metric family starts with zenconn_; got:\n%s", m.raw)
	}
	for _, k := range metricKinds {
		if !m.has(k) {
			t.Errorf("no zenconn_ metric for %s", k.what)
		}
	}
	if t.Failed() {
		t.Fatalf("zenconn_ families found: %s", strings.Join(fams, " "))
	}

	t.Run("values follow traffic", func(t *testing.T) {
		conns := m.byName(metricKinds[0])
		if v := sum(conns); v < 2 {
			t.Errorf("open connections: sum of %v = %v with two WebSocket clients connected", names(conns), v)
		}
		subs := m.byName(metricKinds[1])
		if v := sum(subs); v < 2 {
			t.Errorf("subscriptions: sum of %v = %v with two subscriptions", names(subs), v)
		}
		http404 := m.find(regexp.MustCompile(`^zenconn_.*http.*requests`), regexp.MustCompile(`^404$`))
		if sum(http404) < 1 {
			t.Errorf("no HTTP request counted with status 404 after one 404")
		}
		if t.Failed() {
			t.Logf("zenconn_ families: %s", strings.Join(fams, " "))
		}
	})
}

func names(ss []sample) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.name)
	}
	return out
}

// TestMetricsCounters: the traffic counters move with traffic.
func TestMetricsCounters(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pub, sub := s.dialWS(t), s.dialWS(t)
	sub.subscribe(1, "count")
	kind := func(what string) metricKind {
		for _, k := range metricKinds {
			if k.what == what {
				return k
			}
		}
		t.Fatalf("no metric kind %q", what)
		return metricKind{}
	}
	value := func(m metrics, what string) float64 {
		k := kind(what)
		if k.byName != nil {
			if ss := m.byName(k); len(ss) > 0 {
				return sum(ss)
			}
		}
		return sum(m.find(k.name, k.labelVal))
	}
	counters := []string{"messages in", "messages out", "bytes in", "bytes out"}
	before := s.scrape(t)
	const n = 20
	for i := 0; i < n; i++ {
		pub.request(i+10, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"count","data":"%s"}`, i+10, strings.Repeat("b", 100)))
		sub.expect("message", 0)
	}
	eventually(t, 3*time.Second, func() string {
		after := s.scrape(t)
		var bad []string
		for _, what := range counters {
			b, a := value(before, what), value(after, what)
			min := float64(n) // messages: n publishes in, n deliveries (+ n acks) out
			if strings.HasPrefix(what, "bytes") {
				min = n * 100
			}
			if a-b < min {
				bad = append(bad, fmt.Sprintf("%s %v → %v (want +%v)", what, b, a, min))
			}
		}
		if bad != nil {
			return strings.Join(bad, "; ")
		}
		return ""
	})
}

// TestMetricsGaugesAfterChurn: connections and subscriptions go back down when clients
// leave, however they leave.
func TestMetricsGaugesAfterChurn(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var conns []*wsClient
	for i := 0; i < 30; i++ {
		c := s.dialWS(t)
		c.subscribe(1, fmt.Sprintf("churn-%d", i%5))
		c.subscribe(2, "churn-all")
		conns = append(conns, c)
	}
	for i, c := range conns {
		switch i % 3 {
		case 0: // abrupt: TCP close without a close frame
			c.c.NetConn().Close()
		case 1: // clean close handshake
			_ = c.c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
			c.c.NetConn().Close()
		case 2: // protocol error: the server closes
			_ = c.c.WriteMessage(websocket.BinaryMessage, []byte{1})
			c.c.NetConn().Close()
		}
	}
	raw, _ := s.dialRawWS(t, 0)
	raw.sendText(`{"id":1,"op":"subscribe","channel":"churn-raw"}`)
	if f, err := raw.readFrame(defaultTimeout); err != nil || mustParse(t, f.Payload).Op != "ack" {
		t.Fatalf("subscribe: %v %s", err, describeFrames([]ws.Frame{f}))
	}
	raw.write(ws.MaskFrame(ws.NewTextFrame([]byte("\xff")))) // 1007
	raw.expectClose(1007)
	raw.conn.Close()

	start := time.Now()
	defer func() { t.Logf("gauges settled %v after the last close", time.Since(start).Round(time.Millisecond)) }()
	eventually(t, 5*time.Second, func() string {
		m := s.scrape(t)
		subs := sum(m.byName(metricKinds[1]))
		open := m.byName(metricKinds[0])
		var wsOpen float64
		for _, sm := range open {
			if strings.Contains(sm.name, "websocket") || strings.Contains(sm.name, "ws") {
				wsOpen += sm.value
			}
		}
		if subs == 0 && wsOpen == 0 {
			return ""
		}
		return fmt.Sprintf("after all WebSocket clients left: subscriptions %v, WebSocket connections %v (%v)", subs, wsOpen, open)
	})
}
