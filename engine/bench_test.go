package engine

import (
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// Benchmarks run on the in-memory transport: they measure the engine's own
// work (no syscalls). Publish numbers with the machine next to them.

var fanoutSizes = []int{1, 100, 1000}

// BenchmarkFanoutDeliver delivers one pre-encoded 64-byte-payload message
// to every subscriber of a loop and flushes, per op. Bytes are those
// written to all subscribers.
func BenchmarkFanoutDeliver(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			fx := newFanoutFixture(b, n, 64)
			fx.pass()
			b.ReportAllocs()
			b.SetBytes(int64(n * len(fx.frame)))
			for b.Loop() {
				fx.l.deliver(fx.msg, nil, false)
				fx.exec.run() // the flush task, as queued by markDirty
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/sub")
		})
	}
}

// BenchmarkFanoutDeliverDirect is BenchmarkFanoutDeliver for an isolated
// message: each subscriber is written as it is reached, in one walk.
func BenchmarkFanoutDeliverDirect(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			fx := newFanoutFixture(b, n, 64)
			fx.direct = true
			fx.pass()
			b.ReportAllocs()
			b.SetBytes(int64(n * len(fx.frame)))
			for b.Loop() {
				fx.l.deliver(fx.msg, nil, true)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/sub")
		})
	}
}

// BenchmarkFanoutNaive is the reference the engine avoids: encode the
// envelope and frame once per subscriber, write to each at once.
func BenchmarkFanoutNaive(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			fx := newFanoutFixture(b, n, 64)
			data := []byte(`"` + strings.Repeat("x", 62) + `"`)
			b.ReportAllocs()
			b.SetBytes(int64(n * len(fx.frame)))
			for b.Loop() {
				for _, c := range fx.l.subs["room"].conns {
					frame := appendFrame(nil, ws.OpText, proto.AppendMessage(nil, "room", "k3j2h1x", data))
					c.t.Write(frame)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/sub")
		})
	}
}

// BenchmarkFanoutCrossLoop posts the frame to another loop's inbox and
// drains it there, as hub.publish does for remote subscribers.
func BenchmarkFanoutCrossLoop(b *testing.B) {
	for _, n := range fanoutSizes {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			fx := newFanoutFixture(b, n, 64)
			b.ReportAllocs()
			b.SetBytes(int64(n * len(fx.frame)))
			for b.Loop() {
				fx.l.post(delivery{msg: fx.msg})
				fx.exec.run()
			}
		})
	}
}

// BenchmarkFanoutDrainBatch posts a batch of messages on one channel to a
// loop and drains it, as a loop does under a sustained fan-out: per op,
// every subscriber gets the whole batch. ns/delivery is per message and
// subscriber.
func BenchmarkFanoutDrainBatch(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		for _, k := range []int{4, 32} {
			b.Run("subs="+strconv.Itoa(n)+"/batch="+strconv.Itoa(k), func(b *testing.B) {
				fx := newFanoutFixture(b, n, 64)
				msgs := make([]*outMsg, k)
				for i := range msgs {
					msgs[i] = newOutMsg("room", "k3j2h1x", fx.msg.data, false)
				}
				b.ReportAllocs()
				b.SetBytes(int64(n * k * len(fx.frame)))
				for b.Loop() {
					for _, m := range msgs {
						fx.l.post(delivery{msg: m})
					}
					fx.exec.run()
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n*k), "ns/delivery")
			})
		}
	}
}

// BenchmarkServePublish measures one client publish end to end on a loop:
// frame parse, unmask, UTF-8 check, decode, encode once, fan-out to the
// subscribers, ack.
func BenchmarkServePublish(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			fx := newFanoutFixture(b, n, 64)
			pub := newConnDriver(b, fx.s, fx.l, fx.exec)
			pub.feed([]byte(upgradeRequest))
			pub.t.record = false
			msg := []byte(`{"id":1,"op":"publish","channel":"room","data":"` + strings.Repeat("x", 62) + `"}`)
			frame := clientFrame(true, ws.OpText, msg)
			in := make([]byte, len(frame))
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				copy(in, frame) // Serve unmasks in place
				if pub.c.Serve(in) != len(in) {
					b.Fatal("frame not consumed")
				}
				fx.exec.run()
			}
		})
	}
}

// BenchmarkServePing is the smallest request/reply round on a loop.
func BenchmarkServePing(b *testing.B) {
	s := newTestServer(b, Config{})
	l, e := newTestLoop(b, s)
	d := newConnDriver(b, s, l, e)
	d.feed([]byte(upgradeRequest))
	d.t.record = false
	frame := clientFrame(true, ws.OpText, []byte(`{"op":"ping"}`))
	in := make([]byte, len(frame))
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		copy(in, frame)
		d.c.Serve(in)
		e.run()
	}
}

// BenchmarkFrameEncode builds a message frame into a reused buffer.
func BenchmarkFrameEncode(b *testing.B) {
	for _, size := range []int{64, 1024, 65536} {
		data := []byte(`"` + strings.Repeat("x", size-2) + `"`)
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			buf := make([]byte, 0, size+256)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				buf = newFrameBuf(buf)
				buf = proto.AppendMessage(buf, "room:lobby", "k3j2h1x", data)
				_ = finishFrame(buf, ws.OpText)
			}
		})
	}
}

// BenchmarkConnFootprint reports the heap held per idle WebSocket
// connection subscribed to one channel (engine state only: no socket,
// no gnet buffers).
func BenchmarkConnFootprint(b *testing.B) {
	const n = 2000
	for b.Loop() {
		s := newTestServer(b, Config{})
		l, e := newTestLoop(b, s)
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		ds := make([]*connDriver, n)
		for i := range ds {
			d := newConnDriver(b, s, l, e)
			d.feed([]byte(upgradeRequest))
			d.feed(clientFrame(true, ws.OpText, []byte(`{"op":"subscribe","channel":"c`+strconv.Itoa(i%10)+`"}`)))
			d.t.record = false
			d.t.out = nil
			d.buf = nil
			ds[i] = d
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapAlloc-before)/n, "heap-bytes/conn")
		runtime.KeepAlive(ds)
	}
}
