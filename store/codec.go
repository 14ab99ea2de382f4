package store

import (
	"encoding/binary"
	"errors"
	"time"
)

// Key spaces (see the package doc).
const (
	spaceAudit       byte = 'a'
	spaceChanIndex   byte = 'c'
	spaceUserIndex   byte = 'u'
	spaceSession     byte = 's'
	spaceActive      byte = 'x'
	spaceSessionUser byte = 't'
)

// errCorrupt reports a stored value that does not decode.
var errCorrupt = errors.New("store: corrupt value")

// Value layouts, version 1. Strings are a uvarint length then the bytes;
// numbers are uvarints, signed ones zig-zag varints.
//
//	audit record:  1 node conn user op channel flags:u8 data attempt error remote code:varint worker:varint
//	session:       1 conn node user remote userAgent protocol worker:varint
//	               connected:varint disconnected:varint code:varint nchannels channel…
const valueVersion byte = 1

// Record flags.
const flagOpaque byte = 1

func hourOf(ns int64) uint32 {
	if ns < 0 {
		return 0
	}
	return uint32(ns / int64(time.Hour))
}

func appendU64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

func appendLenStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// auditKey is 'a' time seq.
func auditKey(dst []byte, ns int64, seq uint64) []byte {
	dst = append(dst, spaceAudit)
	dst = appendU64(dst, uint64(ns))
	return appendU64(dst, seq)
}

// indexPrefix is space hour len name.
func indexPrefix(dst []byte, space byte, hour uint32, name string) []byte {
	dst = append(dst, space)
	dst = binary.BigEndian.AppendUint32(dst, hour)
	return appendLenStr(dst, name)
}

// indexKey is the index entry of the audit record (ns, seq) under name.
func indexKey(dst []byte, space byte, name string, ns int64, seq uint64) []byte {
	dst = indexPrefix(dst, space, hourOf(ns), name)
	dst = appendU64(dst, uint64(ns))
	return appendU64(dst, seq)
}

// sessionKey is space connected conn, for spaces 's' and 'x'.
func sessionKey(dst []byte, space byte, connected int64, conn string) []byte {
	dst = append(dst, space)
	dst = appendU64(dst, uint64(connected))
	return append(dst, conn...)
}

func sessionUserKey(dst []byte, user string, connected int64, conn string) []byte {
	dst = indexPrefix(dst, spaceSessionUser, hourOf(connected), user)
	dst = appendU64(dst, uint64(connected))
	return append(dst, conn...)
}

func encodeRecord(dst []byte, r *Record) []byte {
	dst = append(dst, valueVersion)
	dst = appendLenStr(dst, r.Node)
	dst = appendLenStr(dst, r.Conn)
	dst = appendLenStr(dst, r.User)
	dst = appendLenStr(dst, r.Op)
	dst = appendLenStr(dst, r.Channel)
	var flags byte
	if r.Opaque {
		flags |= flagOpaque
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(r.Data)))
	dst = append(dst, r.Data...)
	dst = appendLenStr(dst, r.Attempt)
	dst = appendLenStr(dst, r.Error)
	dst = appendLenStr(dst, r.Remote)
	dst = binary.AppendVarint(dst, int64(r.Code))
	return binary.AppendVarint(dst, int64(r.Worker))
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	l := r.uvarint()
	if r.bad || l > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	out := r.b[:l:l]
	r.b = r.b[l:]
	return out
}

func (r *reader) str() string { return string(r.bytes()) }

func (r *reader) byte1() byte {
	if len(r.b) == 0 {
		r.bad = true
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// decodeRecord decodes the value of audit key k into r; r owns its bytes.
func decodeRecord(k, v []byte, r *Record) error {
	if len(k) != 17 || len(v) == 0 || v[0] != valueVersion {
		return errCorrupt
	}
	ns := int64(binary.BigEndian.Uint64(k[1:9]))
	*r = Record{Time: time.Unix(0, ns).UTC(), Seq: binary.BigEndian.Uint64(k[9:17])}
	rd := reader{b: v[1:]}
	r.Node, r.Conn, r.User, r.Op, r.Channel = rd.str(), rd.str(), rd.str(), rd.str(), rd.str()
	r.Opaque = rd.byte1()&flagOpaque != 0
	if d := rd.bytes(); len(d) > 0 {
		r.Data = append([]byte(nil), d...)
	}
	r.Attempt, r.Error, r.Remote = rd.str(), rd.str(), rd.str()
	r.Code = int(rd.varint())
	r.Worker = int(rd.varint())
	if rd.bad || len(rd.b) != 0 {
		return errCorrupt
	}
	return nil
}

func encodeSession(dst []byte, s *Session) []byte {
	dst = append(dst, valueVersion)
	dst = appendLenStr(dst, s.Conn)
	dst = appendLenStr(dst, s.Node)
	dst = appendLenStr(dst, s.User)
	dst = appendLenStr(dst, s.Remote)
	dst = appendLenStr(dst, s.UserAgent)
	dst = appendLenStr(dst, s.Protocol)
	dst = binary.AppendVarint(dst, int64(s.Worker))
	dst = binary.AppendVarint(dst, unixNano(s.Connected))
	dst = binary.AppendVarint(dst, unixNano(s.Disconnected))
	dst = binary.AppendVarint(dst, int64(s.CloseCode))
	dst = binary.AppendUvarint(dst, uint64(len(s.Channels)))
	for _, ch := range s.Channels {
		dst = appendLenStr(dst, ch)
	}
	return dst
}

func decodeSession(v []byte, s *Session) error {
	if len(v) == 0 || v[0] != valueVersion {
		return errCorrupt
	}
	*s = Session{}
	rd := reader{b: v[1:]}
	s.Conn, s.Node, s.User, s.Remote, s.UserAgent, s.Protocol = rd.str(), rd.str(), rd.str(), rd.str(), rd.str(), rd.str()
	s.Worker = int(rd.varint())
	s.Connected = fromUnixNano(rd.varint())
	s.Disconnected = fromUnixNano(rd.varint())
	s.CloseCode = int(rd.varint())
	n := rd.uvarint()
	if n > uint64(len(rd.b)) {
		return errCorrupt
	}
	s.Channels = make([]string, 0, n)
	for range n {
		s.Channels = append(s.Channels, rd.str())
	}
	if rd.bad || len(rd.b) != 0 {
		return errCorrupt
	}
	return nil
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
