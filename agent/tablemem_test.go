package agent

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkTableMemory fills the agent's table with a million connections
// as a node of 56 workers reports them (each record's strings decoded
// afresh, as nodemsg.Decode does), each subscribed to one of 1,000
// channels, or to a channel of its own, with its session kept, and
// reports the heap it takes per connection (live heap after a GC, before
// and after). Run it once:
//
//	go test -run '^$' -bench TableMemory -benchtime 1x ./agent/
func BenchmarkTableMemory(b *testing.B) {
	b.Run("channels=1000", func(b *testing.B) { tableMemory(b, 1_000) })
	// Every connection on a channel of its own (a user's or a device's).
	b.Run("channels=1000000", func(b *testing.B) { tableMemory(b, 1_000_000) })
}

func tableMemory(b *testing.B, channels int) {
	const conns, workers = 1_000_000, 56
	for b.Loop() {
		before := liveHeap()
		tab := newTable(workers)
		start := time.Now()
		fillTable(tab, conns, workers, channels)
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/conns, "ns/conn")
		after := liveHeap()
		b.ReportMetric(float64(after-before)/conns, "bytes/conn")
		if n, _ := tab.totals(); n != conns {
			b.Fatalf("%d connections in the table", n)
		}
		runtime.KeepAlive(tab)
	}
}

// fillTable opens n connections spread over the workers, each subscribed
// to one of channels channels, with the strings of an Opened record
// decoded afresh for each.
func fillTable(tab *table, n, workers, channels int) {
	base := uint64(time.Now().UnixMicro()) * 256
	for i := range n {
		w := i % workers
		id := strconv.FormatUint(base+uint64(i)*256+uint64(w), 36)
		c := &connRec{worker: w, remote: "127.0.0." + strconv.Itoa(2+i%200) + ":" + strconv.Itoa(32768+i%28000),
			protocl: intern(string([]byte("json"))), userAgent: intern(string([]byte("Go-http-client/1.1"))), connected: time.Now().UnixNano()}
		tab.open(id, c)
		tab.subscribe(id, "room-"+strconv.Itoa(i%channels), true)
	}
}

func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
