package proto

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeJSON feeds arbitrary bytes to the client decoder. The seed
// corpus lives in testdata/fuzz/FuzzDecodeJSON; add every crasher there.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"op":"ping"}`,
		`{"id":1,"op":"subscribe","channel":"news"}`,
		`{"id":"x","op":"publish","channel":"a.b","data":{"k":[1,"2",null]}}`,
		`{"op":"broadcast","data":null}`,
		`{"op":"auth","token":"eyJhbGciOi.e30.sig"}`,
	} {
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
			if !ValidChannel(m.Channel) {
				t.Fatalf("op %v with invalid channel %q", m.Op, m.Channel)
			}
		case OpAuth:
			if m.Token == "" {
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
			channel := m.Channel // "" for a broadcast
			env := AppendMessage(nil, channel, "k3j2h1", m.Data)
			if !json.Valid(env) {
				t.Fatalf("AppendMessage output is not valid JSON: %q", env)
			}
		}
	})
}
