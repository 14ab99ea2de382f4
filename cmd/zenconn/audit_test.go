package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zenconn/server/store"
)

// fillStore writes n publishes on channel "news" (every third one by bob)
// and two sessions into a store in data/pebble, and closes it.
func fillStore(t *testing.T, data string, n int) {
	t.Helper()
	st, err := store.Open(filepath.Join(data, "pebble"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		user := "alice"
		if i%3 == 0 {
			user = "bob"
		}
		st.Append(&store.Record{Node: "n1", Conn: "c1", User: user, Op: store.OpPublish, Channel: "news",
			Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}, nil)
	}
	now := time.Now()
	st.PutSession(&store.Session{Conn: "c1", Node: "n1", User: "alice", Protocol: "json", Connected: now})
	st.PutSession(&store.Session{Conn: "c2", Node: "n1", User: "bob", Protocol: "bin", Connected: now.Add(time.Millisecond),
		Disconnected: now.Add(time.Second), CloseCode: 1000})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var rows []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		rows = append(rows, m)
	}
	return rows
}

func TestAuditFromDataFolder(t *testing.T) {
	data := t.TempDir()
	fillStore(t, data, 250)
	cases := []struct {
		name     string
		args     []string
		want     int
		wantMore bool
	}{
		{"first page", []string{"--limit", "100"}, 100, true},
		{"every page", []string{"--limit", "100", "--all"}, 250, false},
		{"user filter", []string{"--user", "bob", "--all"}, 84, false},
		{"op with none", []string{"--op", "subscribe"}, 0, false},
		{"until the epoch", []string{"--until", "1"}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := auditCmd(append([]string{"--data", data}, tc.args...), &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			rows := jsonLines(t, out.String())
			if len(rows) != tc.want {
				t.Fatalf("%d records, want %d", len(rows), tc.want)
			}
			if more := strings.Contains(errb.String(), "--cursor "); more != tc.wantMore {
				t.Fatalf("stderr %q: more=%v, want %v", errb.String(), more, tc.wantMore)
			}
			for i, r := range rows {
				if r["op"] != "publish" || r["channel"] != "news" || r["node"] != "n1" {
					t.Fatalf("record %d: %v", i, r)
				}
			}
		})
	}
	// The cursor printed on stderr continues where the page ended.
	var out, errb bytes.Buffer
	auditCmd([]string{"--data", data, "--limit", "200"}, &out, &errb)
	cursor := strings.TrimSpace(strings.TrimPrefix(errb.String(), "more: --cursor "))
	out.Reset()
	errb.Reset()
	if code := auditCmd([]string{"--data", data, "--cursor", cursor, "--all"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	rows := jsonLines(t, out.String())
	if len(rows) != 50 || rows[0]["data"].(map[string]any)["i"].(float64) != 200 {
		t.Fatalf("after the cursor: %d records, first %v", len(rows), rows[0])
	}
}

func TestSessionsFromDataFolder(t *testing.T) {
	data := t.TempDir()
	fillStore(t, data, 1)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"c1", "c2"}},
		{[]string{"--active", "true"}, []string{"c1"}},
		{[]string{"--active", "false"}, []string{"c2"}},
		{[]string{"--user", "bob"}, []string{"c2"}},
	} {
		var out, errb bytes.Buffer
		if code := sessionsCmd(append([]string{"--data", data}, tc.args...), &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errb.String())
		}
		var got []string
		for _, r := range jsonLines(t, out.String()) {
			got = append(got, r["conn"].(string))
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Fatalf("%v: sessions %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestAuditCommandErrors(t *testing.T) {
	data := t.TempDir()
	fillStore(t, data, 1)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, 2, "either --url"},
		{[]string{"--data", data, "--url", "http://127.0.0.1:1"}, 2, "either --url"},
		{[]string{"--data", data, "--limit", "0"}, 2, "--limit"},
		{[]string{"--data", data, "--since", "yesterday"}, 2, "--since"},
		{[]string{"--data", data, "--cursor", "!!"}, 1, "cursor"},
		{[]string{"--data", t.TempDir()}, 1, "no database"},
		{[]string{"--data", data, "extra"}, 2, "unexpected argument"},
	} {
		var out, errb bytes.Buffer
		code := auditCmd(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
	}
	// A running node holds the folder: the command says to use --url.
	st, err := store.Open(filepath.Join(data, "pebble"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out, errb bytes.Buffer
	if code := auditCmd([]string{"--data", data}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "--url") {
		t.Fatalf("locked folder: exit %d, stderr %q", code, errb.String())
	}
}
