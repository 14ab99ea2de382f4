package proto

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// benchPayload returns a JSON string value of exactly n bytes.
func benchPayload(n int) []byte {
	return []byte(`"` + strings.Repeat("x", n-2) + `"`)
}

var benchSizes = []int{64, 1024, 16384}

// decodeBenchCases are client messages of typical shapes and sizes.
func decodeBenchCases() []struct {
	name string
	in   []byte
} {
	type c = struct {
		name string
		in   []byte
	}
	out := []c{
		{"subscribe", []byte(`{"id":1,"op":"subscribe","channel":"room:lobby"}`)},
		{"auth", []byte(`{"id":2,"op":"auth","token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc5MDAwMDAwMH0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"}`)},
	}
	for _, size := range benchSizes {
		out = append(out, c{"publish/" + strconv.Itoa(size),
			[]byte(`{"id":17,"op":"publish","channel":"room:lobby","data":` + string(benchPayload(size)) + `}`)})
	}
	obj := `{"user":"alice","text":"` + strings.Repeat("hello world ", 60) + `","tags":["a","b","c"],"n":[1,2.5,-3e2],"ok":true,"ref":null}`
	out = append(out, c{"publish-object/" + strconv.Itoa(len(obj)),
		[]byte(`{"id":"req-18","op":"publish","channel":"room:lobby","data":` + obj + `}`)})
	return out
}

// BenchmarkDecodeJSON runs the decoder ("fast") beside the sonic-based one
// it replaced ("reference") and encoding/json into the same wire shape
// (the naive reference).
func BenchmarkDecodeJSON(b *testing.B) {
	decoders := []struct {
		name   string
		decode func([]byte, *ClientMsg) *Error
	}{{"fast", DecodeJSON}, {"reference", decodeJSONReference}}
	for _, tc := range decodeBenchCases() {
		for _, d := range decoders {
			b.Run(d.name+"/"+tc.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(tc.in)))
				var m ClientMsg
				for b.Loop() {
					if err := d.decode(tc.in, &m); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run("encoding_json/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tc.in)))
			var w struct {
				ID      json.RawMessage `json:"id"`
				Op      string          `json:"op"`
				Channel *string         `json:"channel"`
				Data    json.RawMessage `json:"data"`
				Token   string          `json:"token"`
			}
			for b.Loop() {
				w.ID, w.Channel, w.Data = nil, nil, nil
				if err := json.Unmarshal(tc.in, &w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeBinary runs the decoder ("fast") beside the one that
// copied channels and tokens into strings ("reference").
func BenchmarkDecodeBinary(b *testing.B) {
	type c = struct {
		name string
		in   []byte
	}
	cases := []c{
		{"subscribe", append([]byte{0x80 | BinSubscribe, 1, 10}, "room:lobby"...)},
		{"auth", append([]byte{0x80 | BinAuth, 2}, "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"...)},
	}
	for _, size := range benchSizes {
		cases = append(cases, c{"publish/" + strconv.Itoa(size),
			append([]byte{0x80 | BinPublish, 17, 10}, "room:lobby"+string(benchPayload(size))...)})
	}
	cases = append(cases, c{"publish-opaque/1024",
		append([]byte{0x80 | binFlagOpaque | BinPublish, 17, 10}, "room:lobby"+strings.Repeat("\xff", 1024)...)})
	decoders := []struct {
		name   string
		decode func([]byte, *ClientMsg) *Error
	}{{"fast", DecodeBinary}, {"reference", decodeBinaryReference}}
	for _, tc := range cases {
		for _, d := range decoders {
			b.Run(d.name+"/"+tc.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(tc.in)))
				var m ClientMsg
				for b.Loop() {
					if err := d.decode(tc.in, &m); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkAppendMessage(b *testing.B) {
	for _, size := range benchSizes {
		data := benchPayload(size)
		b.Run("append/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			buf := make([]byte, 0, size+128)
			for b.Loop() {
				buf = AppendMessage(buf[:0], "room:lobby", "k3j2h1x", data)
			}
		})
		// The naive reference: a struct marshalled by encoding/json, which
		// re-validates and compacts the raw payload on every call.
		b.Run("encoding_json/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			type message struct {
				Op      string          `json:"op"`
				Channel string          `json:"channel,omitempty"`
				From    string          `json:"from"`
				Data    json.RawMessage `json:"data"`
			}
			m := message{Op: "message", Channel: "room:lobby", From: "k3j2h1x", Data: data}
			for b.Loop() {
				if _, err := json.Marshal(&m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendError(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = AppendError(buf[:0], []byte("17"), errBadChannel)
	}
}
