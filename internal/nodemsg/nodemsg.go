// Package nodemsg encodes the records that a node's agent and its workers
// exchange over shared-memory rings.
//
// Every record starts with one kind byte; its fields follow in a fixed
// order. Strings and byte strings are an unsigned varint length followed
// by the bytes; numbers are unsigned varints.
//
//	worker → agent
//	  Ready     worker:uvarint pid:uvarint
//	  Opened    conn user remote proto
//	  Closed    conn
//	  User      conn user                       (after auth or token expiry)
//	  Sub       token:uvarint conn channel      (agent answers SubOK token)
//	  Unsub     conn channel
//	  Publish   channel from flags:u8 data      (channel empty: broadcast)
//	  Stats     conns subs msgsIn msgsOut bytesIn bytesOut slow  (uvarints)
//	agent → worker
//	  SubOK     token:uvarint
//	  Deliver   channel from flags:u8 data      (channel empty: broadcast)
//	  Kick      conn                            (close it with 4100)
//
// Decode never panics on malformed input and never retains it.
package nodemsg

import (
	"encoding/binary"
	"errors"
)

// Record kinds.
const (
	KindReady   byte = 1
	KindOpened  byte = 2
	KindClosed  byte = 3
	KindSub     byte = 4
	KindUnsub   byte = 5
	KindPublish byte = 6
	KindStats   byte = 7
	KindUser    byte = 8
	KindSubOK   byte = 20
	KindDeliver byte = 21
	KindKick    byte = 22
)

// FlagOpaque marks data as opaque bytes rather than JSON text.
const FlagOpaque byte = 1

// ErrMalformed is returned for a record that does not decode.
var ErrMalformed = errors.New("nodemsg: malformed record")

// Msg is a decoded record; fields unused by its kind are zero. Byte
// slices alias the decoded record.
type Msg struct {
	Kind    byte
	Token   uint64
	Conn    string
	User    string
	Remote  string
	Proto   string
	Channel string
	From    string
	Flags   byte
	Data    []byte
	Nums    [7]uint64 // Ready: worker, pid; Stats: the counters in order
}

// AppendReady appends a Ready record.
func AppendReady(dst []byte, worker, pid int) []byte {
	dst = append(dst, KindReady)
	dst = binary.AppendUvarint(dst, uint64(worker))
	return binary.AppendUvarint(dst, uint64(pid))
}

// AppendOpened appends an Opened record.
func AppendOpened(dst []byte, conn, user, remote, proto string) []byte {
	dst = append(dst, KindOpened)
	dst = appendStr(dst, conn)
	dst = appendStr(dst, user)
	dst = appendStr(dst, remote)
	return appendStr(dst, proto)
}

// AppendClosed appends a Closed record.
func AppendClosed(dst []byte, conn string) []byte {
	return appendStr(append(dst, KindClosed), conn)
}

// AppendUser appends a User record.
func AppendUser(dst []byte, conn, user string) []byte {
	return appendStr(appendStr(append(dst, KindUser), conn), user)
}

// AppendSub appends a Sub record.
func AppendSub(dst []byte, token uint64, conn, channel string) []byte {
	dst = binary.AppendUvarint(append(dst, KindSub), token)
	dst = appendStr(dst, conn)
	return appendStr(dst, channel)
}

// AppendUnsub appends an Unsub record.
func AppendUnsub(dst []byte, conn, channel string) []byte {
	return appendStr(appendStr(append(dst, KindUnsub), conn), channel)
}

// AppendPublish appends a Publish record (kind KindPublish) or, with kind
// KindDeliver, the agent's Deliver record of the same shape.
func AppendPublish(dst []byte, kind byte, channel, from string, opaque bool, data []byte) []byte {
	dst = appendStr(append(dst, kind), channel)
	dst = appendStr(dst, from)
	var flags byte
	if opaque {
		flags = FlagOpaque
	}
	dst = append(dst, flags)
	return appendBytes(dst, data)
}

// AppendStats appends a Stats record.
func AppendStats(dst []byte, nums [7]uint64) []byte {
	dst = append(dst, KindStats)
	for _, n := range nums {
		dst = binary.AppendUvarint(dst, n)
	}
	return dst
}

// AppendSubOK appends a SubOK record.
func AppendSubOK(dst []byte, token uint64) []byte {
	return binary.AppendUvarint(append(dst, KindSubOK), token)
}

// AppendKick appends a Kick record.
func AppendKick(dst []byte, conn string) []byte {
	return appendStr(append(dst, KindKick), conn)
}

func appendStr(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) num() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	l := r.num()
	if r.bad || l > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	out := r.b[:l]
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

// Decode decodes one record into m.
func Decode(rec []byte, m *Msg) error {
	*m = Msg{}
	if len(rec) == 0 {
		return ErrMalformed
	}
	m.Kind = rec[0]
	r := reader{b: rec[1:]}
	switch m.Kind {
	case KindReady:
		m.Nums[0], m.Nums[1] = r.num(), r.num()
	case KindOpened:
		m.Conn, m.User, m.Remote, m.Proto = r.str(), r.str(), r.str(), r.str()
	case KindClosed, KindKick:
		m.Conn = r.str()
	case KindSub:
		m.Token = r.num()
		m.Conn, m.Channel = r.str(), r.str()
	case KindUnsub:
		m.Conn, m.Channel = r.str(), r.str()
	case KindUser:
		m.Conn, m.User = r.str(), r.str()
	case KindPublish, KindDeliver:
		m.Channel, m.From = r.str(), r.str()
		m.Flags = r.byte1()
		m.Data = r.bytes()
	case KindStats:
		for i := range m.Nums {
			m.Nums[i] = r.num()
		}
	case KindSubOK:
		m.Token = r.num()
	default:
		return ErrMalformed
	}
	if r.bad || len(r.b) != 0 {
		return ErrMalformed
	}
	return nil
}
