package engine

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/internal/testca"
)

// BenchmarkTLSIdleMemory measures the heap an idle established connection
// holds in the server: plain, TLS 1.2 and TLS 1.3 (ECDSA P-256
// certificate; crypto/tls's default key exchange, which offers the
// X25519MLKEM768 hybrid as browsers do, and X25519 alone, as the load
// generator of bench/run-tls.sh does, for a smaller ClientHello). The clients run in a
// child process (this test binary, TestIdleClientProcess), so the heap
// counted is the server's alone. It reports heap-B/conn (live heap after a
// GC, over the connections) and goroutines/conn. One measurement per run:
//
//	go test -run '^$' -bench TLSIdleMemory -benchtime 1x ./engine/
//
// IDLE_CONNS sets the connections (3000 by default); with
// IDLE_HEAPPROFILE=DIR and -memprofilerate 1 the heap profile of each case,
// taken while the connections are idle, is written to DIR/NAME.pprof (read
// it with go tool pprof -sample_index inuse_space -focus engine).
func BenchmarkTLSIdleMemory(b *testing.B) {
	conns := 3000
	if v, err := strconv.Atoi(os.Getenv("IDLE_CONNS")); err == nil && v > 0 {
		conns = v
	}
	for _, c := range []struct {
		name   string
		vers   uint16 // 0: plain
		x25519 bool   // X25519 only
	}{{"plain", 0, false}, {"tls1.2", tls.VersionTLS12, false}, {"tls1.3", tls.VersionTLS13, false},
		{"tls1.3-x25519", tls.VersionTLS13, true}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				heap, gor := idleMemory(b, conns, c.vers, c.x25519, c.name)
				b.ReportMetric(heap, "heap-B/conn")
				b.ReportMetric(gor, "goroutines/conn")
			}
		})
	}
}

// idleMemory opens conns idle connections to a fresh server from a child
// process and returns the server's live heap and goroutines per connection.
func idleMemory(b *testing.B, conns int, vers uint16, x25519 bool, name string) (heap, goroutines float64) {
	b.StopTimer()
	defer b.StartTimer()
	cfg := Config{Addr: "127.0.0.1:0", Loops: 1, Limits: Limits{MaxConnsPerIP: 2 * conns, ConnRatePerIP: 10 * conns}}
	ca, err := testca.New()
	if err != nil {
		b.Fatal(err)
	}
	if vers != 0 {
		cfg.TLS = TLSConfig(ca.Server, tls.VersionTLS12)
	}
	s := newTestServer(b, cfg)
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	caFile := b.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, ca.CAPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	before, g0 := liveHeap()
	child := startIdleClients(b, s.Addr().String(), conns, vers, x25519, caFile)
	defer child.stop(b)
	deadline := time.Now().Add(60 * time.Second)
	for s.Stats().Connections < uint64(conns) || s.tlsHandshakes.Load() > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d connections after 60 s", s.Stats().Connections, conns)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the handshake goroutines end
	after, g1 := liveHeap()
	if dir := os.Getenv("IDLE_HEAPPROFILE"); dir != "" {
		writeHeapProfile(b, dir+"/"+name+".pprof")
	}
	return float64(after-before) / float64(conns), float64(g1-g0) / float64(conns)
}

func liveHeap() (uint64, int) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, runtime.NumGoroutine()
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

type idleClients struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// startIdleClients runs TestIdleClientProcess in a child process and waits
// (at most 60 s) until its connections are open.
func startIdleClients(b *testing.B, addr string, conns int, vers uint16, x25519 bool, caFile string) *idleClients {
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleClientProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "IDLE_CLIENT_ADDR="+addr, "IDLE_CLIENT_CONNS="+strconv.Itoa(conns),
		"IDLE_CLIENT_VERS="+strconv.Itoa(int(vers)), "IDLE_CLIENT_X25519="+strconv.FormatBool(x25519), "IDLE_CLIENT_CA="+caFile)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &idleClients{cmd: cmd, stdin: stdin}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" || len(sc.Text()) > 6 && sc.Text()[:6] == "error:" {
				ready <- sc.Text()
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case line := <-ready:
		if line != "ready" {
			c.stop(b)
			b.Fatal(line)
		}
	case <-time.After(60 * time.Second):
		c.stop(b)
		b.Fatal("the client process did not open its connections in 60 s")
	}
	return c
}

// stop closes the child's stdin (it then exits) and waits for it, killing
// it after 10 s.
func (c *idleClients) stop(b *testing.B) {
	c.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
		b.Error("the client process did not exit in 10 s")
	}
}

// TestIdleClientProcess is the client side of BenchmarkTLSIdleMemory, run
// in a child process; it does nothing in a normal test run.
func TestIdleClientProcess(t *testing.T) {
	addr := os.Getenv("IDLE_CLIENT_ADDR")
	if addr == "" {
		t.Skip("the child process of BenchmarkTLSIdleMemory")
	}
	conns, _ := strconv.Atoi(os.Getenv("IDLE_CLIENT_CONNS"))
	vers, _ := strconv.Atoi(os.Getenv("IDLE_CLIENT_VERS"))
	x25519, _ := strconv.ParseBool(os.Getenv("IDLE_CLIENT_X25519"))
	held, err := openIdleClients(addr, conns, uint16(vers), x25519, os.Getenv("IDLE_CLIENT_CA"))
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
	runtime.KeepAlive(held)
}

func openIdleClients(addr string, conns int, vers uint16, x25519 bool, caFile string) ([]*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	url := "ws://" + addr + "/ws"
	if vers != 0 {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		d.TLSClientConfig = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: vers, MaxVersion: vers}
		if x25519 {
			d.TLSClientConfig.CurvePreferences = []tls.CurveID{tls.X25519}
		}
		url = "wss://" + addr + "/ws"
	}
	var (
		mu    sync.Mutex
		first error
		held  = make([]*websocket.Conn, 0, conns)
		next  = make(chan struct{}, conns)
		wg    sync.WaitGroup
	)
	for range conns {
		next <- struct{}{}
	}
	close(next)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, resp, err := d.Dial(url, nil)
				if err == nil {
					resp.Body.Close()
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, _, err = c.ReadMessage() // welcome
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if c != nil {
					held = append(held, c)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return held, first
}
