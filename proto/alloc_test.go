//go:build !race

package proto

import (
	"strings"
	"testing"
)

// The encoders on the fan-out and reply paths must not allocate when dst
// has room (STYLE.md: prove zero allocations with tests). AppendWelcome
// and AppendError escape through sonic and do allocate; they run once per
// connection and on errors only.
func TestAppendAllocs(t *testing.T) {
	data := []byte(`{"text":"` + strings.Repeat("x", 64) + `"}`)
	id := []byte(`"req-123"`)
	buf := make([]byte, 0, 1024)
	tests := []struct {
		name string
		fn   func()
	}{
		{"AppendMessage", func() { buf = AppendMessage(buf[:0], "room:lobby", "k3j2h1x", data) }},
		{"AppendMessage broadcast", func() { buf = AppendMessage(buf[:0], "", "k3j2h1x", data) }},
		{"AppendAck", func() { buf = AppendAck(buf[:0], id) }},
		{"AppendPong", func() { buf = AppendPong(buf[:0]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(1000, tt.fn); n != 0 {
				t.Errorf("%s allocates %v times per call into a pre-sized buffer, want 0", tt.name, n)
			}
		})
	}
}
