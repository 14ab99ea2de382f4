package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/zenconn/server/bench/internal/wire"
)

// churnNode is a small pub/sub server for the churn mode: channels, the
// close handshake (gobwas's control handler echoes the close frame, then
// the connection is closed), and an HTTP side with /metrics (goroutines,
// heap in use) and /gc (counted). Faults: every dropEvery-th connection is
// closed right after its welcome, every stallEvery-th never gets its
// subscribe acknowledged (the client's cycle timeout ends it).
type churnNode struct {
	ln         net.Listener
	http       *httptest.Server
	dropEvery  int64
	stallEvery int64
	n          atomic.Int64
	gcs        atomic.Int64
	wg         sync.WaitGroup

	mu    sync.Mutex
	chans map[string]map[*churnNodeConn]bool
	conns map[net.Conn]bool
}

type churnNodeConn struct {
	mu sync.Mutex
	c  net.Conn
	id string
}

func (cc *churnNodeConn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return wsutil.WriteServerMessage(cc.c, ws.OpText, b)
}

func newChurnNode(t *testing.T, dropEvery, stallEvery int64) *churnNode {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &churnNode{ln: ln, dropEvery: dropEvery, stallEvery: stallEvery,
		chans: map[string]map[*churnNodeConn]bool{}, conns: map[net.Conn]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(w, "# TYPE go_goroutines gauge\ngo_goroutines %d\ngo_memstats_heap_inuse_bytes %d\n", runtime.NumGoroutine(), ms.HeapInuse)
	})
	mux.HandleFunc("/gc", func(http.ResponseWriter, *http.Request) {
		f.gcs.Add(1)
		runtime.GC()
	})
	f.http = httptest.NewServer(mux)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns[c] = true
			f.mu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serve(c, f.n.Add(1))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		for c := range f.conns {
			_ = c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
		f.http.Close()
	})
	return f
}

func (f *churnNode) serve(c net.Conn, n int64) {
	cc := &churnNodeConn{c: c, id: fmt.Sprintf("k%d", n)}
	subs := map[string]bool{}
	defer func() {
		f.mu.Lock()
		for ch := range subs {
			delete(f.chans[ch], cc)
		}
		delete(f.conns, c)
		f.mu.Unlock()
		_ = c.Close()
	}()
	if _, err := ws.Upgrade(c); err != nil {
		return
	}
	if cc.send(wire.Welcome{Op: "welcome", Conn: cc.id, Node: "fake", Proto: "json"}) != nil {
		return
	}
	if f.dropEvery > 0 && n%f.dropEvery == 0 {
		return
	}
	for {
		// Answers pings and close frames (echo, then ClosedError).
		b, op, err := wsutil.ReadClientData(c)
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
			if f.stallEvery > 0 && n%f.stallEvery == 0 {
				continue
			}
			f.mu.Lock()
			if f.chans[in.Channel] == nil {
				f.chans[in.Channel] = map[*churnNodeConn]bool{}
			}
			f.chans[in.Channel][cc] = true
			f.mu.Unlock()
			subs[in.Channel] = true
		case "publish":
			msg, _ := json.Marshal(wire.Message{Op: "message", Channel: in.Channel, From: cc.id, Data: in.Data})
			f.mu.Lock()
			var to []*churnNodeConn
			for s := range f.chans[in.Channel] {
				if s != cc {
					to = append(to, s)
				}
			}
			f.mu.Unlock()
			for _, s := range to {
				s.mu.Lock()
				_ = wsutil.WriteServerMessage(s.c, ws.OpText, msg)
				s.mu.Unlock()
			}
		}
		if err := cc.send(wire.Ack{Op: "ack", ID: in.ID}); err != nil {
			return
		}
	}
}

func (f *churnNode) args(extra ...string) []string {
	return append([]string{"--url", "ws://" + f.ln.Addr().String() + "/ws",
		"--metrics-url", f.http.URL + "/metrics", "--gc-url", f.http.URL + "/gc",
		"--server-pid", fmt.Sprint(os.Getpid()), "--timeout", "30s", "--drain", "2s", "--settle", "5s"}, extra...)
}

func num(t *testing.T, m map[string]any, key string) float64 {
	t.Helper()
	cur := any(m)
	for k := range strings.SplitSeq(key, ".") {
		o, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: no object at %q in %v", key, k, m)
		}
		cur = o[k]
	}
	v, ok := cur.(float64)
	if !ok {
		t.Fatalf("%s = %v (%T), want a number; result %v", key, cur, cur, m)
	}
	return v
}

// TestChurnScenario runs the churn mode against the fake node: every cycle
// completes, every publish is acknowledged and reaches the observer, and
// the server is sampled before and after (the test process is the
// server: its descriptors return to the count before).
func TestChurnScenario(t *testing.T) {
	f := newChurnNode(t, 0, 0)
	m := runScenario(t, "churn", f.args("--conns", "4", "--duration", "300ms", "--warmup", "100ms", "--label", "churn"))
	cycles := num(t, m, "cycles")
	if cycles < 4 || num(t, m, "cycle_errors") != 0 || num(t, m, "protocol_errors") != 0 ||
		num(t, m, "dial_errors") != 0 || num(t, m, "disconnects") != 0 || num(t, m, "timeouts") != 0 {
		t.Fatalf("churn: %v", m)
	}
	if num(t, m, "acked") != cycles || num(t, m, "published") != cycles || num(t, m, "observed") != cycles ||
		num(t, m, "missing_deliveries") != 0 || num(t, m, "extra_deliveries") != 0 {
		t.Fatalf("publishes and deliveries: %v", m)
	}
	if num(t, m, "cycle_latency_us.samples") != cycles || num(t, m, "cycles_per_sec") <= 0 || num(t, m, "warmup_cycles") < 1 {
		t.Fatalf("rates: %v", m)
	}
	if num(t, m, "phase_latency_us.open.p50") <= 0 || num(t, m, "gen_cpu_us") < 0 {
		t.Fatalf("phases or generator CPU: %v", m)
	}
	for _, k := range []string{"rss_kib", "fds", "sockets", "goroutines", "heap_inuse_kib"} {
		num(t, m, "before."+k)
		num(t, m, "after."+k)
		num(t, m, "growth."+k)
	}
	num(t, m, "growth.heap_bytes_per_cycle")
	if s, _ := m["settled"].(bool); !s || num(t, m, "growth.sockets") > 0 || num(t, m, "growth.fds") > 0 {
		t.Errorf("sockets did not return: settled %v, growth %v", m["settled"], m["growth"])
	}
	if m["test"] != "churn" || m["mode"] != "churn" {
		t.Errorf("labels: %v %v", m["test"], m["mode"])
	}
	if n := f.gcs.Load(); n != 2 {
		t.Errorf("%d forced GCs, want 2 (before and after)", n)
	}
}

// TestChurnErrors: connections closed by the server after the welcome and
// subscribes never acknowledged are counted (disconnects, timeouts, by
// kind), the workers go on cycling, and the run stops by itself.
func TestChurnErrors(t *testing.T) {
	f := newChurnNode(t, 3, 5)
	t0 := time.Now()
	m := runScenario(t, "churn", f.args("--conns", "3", "--duration", "400ms", "--cycle-timeout", "100ms"))
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
	if num(t, m, "cycles") < 1 || num(t, m, "disconnects") < 1 || num(t, m, "timeouts") < 1 {
		t.Fatalf("churn with faults: %v", m)
	}
	if got, want := num(t, m, "cycle_errors"), num(t, m, "disconnects")+num(t, m, "timeouts"); got != want {
		t.Errorf("cycle_errors %v, want disconnects + timeouts = %v", got, want)
	}
	if num(t, m, "cycles")+num(t, m, "cycle_errors") != num(t, m, "cycles_started") {
		t.Errorf("cycles + errors != started: %v", m)
	}
	errs, _ := m["errors"].(map[string]any)
	for _, k := range []string{"closed_by_server", "cycle_timeout"} {
		if _, ok := errs[k]; !ok {
			t.Errorf("no %q in errors: %v", k, errs)
		}
	}
	if num(t, m, "missing_deliveries") != 0 || num(t, m, "protocol_errors") != 0 {
		t.Errorf("deliveries or protocol: %v", m)
	}
}

// TestChurnNoServer: nothing listens; the generator reports the failure
// and stops by itself.
func TestChurnNoServer(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cfg, err := parseFlags("churn", []string{"--url", "ws://" + addr + "/ws", "--conns", "2", "--duration", "200ms", "--timeout", "20s"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	out, err := orchestrate(cfg)
	if err == nil || !strings.Contains(err.Error(), "observer") {
		t.Fatalf("err %v, out %v", err, out)
	}
	if d := time.Since(t0); d > 15*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestChurnFlags(t *testing.T) {
	cfg, err := parseFlags("churn", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.conns != 64 || cfg.channel != "churn" || cfg.duration != 10*time.Second || cfg.churn.cycleTimeout != 5*time.Second {
		t.Errorf("defaults: conns %d channel %q duration %v cycle timeout %v", cfg.conns, cfg.channel, cfg.duration, cfg.churn.cycleTimeout)
	}
	for _, args := range [][]string{
		{"--conns", "0"},
		{"--conns", "2001", "--procs", "2"},
		{"--gc-url", "ftp://x"},
		{"--duration", "0s"},
		{"--cycle-timeout", "0s"},
		{"--channel", ""},
	} {
		if _, err := parseFlags("churn", args); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestJSONStr(t *testing.T) {
	p := []byte(`{"op":"message","channel":"churn-3","from":"k7","data":"k7"}`)
	for k, want := range map[string]string{"op": "message", "channel": "churn-3", "from": "k7", "data": "k7"} {
		if got, ok := jsonStr(p, k); !ok || got != want {
			t.Errorf("%s: %q %v", k, got, ok)
		}
	}
	if _, ok := jsonStr([]byte(`{"data":"a\"b"}`), "data"); ok {
		t.Error("escaped string taken as is")
	}
	if _, ok := jsonStr(p, "missing"); ok {
		t.Error("missing key found")
	}
	if !isAck([]byte(`{"op":"ack","id":2}`), 2) || !isAck([]byte(`{"id":1, "op":"ack"}`), 1) ||
		isAck([]byte(`{"op":"ack","id":1}`), 2) || isAck([]byte(`{"op":"error","id":2}`), 2) {
		t.Error("isAck")
	}
}

func churnRun(srv string, cps, fdGrowth, goroutines, heapPerCycle, rssPerCycle float64) string {
	return fmt.Sprintf(`{"mode":"churn","test":"churn","server":%q,"cycles_per_sec":%v,"cycles":10000,"cycle_errors":0,`+
		`"protocol_errors":0,"dial_errors":0,"disconnects":0,"missing_deliveries":0,"cycle_latency_us":{"p50":900,"p99":4000},`+
		`"before":{"fds":30,"sockets":4,"goroutines":40,"heap_inuse_kib":4000,"rss_kib":30000},`+
		`"growth":{"fds":%v,"sockets":0,"goroutines":%v,"heap_bytes_per_cycle":%v,"rss_bytes_per_cycle":%v}}`,
		srv, cps, fdGrowth, goroutines, heapPerCycle, rssPerCycle)
}

func runSummarizeChurn(t *testing.T, args []string, lines ...string) map[string]any {
	t.Helper()
	name := t.TempDir() + "/results.jsonl"
	if err := os.WriteFile(name, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var w bytes.Buffer
	if rc := summarizeChurnTo(&w, append(args, name)); rc != 0 {
		t.Fatalf("summarize-churn exit %d", rc)
	}
	out := w.Bytes()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return m
}

func TestSummarizeChurn(t *testing.T) {
	m := runSummarizeChurn(t, []string{"--meta", "k=v"},
		churnRun("zenconn", 12000, 0, 0, 3, 20), churnRun("zenconn", 10000, 0, 1, 5, 40), churnRun("zenconn", 14000, -1, 0, 1, 10),
		churnRun("baseline", 5000, 0, 0, 2, 30), churnRun("baseline", 5400, 0, 0, 2, 30))
	if m["ratio"].(float64) != 2.308 || m["target"].(float64) != 2 || m["met"] != true || m["ratio_met"] != true || m["no_growth_met"] != true {
		t.Fatalf("ratio/met: %v %v %v %v %v", m["ratio"], m["target"], m["met"], m["ratio_met"], m["no_growth_met"])
	}
	if _, ok := m["problems"]; ok {
		t.Errorf("problems: %v", m["problems"])
	}
	z := m["churn"].(map[string]any)["zenconn"].(map[string]any)
	if z["cycles_per_sec"].(float64) != 12000 || z["no_growth"] != true || z["cycle_latency_us.p99"].(float64) != 4000 {
		t.Errorf("zenconn summary: %v", z)
	}
	if m["meta"].(map[string]any)["k"] != "v" {
		t.Errorf("meta: %v", m["meta"])
	}

	// Growth over a limit, and a ratio under the target.
	m = runSummarizeChurn(t, []string{"--max-goroutine-growth", "2"},
		churnRun("zenconn", 9000, 0, 50, 3, 20), churnRun("baseline", 5000, 0, 0, 2, 30))
	if m["met"] != false || m["ratio_met"] != false || m["no_growth_met"] != false {
		t.Fatalf("met: %v %v %v", m["met"], m["ratio_met"], m["no_growth_met"])
	}
	probs, _ := m["problems"].([]any)
	if len(probs) == 0 || !strings.Contains(fmt.Sprint(probs), "growth.goroutines") {
		t.Errorf("problems: %v", probs)
	}
}

// TestSummarizeChurnCompetitor: with Centrifugo's runs and no baseline's,
// the target is ZenConn's median server CPU per cycle against Centrifugo's
// (at most --max-cpu-ratio of it), and no cycles/s ratio is asked for.
func TestSummarizeChurnCompetitor(t *testing.T) {
	run := func(srv string, cpu float64) string {
		r := churnRun(srv, 9000, 0, 0, 1, 10)
		return strings.Replace(r, `"cycles_per_sec"`, fmt.Sprintf(`"server_cpu_us_per_cycle":%v,"cycles_per_sec"`, cpu), 1)
	}
	m := runSummarizeChurn(t, nil, run("zenconn", 60), run("zenconn", 70), run("zenconn", 80),
		run("centrifugo", 150), run("centrifugo", 130), run("centrifugo", 170))
	if m["cpu_ratio_vs_centrifugo"].(float64) != 0.467 || m["cpu_ratio_met"] != true || m["met"] != true {
		t.Fatalf("ratio/met: %v %v %v", m["cpu_ratio_vs_centrifugo"], m["cpu_ratio_met"], m["met"])
	}
	if _, ok := m["ratio"]; ok {
		t.Errorf("a cycles/s ratio without the baseline: %v", m["ratio"])
	}
	if _, ok := m["problems"]; ok {
		t.Errorf("problems: %v", m["problems"])
	}
	m = runSummarizeChurn(t, []string{"--max-cpu-ratio", "0.4"}, run("zenconn", 70), run("centrifugo", 150))
	if m["cpu_ratio_met"] != false || m["met"] != false {
		t.Fatalf("0.467 against a 0.4 target: %v %v", m["cpu_ratio_met"], m["met"])
	}
}
