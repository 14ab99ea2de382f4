package proto

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/bytedance/sonic/encoder"
)

// TestAppendJSONString: the plain-ASCII shortcut and the encoder give the
// same text, and every result decodes back to its string.
func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "k3j2h1x", "room:lobby-1_2.3", "a b~!", `q"uote`, `back\slash`, "<b>&amp;</b>",
		"tab\there", "nul\x00", "del\x7f", "é", "\u2028", "\xff"} {
		got := appendJSONString(nil, s)
		var want []byte
		if err := encoder.EncodeInto(&want, s, encoder.EscapeHTML); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, encoder gives %s", s, got, want)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || (back != s && utf8.ValidString(s)) {
			t.Errorf("appendJSONString(%q) = %s decodes to %q, %v", s, got, back, err)
		}
	}
}

// TestAppendWelcomeAllocs: the welcome of a connection allocates nothing.
func TestAppendWelcomeAllocs(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(200, func() {
		buf = AppendWelcome(buf[:0], "k3j2h1x9", "node1234", "json")
	}); n != 0 {
		t.Errorf("AppendWelcome: %v allocations, want 0", n)
	}
}
