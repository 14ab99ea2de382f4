package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestDeliveryBeforeGOMeasuredFromTheRunEpoch: a delivery that reaches a
// process before the GO line (another process's publisher started first)
// has its latency measured from the run's epoch, which every process knows
// from the start, never from a zero time (a latency of ~the Unix time).
func TestDeliveryBeforeGOMeasuredFromTheRunEpoch(t *testing.T) {
	cfg, err := parseFlags("fanout", []string{"--url", "ws://127.0.0.1:1/ws", "--subs", "1"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLoop(cfg, 1, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.closeAll()
	sent := time.Now().UnixNano()
	off := (sent - cfg.epochNs) / 1000
	msg := fmt.Appendf(nil, `{"op":"message","channel":"c","from":"p","data":"%dxx"}`, off)
	// No GO line was read: the delivery arrives first, 2 ms after its send.
	l.onDelivery(l.conns[0], msg, sent+2_000_000)
	if l.received != 1 || l.hist.max < 1900 || l.hist.max > 2100 {
		t.Fatalf("received %d, latency max %d µs; want 1 delivery of ~2,000 µs", l.received, l.hist.max)
	}
}

func TestBackoffFullJitterUnderItsCeiling(t *testing.T) {
	cfg := &config{hold: holdOpts{backoffBase: 100 * time.Millisecond, backoffCap: 10 * time.Second}}
	h := &holdState{rnd: newTestRand()}
	for n, ceil := range []time.Duration{100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000} {
		ceil *= time.Millisecond
		var top time.Duration
		for range 2000 {
			d := h.backoff(cfg, n)
			if d < 0 || d >= ceil {
				t.Fatalf("attempt %d: delay %v outside [0, %v)", n, d, ceil)
			}
			top = max(top, d)
		}
		if top < ceil*9/10 {
			t.Fatalf("attempt %d: largest of 2,000 delays %v, far below the ceiling %v", n, top, ceil)
		}
	}
}

func TestParseSockstat(t *testing.T) {
	var k kernelSample
	b := []byte("sockets: used 290\nTCP: inuse 5 orphan 1 tw 2 alloc 7 mem 13\nUDP: inuse 1 mem 0\n")
	if err := parseSockstat(b, &k); err != nil || k.tcpInuse != 5 || k.tcpOrphan != 1 || k.tcpTW != 2 || k.tcpMemPages != 13 {
		t.Fatalf("%+v %v", k, err)
	}
	if err := parseSockstat([]byte("UDP: inuse 1\n"), &k); err == nil {
		t.Fatal("no TCP line accepted")
	}
}

// zenconnNode is a real zenconn node (the agent and its workers) that can
// be stopped and started again on the same port and data folder.
type zenconnNode struct {
	t          *testing.T
	bin, dir   string
	port       int
	secret     string
	cmd        *exec.Cmd
	pids       []int
	listenedNs int64
}

var buildOnce struct {
	sync.Once
	bin string
	err error
}

// zenconnBinary builds ./cmd/zenconn once for the package's tests.
func zenconnBinary(t *testing.T) string {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "load-zenconn-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin = filepath.Join(dir, "zenconn")
		out, err := exec.Command("go", "build", "-o", buildOnce.bin, "../../cmd/zenconn").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.bin
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newZenconnNode(t *testing.T) *zenconnNode {
	n := &zenconnNode{t: t, bin: zenconnBinary(t), dir: t.TempDir(), port: freePort(t),
		secret: "0123456789abcdef0123456789abcdef-hold-test"}
	for _, d := range []string{"public", "data"} {
		if err := os.Mkdir(filepath.Join(n.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.start()
	t.Cleanup(n.stop)
	return n
}

// start runs the node with two workers and waits (60 s at most: the
// machine is shared) until it
// listens.
func (n *zenconnNode) start() {
	t := n.t
	cmd := exec.Command(n.bin, "serve", "--addr", fmt.Sprintf("127.0.0.1:%d", n.port), "--workers", "2",
		"--access-log", "off", "--conn-rate-per-ip", "100000", "--max-conns-per-ip", "100000", "--public", filepath.Join(n.dir, "public"), "--data", filepath.Join(n.dir, "data"))
	cmd.Env = append(os.Environ(), "ZENCONN_JWT_SECRET="+n.secret)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.cmd = cmd
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "msg=listening") {
				close(listening)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	select {
	case <-listening:
	case <-time.After(60 * time.Second):
		t.Fatal("the node did not listen within 60 s")
	}
	n.listenedNs = time.Now().UnixNano()
	n.pids = []int{cmd.Process.Pid}
	b, _ := exec.Command("pgrep", "-P", strconv.Itoa(cmd.Process.Pid)).Output()
	for f := range strings.FieldsSeq(string(b)) {
		p, _ := strconv.Atoi(f)
		n.pids = append(n.pids, p)
	}
}

// stop ends the node with TERM (KILL after 30 s).
func (n *zenconnNode) stop() {
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
	n.cmd = nil
}

func (n *zenconnNode) pidList() string {
	var s []string
	for _, p := range n.pids {
		s = append(s, strconv.Itoa(p))
	}
	return strings.Join(s, ",")
}

// holdSession is a hold mode run in this process: commands in, one JSON
// object out per command.
type holdSession struct {
	t    *testing.T
	in   *io.PipeWriter
	out  *bufio.Scanner
	done chan int
}

func startHold(t *testing.T, args ...string) *holdSession {
	cfg, err := parseFlags("hold", args)
	if err != nil {
		t.Fatal(err)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	s := &holdSession{t: t, in: inW, out: bufio.NewScanner(outR), done: make(chan int, 1)}
	s.out.Buffer(make([]byte, 1<<20), 1<<20)
	go func() {
		code := runHold(cfg, inR, outW)
		_ = outW.Close()
		_ = inR.Close()
		s.done <- code
	}()
	return s
}

// ask sends a command and returns its JSON object (120 s at most).
func (s *holdSession) ask(cmd string) map[string]any {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.in, cmd); err != nil {
		s.t.Fatalf("%s: %v", cmd, err)
	}
	got := make(chan map[string]any, 1)
	go func() {
		var m map[string]any
		if s.out.Scan() {
			_ = json.Unmarshal(s.out.Bytes(), &m)
		}
		got <- m
	}()
	select {
	case m := <-got:
		if m == nil {
			s.t.Fatalf("%s: no answer", cmd)
		}
		return m
	case <-time.After(120 * time.Second):
		s.t.Fatalf("%s: no answer within 120 s", cmd)
	}
	return nil
}

func (s *holdSession) quit() int {
	_, _ = fmt.Fprintln(s.in, "quit")
	_ = s.in.Close()
	select {
	case code := <-s.done:
		return code
	case <-time.After(30 * time.Second):
		s.t.Fatal("hold did not end within 30 s")
	}
	return -1
}

func hnum(m map[string]any, k string) float64 {
	v, _ := m[k].(float64)
	return v
}

// TestHoldPhasesOnARealNode holds 200 subscribers and a publisher on a
// real node through every phase: idle and kernel figures, a fan-out and a
// broadcast that reach everyone, a churn that leaves every connection
// back, and a restart of the node after which every connection came back
// (1001 from the node going away).
func TestHoldPhasesOnARealNode(t *testing.T) {
	n := newZenconnNode(t)
	s := startHold(t, "--url", fmt.Sprintf("ws://127.0.0.1:%d/ws", n.port), "--conns", "200",
		"--server-pids", n.pidList(), "--jwt-secret", n.secret, "--label", "scale",
		"--settle", "100ms", "--timeout", "300s", "--connect-timeout", "30s")
	for _, step := range []struct {
		cmd  string
		fail func(m map[string]any) bool
	}{
		{"idle", func(m map[string]any) bool {
			return m["test"] != "scale-idle" || hnum(m, "conns_ok") != 201 || hnum(m, "pss_kib_per_conn_total") <= 0
		}},
		{"kernel", func(m map[string]any) bool { return m["test"] != "scale-kernel" || m["kernel_after"] == nil }},
		{"fanout 50 400ms 10s", fanoutFailed},
		{"broadcast 10s", func(m map[string]any) bool {
			return hnum(m, "published") != 1 || hnum(m, "received_deliveries") != 200 || m["seconds_until_all_arrived"] == nil
		}},
		{"churn 10 2s 500ms", func(m map[string]any) bool {
			return hnum(m, "closed") < 20 || hnum(m, "not_ready_at_end") != 0 || m["ok"] != true || hnum(m, "pss_peak_kib") <= 0
		}},
		{"mark", func(map[string]any) bool { return false }},
	} {
		if m := s.ask(step.cmd); step.fail(m) || m["error"] != nil || hnum(m, "protocol_errors") != 0 {
			t.Fatalf("%s: %v", step.cmd, m)
		}
	}
	n.stop()
	n.start()
	r := s.ask(fmt.Sprintf("restart-wait %s 60s %d", n.pidList(), n.listenedNs))
	codes, _ := r["close_codes"].(map[string]any)
	if hnum(r, "never_back") != 0 || hnum(r, "reconnected") != 201 || hnum(codes, "1001") == 0 ||
		hnum(r, "unexpected_close_codes") != 0 || r["seconds_until_all_back"] == nil || r["ok"] != true {
		t.Fatalf("restart: %v", r)
	}
	// The publisher came back too: a fan-out after the restart reaches all.
	if f := s.ask("fanout 50 200ms 10s"); fanoutFailed(f) {
		t.Fatalf("fanout after the restart: %v", f)
	}
	if code := s.quit(); code != 0 {
		t.Fatalf("hold exited with %d", code)
	}
}

// fanoutFailed: not every delivery arrived, or a latency is absurd.
func fanoutFailed(m map[string]any) bool {
	lat, _ := m["latency_us"].(map[string]any)
	return m["test"] != "scale-fanout" || hnum(m, "published") == 0 || hnum(m, "lost") != 0 ||
		hnum(m, "received_deliveries") != 200*hnum(m, "published") || hnum(lat, "max") > 60e6 || m["error"] != nil
}

func newTestRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }
