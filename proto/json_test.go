package proto

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// decodeJSONCase is one DecodeJSON input with its expected result.
type decodeJSONCase struct {
	name    string
	in      string
	want    ClientMsg
	wantErr *Error // one of the canned errors, compared by identity
}

// decodeJSONCases are the table of TestDecodeJSON; FuzzDecodeJSONReference
// is seeded with their inputs too.
func decodeJSONCases() []decodeJSONCase {
	id64 := `"` + strings.Repeat("i", MaxIDLen-2) + `"` // 64 bytes on the wire
	id65 := `"` + strings.Repeat("i", MaxIDLen-1) + `"` // 65 bytes on the wire
	ch128 := strings.Repeat("c", MaxChannelLen)
	ch129 := strings.Repeat("c", MaxChannelLen+1)
	ch10k := strings.Repeat("c", 10000)

	return []decodeJSONCase{
		// Every op, well formed.
		{name: "subscribe", in: `{"op":"subscribe","channel":"news"}`,
			want: ClientMsg{Op: OpSubscribe, Channel: []byte("news")}},
		{name: "subscribe with numeric id", in: `{"id":1,"op":"subscribe","channel":"news"}`,
			want: ClientMsg{ID: []byte("1"), Op: OpSubscribe, Channel: []byte("news")}},
		{name: "unsubscribe", in: `{"id":"u-1","op":"unsubscribe","channel":"room:42"}`,
			want: ClientMsg{ID: []byte(`"u-1"`), Op: OpUnsubscribe, Channel: []byte("room:42")}},
		{name: "publish object", in: `{"id":7,"op":"publish","channel":"a.b","data":{"x":[1,2,{"y":null}]}}`,
			want: ClientMsg{ID: []byte("7"), Op: OpPublish, Channel: []byte("a.b"), Data: []byte(`{"x":[1,2,{"y":null}]}`)}},
		{name: "publish string", in: `{"op":"publish","channel":"a","data":"hi \"there\""}`,
			want: ClientMsg{Op: OpPublish, Channel: []byte("a"), Data: []byte(`"hi \"there\""`)}},
		{name: "publish data null is four bytes", in: `{"op":"publish","channel":"a","data":null}`,
			want: ClientMsg{Op: OpPublish, Channel: []byte("a"), Data: []byte("null")}},
		{name: "publish data whitespace trimmed", in: `{"op":"publish","channel":"a","data":  [1, 2]  }`,
			want: ClientMsg{Op: OpPublish, Channel: []byte("a"), Data: []byte("[1, 2]")}},
		{name: "publish data absent", in: `{"id":3,"op":"publish","channel":"a"}`,
			want: ClientMsg{ID: []byte("3"), Op: OpPublish, Channel: []byte("a")}, wantErr: errNoData},
		{name: "broadcast", in: `{"op":"broadcast","data":42}`,
			want: ClientMsg{Op: OpBroadcast, Data: []byte("42")}},
		{name: "broadcast data null", in: `{"op":"broadcast","data":null}`,
			want: ClientMsg{Op: OpBroadcast, Data: []byte("null")}},
		{name: "broadcast ignores channel", in: `{"op":"broadcast","channel":"x","data":true}`,
			want: ClientMsg{Op: OpBroadcast, Data: []byte("true")}},
		{name: "broadcast data absent", in: `{"op":"broadcast"}`,
			want: ClientMsg{Op: OpBroadcast}, wantErr: errNoData},
		{name: "auth", in: `{"id":"a","op":"auth","token":"eyJ.x.y"}`,
			want: ClientMsg{ID: []byte(`"a"`), Op: OpAuth, Token: []byte("eyJ.x.y")}},
		{name: "auth token empty", in: `{"op":"auth","token":""}`,
			want: ClientMsg{Op: OpAuth}, wantErr: errNoToken},
		{name: "auth token absent", in: `{"op":"auth"}`,
			want: ClientMsg{Op: OpAuth}, wantErr: errNoToken},
		{name: "auth token null", in: `{"op":"auth","token":null}`,
			want: ClientMsg{Op: OpAuth}, wantErr: errNoToken},
		{name: "auth token number", in: `{"op":"auth","token":5}`, wantErr: errBadJSON},
		{name: "ping", in: `{"op":"ping"}`, want: ClientMsg{Op: OpPing}},
		{name: "ping ignores other fields", in: `{"op":"ping","channel":"!!","data":1,"token":"t","extra":{}}`,
			want: ClientMsg{Op: OpPing}},
		{name: "whitespace around envelope", in: " \t\r\n{ \"op\" : \"ping\" } \n", want: ClientMsg{Op: OpPing}},

		// Ids.
		{name: "id zero", in: `{"id":0,"op":"ping"}`, want: ClientMsg{ID: []byte("0"), Op: OpPing}},
		{name: "id negative", in: `{"id":-12,"op":"ping"}`, want: ClientMsg{ID: []byte("-12"), Op: OpPing}},
		{name: "id float", in: `{"id":1.5e3,"op":"ping"}`, want: ClientMsg{ID: []byte("1.5e3"), Op: OpPing}},
		{name: "id huge exponent kept verbatim", in: `{"id":1e400,"op":"ping"}`, want: ClientMsg{ID: []byte("1e400"), Op: OpPing}},
		{name: "id string with escapes kept verbatim", in: `{"id":"a\"b\u00e9","op":"ping"}`,
			want: ClientMsg{ID: []byte(`"a\"b\u00e9"`), Op: OpPing}},
		{name: "id empty string", in: `{"id":"","op":"ping"}`, want: ClientMsg{ID: []byte(`""`), Op: OpPing}},
		{name: "id 64 bytes", in: `{"id":` + id64 + `,"op":"ping"}`, want: ClientMsg{ID: []byte(id64), Op: OpPing}},
		{name: "id 65 bytes", in: `{"id":` + id65 + `,"op":"ping"}`, wantErr: errBadID},
		{name: "id long number", in: `{"id":` + strings.Repeat("9", 65) + `,"op":"ping"}`, wantErr: errBadID},
		{name: "id true", in: `{"id":true,"op":"ping"}`, wantErr: errBadID},
		{name: "id false", in: `{"id":false,"op":"ping"}`, wantErr: errBadID},
		{name: "id null", in: `{"id":null,"op":"ping"}`, wantErr: errBadID},
		{name: "id object", in: `{"id":{"a":1},"op":"ping"}`, wantErr: errBadID},
		{name: "id array", in: `{"id":[1],"op":"ping"}`, wantErr: errBadID},
		{name: "id bare minus", in: `{"id":-,"op":"ping"}`, wantErr: errBadJSON},
		{name: "id kept on unknown op", in: `{"id":9,"op":"nope"}`,
			want: ClientMsg{ID: []byte("9"), Op: OpUnknown}, wantErr: errUnknownOp},
		{name: "id kept on a field of the wrong type", in: `{"id":7,"op":"subscribe","channel":5}`,
			want: ClientMsg{ID: []byte("7")}, wantErr: errBadField},
		{name: "id kept on op of the wrong type", in: `{"id":"x","op":5}`,
			want: ClientMsg{ID: []byte(`"x"`)}, wantErr: errBadField},
		{name: "unusable id on a field of the wrong type", in: `{"id":true,"op":5}`, wantErr: errBadJSON},
		{name: "id kept on bad channel", in: `{"id":"s","op":"subscribe","channel":"a b"}`,
			want: ClientMsg{ID: []byte(`"s"`), Op: OpSubscribe}, wantErr: errBadChannel},

		// Ops.
		{name: "op absent", in: `{"id":1}`, want: ClientMsg{ID: []byte("1")}, wantErr: errNoOp},
		{name: "op empty", in: `{"op":""}`, wantErr: errNoOp},
		{name: "op null", in: `{"op":null}`, wantErr: errNoOp},
		{name: "op unknown", in: `{"op":"teleport"}`, wantErr: errUnknownOp},
		{name: "op wrong case", in: `{"op":"PING"}`, wantErr: errUnknownOp},
		{name: "op welcome is server only", in: `{"op":"welcome"}`, wantErr: errUnknownOp},
		{name: "op number", in: `{"op":5}`, wantErr: errBadJSON},
		{name: "duplicate op last wins", in: `{"op":"ping","op":"subscribe","channel":"c"}`,
			want: ClientMsg{Op: OpSubscribe, Channel: []byte("c")}},

		// Channels.
		{name: "channel absent", in: `{"op":"subscribe"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errNoChannel},
		{name: "channel null", in: `{"op":"unsubscribe","channel":null}`, want: ClientMsg{Op: OpUnsubscribe}, wantErr: errNoChannel},
		{name: "channel absent on publish", in: `{"op":"publish","data":1}`, want: ClientMsg{Op: OpPublish}, wantErr: errNoChannel},
		{name: "channel empty", in: `{"op":"subscribe","channel":""}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel 128 bytes", in: `{"op":"subscribe","channel":"` + ch128 + `"}`,
			want: ClientMsg{Op: OpSubscribe, Channel: []byte(ch128)}},
		{name: "channel 129 bytes", in: `{"op":"subscribe","channel":"` + ch129 + `"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel 10000 bytes", in: `{"op":"publish","channel":"` + ch10k + `","data":1}`, want: ClientMsg{Op: OpPublish}, wantErr: errBadChannel},
		{name: "channel with space", in: `{"op":"subscribe","channel":"a b"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel with slash", in: `{"op":"subscribe","channel":"a/b"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel with star", in: `{"op":"subscribe","channel":"a.*"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel with non-ASCII", in: `{"op":"subscribe","channel":"caf\u00e9"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel with NUL", in: `{"op":"subscribe","channel":"a\u0000"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel with newline", in: `{"op":"subscribe","channel":"a\n"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel with quote", in: `{"op":"subscribe","channel":"a\"b"}`, want: ClientMsg{Op: OpSubscribe}, wantErr: errBadChannel},
		{name: "channel escaped but valid", in: `{"op":"subscribe","channel":"\u0041b"}`,
			want: ClientMsg{Op: OpSubscribe, Channel: []byte("Ab")}},
		{name: "channel every allowed punctuation", in: `{"op":"subscribe","channel":"_.:@-"}`,
			want: ClientMsg{Op: OpSubscribe, Channel: []byte("_.:@-")}},
		{name: "channel number", in: `{"op":"subscribe","channel":5}`, wantErr: errBadJSON},

		// Malformed JSON.
		{name: "empty input", in: ``, wantErr: errBadJSON},
		{name: "whitespace only", in: "  \n", wantErr: errBadJSON},
		{name: "truncated object", in: `{"op":"ping"`, wantErr: errBadJSON},
		{name: "truncated string", in: `{"op":"pi`, wantErr: errBadJSON},
		{name: "truncated data", in: `{"op":"publish","channel":"a","data":{"x":`, wantErr: errBadJSON},
		{name: "trailing garbage", in: `{"op":"ping"} x`, wantErr: errBadJSON},
		{name: "two objects", in: `{"op":"ping"}{"op":"ping"}`, wantErr: errBadJSON},
		{name: "array", in: `[{"op":"ping"}]`, wantErr: errBadJSON},
		{name: "string", in: `"ping"`, wantErr: errBadJSON},
		{name: "null envelope has no op", in: `null`, wantErr: errNoOp},
		{name: "single quotes", in: `{'op':'ping'}`, wantErr: errBadJSON},
		{name: "trailing comma", in: `{"op":"ping",}`, wantErr: errBadJSON},
		{name: "data trailing comma", in: `{"op":"publish","channel":"a","data":[1,]}`, wantErr: errBadJSON},
		{name: "data bad literal", in: `{"op":"publish","channel":"a","data":nul}`, wantErr: errBadJSON},
		{name: "data leading zero", in: `{"op":"publish","channel":"a","data":01}`, wantErr: errBadJSON},
		{name: "data bad escape", in: `{"op":"publish","channel":"a","data":"\x"}`, wantErr: errBadJSON},
		{name: "data control char in string", in: "{\"op\":\"publish\",\"channel\":\"a\",\"data\":\"\x01\"}", wantErr: errBadJSON},
		{name: "data deep nesting", in: `{"op":"publish","channel":"a","data":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`,
			wantErr: errBadJSON},
		{name: "data unbalanced nesting", in: `{"op":"publish","channel":"a","data":` + strings.Repeat("[", 100000) + `}`,
			wantErr: errBadJSON},
	}
}

func TestDecodeJSON(t *testing.T) {
	for _, tt := range decodeJSONCases() {
		t.Run(tt.name, func(t *testing.T) {
			// Start from a dirty message: DecodeJSON must reset it.
			m := ClientMsg{ID: []byte("stale"), Op: OpAuth, Channel: []byte("stale"), Data: []byte("stale"), Token: []byte("stale")}
			err := DecodeJSON([]byte(tt.in), &m)
			if err != tt.wantErr {
				t.Fatalf("DecodeJSON(%.80q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if err != nil && err.Code != CodeBadRequest {
				t.Errorf("error code = %q, want %q", err.Code, CodeBadRequest)
			}
			if tt.wantErr != nil && tt.want.ID == nil && tt.want.Op == OpUnknown {
				// Only the error matters for these; but whatever came out must be
				// usable in a reply.
				if m.ID != nil && !json.Valid(m.ID) {
					t.Errorf("ID %q is not valid JSON", m.ID)
				}
				return
			}
			checkMsg(t, &m, &tt.want)
		})
	}
}

func checkMsg(t *testing.T, got, want *ClientMsg) {
	t.Helper()
	if !bytes.Equal(got.ID, want.ID) || (got.ID == nil) != (want.ID == nil) {
		t.Errorf("ID = %q (nil %v), want %q (nil %v)", got.ID, got.ID == nil, want.ID, want.ID == nil)
	}
	if got.Op != want.Op {
		t.Errorf("Op = %v, want %v", got.Op, want.Op)
	}
	if !bytes.Equal(got.Channel, want.Channel) {
		t.Errorf("Channel = %.40q, want %.40q", got.Channel, want.Channel)
	}
	if !bytes.Equal(got.Data, want.Data) || (got.Data == nil) != (want.Data == nil) {
		t.Errorf("Data = %q (nil %v), want %q (nil %v)", got.Data, got.Data == nil, want.Data, want.Data == nil)
	}
	if !bytes.Equal(got.Token, want.Token) {
		t.Errorf("Token = %q, want %q", got.Token, want.Token)
	}
}

// Channel and Token point into the input, with no copy, or into the
// message's own scratch space when the JSON escaped them. The engine copies
// a channel name (string(m.Channel)) where it keeps one, before the read
// buffer is reused.
func TestDecodeJSONFieldsAliasInput(t *testing.T) {
	tests := []struct {
		name, in string
		field    func(*ClientMsg) []byte
		want     string
		aliases  bool
	}{
		{"channel", `{"id":"abc","op":"publish","channel":"chan","data":{"x":1}}`, func(m *ClientMsg) []byte { return m.Channel }, "chan", true},
		{"escaped channel", `{"op":"subscribe","channel":"\u0063han"}`, func(m *ClientMsg) []byte { return m.Channel }, "chan", false},
		{"token", `{"op":"auth","token":"tok"}`, func(m *ClientMsg) []byte { return m.Token }, "tok", true},
		{"escaped token", `{"op":"auth","token":"t\/k"}`, func(m *ClientMsg) []byte { return m.Token }, "t/k", false},
		{"long escaped token", `{"op":"auth","token":"` + strings.Repeat("t", 300) + `\/k"}`, func(m *ClientMsg) []byte { return m.Token }, strings.Repeat("t", 300) + "/k", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			var m ClientMsg
			if err := DecodeJSON(in, &m); err != nil {
				t.Fatal(err)
			}
			kept := string(tt.field(&m))
			if kept != tt.want {
				t.Fatalf("decoded %q, want %q", kept, tt.want)
			}
			for i := range in {
				in[i] = 'Z'
			}
			if kept != tt.want {
				t.Errorf("a copy changed with the input: %q", kept)
			}
			if got := string(tt.field(&m)); (got != tt.want) != tt.aliases {
				t.Errorf("after overwriting the input the field is %q; aliasing the input: %v, want %v", got, got != tt.want, tt.aliases)
			}
		})
	}
}

func TestOpString(t *testing.T) {
	for _, op := range []Op{OpSubscribe, OpUnsubscribe, OpPublish, OpBroadcast, OpAuth, OpPing} {
		if got := parseOp([]byte(op.String())); got != op {
			t.Errorf("parseOp(%q) = %v, want %v", op.String(), got, op)
		}
	}
	if s := OpUnknown.String(); s != "unknown" {
		t.Errorf("OpUnknown.String() = %q", s)
	}
	if s := Op(200).String(); s != "unknown" {
		t.Errorf("Op(200).String() = %q", s)
	}
	if op := parseOp([]byte("unknown")); op != OpUnknown {
		t.Errorf(`parseOp("unknown") = %v`, op)
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Code: CodeBadRequest, Message: "missing op"}
	if got, want := e.Error(), "proto: bad_request: missing op"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// decodeObject decodes an encoder's output with encoding/json, failing the
// test when it is not one valid JSON object.
func decodeObject(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("output is not valid JSON: %s", b)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("output is not a JSON object: %v: %s", err, b)
	}
	return m
}

func field[T any](t *testing.T, m map[string]json.RawMessage, name string) T {
	t.Helper()
	var v T
	raw, ok := m[name]
	if !ok {
		t.Fatalf("field %q missing in %v", name, m)
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("field %q: %v", name, err)
	}
	return v
}

func checkKeys(t *testing.T, m map[string]json.RawMessage, keys ...string) {
	t.Helper()
	if len(m) != len(keys) {
		t.Errorf("got fields %v, want exactly %v", m, keys)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing", k)
		}
	}
}

// appendOnPrefix runs an encoder on a non-empty dst and checks that the
// prefix is kept; it returns the appended part.
func appendOnPrefix(t *testing.T, enc func(dst []byte) []byte) []byte {
	t.Helper()
	const prefix = "PREFIX"
	out := enc([]byte(prefix))
	if !bytes.HasPrefix(out, []byte(prefix)) {
		t.Fatalf("encoder overwrote dst: %q", out)
	}
	return out[len(prefix):]
}

func TestAppendWelcome(t *testing.T) {
	tests := []struct {
		name, conn, node, proto string
	}{
		{"typical", "k3j2h1", "ab12cd34", "json"},
		{"empty", "", "", ""},
		{"quotes and backslashes", `c"1`, `n\1`, "json"},
		{"non-ASCII node", "c", "nœud-é", "json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := appendOnPrefix(t, func(dst []byte) []byte { return AppendWelcome(dst, tt.conn, tt.node, tt.proto) })
			m := decodeObject(t, out)
			checkKeys(t, m, "op", "conn", "node", "proto")
			if got := field[string](t, m, "op"); got != "welcome" {
				t.Errorf("op = %q", got)
			}
			if got := field[string](t, m, "conn"); got != tt.conn {
				t.Errorf("conn = %q, want %q", got, tt.conn)
			}
			if got := field[string](t, m, "node"); got != tt.node {
				t.Errorf("node = %q, want %q", got, tt.node)
			}
			if got := field[string](t, m, "proto"); got != tt.proto {
				t.Errorf("proto = %q, want %q", got, tt.proto)
			}
		})
	}
}

// Welcome strings are escaped as JSON, whatever the node id holds (it comes
// from an operator-edited file).
func TestAppendWelcomeEscapes(t *testing.T) {
	for _, node := range []string{"a\x01b", "bell\a", "tab\vv", "del\x7f", "bad\xffutf8", "<script>", `q"uote`} {
		out := AppendWelcome(nil, "k3j2", node, "json")
		if !json.Valid(out) {
			t.Errorf("AppendWelcome(node %q) = %s: not valid JSON", node, out)
		}
		if bytes.ContainsAny(out, "<>") {
			t.Errorf("AppendWelcome(node %q) = %s: unescaped byte", node, out)
		}
	}
}

func TestAppendAck(t *testing.T) {
	for _, id := range []string{`1`, `-3.5e2`, `"req-1"`, `"a\"b"`, `"` + strings.Repeat("x", 62) + `"`} {
		t.Run(id, func(t *testing.T) {
			out := appendOnPrefix(t, func(dst []byte) []byte { return AppendAck(dst, []byte(id)) })
			m := decodeObject(t, out)
			checkKeys(t, m, "op", "id")
			if got := field[string](t, m, "op"); got != "ack" {
				t.Errorf("op = %q", got)
			}
			if got := string(m["id"]); got != id {
				t.Errorf("id = %s, want %s verbatim", got, id)
			}
		})
	}
}

func TestAppendPong(t *testing.T) {
	out := appendOnPrefix(t, AppendPong)
	m := decodeObject(t, out)
	checkKeys(t, m, "op")
	if got := field[string](t, m, "op"); got != "pong" {
		t.Errorf("op = %q", got)
	}
}

func TestAppendError(t *testing.T) {
	tests := []struct {
		name    string
		id      []byte
		code    string
		message string
		// rawHas lists substrings the raw output must contain (escaping).
		rawHas []string
	}{
		{name: "no id", code: CodeBadRequest, message: "invalid JSON"},
		{name: "numeric id", id: []byte("12"), code: CodeLimitExceeded, message: "too many"},
		{name: "string id", id: []byte(`"x\"y"`), code: CodeForbidden, message: "no"},
		{name: "quotes", code: CodeInternal, message: `say "hi"`, rawHas: []string{`say \"hi\"`}},
		{name: "backslash", code: CodeInternal, message: `C:\path`, rawHas: []string{`C:\\path`}},
		{name: "newline and tab", code: CodeInternal, message: "a\nb\tc\r", rawHas: []string{`a\nb\tc\r`}},
		{name: "control byte", code: CodeInternal, message: "a\x00b\x1f"},
		{name: "html", code: CodeInternal, message: "<script>&</script>", rawHas: []string{`\u003cscript\u003e\u0026`}},
		{name: "line separators", code: CodeInternal, message: "a\u2028b\u2029c"},
		{name: "non-ASCII", code: CodeInternal, message: "café ☕"},
		{name: "empty message", code: CodeInternal, message: ""},
		{name: "every canned error", code: errBadChannel.Code, message: errBadChannel.Message},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &Error{Code: tt.code, Message: tt.message}
			out := appendOnPrefix(t, func(dst []byte) []byte { return AppendError(dst, tt.id, e) })
			m := decodeObject(t, out)
			if tt.id == nil {
				checkKeys(t, m, "op", "code", "message")
			} else {
				checkKeys(t, m, "op", "id", "code", "message")
				if got := string(m["id"]); got != string(tt.id) {
					t.Errorf("id = %s, want %s verbatim", got, tt.id)
				}
			}
			if got := field[string](t, m, "op"); got != "error" {
				t.Errorf("op = %q", got)
			}
			if got := field[string](t, m, "code"); got != tt.code {
				t.Errorf("code = %q, want %q", got, tt.code)
			}
			if got := field[string](t, m, "message"); got != tt.message {
				t.Errorf("message = %q, want %q", got, tt.message)
			}
			for _, s := range tt.rawHas {
				if !bytes.Contains(out, []byte(s)) {
					t.Errorf("raw output %s does not contain %s", out, s)
				}
			}
			if bytes.ContainsAny(out, "<>\n") {
				t.Errorf("raw output has an unescaped <, > or newline: %s", out)
			}
		})
	}
}

func TestAppendErrorCannedErrors(t *testing.T) {
	for _, e := range []*Error{errBadJSON, errBadField, errBadID, errNoOp, errUnknownOp, errNoChannel, errBadChannel, errNoData, errNoToken} {
		m := decodeObject(t, AppendError(nil, []byte("1"), e))
		if got := field[string](t, m, "message"); got != e.Message {
			t.Errorf("message = %q, want %q", got, e.Message)
		}
		if got := field[string](t, m, "code"); got != CodeBadRequest {
			t.Errorf("code = %q", got)
		}
	}
}

func TestAppendMessage(t *testing.T) {
	tests := []struct {
		name, channel, from string
		data                string
	}{
		{name: "publish object", channel: "room:1", from: "k3j2", data: `{"text":"hi","n":[1,2]}`},
		{name: "publish null", channel: "a", from: "b", data: `null`},
		{name: "publish string with escapes", channel: "a", from: "b", data: `"<\"\n\u2028>"`},
		{name: "broadcast omits channel", channel: "", from: "zz", data: `42`},
		{name: "longest channel", channel: strings.Repeat("c", MaxChannelLen), from: "1", data: `[]`},
		{name: "big payload", channel: "x", from: "1", data: `"` + strings.Repeat("p", 70000) + `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := appendOnPrefix(t, func(dst []byte) []byte { return AppendMessage(dst, tt.channel, tt.from, []byte(tt.data)) })
			m := decodeObject(t, out)
			if tt.channel == "" {
				checkKeys(t, m, "op", "from", "data")
			} else {
				checkKeys(t, m, "op", "channel", "from", "data")
				if got := field[string](t, m, "channel"); got != tt.channel {
					t.Errorf("channel = %q, want %q", got, tt.channel)
				}
			}
			if got := field[string](t, m, "op"); got != "message" {
				t.Errorf("op = %q", got)
			}
			if got := field[string](t, m, "from"); got != tt.from {
				t.Errorf("from = %q, want %q", got, tt.from)
			}
			if got := string(m["data"]); got != tt.data {
				t.Errorf("data = %.80s, want %.80s verbatim", got, tt.data)
			}
		})
	}
}

func TestAppendMessageAny(t *testing.T) {
	tests := []struct {
		name, channel string
		data          []byte
		opaque        bool
	}{
		{"JSON data verbatim", "c", []byte(`{"a":1}`), false},
		{"opaque bytes", "c", []byte{0, 1, 2, 0xff, '"', '\\'}, true},
		{"opaque empty", "c", []byte{}, true},
		{"opaque broadcast", "", []byte("hi"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := appendOnPrefix(t, func(dst []byte) []byte { return AppendMessageAny(dst, tt.channel, "k3", tt.data, tt.opaque) })
			m := decodeObject(t, out)
			keys := []string{"op", "from", "data"}
			if tt.channel != "" {
				keys = append(keys, "channel")
			}
			if tt.opaque {
				keys = append(keys, "enc")
				if got := field[string](t, m, "enc"); got != "base64" {
					t.Errorf("enc = %q", got)
				}
				// encoding/json decodes a base64 string into []byte.
				if got := field[[]byte](t, m, "data"); !bytes.Equal(got, tt.data) {
					t.Errorf("data = %q, want %q", got, tt.data)
				}
			} else if got := string(m["data"]); got != string(tt.data) {
				t.Errorf("data = %s, want %s verbatim", got, tt.data)
			}
			checkKeys(t, m, keys...)
			if got := field[string](t, m, "from"); got != "k3" {
				t.Errorf("from = %q", got)
			}
		})
	}
}

// A publish decoded by DecodeJSON re-encodes into a message that carries
// the same data.
func TestDecodeThenAppendMessage(t *testing.T) {
	var m ClientMsg
	if err := DecodeJSON([]byte(`{"id":1,"op":"publish","channel":"c","data":{"a":"<b>"}}`), &m); err != nil {
		t.Fatal(err)
	}
	out := AppendMessage(nil, string(m.Channel), "conn1", m.Data)
	got := decodeObject(t, out)
	var data map[string]string
	if err := json.Unmarshal(got["data"], &data); err != nil || data["a"] != "<b>" {
		t.Fatalf("data = %s (%v)", got["data"], err)
	}
}

func TestValidChannel(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"single letter", "a", true},
		{"digits", "0123456789", true},
		{"mixed", "Room_1.sub:x@host-2", true},
		{"all punctuation", "_.:@-", true},
		{"128 bytes", strings.Repeat("a", 128), true},
		{"empty", "", false},
		{"129 bytes", strings.Repeat("a", 129), false},
		{"10000 bytes", strings.Repeat("a", 10000), false},
		{"space", "a b", false},
		{"slash", "a/b", false},
		{"star", "a*", false},
		{"greater than", "a>", false},
		{"hash", "#a", false},
		{"plus", "a+b", false},
		{"quote", `a"`, false},
		{"backslash", `a\b`, false},
		{"NUL", "a\x00", false},
		{"newline", "a\n", false},
		{"DEL", "a\x7f", false},
		{"high byte", "a\xff", false},
		{"non-ASCII letter", "é", false},
		{"127 good then one bad", strings.Repeat("a", 127) + "!", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidChannel(tt.in); got != tt.want {
				t.Errorf("ValidChannel(%.40q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidChannelEveryByte(t *testing.T) {
	allowed := "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-"
	for b := 0; b < 256; b++ {
		want := strings.IndexByte(allowed, byte(b)) >= 0
		if got := ValidChannel(string([]byte{byte(b)})); got != want {
			t.Errorf("ValidChannel(%q) = %v, want %v", byte(b), got, want)
		}
	}
}
