package proto

// Regression test for a defect found by FuzzValidJSON (seed
// testdata/fuzz/FuzzValidJSON/19bfb2278ecfafd1): sonic's Valid, which
// DecodeBinary used through ValidRaw, reads past the end of its input.

import (
	"encoding/json"
	"testing"
)

// Was: a binary publish whose JSON data is a truncated literal ("n", "tr",
// "fal") was accepted when the bytes after the frame's payload in the read
// buffer (the next frame's header and mask key, which the client chooses)
// completed the literal: sonic's Valid compares four bytes from where a
// literal starts, whatever the slice's length, and found "null". JSON
// subscribers then received {"op":"message",...,"data":n}, which is not
// JSON. DecodeBinary now checks data with validJSON, which stops at the
// slice's end.
func TestBugBinaryDataReadPastEnd(t *testing.T) {
	for _, lit := range []string{"null", "true", "false"} {
		for n := 1; n < len(lit); n++ {
			buf := append([]byte{BinPublish, 1, 'c'}, lit...)
			frame := buf[:3+n] // the payload ends inside the literal
			var m ClientMsg
			if err := DecodeBinary(frame, &m); err == nil {
				t.Errorf("DecodeBinary accepted data %q (followed by %q in memory)", m.Data, buf[3+n:])
				if out := AppendMessageAny(nil, "c", "k1", m.Data, m.Opaque); !json.Valid(out) {
					t.Errorf("subscribers would get %s", out)
				}
			}
			if validJSON(frame[3:]) {
				t.Errorf("validJSON(%q) = true", frame[3:])
			}
		}
	}
}
