// Package memtrim gives a process's free memory back to the operating
// system once a burst of allocation is over.
//
// Go's runtime keeps the pages a burst freed, up to about twice the live
// heap (GOGC=100 lets the heap grow to that before collecting, and the
// background scavenger keeps a tenth more). A node that has just accepted
// a storm of connections, TLS handshakes above all, has made far more
// garbage than it keeps, and its resident memory stays near the peak while
// its connections sit idle. A node under a slow, steady churn (clients
// leaving and coming back) allocates little per second, so its collector
// runs seldom, and the garbage it keeps between collections climbs to the
// same height. Trimmer watches the allocation counter: when a process has
// allocated at least MinBurst and a quarter of its live heap since the
// last trim, and allocates next to nothing for Quiet, it runs
// debug.FreeOSMemory (a collection, then every free page returned). A
// busy process is never trimmed. A trim costs a collection, and the
// quarter-of-the-live-heap rule keeps trims to at most four for each
// collection the runtime makes anyway (GOGC=100 collects after allocating
// as much as is live); a quiet process allocates under 1 MiB/s, so the
// trims of a worker with 16 MB live come at most every 4 s, and in a churn
// of 150 reconnections a second (~250 KB/s) every ~17 s. When such a
// churn stops, up to a quarter of the live heap may have been allocated
// since the last trim: a process idle for Quiet (under 64 KiB/s) is
// trimmed once 1 MiB was allocated (an idle worker with 15,000
// connections allocated 0–51 KB/s: a trim every 20 s or more).
//
// A connect storm (a node starting, or its clients coming back after a
// restart) also allocates slowly per second, but for minutes, and what it
// allocates is mostly kept: trimming it is a full collection every few
// seconds that gives back pages the next connections take again. With
// Count set, a process whose connections grow is not quiet: it is trimmed
// once they stop growing. A churn keeps the count level and is trimmed as
// above.
package memtrim

import (
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Defaults of Trimmer.
const (
	DefaultQuiet    = 3 * time.Second
	DefaultMinBurst = 4 << 20
	// quietRate is the most a process allocates per second and still
	// counts as quiet.
	quietRate = 1 << 20
	// idleRate is the most a process allocates per second and still
	// counts as idle; idleBurst is what it must have allocated since the
	// last trim to be trimmed then.
	idleRate  = 64 << 10
	idleBurst = 1 << 20
)

// Trimmer decides when to trim (see the package doc).
type Trimmer struct {
	Quiet    time.Duration // allocation next to nothing for this long
	MinBurst uint64        // at least this allocated since the last trim
	// Count, if set, returns the connections the process holds; while
	// they grow the process is not quiet (see the package doc).
	Count func() uint64

	trims      atomic.Uint64
	lastTrim   uint64 // allocation counter at the last trim (or at start)
	lastAlloc  uint64 // allocation counter at the last Check
	quietFor   time.Duration
	quietCount uint64 // Count when the quiet time began
	idleFor    time.Duration
	samples    [2]metrics.Sample
}

// New returns a Trimmer with the defaults, counting from now.
func New() *Trimmer {
	t := &Trimmer{Quiet: DefaultQuiet, MinBurst: DefaultMinBurst}
	t.samples[0].Name = "/gc/heap/allocs:bytes"
	t.samples[1].Name = "/gc/heap/live:bytes"
	alloc, _ := t.read()
	t.lastTrim, t.lastAlloc = alloc, alloc
	return t
}

// Trims returns how many times the process was trimmed.
func (t *Trimmer) Trims() uint64 { return t.trims.Load() }

func (t *Trimmer) read() (alloc, live uint64) {
	metrics.Read(t.samples[:])
	return t.samples[0].Value.Uint64(), t.samples[1].Value.Uint64()
}

// Check takes one sample, elapsed after the previous one, and trims when
// it is time; it reports whether it trimmed. One goroutine calls it.
func (t *Trimmer) Check(elapsed time.Duration) bool {
	alloc, live := t.read()
	rate := float64(alloc-t.lastAlloc) / elapsed.Seconds()
	t.lastAlloc = alloc
	var count uint64
	if t.Count != nil {
		count = t.Count()
	}
	t.idleFor += elapsed
	if rate > idleRate {
		t.idleFor = 0
	}
	if rate > quietRate || t.growing(count) {
		t.quietFor, t.quietCount = 0, count
		return false
	}
	if t.quietFor == 0 {
		t.quietCount = count
	}
	t.quietFor += elapsed
	burst := alloc - t.lastTrim
	need := max(t.MinBurst, live/4)
	if t.idleFor >= t.Quiet {
		need = min(need, idleBurst) // idle: the last of a slow churn goes too
	}
	if t.quietFor < t.Quiet || burst < need {
		return false
	}
	debug.FreeOSMemory()
	t.trims.Add(1)
	t.lastTrim, _ = t.read()
	t.lastAlloc, t.quietFor, t.idleFor = t.lastTrim, 0, 0
	return true
}

// growing reports whether count rose, since the quiet time began, by more
// than a churn's noise: 32 connections and a 256th of those held (70 for
// 10,000). A million clients connecting to 56 workers in three minutes
// add ~100 a second to each.
func (t *Trimmer) growing(count uint64) bool {
	return t.quietFor > 0 && count > t.quietCount+t.quietCount/256+32
}

// Run calls Check every interval until done is closed, and onTrim (if
// not nil) after each trim.
func (t *Trimmer) Run(done <-chan struct{}, interval time.Duration, onTrim func(trims uint64)) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-tk.C:
			if t.Check(interval) && onTrim != nil {
				onTrim(t.Trims())
			}
		case <-done:
			return
		}
	}
}
