//go:build !race

package proto

import (
	"encoding/hex"
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

// The decoders allocate nothing per message (STYLE.md: prove zero
// allocations with tests): fields point into the input or into the
// ClientMsg, which is reused as the engine reuses its loop's.
func TestDecodeJSONAllocs(t *testing.T) {
	data := `{"text":"` + strings.Repeat("x", 64) + `","n":[1,2.5,-3e2,true,false,null],"o":{"k":"\u00e9\n"}}`
	tests := []struct{ name, in string }{
		{"subscribe numeric id", `{"id":1,"op":"subscribe","channel":"room:lobby"}`},
		{"subscribe string id", `{"id":"req-1","op":"subscribe","channel":"room:lobby"}`},
		{"unsubscribe", `{"id":2,"op":"unsubscribe","channel":"room:lobby"}`},
		{"publish object data", `{"id":3,"op":"publish","channel":"room:lobby","data":` + data + `}`},
		{"publish string data", `{"id":"p-4","op":"publish","channel":"room:lobby","data":"` + strings.Repeat("y", 1000) + `"}`},
		{"publish non-ASCII data", `{"id":5,"op":"publish","channel":"c","data":"café ☕ ` + strings.Repeat("é", 100) + `"}`},
		{"broadcast", `{"id":6,"op":"broadcast","data":` + data + `}`},
		{"auth", `{"id":"a-7","op":"auth","token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"}`},
		{"ping", `{"op":"ping"}`},
		{"ping numeric id", `{"id":8,"op":"ping"}`},
		{"escaped op and channel", `{"id":9,"op":"pub\u006cish","channel":"room\u003alobby","data":1}`},
		{"escaped short token", `{"op":"auth","token":"a\/b"}`},
		{"case-folded keys", `{"ID":10,"Op":"subscribe","\u0043hannel":"c","to\u212Aen":"t"}`},
		{"unknown keys", `{"id":11,"op":"ping","extra":{"a":[1,{"b":"c"}]}}`},
		{"whitespace", " { \"id\" : 12 ,\n\t\"op\" : \"ping\" } "},
		{"error bad channel", `{"id":13,"op":"subscribe","channel":"a b"}`},
		{"error wrong type", `{"id":14,"op":"subscribe","channel":5}`},
		{"error invalid JSON", `{"id":15,"op":"ping"`},
		{"error deep nesting", `{"op":"ping","x":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`},
	}
	var m ClientMsg
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			want := DecodeJSON(in, &m)
			if !strings.HasPrefix(tt.name, "error") && want != nil {
				t.Fatalf("DecodeJSON: %v", want)
			}
			n := testing.AllocsPerRun(1000, func() {
				if err := DecodeJSON(in, &m); err != want {
					panic(err)
				}
			})
			if n != 0 {
				t.Errorf("DecodeJSON allocates %v times per message, want 0", n)
			}
		})
	}
}

func TestDecodeBinaryAllocs(t *testing.T) {
	tests := []struct{ name, hex string }{
		{"subscribe with id", "8101046e657773"},
		{"unsubscribe", "02046e657773"},
		{"publish JSON data, 2-byte id", "83ac0201617b2278223a317d"},
		{"publish opaque data", "c302016100ff"},
		{"broadcast JSON string", "0422686922"},
		{"auth", "8505616263"},
		{"ping", "06"},
		{"error truncated", "0104616263"},
	}
	var m ClientMsg
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := hex.DecodeString(tt.hex)
			if err != nil {
				t.Fatal(err)
			}
			want := DecodeBinary(in, &m)
			if !strings.HasPrefix(tt.name, "error") && want != nil {
				t.Fatalf("DecodeBinary: %v", want)
			}
			n := testing.AllocsPerRun(1000, func() {
				if err := DecodeBinary(in, &m); err != want {
					panic(err)
				}
			})
			if n != 0 {
				t.Errorf("DecodeBinary allocates %v times per message, want 0", n)
			}
		})
	}
}
