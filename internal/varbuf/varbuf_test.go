package varbuf

import (
	"bytes"
	"testing"

	"github.com/zenconn/server/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

func TestRoundTripAndTruncation(t *testing.T) {
	var b []byte
	b = AppendStr(b, "héllo")
	b = AppendBytes(b, []byte{0, 255})
	b = append(b, 7)
	b = append(b, 0x80, 0x01) // uvarint 128
	r := Reader{B: b}
	if s, p, c, n := r.Str(), r.Bytes(), r.Byte(), r.Uvarint(); s != "héllo" || !bytes.Equal(p, []byte{0, 255}) || c != 7 || n != 128 || !r.Done() {
		t.Fatalf("read %q %v %d %d, done %v", s, p, c, n, r.Done())
	}
	// Every strict prefix fails cleanly, without panicking.
	for i := range len(b) {
		r := Reader{B: b[:i]}
		r.Str()
		r.Bytes()
		r.Byte()
		r.Uvarint()
		if r.Done() {
			t.Fatalf("prefix of %d bytes read as complete", i)
		}
	}
	// A length past the end is refused.
	r = Reader{B: []byte{0xff, 0xff, 0x03, 'x'}}
	if r.Bytes() != nil || !r.Bad {
		t.Fatal("a length past the end was accepted")
	}
}
