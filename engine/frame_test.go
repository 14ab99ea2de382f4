package engine

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

func TestParseFrameHeader(t *testing.T) {
	mask := [4]byte{0xa1, 0xb2, 0xc3, 0xd4}
	tests := []struct {
		name    string
		in      []byte
		want    ws.Header
		size    int
		wantErr error
	}{
		{name: "7-bit empty text", in: []byte{0x81, 0x00},
			want: ws.Header{Fin: true, OpCode: ws.OpText}, size: 2},
		{name: "7-bit 125 binary", in: []byte{0x82, 125},
			want: ws.Header{Fin: true, OpCode: ws.OpBinary, Length: 125}, size: 2},
		{name: "7-bit masked", in: []byte{0x81, 0x80 | 5, 0xa1, 0xb2, 0xc3, 0xd4},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: 5}, size: 6},
		{name: "not final continuation", in: []byte{0x00, 0x01},
			want: ws.Header{OpCode: ws.OpContinuation, Length: 1}, size: 2},
		{name: "rsv bits", in: []byte{0xf1, 0x00},
			want: ws.Header{Fin: true, Rsv: 7, OpCode: ws.OpText}, size: 2},
		{name: "reserved opcode kept", in: []byte{0x8b, 0x00},
			want: ws.Header{Fin: true, OpCode: 0xb}, size: 2},
		{name: "close", in: []byte{0x88, 0x02},
			want: ws.Header{Fin: true, OpCode: ws.OpClose, Length: 2}, size: 2},
		{name: "16-bit 126", in: []byte{0x81, 126, 0x00, 126},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Length: 126}, size: 4},
		{name: "16-bit 65535", in: []byte{0x81, 126, 0xff, 0xff},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Length: 65535}, size: 4},
		{name: "16-bit non-minimal", in: []byte{0x81, 126, 0x00, 0x05},
			want: ws.Header{Fin: true, OpCode: ws.OpText}, size: 4, wantErr: errNonMinimalLength},
		{name: "16-bit non-minimal 125", in: []byte{0x81, 126, 0x00, 125},
			want: ws.Header{Fin: true, OpCode: ws.OpText}, size: 4, wantErr: errNonMinimalLength},
		{name: "64-bit non-minimal", in: []byte{0x81, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff},
			want: ws.Header{Fin: true, OpCode: ws.OpText}, size: 10, wantErr: errNonMinimalLength},
		{name: "64-bit non-minimal small", in: []byte{0x81, 127, 0, 0, 0, 0, 0, 0, 0, 5},
			want: ws.Header{Fin: true, OpCode: ws.OpText}, size: 10, wantErr: errNonMinimalLength},
		{name: "16-bit masked", in: []byte{0x82, 0x80 | 126, 0x01, 0x00, 0xa1, 0xb2, 0xc3, 0xd4},
			want: ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: mask, Length: 256}, size: 8},
		{name: "64-bit 65536", in: []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Length: 65536}, size: 10},
		{name: "64-bit largest", in: []byte{0x81, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Length: 1<<63 - 1}, size: 10},
		{name: "64-bit masked", in: []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70, 0xa1, 0xb2, 0xc3, 0xd4},
			want: ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: mask, Length: 70000}, size: 14},
		{name: "64-bit MSB set", in: []byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0},
			want: ws.Header{Fin: true, OpCode: ws.OpText}, size: 10, wantErr: ws.ErrHeaderLengthMSB},
		{name: "64-bit all ones", in: []byte{0x82, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4},
			want: ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true}, size: 14, wantErr: ws.ErrHeaderLengthMSB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Trailing payload bytes must not change the result.
			in := append(append([]byte(nil), tt.in...), "payload"...)
			h, ok, err := parseFrameHeader(in)
			if !ok {
				t.Fatalf("ok = false for a complete header")
			}
			if err != tt.wantErr {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if h.size != tt.size {
				t.Errorf("size = %d, want %d", h.size, tt.size)
			}
			if err != nil {
				return
			}
			if h.Header != tt.want {
				t.Errorf("header = %+v, want %+v", h.Header, tt.want)
			}
			// Cross-check with gobwas/ws.
			ref, rerr := ws.ReadHeader(bytes.NewReader(tt.in))
			if rerr != nil {
				t.Fatalf("ws.ReadHeader: %v", rerr)
			}
			if ref != h.Header {
				t.Errorf("ws.ReadHeader = %+v, parseFrameHeader = %+v", ref, h.Header)
			}
		})
		t.Run(tt.name+"/every prefix is short", func(t *testing.T) {
			for n := 0; n < len(tt.in); n++ {
				_, ok, err := parseFrameHeader(tt.in[:n])
				if ok || err != nil {
					t.Errorf("parseFrameHeader(first %d of %d bytes) = ok %v, err %v; want not ok, no error", n, len(tt.in), ok, err)
				}
			}
		})
	}
}

func TestFinishFrameAndAppendFrame(t *testing.T) {
	for _, size := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(i*7 + 3)
		}
		for _, op := range []ws.OpCode{ws.OpText, ws.OpBinary} {
			name := strconv.Itoa(size) + "/" + op2s(op)
			t.Run("finishFrame/"+name, func(t *testing.T) {
				buf := append(newFrameBuf(make([]byte, 0, 8)), payload...)
				frame := finishFrame(buf, op)
				checkServerFrame(t, frame, op, payload)
				// The frame is a subslice of buf: no copy.
				if len(frame) > 0 && &frame[len(frame)-1] != &buf[len(buf)-1] {
					t.Errorf("finishFrame copied the payload")
				}
			})
			t.Run("appendFrame/"+name, func(t *testing.T) {
				prefix := []byte("prefix")
				out := appendFrame(append([]byte(nil), prefix...), op, payload)
				if !bytes.HasPrefix(out, prefix) {
					t.Fatalf("appendFrame overwrote dst")
				}
				checkServerFrame(t, out[len(prefix):], op, payload)
			})
		}
	}
}

func TestNewFrameBufReusesDst(t *testing.T) {
	dst := make([]byte, 5, 100)
	buf := newFrameBuf(dst)
	if len(buf) != frameHeadroom {
		t.Fatalf("len = %d, want %d", len(buf), frameHeadroom)
	}
	if &buf[0] != &dst[0] {
		t.Errorf("newFrameBuf did not reuse dst's array")
	}
}

// checkServerFrame reads frame with gobwas/ws and checks that it is exactly
// one final, unmasked frame of op carrying payload, with the shortest
// length encoding (RFC 6455 section 5.2).
func checkServerFrame(t *testing.T, frame []byte, op ws.OpCode, payload []byte) {
	t.Helper()
	r := bytes.NewReader(frame)
	f, err := ws.ReadFrame(r) //nolint:staticcheck // the reference reader, on trusted bytes
	if err != nil {
		t.Fatalf("ws.ReadFrame: %v", err)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left after the frame", r.Len())
	}
	if !f.Header.Fin || f.Header.Masked || f.Header.Rsv != 0 || f.Header.OpCode != op {
		t.Errorf("header = %+v, want final unmasked %v", f.Header, op)
	}
	if f.Header.Length != int64(len(payload)) || !bytes.Equal(f.Payload, payload) {
		t.Errorf("payload: got %d bytes, want %d (equal %v)", len(f.Payload), len(payload), bytes.Equal(f.Payload, payload))
	}
	wantHeader := 2
	switch {
	case len(payload) > 0xffff:
		wantHeader = 10
	case len(payload) > 125:
		wantHeader = 4
	}
	if got := len(frame) - len(payload); got != wantHeader {
		t.Errorf("header is %d bytes, want %d", got, wantHeader)
	}
}

func op2s(op ws.OpCode) string {
	switch op {
	case ws.OpText:
		return "text"
	case ws.OpBinary:
		return "binary"
	}
	return "op" + strconv.Itoa(int(op))
}

func TestAppendCloseFrame(t *testing.T) {
	tests := []struct {
		name       string
		code       uint16
		reason     string
		wantReason string
	}{
		{"no reason", 1000, "", ""},
		{"short reason", 1001, "server shutting down", "server shutting down"},
		{"123 bytes kept", 4000, strings.Repeat("r", 123), strings.Repeat("r", 123)},
		{"124 bytes cut", 1002, strings.Repeat("r", 124), strings.Repeat("r", 123)},
		{"long reason cut", 1009, strings.Repeat("x", 10000), strings.Repeat("x", 123)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := appendCloseFrame([]byte("p"), tt.code, tt.reason)[1:]
			f, err := ws.ReadFrame(bytes.NewReader(frame)) //nolint:staticcheck // trusted bytes
			if err != nil {
				t.Fatal(err)
			}
			if !f.Header.Fin || f.Header.Masked || f.Header.OpCode != ws.OpClose {
				t.Errorf("header = %+v", f.Header)
			}
			if f.Header.Length > ws.MaxControlFramePayloadSize {
				t.Errorf("close payload %d bytes, over the 125-byte control limit", f.Header.Length)
			}
			if err := ws.CheckHeader(f.Header, ws.StateClientSide); err != nil {
				t.Errorf("a client would reject the frame: %v", err)
			}
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if uint16(code) != tt.code || reason != tt.wantReason {
				t.Errorf("code %d reason %q, want %d %q", code, reason, tt.code, tt.wantReason)
			}
			if len(frame) != 2+2+len(tt.wantReason) {
				t.Errorf("frame is %d bytes", len(frame))
			}
		})
	}
}

// The canned ping frame is a final, empty, unmasked ping.
func TestPingFrame(t *testing.T) {
	if !bytes.Equal(pingFrame, []byte{0x89, 0x00}) {
		t.Errorf("pingFrame = % x", pingFrame)
	}
}

// clientFrame builds a masked client frame by hand (RFC 6455 section 5.2).
func clientFrame(fin bool, op ws.OpCode, payload []byte) []byte {
	return rawFrame(fin, op, true, [4]byte{0x37, 0xfa, 0x21, 0x3d}, payload)
}

// rawFrame builds a frame with any flags; masked frames get payload masked
// with key.
func rawFrame(fin bool, op ws.OpCode, masked bool, key [4]byte, payload []byte) []byte {
	var b []byte
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	b = append(b, b0)
	var m byte
	if masked {
		m = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b = append(b, key[:]...)
		start := len(b)
		b = append(b, payload...)
		ws.Cipher(b[start:], key, 0)
		return b
	}
	return append(b, payload...)
}

func TestClientFrameHelper(t *testing.T) {
	payload := []byte(`{"op":"ping"}`)
	frame := clientFrame(true, ws.OpText, payload)
	f, err := ws.ReadFrame(bytes.NewReader(frame)) //nolint:staticcheck // trusted bytes
	if err != nil {
		t.Fatal(err)
	}
	ws.Cipher(f.Payload, f.Header.Mask, 0)
	if !f.Header.Masked || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("clientFrame round trip: %+v %q", f.Header, f.Payload)
	}
}

// validUTF8Prefix is what a close reason cut at a byte limit should be.
func validUTF8Prefix(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
