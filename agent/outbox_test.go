package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
)

// testOutbox is an outbox on a 4 KiB ring, with its failures recorded.
type testOutbox struct {
	*outbox
	ring *shm.Ring
	cons *shm.Consumer

	mu       sync.Mutex
	failures []string
	failed   chan struct{}
	closed   sync.Once
}

func (to *testOutbox) closeOnce() { to.closed.Do(to.close) }

func newTestOutbox(t *testing.T, limit int, stall time.Duration) *testOutbox {
	t.Helper()
	r, err := shm.Create("outbox-test", shm.MinCapacity)
	if err != nil {
		t.Fatal(err)
	}
	to := &testOutbox{ring: r, cons: r.Consumer(), failed: make(chan struct{})}
	to.outbox = newOutbox(r.Producer(), r.MaxRecord(), limit, stall, func(reason string) {
		to.mu.Lock()
		to.failures = append(to.failures, reason)
		if len(to.failures) == 1 {
			close(to.failed)
		}
		to.mu.Unlock()
	})
	go to.run()
	t.Cleanup(func() {
		to.closeOnce()
		_ = r.Close()
	})
	return to
}

func (to *testOutbox) failuresSeen() []string {
	to.mu.Lock()
	defer to.mu.Unlock()
	return append([]string(nil), to.failures...)
}

// numbered is a record of size bytes that carries i.
func numbered(i, size int) []byte {
	rec := make([]byte, size)
	binary.LittleEndian.PutUint32(rec, uint32(i))
	return rec
}

// readAll reads the ring until n records have come (or the deadline) and
// returns their numbers.
func (to *testOutbox) readAll(t *testing.T, n int) []int {
	t.Helper()
	var got []int
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < n && time.Now().Before(deadline) {
		to.cons.Wait(10 * time.Millisecond)
		_, _ = to.cons.Read(func(rec []byte) { got = append(got, int(binary.LittleEndian.Uint32(rec))) })
	}
	return got
}

// TestOutboxKeepsOrderWithoutBlocking: records that do not fit in the ring
// wait in the queue; enqueue returns at once while nobody reads, and the
// reader then gets every record in order.
func TestOutboxKeepsOrderWithoutBlocking(t *testing.T) {
	to := newTestOutbox(t, 1<<20, time.Minute)
	const n = 500 // 500 × 100 bytes: twelve rings' worth
	start := time.Now()
	for i := range n {
		if err := to.enqueue(numbered(i, 100)); err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("enqueueing %d records with nobody reading took %v", n, d)
	}
	got := to.readAll(t, n)
	if len(got) != n {
		t.Fatalf("read %d records, want %d", len(got), n)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("record %d carries %d: order lost", i, v)
		}
	}
	if f := to.failuresSeen(); len(f) != 0 {
		t.Errorf("failures %v with a worker that read everything", f)
	}
	// The queue is empty again: the next record goes straight to the ring.
	if err := to.enqueue(numbered(n, 100)); err != nil {
		t.Fatal(err)
	}
	if got := to.readAll(t, 1); len(got) != 1 || got[0] != n {
		t.Errorf("after draining: %v", got)
	}
}

// TestOutboxBound: the queue holds at most limit bytes; the record that
// would pass it fails the worker once, and nothing is taken after that.
func TestOutboxBound(t *testing.T) {
	const limit = 8 << 10
	to := newTestOutbox(t, limit, time.Minute)
	var err error
	sent := 0
	for ; sent < 1000; sent++ {
		if err = to.enqueue(numbered(sent, 100)); err != nil {
			break
		}
	}
	if !errors.Is(err, errQueueFull) {
		t.Fatalf("enqueue %d: %v, want errQueueFull", sent, err)
	}
	// The ring holds 4 KiB, the queue 8 KiB of 104-byte entries.
	if maxSent := (shm.MinCapacity + limit) / 100; sent > maxSent {
		t.Errorf("%d records taken before the queue was full, want at most %d", sent, maxSent)
	}
	if err := to.enqueue(numbered(0, 10)); !errors.Is(err, errWorkerGone) {
		t.Errorf("enqueue after the failure: %v, want errWorkerGone", err)
	}
	if f := to.failuresSeen(); len(f) != 1 || f[0] != reasonQueueFull {
		t.Errorf("failures %v, want one %s", f, reasonQueueFull)
	}
	if err := to.enqueue(make([]byte, to.ring.MaxRecord()+1)); !errors.Is(err, shm.ErrTooLarge) {
		t.Errorf("a record over the ring's MaxRecord: %v, want shm.ErrTooLarge", err)
	}
}

// TestOutboxStall: a ring that takes nothing for the stall timeout fails
// the worker (once, reason stalled); one that is read slowly does not.
func TestOutboxStall(t *testing.T) {
	const stall = 200 * time.Millisecond
	t.Run("nobody reads", func(t *testing.T) {
		to := newTestOutbox(t, 1<<20, stall)
		start := time.Now()
		for i := range 100 {
			if err := to.enqueue(numbered(i, 100)); err != nil {
				t.Fatalf("enqueue %d: %v", i, err)
			}
		}
		select {
		case <-to.failed:
		case <-time.After(10 * time.Second):
			t.Fatal("no failure after 10 s of a ring that nobody reads")
		}
		if d := time.Since(start); d < stall {
			t.Errorf("failed after %v, before the stall timeout %v", d, stall)
		}
		if f := to.failuresSeen(); len(f) != 1 || f[0] != reasonStalled {
			t.Errorf("failures %v, want one %s", f, reasonStalled)
		}
		if err := to.enqueue(numbered(0, 10)); !errors.Is(err, errWorkerGone) {
			t.Errorf("enqueue after the failure: %v, want errWorkerGone", err)
		}
	})
	t.Run("slow reader", func(t *testing.T) {
		to := newTestOutbox(t, 1<<20, stall)
		// Five rings' worth, read every stall/2: the ring is full most of
		// the time, for longer than the stall timeout in all, but never
		// takes nothing for that long.
		const n = 200
		for i := range n {
			if err := to.enqueue(numbered(i, 100)); err != nil {
				t.Fatalf("enqueue %d: %v", i, err)
			}
		}
		got := 0
		deadline := time.Now().Add(10 * time.Second)
		for got < n && time.Now().Before(deadline) {
			time.Sleep(stall / 2)
			k, _ := to.cons.Read(func([]byte) {})
			got += k
		}
		if got != n {
			t.Errorf("read %d records, want %d", got, n)
		}
		if f := to.failuresSeen(); len(f) != 0 {
			t.Errorf("failures %v with a reader that makes progress", f)
		}
	})
}

// TestOutboxCloseWhileFull: close returns promptly while the drainer waits
// for room in a ring nobody reads.
func TestOutboxCloseWhileFull(t *testing.T) {
	to := newTestOutbox(t, 1<<20, time.Minute)
	for i := range 100 {
		if err := to.enqueue(numbered(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // let the drainer reach the full ring
	start := time.Now()
	to.closeOnce()
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("close took %v", d)
	}
	if err := to.enqueue(numbered(0, 10)); !errors.Is(err, errWorkerGone) {
		t.Errorf("enqueue after close: %v, want errWorkerGone", err)
	}
}

// TestInProcessWorkerStallStopsTheAgent: the in-process worker cannot be
// killed alone, so one that stops taking its records stops the agent,
// whose Run returns the reason.
func TestInProcessWorkerStallStopsTheAgent(t *testing.T) {
	cfg := Config{
		Workers: 1, Loops: 1, Socket: filepath.Join(t.TempDir(), "agent.sock"),
		RingSize: shm.MinCapacity, StallTimeout: 200 * time.Millisecond, ShutdownGrace: time.Second,
		InProcess: func(ctx context.Context, id int, rings *link.Rings) error {
			p := rings.Loop(0).Producer()
			if err := p.Write(nodemsg.AppendOpened(nil, "c1", "", "127.0.0.1:1", "", "json", 0, 0), time.Second); err != nil {
				return err
			}
			// Publishes the agent answers with Done records, which this
			// worker never reads.
			for i := uint64(1); i <= 2000 && ctx.Err() == nil; i++ {
				if err := p.Write(nodemsg.AppendPublish(nil, i, "news", "c1", false, []byte("1")), time.Second); err != nil {
					return err
				}
			}
			<-ctx.Done()
			return nil
		},
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), reasonStalled) || ctx.Err() != nil {
		t.Fatalf("Run: %v (context %v), want the agent stopped by a stalled worker", err, ctx.Err())
	}
	if f := a.Workers()[0].failures; f != [len(failureReasons)]int{1, 0} {
		t.Errorf("failures by reason %v, want one %s", f, reasonStalled)
	}
}

// TestOutboxLetsGoOfABurst: once a burst larger than keepBytes has been
// drained, the outbox keeps no buffer of that size.
func TestOutboxLetsGoOfABurst(t *testing.T) {
	to := newTestOutbox(t, 1<<20, time.Minute)
	const n = 2000 // 2000 × 100 bytes: three times keepBytes
	for i := range n {
		if err := to.enqueue(numbered(i, 100)); err != nil {
			t.Fatalf("enqueue %d: %v", i, err)
		}
	}
	if got := to.readAll(t, n); len(got) != n {
		t.Fatalf("read %d records, want %d", len(got), n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		to.mu.Lock()
		to.outbox.mu.Lock()
		idle := !to.draining
		held := cap(to.queue) + cap(to.batch)
		to.outbox.mu.Unlock()
		to.mu.Unlock()
		if idle && held <= 2*keepBytes {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("drained outbox still holds %d bytes of buffers (draining %v)", held, !idle)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
