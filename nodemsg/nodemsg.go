package nodemsg

import (
	"encoding/binary"
	"errors"

	"github.com/zenconn/server/internal/varbuf"
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
	KindEvict   byte = 23
	KindTickets byte = 24
)

// TicketKeySize is the size of one TLS session-ticket key (the keys of
// tls.Config.SetSessionTicketKeys).
const TicketKeySize = 32

// MaxTicketKeys is the most keys one Tickets record carries.
const MaxTicketKeys = 64

// FlagOpaque marks data as opaque bytes rather than JSON text.
const FlagOpaque byte = 1

// ErrMalformed is returned for a record that does not decode.
var ErrMalformed = errors.New("nodemsg: malformed record")

// MaxWorkers is the most worker processes a node runs. Worker ids are
// 0..MaxWorkers-1: the agent refuses more, the serve command's --workers
// flag is capped by it, and the engine keeps room for that many workers in
// the connection ids it hands out. 256 workers hold ~4.6 M connections
// where a process may open 20,000 files (about 18,000 connections each).
const MaxWorkers = 256

// Stats are the counters a worker reports in a Stats record, totals of
// all its event loops.
type Stats struct {
	Connections   uint64 // open WebSocket connections
	Subscriptions uint64 // channels joined, summed over connections
	MessagesIn    uint64 // client messages received
	MessagesOut   uint64 // messages queued to clients
	BytesIn       uint64 // bytes read from clients (HTTP and WebSocket)
	BytesOut      uint64 // bytes written to clients (HTTP and WebSocket)
	SlowClosed    uint64 // connections closed as slow consumers (4001)
}

// Msg is a decoded record; fields unused by its kind are zero. Byte
// slices alias the decoded record.
type Msg struct {
	Kind   byte
	Token  uint64
	Conn   string
	User   string
	Remote string
	Agent  string // Opened: the client's User-Agent
	Proto  string
	// Opened: the TLS version and cipher suite of the connection (the
	// numbers of crypto/tls), 0 for a plain-text one.
	TLSVersion, TLSCipher uint16
	Op                    string // Refused: the op turned down
	Code                  string // Refused: the error code sent back
	Status                uint64 // Closed: close code; Done: 1 when it failed
	Channel               string
	From                  string
	Flags                 byte
	Data                  []byte
	Worker                uint64 // Ready: the worker's id
	PID                   uint64 // Ready: the worker's process id
	Stats                 Stats  // Stats: the worker's counters
}

// AppendReady appends a Ready record.
func AppendReady(dst []byte, worker, pid int) []byte {
	dst = append(dst, KindReady)
	dst = binary.AppendUvarint(dst, uint64(worker))
	return binary.AppendUvarint(dst, uint64(pid))
}

// AppendOpened appends an Opened record; tlsVersion and tlsCipher are 0
// for a plain-text connection.
func AppendOpened(dst []byte, conn, user, remote, userAgent, proto string, tlsVersion, tlsCipher uint16) []byte {
	dst = append(dst, KindOpened)
	dst = varbuf.AppendStr(dst, conn)
	dst = varbuf.AppendStr(dst, user)
	dst = varbuf.AppendStr(dst, remote)
	dst = varbuf.AppendStr(dst, userAgent)
	dst = varbuf.AppendStr(dst, proto)
	dst = binary.AppendUvarint(dst, uint64(tlsVersion))
	return binary.AppendUvarint(dst, uint64(tlsCipher))
}

// AppendTickets appends a Tickets record: keys, the newest first (1 to
// MaxTicketKeys of them).
func AppendTickets(dst []byte, keys [][TicketKeySize]byte) []byte {
	dst = binary.AppendUvarint(append(dst, KindTickets), uint64(len(keys)*TicketKeySize))
	for i := range keys {
		dst = append(dst, keys[i][:]...)
	}
	return dst
}

// TicketKeys copies the keys of a decoded Tickets record (its Data).
func TicketKeys(data []byte) [][TicketKeySize]byte {
	keys := make([][TicketKeySize]byte, len(data)/TicketKeySize)
	for i := range keys {
		copy(keys[i][:], data[i*TicketKeySize:])
	}
	return keys
}

// AppendClosed appends a Closed record.
func AppendClosed(dst []byte, conn string, code uint16) []byte {
	return binary.AppendUvarint(varbuf.AppendStr(append(dst, KindClosed), conn), uint64(code))
}

// AppendRefused appends a Refused record.
func AppendRefused(dst []byte, conn, user, op, channel, code, remote string, opaque bool, data []byte) []byte {
	dst = append(dst, KindRefused)
	for _, s := range [...]string{conn, user, op, channel, code, remote} {
		dst = varbuf.AppendStr(dst, s)
	}
	return varbuf.AppendBytes(append(dst, flagsOf(opaque)), data)
}

func flagsOf(opaque bool) byte {
	if opaque {
		return FlagOpaque
	}
	return 0
}

// AppendUser appends a User record.
func AppendUser(dst []byte, conn, user string) []byte {
	return varbuf.AppendStr(varbuf.AppendStr(append(dst, KindUser), conn), user)
}

// AppendSub appends a Sub record.
func AppendSub(dst []byte, token uint64, conn, channel string) []byte {
	dst = binary.AppendUvarint(append(dst, KindSub), token)
	dst = varbuf.AppendStr(dst, conn)
	return varbuf.AppendStr(dst, channel)
}

// AppendUnsub appends an Unsub record.
func AppendUnsub(dst []byte, conn, channel string) []byte {
	return varbuf.AppendStr(varbuf.AppendStr(append(dst, KindUnsub), conn), channel)
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
	dst = varbuf.AppendStr(dst, channel)
	dst = varbuf.AppendStr(dst, from)
	dst = append(dst, flagsOf(opaque))
	return varbuf.AppendBytes(dst, data)
}

// AppendStats appends a Stats record.
func AppendStats(dst []byte, st *Stats) []byte {
	dst = append(dst, KindStats)
	for _, n := range [...]uint64{st.Connections, st.Subscriptions, st.MessagesIn, st.MessagesOut,
		st.BytesIn, st.BytesOut, st.SlowClosed} {
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
	return varbuf.AppendStr(append(dst, KindKick), conn)
}

// AppendEvict appends an Evict record.
func AppendEvict(dst []byte, conn string, code uint16) []byte {
	return binary.AppendUvarint(varbuf.AppendStr(append(dst, KindEvict), conn), uint64(code))
}

// Decode decodes one record into m.
func Decode(rec []byte, m *Msg) error {
	*m = Msg{}
	if len(rec) == 0 {
		return ErrMalformed
	}
	m.Kind = rec[0]
	r := varbuf.Reader{B: rec[1:]}
	switch m.Kind {
	case KindReady:
		m.Worker, m.PID = r.Uvarint(), r.Uvarint()
	case KindOpened:
		m.Conn, m.User, m.Remote, m.Agent, m.Proto = r.Str(), r.Str(), r.Str(), r.Str(), r.Str()
		m.TLSVersion, m.TLSCipher = uint16Of(&r), uint16Of(&r)
	case KindClosed:
		m.Conn = r.Str()
		m.Status = r.Uvarint()
	case KindKick:
		m.Conn = r.Str()
	case KindEvict:
		m.Conn = r.Str()
		m.Status = r.Uvarint()
	case KindRefused:
		m.Conn, m.User, m.Op, m.Channel, m.Code, m.Remote = r.Str(), r.Str(), r.Str(), r.Str(), r.Str(), r.Str()
		m.Flags = r.Byte()
		m.Data = r.Bytes()
	case KindSub:
		m.Token = r.Uvarint()
		m.Conn, m.Channel = r.Str(), r.Str()
	case KindUnsub:
		m.Conn, m.Channel = r.Str(), r.Str()
	case KindUser:
		m.Conn, m.User = r.Str(), r.Str()
	case KindPublish, KindDeliver:
		if m.Kind == KindPublish {
			m.Token = r.Uvarint()
		}
		m.Channel, m.From = r.Str(), r.Str()
		m.Flags = r.Byte()
		m.Data = r.Bytes()
	case KindStats:
		st := &m.Stats
		st.Connections, st.Subscriptions, st.MessagesIn, st.MessagesOut = r.Uvarint(), r.Uvarint(), r.Uvarint(), r.Uvarint()
		st.BytesIn, st.BytesOut, st.SlowClosed = r.Uvarint(), r.Uvarint(), r.Uvarint()
	case KindDone:
		m.Token = r.Uvarint()
		m.Status = uint64(r.Byte())
	case KindTickets:
		m.Data = r.Bytes()
		if n := len(m.Data); n == 0 || n%TicketKeySize != 0 || n > MaxTicketKeys*TicketKeySize {
			return ErrMalformed
		}
	default:
		return ErrMalformed
	}
	if !r.Done() {
		return ErrMalformed
	}
	return nil
}

// uint16Of reads a uvarint that must fit 16 bits.
func uint16Of(r *varbuf.Reader) uint16 {
	v := r.Uvarint()
	if v > 0xffff {
		r.Bad = true
	}
	return uint16(v)
}
