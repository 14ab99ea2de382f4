package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// pagingAgent is an agent (not running) of 56 workers whose table holds n
// connections subscribed to one of channels channels.
func pagingAgent(t *testing.T, n, channels int) *Agent {
	t.Helper()
	a, err := New(Config{Workers: 56, Command: func(int) (string, []string) { return "false", nil },
		Socket: filepath.Join(t.TempDir(), "api.sock")})
	if err != nil {
		t.Fatal(err)
	}
	fillTable(a.tab, n, 56, channels)
	return a
}

// pageThrough follows the cursors of a listing (key: connections or
// channels) with limit from cursor, and returns the ids or names in the
// order listed; between is called after each page but the last.
// It fails t when a page walks more of the table than its own entries and
// the next one, or when it takes more pages than it should.
func pageThrough(t *testing.T, a *Agent, path, key, cursor string, limit, want int, between func(page int)) []string {
	t.Helper()
	var got []string
	for page := 0; ; page++ {
		if page > want/limit+1 {
			t.Fatalf("%s: %d pages for %d entries of %d", path, page, want, limit)
		}
		target := path + "?limit=" + itoa(limit)
		if cursor != "" {
			target += "&cursor=" + url.QueryEscape(cursor)
		}
		a.mu.Lock()
		before := a.tab.visited
		a.mu.Unlock()
		rec := httptest.NewRecorder()
		a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		var body map[string]json.RawMessage
		var items []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil || json.Unmarshal(body[key], &items) != nil ||
			json.Unmarshal(body["next"], &cursor) != nil {
			t.Fatalf("%s: %d %.200s", target, rec.Code, rec.Body.String())
		}
		a.mu.Lock()
		walked := a.tab.visited - before
		a.mu.Unlock()
		if walked > limit+1 || len(items) > limit {
			t.Fatalf("%s: the page of %d walked %d entries of the table, want at most %d", target, len(items), walked, limit+1)
		}
		for _, it := range items {
			got = append(got, it.ID+it.Name)
		}
		if cursor == "" {
			return got
		}
		if between != nil {
			between(page)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestConnectionsPageAtScale: with 200,000 connections, every page of
// /api/connections walks its own entries alone, and paging lists every
// connection exactly once in id order, also while connections close and
// open between pages (those opened after the cursor are listed, those
// closed before their page are not).
func TestConnectionsPageAtScale(t *testing.T) {
	const n = 200_000
	a := pagingAgent(t, n, 1_000)
	ids := pageThrough(t, a, "/api/connections", "connections", "", 1_000, n, nil)
	if len(ids) != n {
		t.Fatalf("listed %d connections, want %d", len(ids), n)
	}
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] || a.tab.conn(id) == nil || (i > 0 && ids[i-1] >= id) {
			t.Fatalf("entry %d, %q: listed twice, unknown or out of order", i, id)
		}
		seen[id] = true
	}
	// Between pages: the last connection closes, and one opens with an
	// id past every other. The pages start 5,000 before the end.
	last := ids[len(ids)-1]
	opened := last + "z"
	from := ids[n-5_001]
	ids = pageThrough(t, a, "/api/connections", "connections", from, 1_000, 5_000, func(page int) {
		if page == 0 {
			a.mu.Lock()
			a.tab.close(last)
			a.tab.open(opened, &connRec{worker: 3})
			a.mu.Unlock()
		}
	})
	if len(ids) != 5_000 || ids[0] <= from || ids[len(ids)-1] != opened || ids[len(ids)-2] == last {
		t.Fatalf("listed %d from %q ending %v; want 5,000 after %q ending with %q, without %q", len(ids), ids[0], ids[len(ids)-2:], from, opened, last)
	}
}

// TestChannelsPageAtScale: the same for /api/channels with 100,000
// channels.
func TestChannelsPageAtScale(t *testing.T) {
	const n = 100_000
	a := pagingAgent(t, 200_000, n)
	names := pageThrough(t, a, "/api/channels", "channels", "", 1_000, n, nil)
	if len(names) != n {
		t.Fatalf("listed %d channels, want %d", len(names), n)
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Fatalf("channels %q then %q: out of order or twice", names[i-1], names[i])
		}
	}
}

// TestTablePageParams: a listing's default page, its bounds and bad
// cursors.
func TestTablePageParams(t *testing.T) {
	a := pagingAgent(t, 250, 3)
	for _, tc := range []struct {
		target string
		status int
		items  int
	}{
		{"/api/connections", http.StatusOK, 100},
		{"/api/connections?limit=1000", http.StatusOK, 250},
		{"/api/connections?limit=1001", http.StatusBadRequest, 0},
		{"/api/connections?limit=0", http.StatusBadRequest, 0},
		{"/api/connections?cursor=", http.StatusBadRequest, 0},
		{"/api/connections?cursor=" + strings.Repeat("a", 257), http.StatusBadRequest, 0},
		{"/api/connections?cursor=zzzzzzzzzzzzzzzzzz", http.StatusOK, 0},
		{"/api/connections?page=2", http.StatusBadRequest, 0},
		{"/api/channels?limit=2", http.StatusOK, 2},
		{"/api/channels?cursor=room-1", http.StatusOK, 1},
	} {
		rec := httptest.NewRecorder()
		a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", tc.target, nil))
		var body map[string][]json.RawMessage
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		n := len(body["connections"]) + len(body["channels"])
		if rec.Code != tc.status || n != tc.items {
			t.Errorf("%s: %d, %d items; want %d, %d", tc.target, rec.Code, n, tc.status, tc.items)
		}
	}
}

// TestMetricsDoNotWalkConnections: with 200,000 connections, /metrics,
// /api/workers and /api/nodes read the counts kept per worker and walk no
// connection, and /metrics stays a few lines per worker.
func TestMetricsDoNotWalkConnections(t *testing.T) {
	const n = 200_000
	a := pagingAgent(t, n, 1_000)
	a.mu.Lock()
	a.tab.close("nobody") // the counts are checked after a change too
	before := a.tab.visited
	a.mu.Unlock()
	var body string
	for _, target := range []string{"/metrics", "/api/workers", "/api/nodes"} {
		rec := httptest.NewRecorder()
		a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", target, rec.Code, rec.Body.String())
		}
		if target == "/metrics" {
			body = rec.Body.String()
		}
	}
	if walked := a.tab.visited - before; walked != 0 {
		t.Errorf("/metrics, /api/workers and /api/nodes walked %d connections, want none", walked)
	}
	conns, lines := 0, strings.Count(body, "\n")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, "zenconn_node_connections{"); ok {
			var k int
			_ = json.Unmarshal([]byte(v[strings.LastIndexByte(v, ' ')+1:]), &k)
			conns += k
		}
	}
	if conns != n || lines > 12*56+40 {
		t.Errorf("/metrics: %d connections over the workers, %d lines; want %d, at most %d", conns, lines, n, 12*56+40)
	}
}

// TestClusterMergeKeepsFirstPage: a scope=cluster listing merges each
// node's first page into the cluster's first page of limit entries, with
// the subscribers of a channel summed over the nodes.
func TestClusterMergeKeepsFirstPage(t *testing.T) {
	raw := func(items ...string) []json.RawMessage {
		out := make([]json.RawMessage, len(items))
		for i, it := range items {
			out[i] = json.RawMessage(it)
		}
		return out
	}
	conns, err := mergeList("connections", raw(`{"id":"a-1"}`, `{"id":"a-2"}`, `{"id":"b-1"}`, `{"id":"0-9"}`), 2)
	if b, _ := json.Marshal(conns); err != nil || string(b) != `[{"id":"0-9"},{"id":"a-1"}]` {
		t.Errorf("connections: %s, %v", b, err)
	}
	chans, err := mergeList("channels", raw(`{"name":"x","subscribers":2}`, `{"name":"y","subscribers":1}`,
		`{"name":"x","subscribers":3}`, `{"name":"w","subscribers":1}`), 2)
	if b, _ := json.Marshal(chans); err != nil || string(b) != `[{"name":"w","subscribers":1},{"name":"x","subscribers":5}]` {
		t.Errorf("channels: %s, %v", b, err)
	}
}
