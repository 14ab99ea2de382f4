// Package nodemsg encodes the records that a node's agent and its workers
// exchange over shared-memory rings.
//
// Every record starts with one kind byte; its fields follow in a fixed
// order. Strings and byte strings are an unsigned varint length followed
// by the bytes; numbers are unsigned varints.
//
//	worker → agent
//	  Ready     worker:uvarint pid:uvarint
//	  Opened    conn user remote userAgent proto
//	  Closed    conn code:uvarint               (WebSocket close code)
//	  User      conn user                       (after auth or token expiry)
//	  Sub       token:uvarint conn channel      (agent answers Done token;
//	                                            token 0: no answer)
//	  Unsub     conn channel
//	  Publish   token:uvarint channel from flags:u8 data
//	                                            (channel empty: broadcast;
//	                                            token 0: no answer wanted,
//	                                            else the agent answers Done
//	                                            once the audit record is
//	                                            durable)
//	  Refused   conn user op channel code remote flags:u8 data
//	                                            (an attempt turned down)
//	  Stats     conns subs msgsIn msgsOut bytesIn bytesOut slow  (uvarints)
//	agent → worker
//	  Done      token:uvarint failed:u8
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
	KindRefused byte = 9
	KindDone    byte = 20
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
	Agent   string // Opened: the client's User-Agent
	Proto   string
	Op      string // Refused: the op turned down
	Code    string // Refused: the error code sent back
	Status  uint64 // Closed: close code; Done: 1 when it failed
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
func AppendOpened(dst []byte, conn, user, remote, userAgent, proto string) []byte {
	dst = append(dst, KindOpened)
	dst = appendStr(dst, conn)
	dst = appendStr(dst, user)
	dst = appendStr(dst, remote)
	dst = appendStr(dst, userAgent)
	return appendStr(dst, proto)
}

// AppendClosed appends a Closed record.
func AppendClosed(dst []byte, conn string, code uint16) []byte {
	return binary.AppendUvarint(appendStr(append(dst, KindClosed), conn), uint64(code))
}

// AppendRefused appends a Refused record.
func AppendRefused(dst []byte, conn, user, op, channel, code, remote string, opaque bool, data []byte) []byte {
	dst = append(dst, KindRefused)
	for _, s := range [...]string{conn, user, op, channel, code, remote} {
		dst = appendStr(dst, s)
	}
	return appendBytes(append(dst, flagsOf(opaque)), data)
}

func flagsOf(opaque bool) byte {
	if opaque {
		return FlagOpaque
	}
	return 0
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

// AppendPublish appends a Publish record.
func AppendPublish(dst []byte, token uint64, channel, from string, opaque bool, data []byte) []byte {
	dst = binary.AppendUvarint(append(dst, KindPublish), token)
	return appendMessage(dst, channel, from, opaque, data)
}

// AppendDeliver appends a Deliver record.
func AppendDeliver(dst []byte, channel, from string, opaque bool, data []byte) []byte {
	return appendMessage(append(dst, KindDeliver), channel, from, opaque, data)
}

func appendMessage(dst []byte, channel, from string, opaque bool, data []byte) []byte {
	dst = appendStr(dst, channel)
	dst = appendStr(dst, from)
	dst = append(dst, flagsOf(opaque))
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

// AppendDone appends a Done record.
func AppendDone(dst []byte, token uint64, failed bool) []byte {
	dst = binary.AppendUvarint(append(dst, KindDone), token)
	if failed {
		return append(dst, 1)
	}
	return append(dst, 0)
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
		m.Conn, m.User, m.Remote, m.Agent, m.Proto = r.str(), r.str(), r.str(), r.str(), r.str()
	case KindClosed:
		m.Conn = r.str()
		m.Status = r.num()
	case KindKick:
		m.Conn = r.str()
	case KindRefused:
		m.Conn, m.User, m.Op, m.Channel, m.Code, m.Remote = r.str(), r.str(), r.str(), r.str(), r.str(), r.str()
		m.Flags = r.byte1()
		m.Data = r.bytes()
	case KindSub:
		m.Token = r.num()
		m.Conn, m.Channel = r.str(), r.str()
	case KindUnsub:
		m.Conn, m.Channel = r.str(), r.str()
	case KindUser:
		m.Conn, m.User = r.str(), r.str()
	case KindPublish, KindDeliver:
		if m.Kind == KindPublish {
			m.Token = r.num()
		}
		m.Channel, m.From = r.str(), r.str()
		m.Flags = r.byte1()
		m.Data = r.bytes()
	case KindStats:
		for i := range m.Nums {
			m.Nums[i] = r.num()
		}
	case KindDone:
		m.Token = r.num()
		m.Status = uint64(r.byte1())
	default:
		return ErrMalformed
	}
	if r.bad || len(r.b) != 0 {
		return ErrMalformed
	}
	return nil
}
