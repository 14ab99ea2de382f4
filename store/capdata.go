package store

import (
	"crypto/sha256"
	"time"
)

// DefaultMaxData is Options.MaxData when not set: the bytes of a record's
// data kept whole.
const DefaultMaxData = 64 << 10

// keepData sets dst.Data to what the store keeps of data, a copy: all of
// it up to Options.MaxData; beyond that, its first MaxData bytes with
// DataSize and DataHash (SHA-256 of the whole); for a refused attempt,
// only DataSize and DataHash. Data kept whole leaves DataSize 0.
func (s *Store) keepData(dst *Record, data []byte) {
	dst.Data, dst.DataSize, dst.DataHash = nil, 0, [32]byte{}
	if len(data) == 0 {
		return
	}
	keep := min(len(data), s.opts.MaxData)
	if dst.Op == OpRefused {
		keep = 0
	}
	if keep < len(data) {
		dst.DataSize, dst.DataHash = len(data), sha256.Sum256(data)
		if dst.Op != OpRefused {
			s.m.cut.Inc()
			s.cutLog.note("size", len(data), "kept", keep, "op", dst.Op, "channel", dst.Channel)
		}
	}
	if keep > 0 {
		dst.Data = append([]byte(nil), data[:keep]...)
	}
}

// cutLogEvery is how often the store logs records whose data was cut.
const cutLogEvery = time.Minute
