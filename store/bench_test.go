package store

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAppend appends records from several goroutines and waits for
// their commit: the time includes the group commits (and with "always"
// their fsyncs). The figures depend on the disk under b.TempDir().
func BenchmarkAppend(b *testing.B) {
	for _, mode := range []SyncMode{SyncAlways, SyncBatch, SyncNone} {
		for _, size := range []int{64, 1024} {
			b.Run(fmt.Sprintf("%s/%s", mode, sizeName(size)), func(b *testing.B) {
				s, err := Open(b.TempDir(), Options{Sync: mode})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				data := make([]byte, size)
				for i := range data {
					data[i] = 'a' + byte(i%26)
				}
				b.SetParallelism(4) // 4 goroutines a CPU
				b.ReportAllocs()
				b.SetBytes(int64(size))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					r := Record{Node: "node-1", Conn: "conn-1", User: "user-1", Op: OpPublish, Channel: "bench", Data: data}
					for pb.Next() {
						s.Append(&r, nil)
					}
				})
				if err := s.Barrier(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkAuditQuery reads the first page of 100 records from a store of
// 100k records over about three hours, in ten channels: unfiltered (the
// log itself) and by channel (the hour-bucketed index, one Get a record).
func BenchmarkAuditQuery(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Sync: SyncNone})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const n = 100_000
	base := time.Now().Add(-24 * time.Hour).Truncate(time.Hour)
	data := []byte(`{"price":123.45,"symbol":"ZEN"}`)
	for i := range n {
		s.Append(&Record{Time: base.Add(time.Duration(i) * 100 * time.Millisecond), Node: "node-1",
			Conn: fmt.Sprint("conn-", i%500), User: fmt.Sprint("user-", i%50), Op: OpPublish,
			Channel: fmt.Sprint("channel-", i%10), Data: data}, nil)
	}
	if err := s.Barrier(); err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		q    AuditQuery
	}{
		{"unfiltered", AuditQuery{Limit: 100}},
		{"channel", AuditQuery{Channel: "channel-3", Limit: 100}},
		{"channel-last-hour", AuditQuery{Channel: "channel-3", Since: base.Add(2 * time.Hour), Limit: 100}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				recs, next, err := s.Audit(bc.q)
				if err != nil || len(recs) != 100 || next == "" {
					b.Fatalf("%d records, next %q, %v", len(recs), next, err)
				}
			}
		})
	}
}

// BenchmarkChurnCycle writes what one connection's life records in the
// churn scenario: its session opened and closed, and four audit records
// (connect, subscribe, publish, disconnect). Run it with -cpu 1 and
// -benchtime of a few hundred thousand cycles so that flushes and
// compactions reach their steady rate: cpu-µs/cycle is the process's CPU
// time (user and system, Pebble's background work included) per cycle.
func BenchmarkChurnCycle(b *testing.B) {
	s, err := Open(b.TempDir(), Options{Sync: SyncBatch})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := []byte(`{"u":"w12-34567","pad":"xxxxxxxxxxxxxxxx"}`)
	// As in the churn scenario, about 64 connections live at once: a
	// session is opened, updated by its subscription and closed in
	// different groups of the writer, not merged in the queue.
	const live = 64
	var ring [live]Session
	b.ReportAllocs()
	start := processCPU()
	i := 0
	for b.Loop() {
		i++
		se := &ring[i%live]
		if se.Conn != "" {
			ch := se.Channels[0]
			s.Append(&Record{Node: "node-1", Conn: se.Conn, Op: OpPublish, Channel: ch, Data: data}, nil)
			s.Append(&Record{Node: "node-1", Conn: se.Conn, Op: OpDisconnect, Code: 1000}, nil)
			se.Disconnected, se.CloseCode = time.Now(), 1000
			s.PutSession(se)
		}
		conn := fmt.Sprintf("c%09d", i)
		*se = Session{Conn: conn, Node: "node-1", Remote: "127.0.0.1:40000", UserAgent: "load/1",
			Protocol: "json", Connected: time.Now(), First: true}
		s.PutSession(se)
		s.Append(&Record{Node: "node-1", Conn: conn, Op: OpConnect, Remote: "127.0.0.1:40000"}, nil)
		ch := fmt.Sprintf("churn-%d", i%64)
		se.Channels, se.First = []string{ch}, false
		s.PutSession(se)
		s.Append(&Record{Node: "node-1", Conn: conn, Op: OpSubscribe, Channel: ch}, nil)
		if i%16 == 0 {
			// About 16 cycles a millisecond, as in the scenario: the
			// writer takes them in several groups.
			time.Sleep(time.Millisecond)
		}
	}
	if err := s.Barrier(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/cycle")
}

// processCPU is the process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCloseActive: the background work of a start after a stop with
// many sessions open (CloseActive: read each session, write its end and
// its disconnect record, a thousand per commit). Reports sessions ended a
// second.
func BenchmarkCloseActive(b *testing.B) {
	const sessions = 100_000
	dir := b.TempDir()
	s, err := Open(dir, Options{Sync: SyncBatch})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now().Add(-time.Hour)
	var ended time.Duration
	for b.Loop() {
		b.StopTimer()
		for i := range sessions {
			s.PutSession(&Session{Conn: fmt.Sprintf("c%09d", i), Node: "node-1", User: "u", Remote: "127.0.0.1:40000",
				UserAgent: "load/1", Protocol: "json", Connected: start.Add(time.Duration(i) * time.Microsecond),
				Channels: []string{"scale"}, First: true})
		}
		if err := s.MarkStopped(time.Now(), 1001); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		n, err := s.CloseActive(context.Background(), time.Now(), 1006)
		if err != nil || n != sessions {
			b.Fatalf("CloseActive = %d, %v; want %d", n, err, sessions)
		}
		ended += time.Since(t0)
	}
	b.ReportMetric(float64(sessions*b.N)/ended.Seconds(), "sessions/s")
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
}
