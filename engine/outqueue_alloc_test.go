//go:build !race

package engine

import (
	"strconv"
	"testing"
)

// TestFanoutSharedAllocs is TestFanoutAllocs for frames large enough to be
// queued by reference: delivering and flushing them allocates nothing
// either, once the loop's spare queues reached their steady number.
func TestFanoutSharedAllocs(t *testing.T) {
	for _, n := range []int{1, 100, -100} {
		direct := n < 0
		n = max(n, -n)
		t.Run(strconv.Itoa(n)+map[bool]string{true: "-direct"}[direct], func(t *testing.T) {
			fx := newFanoutFixture(t, n, 4096)
			if len(fx.frame) < sharedMin {
				t.Fatalf("frame of %d bytes is not shared", len(fx.frame))
			}
			fx.direct = direct
			for range 10 {
				fx.pass()
			}
			before := fx.written()
			if allocs := testing.AllocsPerRun(200, fx.pass); allocs != 0 {
				t.Errorf("deliver+flushDirty of a shared frame to %d subscribers: %v allocations per pass, want 0", n, allocs)
			}
			if got, want := fx.written()-before, 201*n*len(fx.frame); got != want {
				t.Errorf("wrote %d bytes, want %d", got, want)
			}
		})
	}
}
