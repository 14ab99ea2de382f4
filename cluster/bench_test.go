package cluster

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/zenconn/server/nodemsg"
)

// countHost counts deliveries and nothing else.
type countHost struct {
	n    atomic.Int64
	beat Beat
}

func (h *countHost) Deliver([]byte, *nodemsg.Msg) { h.n.Add(1) }
func (h *countHost) Beat() Beat                   { return h.beat }
func (h *countHost) Flush()                       {}
func (h *countHost) API() http.Handler            { return http.NotFoundHandler() }

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchPair is two nodes on one NATS server in this process: every CPU
// cost of a cluster message (both clients, the server) is counted.
//
// With ZENCONN_BENCH_NATS set (a URL), the nodes use that server instead,
// so that the heap measured is the nodes' alone.
func benchPair(b *testing.B) (a, c *Cluster, hc *countHost) {
	url := os.Getenv("ZENCONN_BENCH_NATS")
	if url == "" {
		s := startNATS(b, 0)
		b.Cleanup(s.Shutdown)
		url = s.ClientURL()
	}
	hc = &countHost{}
	a, err := Start(Config{NATS: url, Node: "a"}, &countHost{})
	if err != nil {
		b.Fatal(err)
	}
	c, err = Start(Config{NATS: url, Node: "c"}, hc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close(); c.Close() })
	return a, c, hc
}

// BenchmarkPublishToPeer: a 64-byte message from one node to another
// through NATS, from Publish to the other node's Deliver, as fast as the
// receiver takes them; cpu-ns/op is the CPU of the whole process (both
// nodes' clients and the server).
func BenchmarkPublishToPeer(b *testing.B) {
	a, c, hc := benchPair(b)
	c.Want("news", true)
	done := make(chan struct{})
	c.Live("news", func(error) { close(done) })
	<-done
	rec := nodemsg.AppendDeliver(nil, "news", "a-1", false, make([]byte, 64))
	b.ResetTimer()
	cpu0 := cpuNow()
	for i := range b.N {
		a.Publish("news", rec)
		if i%4096 == 0 {
			// Stay within the receiver's inbox: NATS would drop (and
			// the node count) what overflows it.
			for int64(i)-hc.n.Load() > inbox/2 {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for hc.n.Load() < int64(b.N) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	if got := hc.n.Load(); got < int64(b.N) {
		b.Fatalf("%d of %d delivered (dropped: %+v)", got, b.N, c.Stats())
	}
	b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkInterestChange: a channel gains its first subscriber on a
// node (subscribe, confirmed by a round trip) and loses it again.
func BenchmarkInterestChange(b *testing.B) {
	_, c, _ := benchPair(b)
	b.ResetTimer()
	cpu0 := cpuNow()
	for i := range b.N {
		ch := fmt.Sprint("ch", i)
		c.Want(ch, true)
		done := make(chan struct{})
		c.Live(ch, func(error) { close(done) })
		<-done
		c.Want(ch, false)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkEmit: one connection event announced (JSON, published); the
// other node counts it.
func BenchmarkEmit(b *testing.B) {
	a, _, _ := benchPair(b)
	b.ResetTimer()
	cpu0 := cpuNow()
	for range b.N {
		a.Emit(KindConnect, Event{Conn: "a-123456", User: "user-1", Remote: "127.0.0.1:5555", Protocol: "json"})
	}
	_ = a.nc.Flush()
	b.StopTimer()
	b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "cpu-ns/op")
}

// BenchmarkInterestMemory: the heap held per channel a node subscribes
// to: with the NATS server in this process, the client's subscription,
// the server's and the node's own state; with ZENCONN_BENCH_NATS, the
// node's alone.
func BenchmarkInterestMemory(b *testing.B) {
	_, c, _ := benchPair(b)
	const n = 20000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		c.Want(fmt.Sprint("user-", i, "-inbox"), true)
	}
	done := make(chan struct{})
	c.Live(fmt.Sprint("user-", n-1, "-inbox"), func(error) { close(done) })
	<-done
	_ = c.nc.Flush()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/channel")
	for range b.N {
	}
}
