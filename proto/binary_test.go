package proto

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

type binVector struct {
	Name    string `json:"name"`
	Hex     string `json:"hex"`
	Op      string `json:"op"`
	ID      string `json:"id"`
	Channel string `json:"channel"`
	Data    string `json:"data"`
	DataHex string `json:"data_hex"`
	Opaque  bool   `json:"opaque"`
	Token   string `json:"token"`
	Conn    string `json:"conn"`
	Node    string `json:"node"`
	From    string `json:"from"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (v *binVector) data(t *testing.T) []byte {
	if v.DataHex != "" {
		b, err := hex.DecodeString(v.DataHex)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	return []byte(v.Data)
}

func (v *binVector) id() []byte {
	if v.ID == "" {
		return nil
	}
	return []byte(v.ID)
}

func loadVectors(t *testing.T) (client, server, invalid []binVector) {
	t.Helper()
	b, err := os.ReadFile("testdata/binary_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Client, Server, Invalid []binVector }
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Client) == 0 || len(f.Server) == 0 || len(f.Invalid) == 0 {
		t.Fatal("vector file has an empty section")
	}
	return f.Client, f.Server, f.Invalid
}

func TestBinaryVectorsDecode(t *testing.T) {
	client, _, invalid := loadVectors(t)
	for _, v := range client {
		t.Run(v.Name, func(t *testing.T) {
			in, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			var m ClientMsg
			if perr := DecodeBinary(in, &m); perr != nil {
				t.Fatalf("DecodeBinary(%s): %v", v.Hex, perr)
			}
			if m.Op.String() != v.Op || string(m.ID) != v.ID || string(m.Channel) != v.Channel || string(m.Token) != v.Token || m.Opaque != v.Opaque {
				t.Fatalf("decoded op=%s id=%q channel=%q token=%q opaque=%v; want %+v", m.Op, m.ID, m.Channel, m.Token, m.Opaque, v)
			}
			if want := v.data(t); len(want) > 0 && !bytes.Equal(m.Data, want) {
				t.Fatalf("data = %x, want %x", m.Data, want)
			}
		})
	}
	for _, v := range invalid {
		t.Run("invalid "+v.Name, func(t *testing.T) {
			in, err := hex.DecodeString(v.Hex)
			if err != nil {
				t.Fatal(err)
			}
			var m ClientMsg
			perr := DecodeBinary(in, &m)
			if perr == nil {
				t.Fatalf("DecodeBinary(%s) accepted: %+v", v.Hex, m)
			}
			if perr.Code != v.Code {
				t.Fatalf("code = %s, want %s", perr.Code, v.Code)
			}
		})
	}
}

func TestBinaryVectorsEncode(t *testing.T) {
	_, server, _ := loadVectors(t)
	for _, v := range server {
		t.Run(v.Name, func(t *testing.T) {
			var got []byte
			switch v.Op {
			case "welcome":
				got = AppendBinWelcome(nil, v.Conn, v.Node)
			case "ack":
				got = AppendBinAck(nil, v.id())
			case "error":
				got = AppendBinError(nil, v.id(), &Error{Code: v.Code, Message: v.Message})
			case "message":
				got = AppendBinMessage(nil, v.Channel, v.From, v.data(t), v.Opaque)
			case "pong":
				got = AppendBinPong(nil)
			default:
				t.Fatalf("unknown op %q in vector", v.Op)
			}
			if hex.EncodeToString(got) != v.Hex {
				t.Fatalf("encoded %x, want %s", got, v.Hex)
			}
		})
	}
}

func TestOpaqueDataReachesJSONAsBase64(t *testing.T) {
	out := AppendMessageAny(nil, "news", "k1", []byte{0, 0xff, 'a'}, true)
	var m struct {
		Op, Channel, From, Enc string
		Data                   string
	}
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	if m.Enc != "base64" || m.Data != "AP9h" || m.Channel != "news" || m.From != "k1" {
		t.Fatalf("got %s", out)
	}
	if plain := AppendMessageAny(nil, "", "k1", []byte(`{"a":1}`), false); string(plain) != `{"op":"message","from":"k1","data":{"a":1}}` {
		t.Fatalf("JSON data: %s", plain)
	}
}

func TestBinaryErrorCodesRoundTrip(t *testing.T) {
	for _, c := range []string{CodeBadRequest, CodeLimitExceeded, CodeUnauthorized, CodeForbidden, CodeTokenExpired, CodeOverloaded, CodeInternal, CodeRateLimited} {
		if got := ErrorCodeOf(BinErrorCode(c)); got != c {
			t.Errorf("%s → %d → %s", c, BinErrorCode(c), got)
		}
	}
}

// TestBinarySmallerThanJSON checks the size promise of PROTOCOL.md on a
// channel message with a short JSON payload.
func TestBinarySmallerThanJSON(t *testing.T) {
	data := []byte(`{"text":"hi"}`)
	j := AppendMessage(nil, "chat.room-42", "hoj6ytuf0e", data)
	b := AppendBinMessage(nil, "chat.room-42", "hoj6ytuf0e", data, false)
	if saving := 1 - float64(len(b))/float64(len(j)); saving < 0.30 {
		t.Fatalf("binary %d bytes vs JSON %d: %.0f%% smaller, want at least 30%%", len(b), len(j), saving*100)
	}
}

func FuzzDecodeBinary(f *testing.F) {
	for _, s := range []string{"8101046e657773", "83ac0201617b2278223a317d", "c302016100ff", "8505616263", "06", "81ffffffffffffffffff01", "03ff"} {
		b, _ := hex.DecodeString(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m ClientMsg
		if err := DecodeBinary(in, &m); err != nil {
			return
		}
		switch m.Op {
		case OpSubscribe, OpUnsubscribe, OpPublish:
			if !ValidChannel(string(m.Channel)) {
				t.Fatalf("accepted invalid channel %q", m.Channel)
			}
		}
		if (m.Op == OpPublish || m.Op == OpBroadcast) && !m.Opaque && !json.Valid(m.Data) {
			t.Fatalf("accepted invalid JSON data %q", m.Data)
		}
		// Whatever was accepted re-encodes into valid envelopes.
		if m.Op == OpPublish || m.Op == OpBroadcast {
			if out := AppendMessageAny(nil, string(m.Channel), "k1", m.Data, m.Opaque); !json.Valid(out) {
				t.Fatalf("JSON envelope invalid: %s", out)
			}
		}
	})
}
