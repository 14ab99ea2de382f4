//go:build !race

package shm

import "testing"

// TestPushPopAllocs proves that a record's way through the ring (write,
// publish, read, free) allocates nothing.
func TestPushPopAllocs(t *testing.T) {
	r := newTestRing(t, 1<<16)
	p, c := r.Producer(), r.Consumer()
	rec := make([]byte, 64)
	got := 0
	read := func(b []byte) { got += len(b) }
	round := func() {
		for range 8 {
			if err := p.TryWrite(rec); err != nil {
				t.Fatal(err)
			}
		}
		p.Flush()
		if _, err := c.Read(read); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Errorf("8 records through the ring: %v allocations, want 0", n)
	}
	if got != 1001*8*64 {
		t.Fatalf("read %d bytes, want %d", got, 1001*8*64)
	}
}
