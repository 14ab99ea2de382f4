package proto

// Regression test for a defect found by FuzzDecodeJSON (seeds in
// testdata/fuzz/FuzzDecodeJSON: ea3377a4c5775aa0, crasher-bad-escape-
// invalid-utf8 and crasher-long-string-bad-escape): the decoders accepted
// data with invalid escapes, which then reached subscribers verbatim.

import (
	"encoding/json"
	"strings"
	"testing"
)

// Was: the package promises that a publisher's data "is validated once by
// the decoder and then copied verbatim", but sonic (v1.15.5, JIT on amd64)
// does not check escape sequences inside a string of about 32 bytes or more
// (counted after invalid UTF-8 is replaced) that it skips into a raw message, and sonic's Valid (used by DecodeBinary for
// data flagged as JSON) checks no escapes or control bytes at any length.
// So {"op":"publish","channel":"c","data":"\q<30 more bytes>"} is accepted
// and fanned out verbatim: every JSON subscriber receives an envelope its
// JSON parser rejects. A long string id with a bad escape likewise comes
// back verbatim in the ack. Now Data and string ids pass strictStrings, and
// DecodeBinary's JSON data passes ValidRaw.
func TestBugInvalidEscapesInRawValues(t *testing.T) {
	long := strings.Repeat("a", 31)
	for _, in := range []string{
		`{"op":"publish","channel":"c","data":"\q` + long + `"}`,
		`{"op":"publish","channel":"c","data":"\0` + long + `"}`,
		`{"op":"publish","channel":"c","data":{"k":"\x` + long + `"}}`,
		`{"op":"broadcast","data":"\q` + long + `"}`,
		`{"op":"broadcast","dAtA":"\00000000000000000000000000000"}`,
		`{"id":"\q` + long + `","op":"ping"}`,
	} {
		var m ClientMsg
		if err := DecodeJSON([]byte(in), &m); err == nil {
			if m.Data != nil && !json.Valid(m.Data) {
				t.Errorf("DecodeJSON(%s) accepted invalid JSON data %s", in, m.Data)
			}
			if m.ID != nil && !json.Valid(m.ID) {
				t.Errorf("DecodeJSON(%s) accepted invalid JSON id %s", in, m.ID)
			}
		}
	}
	for _, data := range []string{`"\q"`, `"\0"`, `"\u12"`, "\"\x01\"", `["\z"]`} {
		var m ClientMsg
		in := append([]byte{BinPublish, 1, 'c'}, data...)
		if err := DecodeBinary(in, &m); err == nil && !m.Opaque && !json.Valid(m.Data) {
			t.Errorf("DecodeBinary accepted data %q flagged as JSON", data)
		}
	}
}
