package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/zenconn/server/bench/internal/wire"
)

func TestParseProm(t *testing.T) {
	m, err := parseProm(strings.NewReader(`# HELP zenconn_audit_records_total Audit records committed.
# TYPE zenconn_audit_records_total counter
zenconn_audit_records_total 31223
zenconn_node_worker_up{worker="0"} 1
zenconn_node_messages_out_total{worker="0"} 1.2221222e+07
zenconn_audit_batch_records_bucket{le="+Inf"} 267
odd{label="with } brace"} 7

not a sample
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		series string
		want   float64
	}{
		{series: "zenconn_audit_records_total", want: 31223},
		{series: `zenconn_node_worker_up{worker="0"}`, want: 1},
		{series: `zenconn_node_messages_out_total{worker="0"}`, want: 12221222},
		{series: `zenconn_audit_batch_records_bucket{le="+Inf"}`, want: 267},
		{series: `odd{label="with } brace"}`, want: 7},
	} {
		if got, ok := m[c.series]; !ok || got != c.want {
			t.Errorf("%s = %v (present %v), want %v", c.series, got, ok, c.want)
		}
	}
	if len(m) != 5 {
		t.Errorf("parsed %d series, want 5: %v", len(m), m)
	}
}

func TestBucketQuantile(t *testing.T) {
	inf := math.Inf(1)
	bs := []bucket{{le: 1, count: 0}, {le: 4, count: 10}, {le: 16, count: 90}, {le: 64, count: 100}, {le: inf, count: 100}}
	for _, c := range []struct {
		name string
		q    float64
		bs   []bucket
		want float64
	}{
		{name: "inside the second bucket", q: 0.05, bs: bs, want: 2.5},
		{name: "median", q: 0.5, bs: bs, want: 10},
		{name: "p99 in the last finite bucket", q: 0.99, bs: bs, want: 59.2},
		{name: "rank in +Inf gives the largest bound", q: 0.99, bs: []bucket{{le: 1, count: 1}, {le: inf, count: 10}}, want: 1},
		{name: "first bucket gives its bound", q: 0.5, bs: []bucket{{le: 1, count: 8}, {le: 4, count: 10}, {le: inf, count: 10}}, want: 1},
		{name: "empty", q: 0.5, bs: nil, want: 0},
		{name: "no observations", q: 0.5, bs: []bucket{{le: 1, count: 0}, {le: inf, count: 0}}, want: 0},
	} {
		if got := bucketQuantile(c.q, c.bs); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

func TestAuditFigures(t *testing.T) {
	m0 := promSample{metricRecords: 30003, metricLag: 0, metricBatch + "_count": 10, metricBatch + "_sum": 30003,
		metricBatch + `_bucket{le="4"}`: 2, metricBatch + `_bucket{le="16"}`: 4, metricBatch + `_bucket{le="+Inf"}`: 10}
	m1 := promSample{metricRecords: 31003, metricLag: 20}
	m2 := promSample{metricRecords: 31223, metricLag: 0, metricBatch + "_count": 20, metricBatch + "_sum": 31223,
		metricBatch + `_bucket{le="4"}`: 2, metricBatch + `_bucket{le="16"}`: 14, metricBatch + `_bucket{le="+Inf"}`: 20,
		metricFsync + "_count": 4, metricFsync + "_sum": 0.008}
	t0 := time.Unix(100, 0)
	a := auditFigures(m0, m1, m2, t0, t0.Add(2*time.Second), 1220)
	want := map[string]float64{
		"records": 1220, "records_minus_acked": 0, "records_while_publishing": 1000, "records_per_sec": 500,
		"lag_at_pub_end": 20, "lag_after": 0, "commits": 10, "batch_mean": 122, "batch_p50": 10,
		"fsyncs": 4, "fsync_mean_ms": 2,
	}
	for k, v := range want {
		if got, ok := a[k].(float64); !ok || got != v {
			t.Errorf("%s = %v, want %v", k, a[k], v)
		}
	}
	if auditFigures(promSample{"other": 1}, nil, nil, t0, t0, 0) != nil {
		t.Error("figures without audit metrics")
	}
}

// fakeNode is a tiny pub/sub server speaking the subset of the protocol
// the generator uses, with a Prometheus endpoint that counts one audit
// record per connection, subscription and acknowledged publish (as
// ZenConn does). Every refuseEvery-th publish is refused as overloaded
// (and not recorded). With pace set, each subscriber gets at most one
// message per pace, from a queue of its own (a slow node).
type fakeNode struct {
	t           *testing.T
	ln          net.Listener
	metrics     *httptest.Server
	refuseEvery int64
	pace        time.Duration
	records     atomic.Int64
	wg          sync.WaitGroup

	mu    sync.Mutex
	subs  map[*fakeConn]bool
	conns []net.Conn
	n     int
}

type fakeConn struct {
	mu     sync.Mutex
	c      net.Conn
	id     string
	q      chan []byte // deliveries waiting (with pace)
	closed bool
}

// rw is fc's connection for wsutil.ReadClientData: the replies it writes
// to control frames (pong, close) take fc.mu, like deliveries, so that a
// delivery from another connection's goroutine never interleaves with them.
func (fc *fakeConn) rw() io.ReadWriter { return lockedRW{fc} }

type lockedRW struct{ fc *fakeConn }

func (l lockedRW) Read(p []byte) (int, error) { return l.fc.c.Read(p) }

func (l lockedRW) Write(p []byte) (int, error) {
	l.fc.mu.Lock()
	defer l.fc.mu.Unlock()
	return l.fc.c.Write(p)
}

// deliver queues b (with pace) or writes it at once.
func (fc *fakeConn) deliver(b []byte) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.closed {
		return
	}
	if fc.q == nil {
		_ = wsutil.WriteServerMessage(fc.c, ws.OpText, b)
		return
	}
	select {
	case fc.q <- b:
	default: // a test bug: the queue is large enough
	}
}

func (fc *fakeConn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return wsutil.WriteServerMessage(fc.c, ws.OpText, b)
}

func newFakeNode(t *testing.T, refuseEvery int64, pace time.Duration) *fakeNode {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newFakeNodeOn(t, ln, refuseEvery, pace)
}

// newFakeNodeOn is newFakeNode serving on ln (e.g. a TLS listener).
func newFakeNodeOn(t *testing.T, ln net.Listener, refuseEvery int64, pace time.Duration) *fakeNode {
	f := &fakeNode{t: t, ln: ln, refuseEvery: refuseEvery, pace: pace, subs: map[*fakeConn]bool{}}
	f.metrics = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := f.records.Load()
		fmt.Fprintf(w, "# TYPE zenconn_audit_records_total counter\nzenconn_audit_records_total %d\nzenconn_audit_lag_records 0\n", n)
		fmt.Fprintf(w, "zenconn_audit_batch_records_bucket{le=\"+Inf\"} %d\nzenconn_audit_batch_records_sum %d\nzenconn_audit_batch_records_count %d\n", n, n, n)
	}))
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			f.n++
			id := fmt.Sprintf("f%d", f.n)
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serve(&fakeConn{c: c, id: id})
			}()
		}
	}()
	t.Cleanup(f.close)
	return f
}

func (f *fakeNode) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	f.metrics.Close()
}

func (f *fakeNode) serve(fc *fakeConn) {
	defer func() {
		f.mu.Lock()
		delete(f.subs, fc)
		f.mu.Unlock()
		fc.mu.Lock()
		fc.closed = true
		if fc.q != nil {
			close(fc.q)
		}
		fc.mu.Unlock()
		_ = fc.c.Close()
	}()
	if _, err := ws.Upgrade(fc.c); err != nil {
		return
	}
	f.records.Add(1) // connect
	if fc.send(wire.Welcome{Op: "welcome", Conn: fc.id, Node: "fake", Proto: "json"}) != nil {
		return
	}
	var publishes int64
	for {
		b, op, err := wsutil.ReadClientData(fc.rw())
		if err != nil {
			return
		}
		if op != ws.OpText {
			continue
		}
		var in wire.Inbound
		if err := json.Unmarshal(b, &in); err != nil {
			return
		}
		switch in.Op {
		case "subscribe":
			if f.pace > 0 && fc.q == nil {
				fc.mu.Lock()
				fc.q = make(chan []byte, 1<<16)
				fc.mu.Unlock()
				f.wg.Add(1)
				go func(q chan []byte) {
					defer f.wg.Done()
					for b := range q {
						time.Sleep(f.pace)
						fc.mu.Lock()
						_ = wsutil.WriteServerMessage(fc.c, ws.OpText, b)
						fc.mu.Unlock()
					}
				}(fc.q)
			}
			f.mu.Lock()
			f.subs[fc] = true
			f.mu.Unlock()
			f.records.Add(1)
			err = fc.send(wire.Ack{Op: "ack", ID: in.ID})
		case "publish":
			publishes++
			if f.refuseEvery > 0 && publishes%f.refuseEvery == 0 {
				err = fc.send(wire.Error{Op: "error", ID: in.ID, Code: "overloaded", Message: "the node is overloaded, retry"})
				break
			}
			f.records.Add(1)
			f.mu.Lock()
			var to []*fakeConn
			for s := range f.subs {
				if s != fc {
					to = append(to, s)
				}
			}
			f.mu.Unlock()
			msg, _ := json.Marshal(wire.Message{Op: "message", Channel: in.Channel, From: fc.id, Data: in.Data})
			for _, s := range to {
				s.deliver(msg)
			}
			err = fc.send(wire.Ack{Op: "ack", ID: in.ID})
		}
		if err != nil {
			return
		}
	}
}

func (f *fakeNode) args(extra ...string) []string {
	return append([]string{"--url", "ws://" + f.ln.Addr().String() + "/ws", "--metrics-url", f.metrics.URL + "/metrics",
		"--timeout", "30s", "--drain", "3s"}, extra...)
}

func runScenario(t *testing.T, mode string, args []string) map[string]any {
	t.Helper()
	cfg, err := parseFlags(mode, args)
	if err != nil {
		t.Fatal(err)
	}
	out, err := orchestrate(cfg)
	if err != nil {
		t.Fatalf("%s: %v (%v)", mode, err, out)
	}
	// As printed: numbers become float64.
	b, _ := json.Marshal(out)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPublishScenario runs the publish mode against the fake node: every
// publish is answered, refusals are counted apart, and the audit records
// counted by the node during the run are exactly the acknowledged
// publishes (its connect records come before the run).
func TestPublishScenario(t *testing.T) {
	f := newFakeNode(t, 7, 0)
	m := runScenario(t, "publish", f.args("--pubs", "3", "--window", "4", "--duration", "300ms"))
	published, acked, refused := m["published"].(float64), m["acked"].(float64), m["refused"].(float64)
	if published == 0 || acked+refused != published || refused == 0 || m["unanswered"].(float64) != 0 {
		t.Fatalf("published %v, acked %v, refused %v: %v", published, acked, refused, m)
	}
	if m["protocol_errors"].(float64) != 0 || m["conns_ok"].(float64) != 3 {
		t.Fatalf("protocol errors or connections: %v", m)
	}
	a, ok := m["audit"].(map[string]any)
	if !ok {
		t.Fatalf("no audit figures: %v", m)
	}
	if a["records"].(float64) != acked || a["records_minus_acked"].(float64) != 0 {
		t.Errorf("audit records %v, acked %v", a["records"], acked)
	}
	if _, ok := m["acks_per_sec"]; !ok {
		t.Errorf("no acks_per_sec: %v", m)
	}
}

// TestFanoutScenarioMetrics runs a fixed-rate fan-out with --metrics-url:
// every delivery arrives and the audit count matches the publishes.
func TestFanoutScenarioMetrics(t *testing.T) {
	f := newFakeNode(t, 0, 0)
	m := runScenario(t, "fanout", f.args("--subs", "3", "--rate", "200", "--duration", "300ms"))
	if m["missing_deliveries"].(float64) != 0 || m["protocol_errors"].(float64) != 0 || m["published"].(float64) == 0 {
		t.Fatalf("fan-out: %v", m)
	}
	a, ok := m["audit"].(map[string]any)
	if !ok || a["records"].(float64) != m["published"].(float64) {
		t.Fatalf("audit %v, published %v", m["audit"], m["published"])
	}
}

// TestFanoutLagBound offers 2,000 publishes/s to a node that delivers at
// most 500 messages/s to each subscriber: publishing waits for the
// subscribers (--max-lag), the publishes that fell due meanwhile are
// skipped, and every delivery still arrives.
func TestFanoutLagBound(t *testing.T) {
	f := newFakeNode(t, 0, 2*time.Millisecond)
	m := runScenario(t, "fanout", f.args("--subs", "2", "--rate", "2000", "--max-lag", "10", "--duration", "400ms"))
	published := m["published"].(float64)
	if m["missing_deliveries"].(float64) != 0 || m["disconnects"].(float64) != 0 || m["protocol_errors"].(float64) != 0 {
		t.Fatalf("fan-out: %v", m)
	}
	// 400 ms at 500/s plus the lag allowed, with room for timing.
	if published < 20 || published > 400 {
		t.Errorf("published %v, want about 200 of the 800 offered", published)
	}
	if m["publish_held_s"].(float64) <= 0 || m["publishes_skipped"].(float64) <= 0 {
		t.Errorf("held %v s, skipped %v: want both above 0", m["publish_held_s"], m["publishes_skipped"])
	}
	if a := m["audit"].(map[string]any); a["records"].(float64) != published {
		t.Errorf("audit records %v, published %v", a["records"], published)
	}
}
