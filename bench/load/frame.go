package main

import (
	"encoding/binary"

	"github.com/gobwas/ws"
)

// maxServerFrame is the largest frame payload the generator accepts.
const maxServerFrame = 1 << 30

// serverFrame is one frame read from a server, unmasked in place.
type serverFrame struct {
	op      ws.OpCode
	fin     bool
	payload []byte
	size    int    // header and payload bytes
	length  uint64 // the declared payload length
	masked  bool   // the server masked it (RFC 6455 5.1 forbids that)
	rsv     byte   // RSV bits set, with no extension negotiated
}

// nextFrame parses the frame at the start of d. ok is false while the
// frame is incomplete, and when its declared length is over
// maxServerFrame (then f.length says how long it claimed to be).
func nextFrame(d []byte) (f serverFrame, ok bool) {
	if len(d) < 2 {
		return f, false
	}
	b0, b1 := d[0], d[1]
	hdr := 2
	plen := uint64(b1 & 0x7f)
	switch plen {
	case 126:
		if len(d) < 4 {
			return f, false
		}
		plen = uint64(binary.BigEndian.Uint16(d[2:4]))
		hdr = 4
	case 127:
		if len(d) < 10 {
			return f, false
		}
		plen = binary.BigEndian.Uint64(d[2:10])
		hdr = 10
	}
	f.length = plen
	if plen > maxServerFrame {
		return f, false
	}
	f.masked = b1&0x80 != 0
	if f.masked {
		hdr += 4
	}
	if uint64(len(d)) < uint64(hdr)+plen {
		return f, false
	}
	f.payload = d[hdr : uint64(hdr)+plen]
	if f.masked {
		var m [4]byte
		copy(m[:], d[hdr-4:hdr])
		ws.Cipher(f.payload, m, 0)
	}
	f.op, f.fin, f.rsv = ws.OpCode(b0&0x0f), b0&0x80 != 0, b0&0x70
	f.size = hdr + int(plen)
	return f, true
}
