package store

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// spreadRecords are records over six hours starting at base, several per
// hour and one on each hour boundary, with channels, users and ops that
// vary independently. Names that are prefixes of others ("n" and "news",
// "bo" and "bob") check that index entries of one name never show under
// another. Seq is what the store will give them when appended in order.
func spreadRecords(base time.Time) []Record {
	channels := []string{"news", "chat", "n", "news"}
	users := []string{"alice", "bob", "bo", "", "alice"}
	ops := []string{OpPublish, OpSubscribe, OpPublish, OpUnsubscribe, OpRefused, OpAuth}
	var recs []Record
	for h := range 6 {
		for _, m := range []int{0, 7, 19, 33, 59} {
			i := len(recs)
			recs = append(recs, Record{
				Time:    base.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute),
				Seq:     uint64(i + 1),
				Op:      ops[i%len(ops)],
				Channel: channels[i%len(channels)],
				User:    users[i%len(users)],
			})
			if recs[i].Op != OpRefused { // refused attempts keep no data
				recs[i].Data = fmt.Appendf(nil, `{"n":%d}`, i)
			}
		}
	}
	// Same nanosecond, two records: the sequence orders them.
	last := recs[len(recs)-1]
	last.Seq++
	last.Data = []byte(`"twin"`)
	return append(recs, last)
}

func spreadStore(t testing.TB) (*Store, time.Time, []Record) {
	t.Helper()
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	base := pastHour()
	recs := spreadRecords(base)
	appendAll(t, s, slices.Clone(recs))
	return s, base, recs
}

func TestAuditFilters(t *testing.T) {
	s, base, recs := spreadStore(t)
	hour := func(h float64) time.Time { return base.Add(time.Duration(h * float64(time.Hour))) }
	cases := []struct {
		name string
		q    AuditQuery
	}{
		{"all", AuditQuery{}},
		{"channel", AuditQuery{Channel: "news"}},
		{"channel prefix of another", AuditQuery{Channel: "n"}},
		{"user", AuditQuery{User: "bob"}},
		{"user prefix of another", AuditQuery{User: "bo"}},
		{"op", AuditQuery{Op: OpPublish}},
		{"since on an hour boundary", AuditQuery{Since: hour(2)}},
		{"until on an hour boundary", AuditQuery{Until: hour(4)}},
		{"since until", AuditQuery{Since: hour(1.25), Until: hour(4.5)}},
		{"since until exact record times", AuditQuery{Since: recs[7].Time, Until: recs[20].Time}},
		{"channel since until across hours", AuditQuery{Channel: "news", Since: hour(1.2), Until: hour(4)}},
		{"channel until on a record", AuditQuery{Channel: "chat", Until: recs[13].Time}},
		{"channel since on a record", AuditQuery{Channel: "chat", Since: recs[13].Time}},
		{"user since until across hours", AuditQuery{User: "alice", Since: hour(0.5), Until: hour(5.5)}},
		{"user since in the last hour", AuditQuery{User: "alice", Since: hour(5)}},
		{"channel and user", AuditQuery{Channel: "news", User: "alice"}},
		{"channel and op", AuditQuery{Channel: "news", Op: OpPublish}},
		{"user and op and since", AuditQuery{User: "alice", Op: OpRefused, Since: hour(1)}},
		{"all three and a window", AuditQuery{Channel: "chat", User: "bob", Op: OpSubscribe, Since: hour(0), Until: hour(6)}},
		{"unknown channel", AuditQuery{Channel: "nope"}},
		{"unknown user", AuditQuery{User: "nope"}},
		{"unknown op", AuditQuery{Op: "nope"}},
		{"since after everything", AuditQuery{Since: hour(7)}},
		{"channel since after everything", AuditQuery{Channel: "news", Since: hour(7)}},
		{"until before everything", AuditQuery{Until: hour(-1)}},
		{"channel until before everything", AuditQuery{Channel: "news", Until: hour(-1)}},
		{"since equals until", AuditQuery{Since: hour(2), Until: hour(2)}},
		{"since after until", AuditQuery{Channel: "news", Since: hour(3), Until: hour(2)}},
		{"until before 1970", AuditQuery{Until: time.Unix(-10, 0)}},
		{"since before 1970", AuditQuery{User: "alice", Since: time.Unix(-10, 0)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := filterRecords(recs, tc.q)
			q := tc.q
			q.Limit = MaxLimit
			got, next, err := s.Audit(q)
			if err != nil || next != "" {
				t.Fatalf("next %q, err %v", next, err)
			}
			if got == nil {
				t.Errorf("got a nil slice, want an empty one")
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %s\nwant %s", seqs(got), seqs(want))
			}
			if tc.name != "all" && len(want) == len(recs) {
				t.Fatalf("the case filters nothing")
			}
		})
	}
}

func TestAuditPaging(t *testing.T) {
	s, base, recs := spreadStore(t)
	for _, q := range []AuditQuery{
		{},
		{Channel: "news"},
		{User: "alice"},
		{Op: OpPublish},
		{Channel: "chat", Since: base.Add(time.Hour), Until: base.Add(5 * time.Hour)},
		{User: "alice", Op: OpPublish},
		{Since: base.Add(90 * time.Minute)},
		{Channel: "news", User: "alice"},
	} {
		want := filterRecords(recs, q)
		if len(want) < 3 {
			t.Fatalf("%+v: only %d records", q, len(want))
		}
		for _, limit := range []int{1, 2, 3, 7, len(want) - 1, len(want), len(want) + 1} {
			q.Limit = limit
			got := auditAll(t, s, q)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Audit(%+v) paged: %s\nwant %s", q, seqs(got), seqs(want))
			}
		}
	}
}

func TestAuditBadCursor(t *testing.T) {
	s, _, _ := spreadStore(t)
	_, next, err := s.Audit(AuditQuery{Limit: 2})
	if err != nil || next == "" {
		t.Fatalf("first page: %q %v", next, err)
	}
	for _, c := range []string{
		"!!!",
		next + "=",
		base64.RawURLEncoding.EncodeToString(make([]byte, 15)),
		base64.RawURLEncoding.EncodeToString(make([]byte, 17)),
		base64.StdEncoding.EncodeToString(make([]byte, 16)), // padded
	} {
		for _, q := range []AuditQuery{{Cursor: c}, {Channel: "news", Cursor: c}} {
			if _, _, err := s.Audit(q); !errors.Is(err, ErrBadCursor) {
				t.Errorf("Audit(%+v) = %v, want ErrBadCursor", q, err)
			}
		}
	}
	if _, _, err := s.Sessions(SessionQuery{Cursor: "!!!"}); !errors.Is(err, ErrBadCursor) {
		t.Errorf("Sessions with a bad cursor = %v", err)
	}
	if _, _, err := s.Sessions(SessionQuery{User: "u", Cursor: base64.RawURLEncoding.EncodeToString(make([]byte, 7))}); !errors.Is(err, ErrBadCursor) {
		t.Errorf("Sessions with a short cursor = %v", err)
	}
	// A well-formed cursor past everything gives an empty last page.
	end := base64.RawURLEncoding.EncodeToString([]byte{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0})
	for _, q := range []AuditQuery{{Cursor: end}, {User: "bob", Cursor: end}} {
		if recs, next, err := s.Audit(q); err != nil || len(recs) != 0 || next != "" {
			t.Errorf("Audit(%+v) = %d records, %q, %v", q, len(recs), next, err)
		}
	}
}

func TestAuditLimit(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Sync: SyncNone})
	const n = MaxLimit + 50
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{Op: OpPublish, Channel: "c"}
	}
	appendAll(t, s, recs)
	for _, tc := range []struct {
		limit, want int
	}{
		{0, DefaultLimit}, {-5, DefaultLimit}, {1, 1}, {MaxLimit, MaxLimit}, {MaxLimit + 1, MaxLimit}, {1 << 30, MaxLimit},
	} {
		for _, q := range []AuditQuery{{Limit: tc.limit}, {Channel: "c", Limit: tc.limit}} {
			got, next, err := s.Audit(q)
			if err != nil || len(got) != tc.want || next == "" {
				t.Errorf("Audit(%+v) = %d records, next %q, %v; want %d and a cursor", q, len(got), next, err, tc.want)
			}
		}
	}
	got, next, err := s.Audit(AuditQuery{Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	rest, next, err := s.Audit(AuditQuery{Limit: 1 << 20, Cursor: next})
	if err != nil || len(rest) != n-MaxLimit || next != "" || rest[0].Seq != got[len(got)-1].Seq+1 {
		t.Fatalf("second page: %d records, next %q, %v", len(rest), next, err)
	}
}

// TestAuditEmpty queries stores with nothing to return: every query must
// answer at once with an empty page.
func TestAuditEmpty(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	check := func(when string) {
		t.Helper()
		for _, q := range []AuditQuery{{}, {Channel: "c"}, {User: "u"}, {Channel: "c", Since: time.Unix(1, 0)}} {
			start := time.Now()
			got, next, err := s.Audit(q)
			if err != nil || len(got) != 0 || got == nil || next != "" {
				t.Errorf("%s: Audit(%+v) = %v, %q, %v", when, q, got, next, err)
			}
			// Not a timing assertion on the store's speed: a query of an
			// empty store that takes seconds walks every hour since 1970.
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s: Audit(%+v) took %v", when, q, d)
			}
		}
		if ss, next, err := s.Sessions(SessionQuery{User: "u"}); err != nil || len(ss) != 0 || next != "" {
			t.Errorf("%s: Sessions = %v, %q, %v", when, ss, next, err)
		}
	}
	check("new store")
	appendAll(t, s, []Record{{Op: OpPublish, Channel: "c", User: "u"}})
	if err := s.Trim(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("trimmed store")
}

func TestSessionsQuery(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{})
	base := pastHour()
	var all []Session
	for i := range 12 {
		se := Session{
			Conn:      fmt.Sprintf("conn-%02d", i),
			User:      []string{"alice", "bob", "al"}[i%3],
			Connected: base.Add(time.Duration(i) * 25 * time.Minute), // across five hours
			Channels:  []string{fmt.Sprint("ch", i)},
		}
		if i%4 == 1 {
			se.Disconnected, se.CloseCode = se.Connected.Add(time.Minute), 1000+i
		}
		all = append(all, se)
	}
	// Two sessions in the same nanosecond, ordered by connection id.
	twin := all[11]
	twin.Conn = "conn-11b"
	all = append(all, twin)
	for i := range all {
		s.PutSession(&all[i])
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	active, inactive := true, false
	filter := func(q SessionQuery) []Session {
		var out []Session
		for _, se := range all {
			if (q.User == "" || se.User == q.User) && (q.Active == nil || *q.Active == se.Active()) {
				out = append(out, se)
			}
		}
		return out
	}
	for _, q := range []SessionQuery{
		{}, {User: "alice"}, {User: "al"}, {User: "nobody"}, {Active: &active}, {Active: &inactive},
		{User: "bob", Active: &active}, {User: "bob", Active: &inactive}, {User: "alice", Active: &inactive},
	} {
		want := filter(q)
		for _, limit := range []int{1, 2, 5, 100} {
			q.Limit = limit
			got := sessionsAll(t, s, q)
			if len(got) != len(want) {
				t.Errorf("Sessions(%+v): %d sessions, want %d", q, len(got), len(want))
				continue
			}
			for i := range got {
				if got[i].Conn != want[i].Conn || got[i].User != want[i].User || got[i].Active() != want[i].Active() ||
					!got[i].Connected.Equal(want[i].Connected) || got[i].CloseCode != want[i].CloseCode ||
					!slices.Equal(got[i].Channels, want[i].Channels) {
					t.Errorf("Sessions(%+v)[%d] = %+v, want %+v", q, i, got[i], want[i])
				}
			}
		}
	}
}

func TestRecordJSON(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)
	for _, tc := range []struct {
		name string
		rec  Record
		data string // the "data" member
		enc  bool   // "enc":"base64" present
	}{
		{"json", Record{Time: at, Seq: 1, Node: "n", Worker: 3, Conn: "c", User: "u", Op: OpPublish, Channel: "ch",
			Data: []byte(`{"a":[1,2,{"b":null}]}`)}, `{"a":[1,2,{"b":null}]}`, false},
		{"json string", Record{Time: at, Seq: 2, Op: OpBroadcast, Data: []byte(`"hi"`)}, `"hi"`, false},
		{"opaque", Record{Time: at, Seq: 3, Op: OpPublish, Channel: "ch", Data: []byte{0, 1, 0xfe, 0xff, '"'}, Opaque: true},
			`"AAH+/yI="`, true},
		{"opaque empty", Record{Time: at, Seq: 4, Op: OpPublish, Opaque: true}, `""`, true},
		{"no data", Record{Time: at, Seq: 5, Op: OpConnect, Remote: "1.2.3.4:5", Worker: -1}, `null`, false},
		{"refused", Record{Time: at, Seq: 6, Op: OpRefused, Attempt: OpSubscribe, Error: "forbidden", Code: 4403}, `null`, false},
		{"disconnect", Record{Time: at, Seq: 7, Op: OpDisconnect, Conn: "c", Code: 1006}, `null`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
			if got := string(m["data"]); got != tc.data {
				t.Errorf("data = %s, want %s", got, tc.data)
			}
			if enc, ok := m["enc"]; ok != tc.enc || (ok && string(enc) != `"base64"`) {
				t.Errorf("enc = %s (present %v), want present %v", enc, ok, tc.enc)
			}
			if got := string(m["time"]); got != `"2025-03-04T05:06:07.00000089Z"` {
				t.Errorf("time = %s", got)
			}
			for _, k := range []string{"seq", "node", "worker", "conn", "user", "op", "channel"} {
				if _, ok := m[k]; !ok {
					t.Errorf("member %q missing from %s", k, b)
				}
			}
			var back Record
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			want := tc.rec
			if want.Opaque && want.Data == nil {
				want.Data = []byte{}
			}
			if !back.Time.Equal(want.Time) {
				t.Errorf("time %v, want %v", back.Time, want.Time)
			}
			back.Time = want.Time
			if !reflect.DeepEqual(back, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", back, want)
			}
		})
	}
	// Data that is neither JSON nor opaque is sent as a JSON string.
	b, err := json.Marshal(Record{Time: at, Data: []byte("not json")})
	if err != nil || !strings.Contains(string(b), `"data":"not json"`) {
		t.Errorf("non-JSON data: %s %v", b, err)
	}
	for _, bad := range []string{`{"time":"yesterday"}`, `{"time":"2025-03-04T05:06:07Z","enc":"base64","data":"!!"}`,
		`{"time":"2025-03-04T05:06:07Z","enc":"base64","data":7}`, `[]`} {
		var r Record
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
}

func TestSessionJSON(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	active := Session{Conn: "c1", Node: "n", Worker: 1, User: "u", Remote: "1.2.3.4:5", UserAgent: "ua/1",
		Protocol: "json", Scheme: "wss", TLSVersion: "TLS 1.3", TLSCipher: "TLS_AES_128_GCM_SHA256", Connected: at}
	closed := active
	closed.Channels = []string{"a", "b"}
	closed.Disconnected, closed.CloseCode = at.Add(time.Minute), 1001
	for _, tc := range []struct {
		name string
		se   Session
		want string
	}{
		{"active", active, `{"conn":"c1","node":"n","worker":1,"user":"u","remote":"1.2.3.4:5","user_agent":"ua/1",` +
			`"protocol":"json","scheme":"wss","tls_version":"TLS 1.3","tls_cipher":"TLS_AES_128_GCM_SHA256",` +
			`"connected":"2025-03-04T05:06:07Z","disconnected":null,"close_code":null,"active":true,"channels":[]}`},
		{"closed", closed, `{"conn":"c1","node":"n","worker":1,"user":"u","remote":"1.2.3.4:5","user_agent":"ua/1",` +
			`"protocol":"json","scheme":"wss","tls_version":"TLS 1.3","tls_cipher":"TLS_AES_128_GCM_SHA256",` +
			`"connected":"2025-03-04T05:06:07Z","disconnected":"2025-03-04T05:07:07Z","close_code":1001,` +
			`"active":false,"channels":["a","b"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.se)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
			var back Session
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			want := tc.se
			if want.Channels == nil {
				want.Channels = []string{}
			}
			if !reflect.DeepEqual(back, want) {
				t.Errorf("round trip:\n got %+v\nwant %+v", back, want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{"", time.Time{}, false},
		{"1741064767000", time.UnixMilli(1741064767000), false},
		{"-1000", time.UnixMilli(-1000), false},
		{"2025-03-04T05:06:07Z", time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC), false},
		{"2025-03-04T05:06:07.123456789+02:00", time.Date(2025, 3, 4, 3, 6, 7, 123456789, time.UTC), false},
		{"2025-03-04", time.Time{}, true},
		{"yesterday", time.Time{}, true},
		{"1.5", time.Time{}, true},
	} {
		got, err := ParseTime(tc.in)
		if (err != nil) != tc.bad || !got.Equal(tc.want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
