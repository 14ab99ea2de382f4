//go:build !race

package agent

import (
	"testing"
	"time"
)

// TestOutboxEnqueueAllocs: a record that finds room in the ring costs no
// allocation.
func TestOutboxEnqueueAllocs(t *testing.T) {
	to := newTestOutbox(t, 1<<20, time.Minute)
	rec := numbered(1, 100)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := to.enqueue(rec); err != nil {
			t.Fatal(err)
		}
		_, _ = to.cons.Read(func([]byte) {})
	})
	if allocs != 0 {
		t.Errorf("enqueue: %v allocations per record, want 0", allocs)
	}
}
