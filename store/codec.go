package store

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/zenconn/server/internal/varbuf"
)

// Key spaces (see the package doc).
const (
	spaceAudit       byte = 'a'
	spaceChanIndex   byte = 'c'
	spaceUserIndex   byte = 'u'
	spaceSession     byte = 's'
	spaceActive      byte = 'x'
	spaceSessionUser byte = 't'
	spaceMeta        byte = 'm' // index database: metaIndexed
)

// metaIndexed is the index database's key holding time:8 seq:8 of the last
// audit record whose index entries it has: Open indexes the records of the
// log database after it (see reindexTail).
var metaIndexed = []byte{spaceMeta, 'i'}

// errCorrupt reports a stored value that does not decode.
var errCorrupt = errors.New("store: corrupt value")

// Value layouts, version 1. Strings are a uvarint length then the bytes;
// numbers are uvarints, signed ones zig-zag varints.
//
//	audit record:  1 node conn user op channel flags:u8 data attempt error remote code:varint worker:varint
//	               [size:uvarint sha256:32, with flagCut]
//	               [scheme tlsVersion tlsCipher, with flagTLS]
//	session:       2 conn node user remote userAgent protocol worker:varint
//	               connected:varint disconnected:varint code:varint nchannels channel…
//	               scheme tlsVersion tlsCipher
//
// Session values of version 1 (written before sessions kept their scheme)
// end after their channels; they are read with an empty scheme.
const (
	valueVersion   byte = 1
	sessionVersion byte = 2
)

// Record flags. flagCut: data is a prefix (or nothing) of size bytes whose
// SHA-256 follows (Record.DataSize). flagTLS: the record ends with the
// connection's scheme, TLS version and cipher suite (Record.Scheme).
const (
	flagOpaque byte = 1
	flagCut    byte = 2
	flagTLS    byte = 4
)

func hourOf(ns int64) uint32 {
	if ns < 0 {
		return 0
	}
	return uint32(ns / int64(time.Hour))
}

func appendU64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

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
	return varbuf.AppendStr(dst, name)
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
	dst = varbuf.AppendStr(dst, r.Node)
	dst = varbuf.AppendStr(dst, r.Conn)
	dst = varbuf.AppendStr(dst, r.User)
	dst = varbuf.AppendStr(dst, r.Op)
	dst = varbuf.AppendStr(dst, r.Channel)
	var flags byte
	if r.Opaque {
		flags |= flagOpaque
	}
	if r.DataSize > 0 {
		flags |= flagCut
	}
	if r.Scheme != "" {
		flags |= flagTLS
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(r.Data)))
	dst = append(dst, r.Data...)
	dst = varbuf.AppendStr(dst, r.Attempt)
	dst = varbuf.AppendStr(dst, r.Error)
	dst = varbuf.AppendStr(dst, r.Remote)
	dst = binary.AppendVarint(dst, int64(r.Code))
	dst = binary.AppendVarint(dst, int64(r.Worker))
	if r.DataSize > 0 {
		dst = binary.AppendUvarint(dst, uint64(r.DataSize))
		dst = append(dst, r.DataHash[:]...)
	}
	if r.Scheme != "" {
		dst = appendTLS(dst, r.Scheme, r.TLSVersion, r.TLSCipher)
	}
	return dst
}

func appendTLS(dst []byte, scheme, version, cipher string) []byte {
	dst = varbuf.AppendStr(dst, scheme)
	dst = varbuf.AppendStr(dst, version)
	return varbuf.AppendStr(dst, cipher)
}

// decodeRecord decodes the value of audit key k into r; r owns its bytes.
func decodeRecord(k, v []byte, r *Record) error {
	if len(k) != 17 || len(v) == 0 || v[0] != valueVersion {
		return errCorrupt
	}
	ns := int64(binary.BigEndian.Uint64(k[1:9]))
	*r = Record{Time: time.Unix(0, ns).UTC(), Seq: binary.BigEndian.Uint64(k[9:17])}
	rd := varbuf.Reader{B: v[1:]}
	r.Node, r.Conn, r.User, r.Op, r.Channel = rd.Str(), rd.Str(), rd.Str(), rd.Str(), rd.Str()
	flags := rd.Byte()
	r.Opaque = flags&flagOpaque != 0
	if d := rd.Bytes(); len(d) > 0 {
		r.Data = append([]byte(nil), d...)
	}
	r.Attempt, r.Error, r.Remote = rd.Str(), rd.Str(), rd.Str()
	r.Code = int(rd.Varint())
	r.Worker = int(rd.Varint())
	if flags&flagCut != 0 {
		r.DataSize = int(rd.Uvarint())
		if len(rd.B) < len(r.DataHash) {
			return errCorrupt
		}
		copy(r.DataHash[:], rd.B)
		rd.B = rd.B[len(r.DataHash):]
	}
	if flags&flagTLS != 0 {
		r.Scheme, r.TLSVersion, r.TLSCipher = rd.Str(), rd.Str(), rd.Str()
	}
	if !rd.Done() {
		return errCorrupt
	}
	return nil
}

func encodeSession(dst []byte, s *Session) []byte {
	dst = append(dst, sessionVersion)
	dst = varbuf.AppendStr(dst, s.Conn)
	dst = varbuf.AppendStr(dst, s.Node)
	dst = varbuf.AppendStr(dst, s.User)
	dst = varbuf.AppendStr(dst, s.Remote)
	dst = varbuf.AppendStr(dst, s.UserAgent)
	dst = varbuf.AppendStr(dst, s.Protocol)
	dst = binary.AppendVarint(dst, int64(s.Worker))
	dst = binary.AppendVarint(dst, unixNano(s.Connected))
	dst = binary.AppendVarint(dst, unixNano(s.Disconnected))
	dst = binary.AppendVarint(dst, int64(s.CloseCode))
	dst = binary.AppendUvarint(dst, uint64(len(s.Channels)))
	for _, ch := range s.Channels {
		dst = varbuf.AppendStr(dst, ch)
	}
	return appendTLS(dst, s.Scheme, s.TLSVersion, s.TLSCipher)
}

func decodeSession(v []byte, s *Session) error {
	if len(v) == 0 || (v[0] != valueVersion && v[0] != sessionVersion) {
		return errCorrupt
	}
	*s = Session{}
	rd := varbuf.Reader{B: v[1:]}
	s.Conn, s.Node, s.User, s.Remote, s.UserAgent, s.Protocol = rd.Str(), rd.Str(), rd.Str(), rd.Str(), rd.Str(), rd.Str()
	s.Worker = int(rd.Varint())
	s.Connected = fromUnixNano(rd.Varint())
	s.Disconnected = fromUnixNano(rd.Varint())
	s.CloseCode = int(rd.Varint())
	n := rd.Uvarint()
	if n > uint64(len(rd.B)) {
		return errCorrupt
	}
	s.Channels = make([]string, 0, n)
	for range n {
		s.Channels = append(s.Channels, rd.Str())
	}
	if v[0] == sessionVersion {
		s.Scheme, s.TLSVersion, s.TLSCipher = rd.Str(), rd.Str(), rd.Str()
	}
	if !rd.Done() {
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
