package proto

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// jsonSeeds are the FuzzDecodeJSON seeds written in the test.
var jsonSeeds = []string{
	`{"op":"ping"}`,
	`{"id":1,"op":"subscribe","channel":"news"}`,
	`{"id":"x","op":"publish","channel":"a.b","data":{"k":[1,"2",null]}}`,
	`{"op":"broadcast","data":null}`,
	`{"op":"auth","token":"eyJhbGciOi.e30.sig"}`,
}

// FuzzDecodeJSON feeds arbitrary bytes to the client decoder. The seed
// corpus lives in testdata/fuzz/FuzzDecodeJSON; add every crasher there.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := string(in)
		var m ClientMsg
		perr := DecodeJSON(in, &m)
		if string(in) != orig {
			t.Fatalf("DecodeJSON modified its input")
		}
		// Whatever comes out, a reply built from it must be valid JSON.
		if m.ID != nil {
			if len(m.ID) == 0 || len(m.ID) > MaxIDLen || !json.Valid(m.ID) {
				t.Fatalf("ID %q is not a valid short JSON value", m.ID)
			}
			if b := AppendAck(nil, m.ID); !json.Valid(b) {
				t.Fatalf("AppendAck output is not valid JSON: %s", b)
			}
		}
		if perr != nil {
			if perr.Code != CodeBadRequest {
				t.Fatalf("error code %q, want %q", perr.Code, CodeBadRequest)
			}
			if b := AppendError(nil, m.ID, perr); !json.Valid(b) {
				t.Fatalf("AppendError output is not valid JSON: %s", b)
			}
			return
		}
		if !json.Valid(in) {
			t.Fatalf("DecodeJSON accepted input that encoding/json rejects: %q", in)
		}
		switch m.Op {
		case OpUnknown:
			t.Fatalf("successful decode with OpUnknown")
		case OpSubscribe, OpUnsubscribe, OpPublish:
			if !ValidChannel(string(m.Channel)) {
				t.Fatalf("op %v with invalid channel %q", m.Op, m.Channel)
			}
		case OpAuth:
			if len(m.Token) == 0 {
				t.Fatalf("auth without token")
			}
		}
		if (m.Op == OpPublish || m.Op == OpBroadcast) != (m.Data != nil) {
			t.Fatalf("op %v with data %q (nil %v)", m.Op, m.Data, m.Data == nil)
		}
		if m.Data != nil && !json.Valid(m.Data) {
			t.Fatalf("Data is not valid JSON: %q", m.Data)
		}
		if m.Data != nil {
			channel := string(m.Channel) // "" for a broadcast
			env := AppendMessage(nil, channel, "k3j2h1", m.Data)
			if !json.Valid(env) {
				t.Fatalf("AppendMessage output is not valid JSON: %q", env)
			}
		}
	})
}

// FuzzDecodeJSONReference compares DecodeJSON with the sonic-based decoder
// it replaced (decodeJSONReference) on every input: the same canned error
// and, field by field, the same message. Its corpus lives in
// testdata/fuzz/FuzzDecodeJSONReference; it is also seeded with
// FuzzDecodeJSON's corpus and the table of TestDecodeJSON.
//
// One divergence is intended. Sonic checks the escape sequences of a long
// string that it skips (data, id, unknown keys, and every value of the
// wrong type) only in some positions, so it accepts some input that is not
// JSON, such as {"op":"ping","x":"\q<28 or more bytes>"}, or reports it as
// a bad id, bad data or a field of the wrong type. DecodeJSON checks every
// escape and answers invalid JSON: for input that encoding/json rejects and
// that holds an invalid escape sequence, errBadJSON is accepted whatever
// the reference says.
func FuzzDecodeJSONReference(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	for _, tt := range decodeJSONCases() {
		f.Add([]byte(tt.in))
	}
	for _, s := range referenceSeeds() {
		f.Add([]byte(s))
	}
	for _, b := range corpus(f, "FuzzDecodeJSON") {
		f.Add(b)
	}
	for _, b := range binarySeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got, want ClientMsg
		gerr := DecodeJSON(in, &got)
		werr := decodeJSONReference(in, &want)
		diff := diffDecode(gerr, &got, werr, &want)
		if diff == "" {
			return
		}
		if gerr == errBadJSON && diffDecode(gerr, &got, errBadJSON, &ClientMsg{}) == "" {
			if fixed := correctUTF8(in); !json.Valid(fixed) && hasBadEscape(fixed) {
				return // the intended divergence
			}
		}
		t.Fatalf("DecodeJSON(%q) differs from the reference: %s", in, diff)
	})
}

// FuzzDecodeBinaryReference compares DecodeBinary with the copying decoder
// it replaced on every input. One divergence is intended: the reference
// checked JSON data with sonic's Valid, which reads past the end of the
// frame (TestBugBinaryDataReadPastEnd); it gets its input followed by zero
// bytes, where it answers as DecodeBinary does.
func FuzzDecodeBinaryReference(f *testing.F) {
	for _, b := range binarySeeds(f) {
		f.Add(b)
	}
	for _, b := range corpus(f, "FuzzDecodeBinary") {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var got, want ClientMsg
		gerr := DecodeBinary(in, &got)
		werr := decodeBinaryReference(zeroPadded(in), &want)
		if diff := diffDecode(gerr, &got, werr, &want); diff != "" {
			t.Fatalf("DecodeBinary(%x) differs from the reference: %s", in, diff)
		}
	})
}

// FuzzValidJSON checks that validJSON, which DecodeBinary uses on data
// flagged as JSON, agrees with ValidRaw on every input (made deterministic:
// see zeroPadded).
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2.5e3,"x\u00e9",true,false,null]}`, ` 1 `, `"\q"`, `"\\q"`, "\"\x01\"", `[1,]`, `01`, "\"\xff\"", ``, ` `} {
		f.Add([]byte(s))
	}
	for _, s := range referenceSeeds() {
		f.Add([]byte(s))
	}
	for _, tt := range decodeJSONCases() {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if got, want := validJSON(in), ValidRaw(zeroPadded(in)); got != want {
			t.Fatalf("validJSON(%q) = %v, ValidRaw = %v", in, got, want)
		}
	})
}

// diffDecode describes how two decode results differ, "" when they do not:
// the same canned error, and the same fields (ID and Data also the same
// nil-ness).
func diffDecode(gerr *Error, got *ClientMsg, werr *Error, want *ClientMsg) string {
	var d []string
	if gerr != werr {
		d = append(d, fmt.Sprintf("error %v, want %v", gerr, werr))
	}
	if got.Op != want.Op {
		d = append(d, fmt.Sprintf("Op %v, want %v", got.Op, want.Op))
	}
	if !bytes.Equal(got.ID, want.ID) || (got.ID == nil) != (want.ID == nil) {
		d = append(d, fmt.Sprintf("ID %q, want %q", got.ID, want.ID))
	}
	if !bytes.Equal(got.Channel, want.Channel) {
		d = append(d, fmt.Sprintf("Channel %q, want %q", got.Channel, want.Channel))
	}
	if !bytes.Equal(got.Data, want.Data) || (got.Data == nil) != (want.Data == nil) {
		d = append(d, fmt.Sprintf("Data %.80q (nil %v), want %.80q (nil %v)", got.Data, got.Data == nil, want.Data, want.Data == nil))
	}
	if !bytes.Equal(got.Token, want.Token) {
		d = append(d, fmt.Sprintf("Token %q, want %q", got.Token, want.Token))
	}
	if got.Opaque != want.Opaque {
		d = append(d, fmt.Sprintf("Opaque %v, want %v", got.Opaque, want.Opaque))
	}
	return strings.Join(d, "; ")
}

// hasBadEscape reports whether a backslash inside a string of b does not
// start a valid escape sequence. Strings are found by their quotes, which
// is exact for JSON and a guess for anything else.
func hasBadEscape(b []byte) bool {
	in := false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case !in:
			in = c == '"'
		case c == '"':
			in = false
		case c == '\\':
			n := escapeLen(b, i)
			if n == 0 {
				return i+1 < len(b) // a backslash at the end is a truncation
			}
			i += n - 1
		}
	}
	return false
}

// corpus returns the inputs of a fuzz target's committed corpus.
func corpus(f *testing.F, target string) [][]byte {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no corpus for %s: %v", target, err)
	}
	var out [][]byte
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
			f.Fatalf("%s: not a one-[]byte corpus file", name)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			f.Fatalf("%s: %v", name, err)
		}
		out = append(out, []byte(s))
	}
	return out
}

// binarySeeds returns the payloads of the binary test vectors and the
// FuzzDecodeBinary seeds.
func binarySeeds(f *testing.F) [][]byte {
	f.Helper()
	b, err := os.ReadFile("testdata/binary_vectors.json")
	if err != nil {
		f.Fatal(err)
	}
	var vf struct{ Client, Server, Invalid []binVector }
	if err := json.Unmarshal(b, &vf); err != nil {
		f.Fatal(err)
	}
	hexes := []string{"8101046e657773", "83ac0201617b2278223a317d", "c302016100ff", "8505616263", "06", "81ffffffffffffffffff01", "03ff"}
	for _, v := range append(append(vf.Client, vf.Server...), vf.Invalid...) {
		hexes = append(hexes, v.Hex)
	}
	var out [][]byte
	for _, h := range hexes {
		p, err := hex.DecodeString(h)
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// referenceSeeds are inputs around the edges of the JSON decoder: escapes
// in keys and values, duplicate and case-folded keys, unknown keys, nested
// values at the depth limit, numbers, whitespace, invalid UTF-8.
func referenceSeeds() []string {
	r := strings.Repeat
	long := r("a", 40)
	seeds := []string{
		// Escapes in keys and values.
		`{"op":"pub\u006cish","channel":"c","data":1}`,
		`{"\u006fp":"ping"}`,
		`{"o\u0070":"auth","t\u006Fken":"a\/b\"c\\d\b\f\n\r\t"}`,
		`{"op":"subscribe","channel":"\u0041\u0042c"}`,
		`{"op":"subscribe","channel":"` + r(`\u0041`, 128) + `"}`,
		`{"op":"subscribe","channel":"` + r(`\u0041`, 129) + `"}`,
		`{"op":"subscribe","channel":"a\/b"}`,
		`{"op":"auth","token":"\ud83d\ude00\ud800\u0041\udc00\ud800\ud800\udc00"}`,
		`{"op":"auth","token":"\u0000"}`,
		`{"op":"auth","token":"` + r("t", 200) + `\n"}`,
		`{"op":"\u0070ing\u0000"}`,
		`{"op":"` + r(`\u0070`, 20) + `"}`,
		`{"op":"ping","x":"\q"}`,
		`{"op":"ping","x":"\q` + long + `"}`,
		`{"op":"ping","x":"` + long + `\u12"}`,
		`{"id":"\q` + long + `","op":"ping"}`,
		`{"id":1,"op":5,"x":"\q` + long + `"}`,
		`{"id":1,"op":"publish","channel":"c","data":"\u00zz` + long + `"}`,
		// Case-folded and duplicate keys.
		`{"OP":"ping","Id":1,"iD":2}`,
		`{"op":"auth","TOKEN":"x","to\u212aen":"y"}`,
		"{\"\u0130d\":1,\"op\":\"ping\"}",
		"{\"\u0131d\":1,\"op\":\"ping\",\"tok\u017fen\":5}",
		`{"op":"ping","op":"subscribe","channel":"c"}`,
		`{"op":"ping","op":null}`,
		`{"op":"subscribe","channel":"c","channel":null}`,
		`{"op":"subscribe","channel":null,"Channel":"c"}`,
		`{"op":"auth","token":"t","token":null}`,
		`{"op":"publish","channel":"c","data":1,"data":null}`,
		`{"id":1,"id":null,"op":"ping"}`,
		`{"id":"x","op":5,"id":2}`,
		`{"id":1,"op":"ping","op":5}`,
		// Unknown keys and nested values.
		`{"op":"ping","x":{"a":[1,{"b":null}],"c":"d"},"y":[],"z":{}}`,
		`{"op":"ping","x":{"a":1,}}`,
		`{"op":"ping","x":[1,]}`,
		`{"op":"ping","x":{"a"}}`,
		`{"id":7,"op":{"a":[1,2]}}`,
		`{"id":7,"op":"ping","token":[]}`,
		`{"id":7,"op":"ping","channel":{}}`,
		`{"op":"ping","x":` + r("[", 4096) + r("]", 4096) + `}`,
		`{"op":"ping","x":` + r("[", 4097) + r("]", 4097) + `}`,
		`{"op":"ping","x":` + r("[", 4096) + "1,2" + r("]", 4096) + `}`,
		`{"op":"ping","x":` + r("[", 4095) + "{}" + r("]", 4095) + `}`,
		`{"op":"ping","x":` + r("[", 4095) + `{"a":1}` + r("]", 4095) + `}`,
		`{"op":"publish","channel":"c","data":` + r(`{"a":`, 4095) + "1" + r("}", 4095) + `}`,
		`{"op":"publish","channel":"c","data":` + r(`{"a":`, 4096) + "1" + r("}", 4096) + `}`,
		`{"id":1,"op":` + r("[", 4097) + r("]", 4097) + `}`,
		// Numbers.
		`{"id":-0,"op":"ping"}`,
		`{"id":1E+2,"op":"ping"}`,
		`{"id":-1.5e-3,"op":"ping"}`,
		`{"id":123456789012345678901234567890,"op":"ping"}`,
		`{"id":` + r("9", 64) + `,"op":"ping"}`,
		`{"id":01,"op":"ping"}`,
		`{"id":1.,"op":"ping"}`,
		`{"id":.5,"op":"ping"}`,
		`{"id":1e,"op":"ping"}`,
		`{"id":-,"op":"ping"}`,
		`{"op":"ping","x":[1true]}`,
		// Whitespace and the top level.
		" \t\r\n{ \"op\" :\t\"ping\" ,\n\"id\"\r:\n1 }\t\r\n ",
		"\v{\"op\":\"ping\"}",
		"{\"op\":\"ping\"}\x00",
		` null `, `nul`, `nullx`, `{}`, `{ }`, `[]`, `1`, `"x"`, `true`, `{`, `}`,
		// Not UTF-8.
		"{\"op\":\"auth\",\"token\":\"a\xffb\xe2\x82c\"}",
		"{\"id\":\"\xed\xa0\x80\",\"op\":\"ping\"}",
		"{\"op\":\"publish\",\"channel\":\"c\",\"data\":\"\xc0\x80\"}",
		"{\"op\":\"ping\",\"\xff\":1}",
		"{\"op\":\"ping\"}\xff",
		"{\"op\":\"broadcast\",\"data\":\"\\q" + r("\x98", 12) + "\"}",
	}
	return seeds
}
