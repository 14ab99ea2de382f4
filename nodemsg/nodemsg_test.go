package nodemsg

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/zenconn/server/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// vector is one record of every shape: its bytes as the encoder writes
// them and what Decode must read back. testdata/records.txt holds the same
// bytes, so a change of layout shows as a failing golden test.
type vector struct {
	name string
	rec  []byte
	want Msg
}

func vectors() []vector {
	var keys [2][TicketKeySize]byte
	for i := range TicketKeySize {
		keys[0][i], keys[1][i] = byte(i), byte(0xff-i)
	}
	stats := Stats{Connections: 1, Subscriptions: 2, MessagesIn: 3, MessagesOut: 4, BytesIn: 5, BytesOut: 6, SlowClosed: 1 << 40}
	return []vector{
		{"ready", AppendReady(nil, 3, 4242), Msg{Kind: KindReady, Worker: 3, PID: 4242}},
		{"opened", AppendOpened(nil, "c1", "alice", "127.0.0.1:5", "curl/8", "bin", 0, 0), Msg{Kind: KindOpened, Conn: "c1", User: "alice", Remote: "127.0.0.1:5", Agent: "curl/8", Proto: "bin"}},
		{"opened tls", AppendOpened(nil, "c2", "", "[::1]:7", "", "json", 0x0304, 0x1301),
			Msg{Kind: KindOpened, Conn: "c2", Remote: "[::1]:7", Proto: "json", TLSVersion: 0x0304, TLSCipher: 0x1301}},
		{"closed", AppendClosed(nil, "c1", 4001), Msg{Kind: KindClosed, Conn: "c1", Status: 4001}},
		{"refused", AppendRefused(nil, "c1", "eve", "publish", "private-x", "forbidden", "", true, []byte{1}),
			Msg{Kind: KindRefused, Conn: "c1", User: "eve", Op: "publish", Channel: "private-x", Code: "forbidden", Flags: FlagOpaque, Data: []byte{1}}},
		{"refused handshake", AppendRefused(nil, "", "", "connect", "", "unauthorized", "127.0.0.1:9", false, nil),
			Msg{Kind: KindRefused, Op: "connect", Code: "unauthorized", Remote: "127.0.0.1:9"}},
		{"user", AppendUser(nil, "c1", "bob"), Msg{Kind: KindUser, Conn: "c1", User: "bob"}},
		{"sub", AppendSub(nil, 99, "c1", "news"), Msg{Kind: KindSub, Token: 99, Conn: "c1", Channel: "news"}},
		{"unsub", AppendUnsub(nil, "c1", "news"), Msg{Kind: KindUnsub, Conn: "c1", Channel: "news"}},
		{"publish", AppendPublish(nil, 0, "news", "c1", false, []byte(`{"a":1}`)), Msg{Kind: KindPublish, Channel: "news", From: "c1", Data: []byte(`{"a":1}`)}},
		{"publish durable", AppendPublish(nil, 12, "news", "c1", false, []byte(`1`)), Msg{Kind: KindPublish, Token: 12, Channel: "news", From: "c1", Data: []byte(`1`)}},
		{"deliver opaque broadcast", AppendDeliver(nil, "", "api", true, []byte{0, 255}), Msg{Kind: KindDeliver, From: "api", Flags: FlagOpaque, Data: []byte{0, 255}}},
		{"stats", AppendStats(nil, &stats), Msg{Kind: KindStats, Stats: stats}},
		{"done", AppendDone(nil, 7, false), Msg{Kind: KindDone, Token: 7}},
		{"done failed", AppendDone(nil, 8, true), Msg{Kind: KindDone, Token: 8, Status: 1}},
		{"kick", AppendKick(nil, "c9"), Msg{Kind: KindKick, Conn: "c9"}},
		{"evict", AppendEvict(nil, "c9", 4009), Msg{Kind: KindEvict, Conn: "c9", Status: 4009}},
		{"tickets", AppendTickets(nil, keys[:]), Msg{Kind: KindTickets, Data: append(keys[0][:], keys[1][:]...)}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range vectors() {
		t.Run(tc.name, func(t *testing.T) {
			var m Msg
			if err := Decode(tc.rec, &m); err != nil {
				t.Fatal(err)
			}
			if !sameMsg(&m, &tc.want) {
				t.Fatalf("decoded %+v, want %+v", m, tc.want)
			}
			// Every strict prefix is malformed, never a panic or a shorter record.
			for i := 0; i < len(tc.rec); i++ {
				if err := Decode(tc.rec[:i], &m); err == nil {
					t.Fatalf("prefix of %d bytes decoded", i)
				}
			}
			if err := Decode(append(append([]byte(nil), tc.rec...), 0), &m); err == nil {
				t.Fatal("trailing byte accepted")
			}
		})
	}
}

// sameMsg reports whether two decoded records hold the same fields.
func sameMsg(m, w *Msg) bool {
	data := bytes.Equal(m.Data, w.Data)
	m2, w2 := *m, *w
	m2.Data, w2.Data = nil, nil
	return data && reflect.DeepEqual(m2, w2)
}

func FuzzDecode(f *testing.F) {
	f.Add(AppendPublish(nil, 3, "news", "c1", false, []byte(`{}`)))
	f.Add(AppendRefused(nil, "c1", "u", "auth", "", "unauthorized", "", false, nil))
	f.Add(AppendStats(nil, &Stats{Connections: 1, Subscriptions: 2, MessagesIn: 3}))
	f.Add([]byte{KindOpened, 0xff, 0xff, 0xff, 0xff, 0x0f})
	for _, v := range vectors() {
		f.Add(v.rec)
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		var m Msg
		if Decode(rec, &m) != nil {
			return
		}
		if len(m.Data) > len(rec) || len(m.Conn)+len(m.Channel)+len(m.From) > len(rec) {
			t.Fatalf("decoded more than the record holds")
		}
	})
}

// TestTicketsMalformed: a Tickets record holds 1 to MaxTicketKeys whole
// keys, else it is malformed.
func TestTicketsMalformed(t *testing.T) {
	for _, n := range []int{0, 1, TicketKeySize - 1, TicketKeySize + 1, (MaxTicketKeys + 1) * TicketKeySize} {
		rec := append(binary.AppendUvarint([]byte{KindTickets}, uint64(n)), make([]byte, n)...)
		var m Msg
		if err := Decode(rec, &m); err == nil {
			t.Errorf("%d bytes of keys decoded", n)
		}
	}
	keys := make([][TicketKeySize]byte, MaxTicketKeys)
	keys[MaxTicketKeys-1][0] = 7
	var m Msg
	if err := Decode(AppendTickets(nil, keys), &m); err != nil {
		t.Fatal(err)
	}
	if got := TicketKeys(m.Data); len(got) != MaxTicketKeys || got[MaxTicketKeys-1][0] != 7 {
		t.Fatalf("%d keys decoded", len(got))
	}
}
