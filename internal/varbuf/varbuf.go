// Package varbuf encodes and decodes the length-prefixed fields shared by
// the agent's ring records (nodemsg) and the store's values:
// strings and byte strings as an unsigned varint length then the bytes,
// numbers as varints.
package varbuf

import "encoding/binary"

// AppendStr appends s with its length.
func AppendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// AppendBytes appends b with its length.
func AppendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// Reader reads fields from B. A field that does not decode sets Bad and
// reads as zero; Reader never panics and never reads past B.
type Reader struct {
	B   []byte
	Bad bool
}

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	v, n := binary.Uvarint(r.B)
	if n <= 0 {
		r.Bad = true
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Varint reads a signed (zig-zag) varint.
func (r *Reader) Varint() int64 {
	v, n := binary.Varint(r.B)
	if n <= 0 {
		r.Bad = true
		return 0
	}
	r.B = r.B[n:]
	return v
}

// Bytes reads a byte string; the result aliases B (capacity capped).
func (r *Reader) Bytes() []byte {
	l := r.Uvarint()
	if r.Bad || l > uint64(len(r.B)) {
		r.Bad = true
		return nil
	}
	out := r.B[:l:l]
	r.B = r.B[l:]
	return out
}

// Str reads a string (a copy).
func (r *Reader) Str() string { return string(r.Bytes()) }

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if len(r.B) == 0 {
		r.Bad = true
		return 0
	}
	c := r.B[0]
	r.B = r.B[1:]
	return c
}

// Done reports whether every byte was read without error.
func (r *Reader) Done() bool { return !r.Bad && len(r.B) == 0 }
