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

func BenchmarkDecodeJSON(b *testing.B) {
	for _, size := range benchSizes {
		in := []byte(`{"id":17,"op":"publish","channel":"room:lobby","data":` + string(benchPayload(size)) + `}`)
		b.Run("sonic/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			var m ClientMsg
			for b.Loop() {
				if err := DecodeJSON(in, &m); err != nil {
					b.Fatal(err)
				}
			}
		})
		// The naive reference: encoding/json into the same wire shape.
		b.Run("encoding_json/"+strconv.Itoa(size), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			var w struct {
				ID      json.RawMessage `json:"id"`
				Op      string          `json:"op"`
				Channel *string         `json:"channel"`
				Data    json.RawMessage `json:"data"`
				Token   string          `json:"token"`
			}
			for b.Loop() {
				w.ID, w.Channel, w.Data = nil, nil, nil
				if err := json.Unmarshal(in, &w); err != nil {
					b.Fatal(err)
				}
			}
		})
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
