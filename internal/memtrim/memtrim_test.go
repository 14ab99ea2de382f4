package memtrim

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

var sink [][]byte

// burst allocates n bytes in 64 KiB pieces, all garbage once it returns.
func burst(n int) {
	for i := 0; i < n>>16; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
}

func released() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// newTrimmer returns a Trimmer after a collection, so that the live heap
// it reads (measured at the last collection) is not an earlier test's:
// "live/4" decides when a trim is due.
func newTrimmer() *Trimmer {
	runtime.GC()
	return New()
}

func TestTrimAfterBurstThenQuiet(t *testing.T) {
	tr := newTrimmer()
	tr.Quiet = 2 * time.Second
	burst(96 << 20)
	// The burst itself: far above the quiet rate.
	if tr.Check(time.Second) {
		t.Fatal("trimmed right after a burst")
	}
	before := released()
	if tr.Check(time.Second) {
		t.Fatal("trimmed after 1 s of quiet; Quiet is 2 s")
	}
	if !tr.Check(time.Second) {
		t.Fatal("not trimmed after 2 s of quiet following a 96 MiB burst")
	}
	if tr.Trims() != 1 {
		t.Fatalf("Trims() = %d, want 1", tr.Trims())
	}
	if got := released() - before; got < 32<<20 {
		t.Fatalf("the trim released %d bytes, want at least 32 MiB of the burst's garbage", got)
	}
	// No new burst: quiet alone does not trim again.
	for i := 0; i < 5; i++ {
		if tr.Check(time.Second) {
			t.Fatal("trimmed again without a new burst")
		}
	}
}

func TestNoTrimWhileBusy(t *testing.T) {
	tr := newTrimmer()
	tr.Quiet = time.Second
	for i := 0; i < 5; i++ {
		burst(8 << 20) // 8 MiB a "second": busy
		if tr.Check(time.Second) {
			t.Fatal("trimmed a busy process")
		}
	}
}

// TestNoTrimAfterSmallBurst: under 1 MiB allocated, even an idle process
// is not trimmed; under MinBurst, a quiet one is not.
func TestNoTrimAfterSmallBurst(t *testing.T) {
	tr := newTrimmer()
	tr.Quiet = time.Second
	burst(512 << 10)
	for i := 0; i < 5; i++ {
		if tr.Check(time.Second) {
			t.Fatal("trimmed an idle process after a 512 KiB burst")
		}
	}
	for i := 0; i < 5; i++ {
		burst(128 << 10) // 128 KiB a second: quiet, not idle; 1.1 MiB in all
		if tr.Check(time.Second) {
			t.Fatalf("trimmed a quiet process after 1.1 MiB; MinBurst is %d MiB", tr.MinBurst>>20)
		}
	}
}

// TestTrimUnderSlowAllocation: a process allocating below the quiet rate
// (a node under a steady, slow churn) is trimmed each time what
// it allocated since the last trim reaches MinBurst (the default), not
// only after a large burst.
func TestTrimUnderSlowAllocation(t *testing.T) {
	tr := newTrimmer()
	for i := 0; i < 40; i++ {
		burst(512 << 10) // 512 KiB a "second": quiet
		tr.Check(time.Second)
	}
	if n := tr.Trims(); n < 2 {
		t.Fatalf("%d trims while 20 MiB were allocated at 512 KiB/s, want 2 or more", n)
	}
}

// TestNoTrimWhileConnectionsGrow: a process allocating slowly while its
// connections grow (a connect storm) is not trimmed until they stop
// growing; then it is, once.
func TestNoTrimWhileConnectionsGrow(t *testing.T) {
	tr := newTrimmer()
	var conns uint64
	tr.Count = func() uint64 { return conns }
	for i := 0; i < 40; i++ {
		burst(512 << 10)
		conns += 100 // ~18,000 connections a worker at the end of a million's storm
		if tr.Check(time.Second) {
			t.Fatalf("trimmed at second %d while the connections grew (%d)", i, conns)
		}
	}
	if !trimmedWithin(tr, 5) {
		t.Fatal("not trimmed within 5 s after the connections stopped growing")
	}
}

// trimmedWithin reports whether tr trims within n checks a second apart
// with nothing allocated.
func trimmedWithin(tr *Trimmer, n int) bool {
	for range n {
		if tr.Check(time.Second) {
			return true
		}
	}
	return false
}

// TestTrimUnderLevelChurn: connections that leave and come back keep the
// count level (with a dip of a few), so the slow allocation of a churn is
// trimmed as without Count.
func TestTrimUnderLevelChurn(t *testing.T) {
	tr := newTrimmer()
	var conns uint64
	tr.Count = func() uint64 { return conns }
	for i := 0; i < 40; i++ {
		burst(512 << 10)
		conns = uint64(18000 - 20*(i%2)) // 20 closed, not yet back, every other second
		tr.Check(time.Second)
	}
	if n := tr.Trims(); n < 2 {
		t.Fatalf("%d trims in a level churn while 20 MiB were allocated at 512 KiB/s, want 2 or more", n)
	}
}

var ballast [][]byte

// TestTrimWhenIdleAfterSlowChurn: a process with a large live heap whose
// slow allocation stops before a quarter of it was allocated is trimmed
// once it has been idle for Quiet, not left holding that garbage.
func TestTrimWhenIdleAfterSlowChurn(t *testing.T) {
	for range 64 {
		ballast = append(ballast, make([]byte, 1<<20)) // 64 MiB live: a quarter is 16 MiB
	}
	defer func() { ballast = nil }()
	tr := newTrimmer() // the ballast is live
	for range 4 {
		burst(512 << 10) // 2 MiB at 512 KiB/s: quiet, not idle; under MinBurst
		if tr.Check(time.Second) {
			t.Fatal("trimmed before a quarter of the live heap was allocated")
		}
	}
	if !trimmedWithin(tr, 5) {
		t.Fatal("not trimmed within 5 s of idle after 2 MiB of slow allocation")
	}
}
