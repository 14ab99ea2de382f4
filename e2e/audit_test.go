package e2e

// Sessions and the audit log, through the server API (GET /api/sessions, GET
// /api/audit): what is recorded for each op, refusal and close code, the filters
// and paging, that the log survives a restart of the node, and what an
// acknowledged publish is promised when a worker or the agent is killed with
// SIGKILL under load, for each --audit-sync mode.
//
// Tests started with startServer follow ZENCONN_E2E_WORKERS (single process by
// default); the crash tests choose their --workers themselves.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// ---------------------------------------------------------------------------
// API shapes (PROTOCOL.md, "Sessions and audit records").

// auRecord is one entry of GET /api/audit.
type auRecord struct {
	Time    time.Time       `json:"time"`
	Seq     uint64          `json:"seq"`
	Node    string          `json:"node"`
	Worker  int             `json:"worker"`
	Conn    string          `json:"conn"`
	User    string          `json:"user"`
	Op      string          `json:"op"`
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data"`
	Enc     string          `json:"enc"`
	Attempt string          `json:"attempt"`
	Error   string          `json:"error"`
	Remote  string          `json:"remote"`
	Code    int             `json:"code"`

	raw string
}

func (r auRecord) String() string { return r.raw }

// auRecordKeys are the fields every audit record carries.
var auRecordKeys = []string{"time", "seq", "node", "worker", "conn", "user", "op", "channel", "data"}

// auSession is one entry of GET /api/sessions.
type auSession struct {
	Conn         string     `json:"conn"`
	Node         string     `json:"node"`
	Worker       int        `json:"worker"`
	User         string     `json:"user"`
	Remote       string     `json:"remote"`
	UserAgent    string     `json:"user_agent"`
	Protocol     string     `json:"protocol"`
	Connected    time.Time  `json:"connected"`
	Disconnected *time.Time `json:"disconnected"`
	CloseCode    *int       `json:"close_code"`
	Active       bool       `json:"active"`
	Channels     []string   `json:"channels"`

	raw string
}

func (s auSession) String() string { return s.raw }

// auSessionKeys are the fields every session carries.
var auSessionKeys = []string{"conn", "node", "worker", "user", "remote", "user_agent", "protocol",
	"scheme", "tls_version", "tls_cipher", "connected", "disconnected", "close_code", "active", "channels"}

// closed reports whether the session ended with code.
func (s auSession) closed(code int) bool {
	return !s.Active && s.Disconnected != nil && s.CloseCode != nil && *s.CloseCode == code
}

// ---------------------------------------------------------------------------
// Queries.

// auTryGet is GET path with the API key: the status and body, or the transport error.
func auTryGet(s *serverProc, path string) (int, []byte, error) {
	req, err := http.NewRequest("GET", s.URL(path), nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+ibAPIKey)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// auGet is GET path with the API key, requiring 200 with a JSON body. A connection
// reset (a killed worker's listener) or a 503 ("the audit log is behind; retry") is
// retried for up to 10 s; any other answer fails the test. It returns the body.
func auGet(t *testing.T, s *serverProc, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, b, err := auTryGet(s, path)
		switch {
		case err == nil && status == http.StatusOK:
			return b
		case err == nil && status != http.StatusServiceUnavailable:
			t.Fatalf("GET %s: status %d body %q, want 200", path, status, b)
		case time.Now().After(deadline):
			t.Fatalf("GET %s: still failing after 10 s: status %d body %q err %v", path, status, b, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// auObjects decodes the array under key of a page and the page's "next", checking
// that both are present and that every element carries the keys want.
func auObjects(t *testing.T, path string, body []byte, key string, want []string) ([]json.RawMessage, string) {
	t.Helper()
	var page map[string]json.RawMessage
	if err := json.Unmarshal(body, &page); err != nil {
		t.Fatalf("GET %s: body %q: %v", path, body, err)
	}
	var items []json.RawMessage
	if err := json.Unmarshal(page[key], &items); err != nil || items == nil {
		t.Fatalf("GET %s: body %q has no %q array", path, body, key)
	}
	var next *string
	if err := json.Unmarshal(page["next"], &next); err != nil || next == nil {
		t.Fatalf("GET %s: body %q has no \"next\" string", path, body)
	}
	for _, it := range items {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(it, &m); err != nil {
			t.Fatalf("GET %s: element %s is not an object", path, it)
		}
		for _, k := range want {
			if _, ok := m[k]; !ok {
				t.Fatalf("GET %s: element %s has no %q", path, it, k)
			}
		}
	}
	return items, *next
}

// auAuditPage is one page of GET /api/audit?query.
func auAuditPage(t *testing.T, s *serverProc, query string) ([]auRecord, string) {
	t.Helper()
	path := "/api/audit?" + query
	items, next := auObjects(t, path, auGet(t, s, path), "records", auRecordKeys)
	out := make([]auRecord, len(items))
	for i, it := range items {
		if err := json.Unmarshal(it, &out[i]); err != nil {
			t.Fatalf("GET %s: record %s: %v", path, it, err)
		}
		out[i].raw = string(it)
	}
	return out, next
}

// auAuditPages walks GET /api/audit?query page by page, following next, and
// returns the pages. Every page but the last must hold exactly limit records
// (when limit > 0) and no record may come twice; records must come in time
// order with increasing seq.
func auAuditPages(t *testing.T, s *serverProc, query string, limit int) [][]auRecord {
	t.Helper()
	var pages [][]auRecord
	seen := map[uint64]bool{}
	var prev *auRecord
	cursor := ""
	for {
		q := query
		if cursor != "" {
			q = auJoin(q, "cursor="+url.QueryEscape(cursor))
		}
		recs, next := auAuditPage(t, s, q)
		if limit > 0 && len(recs) > limit {
			t.Fatalf("GET /api/audit?%s: %d records, over the limit %d", q, len(recs), limit)
		}
		if next != "" && limit > 0 && len(recs) != limit {
			t.Fatalf("GET /api/audit?%s: a page of %d records with a next cursor, want full pages of %d", q, len(recs), limit)
		}
		if next != "" && len(recs) == 0 {
			t.Fatalf("GET /api/audit?%s: an empty page with a next cursor %q", q, next)
		}
		for i := range recs {
			r := &recs[i]
			if seen[r.Seq] {
				t.Fatalf("GET /api/audit?%s: seq %d returned twice (%s)", q, r.Seq, r)
			}
			seen[r.Seq] = true
			if prev != nil && (r.Time.Before(prev.Time) || r.Seq <= prev.Seq) {
				t.Fatalf("GET /api/audit?%s: %s after %s: want time order with increasing seq", q, r, prev)
			}
			prev = r
		}
		pages = append(pages, recs)
		if next == "" {
			return pages
		}
		if len(pages) > 10000 {
			t.Fatalf("GET /api/audit?%s: more than 10000 pages", query)
		}
		cursor = next
	}
}

// auAudit is every record of GET /api/audit?query (pages of 1,000).
func auAudit(t *testing.T, s *serverProc, query string) []auRecord {
	t.Helper()
	var out []auRecord
	for _, p := range auAuditPages(t, s, auJoin(query, "limit=1000"), 1000) {
		out = append(out, p...)
	}
	return out
}

// auSessionPages walks GET /api/sessions?query like auAuditPages.
func auSessionPages(t *testing.T, s *serverProc, query string, limit int) [][]auSession {
	t.Helper()
	var pages [][]auSession
	seen := map[string]bool{}
	cursor := ""
	for {
		q := query
		if cursor != "" {
			q = auJoin(q, "cursor="+url.QueryEscape(cursor))
		}
		path := "/api/sessions?" + q
		items, next := auObjects(t, path, auGet(t, s, path), "sessions", auSessionKeys)
		if limit > 0 && len(items) > limit {
			t.Fatalf("GET %s: %d sessions, over the limit %d", path, len(items), limit)
		}
		if next != "" && limit > 0 && len(items) != limit {
			t.Fatalf("GET %s: a page of %d sessions with a next cursor, want full pages of %d", path, len(items), limit)
		}
		page := make([]auSession, len(items))
		for i, it := range items {
			if err := json.Unmarshal(it, &page[i]); err != nil {
				t.Fatalf("GET %s: session %s: %v", path, it, err)
			}
			page[i].raw = string(it)
			if page[i].Channels == nil {
				t.Fatalf("GET %s: session %s: channels is not an array", path, it)
			}
			if seen[page[i].Conn] {
				t.Fatalf("GET %s: session %s listed twice", path, page[i].Conn)
			}
			seen[page[i].Conn] = true
			if a, d, c := page[i].Active, page[i].Disconnected != nil, page[i].CloseCode != nil; a == d || a == c {
				t.Fatalf("GET %s: session %s: active %v with disconnected %v, close_code %v; want both null exactly while active", path, it, a, d, c)
			}
		}
		pages = append(pages, page)
		if next == "" {
			return pages
		}
		if len(pages) > 10000 {
			t.Fatalf("GET /api/sessions?%s: more than 10000 pages", query)
		}
		cursor = next
	}
}

// auSessions is every session of GET /api/sessions?query (pages of 1,000).
func auSessions(t *testing.T, s *serverProc, query string) []auSession {
	t.Helper()
	var out []auSession
	for _, p := range auSessionPages(t, s, auJoin(query, "limit=1000"), 1000) {
		out = append(out, p...)
	}
	for i := 1; i < len(out); i++ {
		if out[i].Connected.Before(out[i-1].Connected) {
			t.Fatalf("GET /api/sessions?%s: %s after %s: want order of connection time", query, out[i], out[i-1])
		}
	}
	return out
}

// auSessionMap is auSessions keyed by conn id.
func auSessionMap(t *testing.T, s *serverProc, query string) map[string]auSession {
	t.Helper()
	m := map[string]auSession{}
	for _, se := range auSessions(t, s, query) {
		m[se.Conn] = se
	}
	return m
}

func auJoin(q, kv string) string {
	if q == "" {
		return kv
	}
	return q + "&" + kv
}

// auSeqs lists the seq of each record.
func auSeqs(recs []auRecord) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

// auFilter keeps the records for which keep is true.
func auFilter(recs []auRecord, keep func(r auRecord) bool) []auRecord {
	var out []auRecord
	for _, r := range recs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// auFind returns the records matching keep, failing unless there are exactly n.
func auFind(t *testing.T, recs []auRecord, n int, what string, keep func(r auRecord) bool) []auRecord {
	t.Helper()
	got := auFilter(recs, keep)
	if len(got) != n {
		t.Fatalf("%d audit records of %s, want %d; they are:\n%s\nthe whole log:\n%s", len(got), what, n, auList(got), auList(recs))
	}
	return got
}

func auList(recs []auRecord) string {
	var b strings.Builder
	for _, r := range recs {
		b.WriteString("  ")
		b.WriteString(r.raw)
		b.WriteByte('\n')
	}
	return b.String()
}

// auDial dials a JSON client sending a User-Agent (and a bearer token unless tok is
// empty); closed at cleanup.
func auDial(t *testing.T, s *serverProc, ua, tok string) *ibConn {
	t.Helper()
	c := ibDial(t, s, ibDialOpts{BearerTok: tok, Header: http.Header{"User-Agent": {ua}}})
	if c.Bin {
		t.Fatalf("%s: binary welcome, want JSON", c.name)
	}
	return c
}

// auRemote is the client's address as the server sees it.
func auRemote(c *ibConn) string { return c.c.LocalAddr().String() }

// auClose sends a close frame with payload (nil: empty) and waits for the server to
// end the connection with code.
func auClose(t *testing.T, c *ibConn, payload []byte, code int) {
	t.Helper()
	if err := c.c.WriteControl(websocket.CloseMessage, payload, time.Now().Add(defaultTimeout)); err != nil {
		t.Fatalf("%s: writing a close frame: %v", c.name, err)
	}
	c.expectCloseCode(code, defaultTimeout)
}

// ---------------------------------------------------------------------------
// TestAuditProbe: what an external checker does. Seven clients, three of them
// subscribed to a probe channel, 31 acknowledged publishes from the other four;
// then the audit log has exactly those 31 publishes and the sessions are listed
// with their details; after SIGTERM and a restart on the same data folder both
// are still there, the sessions closed with 1001.

func TestAuditProbe(t *testing.T) {
	t.Parallel()
	const (
		nConns   = 7
		nSubs    = 3
		nPublish = 31
		channel  = "probe-audit-7f3a"
	)
	s := startServer(t, "--api-key", ibAPIKey)
	before := time.Now()
	clients := make([]*ibConn, nConns)
	ua := map[string]string{}
	for i := range clients {
		agent := fmt.Sprintf("zenconn-e2e-probe/%d (audit)", i)
		clients[i] = auDial(t, s, agent, "")
		ua[clients[i].ID] = agent
	}
	node := clients[0].Node
	for _, c := range clients {
		if c.Node != node {
			t.Fatalf("%s: welcome node %q, %s had %q: one node, one id", c.name, c.Node, clients[0].name, node)
		}
	}
	subs, pubs := clients[:nSubs], clients[nSubs:]
	for _, c := range subs {
		c.sub(1, channel)
	}

	// 31 publishes round-robin over the publishers, each acknowledged.
	type sent struct {
		conn string
		k    int
		data string
	}
	var msgs []sent
	for k := range nPublish {
		p := pubs[k%len(pubs)]
		data := fmt.Sprintf(`{"probe":%d,"text":"probe message %d","list":[1,"two",null]}`, k, k)
		p.pub(100+k, channel, data)
		msgs = append(msgs, sent{p.ID, k, data})
	}

	// Every subscriber gets all 31, each publisher's in order.
	wkParallel(t, "subscribers", subs, func(_ int, c *ibConn) error {
		last := map[string]int{}
		got := 0
		for range nPublish {
			m, err := wkReadJSON(c, defaultTimeout)
			if err != nil {
				return fmt.Errorf("after %d of %d messages: %w", got, nPublish, err)
			}
			var d struct{ Probe int }
			if m.Op != "message" || m.Channel != channel || json.Unmarshal(m.Data, &d) != nil || d.Probe < 0 || d.Probe >= nPublish {
				return fmt.Errorf("conn %s: got %s, want a message on %s", c.ID, m, channel)
			}
			want := msgs[d.Probe]
			if m.From != want.conn || !jsonEqual(m.Data, []byte(want.data)) {
				return fmt.Errorf("conn %s: got %s, want from %s data %s", c.ID, m, want.conn, want.data)
			}
			if l, ok := last[m.From]; ok && d.Probe <= l {
				return fmt.Errorf("conn %s: message %d of %s after %d", c.ID, d.Probe, m.From, l)
			}
			last[m.From] = d.Probe
			got++
		}
		return nil
	})

	// The 31 publishes, and nothing else, under op=publish.
	workers := map[string]int{}
	for id, e := range wkConns(t, s) {
		workers[id] = *e.Worker
	}
	recs, next := auAuditPage(t, s, "op=publish") // as a checker would ask: one page of 100 at most
	if next != "" {
		t.Fatalf("GET /api/audit?op=publish: %d records and a next cursor %q, want one page", len(recs), next)
	}
	if all := auAudit(t, s, "op=publish"); !slices.Equal(auSeqs(all), auSeqs(recs)) {
		t.Fatalf("GET /api/audit?op=publish&limit=1000: seqs %v, without limit %v", auSeqs(all), auSeqs(recs))
	}
	// A query sees every record of what was acknowledged before it, so every
	// session has been recorded by now.
	after := time.Now()
	checkPublishes := func(recs []auRecord) {
		t.Helper()
		if len(recs) != nPublish {
			t.Fatalf("GET /api/audit?op=publish: %d records, want %d:\n%s", len(recs), nPublish, auList(recs))
		}
		lastK := map[string]int{}
		for _, r := range recs {
			var d struct{ Probe *int }
			if json.Unmarshal(r.Data, &d) != nil || d.Probe == nil || *d.Probe < 0 || *d.Probe >= nPublish {
				t.Fatalf("audit record %s: data is not one of the probe messages", r)
			}
			m := msgs[*d.Probe]
			switch {
			case r.Op != "publish" || r.Channel != channel || r.Conn != m.conn || !jsonEqual(r.Data, []byte(m.data)):
				t.Fatalf("audit record %s, want op publish, channel %s, conn %s, data %s", r, channel, m.conn, m.data)
			case r.Node != node:
				t.Fatalf("audit record %s: node %q, want the welcome's %q", r, r.Node, node)
			case r.Worker != workers[m.conn]:
				t.Fatalf("audit record %s: worker %d, want %d (GET /api/connections)", r, r.Worker, workers[m.conn])
			case r.User != "" || r.Enc != "" || r.Attempt != "" || r.Error != "":
				t.Fatalf("audit record %s: an anonymous JSON publish has user \"\" and no enc, attempt or error", r)
			case r.Time.Before(before.Add(-time.Millisecond)) || r.Time.After(time.Now()):
				t.Fatalf("audit record %s: time outside the test's run (%v .. now)", r, before)
			}
			if l, ok := lastK[r.Conn]; ok && *d.Probe <= l {
				t.Fatalf("audit record %s: publish %d of %s after %d, want each publisher's in order", r, *d.Probe, r.Conn, l)
			}
			lastK[r.Conn] = *d.Probe
		}
		if len(lastK) != len(pubs) {
			t.Fatalf("publishes audited from %d connections, want the %d publishers", len(lastK), len(pubs))
		}
	}
	checkPublishes(recs)

	// The sessions, with everything they record.
	sess := auSessionMap(t, s, "")
	if len(sess) < nConns {
		t.Fatalf("GET /api/sessions lists %d sessions, want at least %d", len(sess), nConns)
	}
	checkSession := func(c *ibConn, se auSession) {
		t.Helper()
		wantCh := []string{}
		if slices.Contains(subs, c) {
			wantCh = []string{channel}
		}
		switch {
		case se.Node != node || se.Worker != workers[c.ID] || se.User != "":
			t.Fatalf("session %s: want node %s, worker %d, user \"\"", se, node, workers[c.ID])
		case se.Remote != auRemote(c) || se.Protocol != "json" || se.UserAgent != ua[c.ID]:
			t.Fatalf("session %s: want remote %s, protocol json, user_agent %q", se, auRemote(c), ua[c.ID])
		case se.Connected.Before(before.Add(-time.Millisecond)) || se.Connected.After(after):
			t.Fatalf("session %s: connected outside %v .. %v", se, before, after)
		case !reflect.DeepEqual(se.Channels, wantCh):
			t.Fatalf("session %s: channels %q, want %q", se, se.Channels, wantCh)
		}
	}
	for _, c := range clients {
		se, ok := sess[c.ID]
		if !ok {
			t.Fatalf("GET /api/sessions does not list %s", c.ID)
		}
		checkSession(c, se)
		if !se.Active {
			t.Fatalf("session %s of an open connection is not active", se)
		}
	}
	if act := auSessionMap(t, s, "active=true"); len(act) != nConns {
		t.Fatalf("GET /api/sessions?active=true lists %d sessions, want the %d open ones", len(act), nConns)
	}

	// Stop the node; its clients get 1001.
	// Read the clock before the signal: read after it, the test may run
	// only once the node has already closed its sessions.
	stopped := time.Now()
	s.Signal(syscall.SIGTERM)
	for _, c := range clients {
		c.expectCloseCode(1001, defaultTimeout)
	}
	if exited, err := s.WaitExit(stopGrace); !exited || err != nil {
		t.Fatalf("SIGTERM: exited %v (%v), want a clean exit", exited, err)
	}
	if want := fmt.Sprintf(`msg="the sessions ended by the stop are recorded by one stop mark" sessions=%d`, nConns); !strings.Contains(s.Logs(), want) {
		t.Errorf("no log line %s:\n%s", want, grepLines(s.Logs(), "stop"))
	}

	// Restarted on the same data folder: the same records, the sessions closed.
	s2 := s.restart(t)
	recs2 := auAudit(t, s2, "op=publish")
	checkPublishes(recs2)
	for i := range recs {
		a, b := recs[i], recs2[i]
		if !a.Time.Equal(b.Time) || a.Seq != b.Seq || a.Conn != b.Conn || !jsonEqual(a.Data, b.Data) {
			t.Fatalf("after the restart record %d is %s, was %s", i, b, a)
		}
	}
	sess2 := auSessionMap(t, s2, "")
	for _, c := range clients {
		se, ok := sess2[c.ID]
		if !ok {
			t.Fatalf("after the restart GET /api/sessions does not list %s", c.ID)
		}
		checkSession(c, se)
		if !se.closed(1001) || se.Disconnected.Before(se.Connected) || se.Disconnected.Before(stopped.Add(-time.Millisecond)) {
			t.Fatalf("after the restart session %s: want active false, close_code 1001, disconnected at the stop (%v)", se, stopped)
		}
	}
	if act := auSessions(t, s2, "active=true"); len(act) != 0 {
		t.Fatalf("after the restart, before any client, GET /api/sessions?active=true lists %d sessions:\n%v", len(act), act)
	}
	// The stop wrote one mark; the restarted node writes the disconnect
	// records, stamped with it, in the background.
	eventually(t, defaultTimeout, func() string {
		if n := len(auFilter(auAudit(t, s2, "op=disconnect"), func(r auRecord) bool { return r.Code == 1001 })); n < nConns {
			return fmt.Sprintf("%d disconnect records with 1001 after the restart, want %d", n, nConns)
		}
		return ""
	})
	disc := auAudit(t, s2, "op=disconnect")
	for _, c := range clients {
		r := auFind(t, disc, 1, "the disconnect of "+c.ID, func(r auRecord) bool { return r.Conn == c.ID && r.Code == 1001 })[0]
		if r.Time.Before(stopped) {
			t.Errorf("disconnect record %s: before the stop (%v)", r, stopped)
		}
	}

	// The node id carries over; connection ids are not reused.
	fresh := auDial(t, s2, "zenconn-e2e-probe/fresh", "")
	if fresh.Node != node {
		t.Fatalf("after the restart welcome node %q, want %q (kept in the data folder)", fresh.Node, node)
	}
	if _, dup := sess2[fresh.ID]; dup {
		t.Fatalf("after the restart new connection id %s is one of the previous run's", fresh.ID)
	}
	eventually(t, 5*time.Second, func() string {
		se, ok := auSessionMap(t, s2, "active=true")[fresh.ID]
		if !ok || se.Node != node || se.UserAgent != "zenconn-e2e-probe/fresh" {
			return fmt.Sprintf("GET /api/sessions?active=true: %s is %v (listed %v), want it open", fresh.ID, se, ok)
		}
		return ""
	})
	// The log goes on where it stopped: the whole walk is in time order with
	// increasing seq (auAudit checks), the new connect last.
	all := auAudit(t, s2, "")
	if r := all[len(all)-1]; r.Op != "connect" || r.Conn != fresh.ID || r.Seq <= recs[len(recs)-1].Seq {
		t.Fatalf("after the restart the last record is %s, want the connect of %s after seq %d", r, fresh.ID, recs[len(recs)-1].Seq)
	}
}

// ---------------------------------------------------------------------------
// TestAuditFilters: every filter of GET /api/audit and /api/sessions answers what the
// whole log filtered by hand answers, paging with limit and cursor returns every
// record exactly once, and bad parameters get 400.

func TestAuditFilters(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--jwt-secret", ibSecret)
	alice := auDial(t, s, "e2e-alice", ibToken(t, "alice", ibGrants{Subscribe: []string{"private-a*"}, Publish: []string{"private-a*"}, Broadcast: true}))
	bob := auDial(t, s, "e2e-bob", ibToken(t, "bob", ibGrants{}))
	anon := auDial(t, s, "e2e-anon", "")

	alice.sub(1, "private-a1")
	alice.sub(2, "news")
	bob.sub(1, "news")
	anon.sub(1, "news")
	alice.pub(3, "private-a1", `{"n":1}`) // alice alone there: nobody receives it
	alice.pub(4, "news", `{"n":2}`)
	bob.expectMsg("news", alice.ID, `{"n":2}`)
	anon.expectMsg("news", alice.ID, `{"n":2}`)
	bob.pub(2, "news", `{"n":3}`)
	alice.expectMsg("news", bob.ID, `{"n":3}`)
	anon.expectMsg("news", bob.ID, `{"n":3}`)
	alice.ok(5, `{"id":5,"op":"broadcast","data":{"n":4}}`)
	bob.expectMsg("", alice.ID, `{"n":4}`)
	anon.expectMsg("", alice.ID, `{"n":4}`)
	alice.ok(6, `{"id":6,"op":"unsubscribe","channel":"news"}`)
	anon.pub(2, "news", `{"n":5}`)
	bob.expectMsg("news", anon.ID, `{"n":5}`)
	anon.refused(3, `{"id":3,"op":"broadcast","data":{"n":6}}`, "unauthorized")
	anon.ok(4, fmt.Sprintf(`{"id":4,"op":"auth","token":%q}`, ibToken(t, "dave", ibGrants{})))
	apiOK(t, s, "POST", "/api/publish", `{"channel":"news","data":{"n":7}}`, nil)
	anon.expectMsg("news", "api", `{"n":7}`)
	bob.expectMsg("news", "api", `{"n":7}`)
	auClose(t, bob, websocket.FormatCloseMessage(1000, "bye"), 1000)

	var all []auRecord
	eventually(t, 5*time.Second, func() string {
		all = auAudit(t, s, "")
		if len(auFilter(all, func(r auRecord) bool { return r.Op == "disconnect" && r.Conn == bob.ID })) == 0 {
			return "no disconnect record of bob yet"
		}
		return ""
	})
	// What must be there, by op.
	is := func(op, conn, user, channel string) func(auRecord) bool {
		return func(r auRecord) bool { return r.Op == op && r.Conn == conn && r.User == user && r.Channel == channel }
	}
	auFind(t, all, 1, "alice's connect", is("connect", alice.ID, "alice", ""))
	auFind(t, all, 1, "bob's connect", is("connect", bob.ID, "bob", ""))
	auFind(t, all, 1, "the anonymous connect", is("connect", anon.ID, "", ""))
	for _, c := range []*ibConn{alice, bob, anon} {
		r := auFind(t, all, 1, "the connect of "+c.ID, func(r auRecord) bool { return r.Op == "connect" && r.Conn == c.ID })[0]
		if r.Remote != auRemote(c) {
			t.Errorf("connect record %s: remote %q, want %q", r, r.Remote, auRemote(c))
		}
	}
	auFind(t, all, 1, "alice's subscribe to private-a1", is("subscribe", alice.ID, "alice", "private-a1"))
	auFind(t, all, 1, "alice's subscribe to news", is("subscribe", alice.ID, "alice", "news"))
	auFind(t, all, 1, "bob's subscribe", is("subscribe", bob.ID, "bob", "news"))
	auFind(t, all, 1, "anon's subscribe", is("subscribe", anon.ID, "", "news"))
	auFind(t, all, 1, "alice's publish on private-a1", is("publish", alice.ID, "alice", "private-a1"))
	auFind(t, all, 1, "alice's publish on news", is("publish", alice.ID, "alice", "news"))
	auFind(t, all, 1, "bob's publish", is("publish", bob.ID, "bob", "news"))
	auFind(t, all, 1, "anon's publish", is("publish", anon.ID, "", "news"))
	auFind(t, all, 1, "the API publish", func(r auRecord) bool { return r.Op == "publish" && r.Worker == -1 && r.Conn == "" })
	b := auFind(t, all, 1, "alice's broadcast", is("broadcast", alice.ID, "alice", ""))[0]
	if !jsonEqual(b.Data, []byte(`{"n":4}`)) {
		t.Errorf("broadcast record %s: data %s, want {\"n\":4}", b, b.Data)
	}
	auFind(t, all, 1, "alice's unsubscribe", is("unsubscribe", alice.ID, "alice", "news"))
	auFind(t, all, 1, "anon's refused broadcast", is("refused", anon.ID, "", ""))
	auFind(t, all, 1, "anon's auth as dave", is("auth", anon.ID, "dave", ""))
	d := auFind(t, all, 1, "bob's disconnect", is("disconnect", bob.ID, "bob", ""))[0]
	if d.Code != 1000 {
		t.Errorf("disconnect record %s: code %d, want 1000", d, d.Code)
	}
	if n := len(all); n != 3+4+5+1+1+1+1+1 {
		t.Errorf("%d audit records, want 17:\n%s", n, auList(all))
	}

	// Each filter answers the whole log filtered by hand.
	mid := all[len(all)/2]
	msTime := time.UnixMilli(mid.Time.UnixMilli())
	secTime := mid.Time.Truncate(time.Second)
	plus2 := time.FixedZone("UTC+2", 2*3600)
	type filter struct {
		query string
		keep  func(auRecord) bool
	}
	filters := []filter{
		{"channel=news", func(r auRecord) bool { return r.Channel == "news" }},
		{"channel=private-a1", func(r auRecord) bool { return r.Channel == "private-a1" }},
		{"channel=nowhere", func(r auRecord) bool { return false }},
		{"user=alice", func(r auRecord) bool { return r.User == "alice" }},
		{"user=bob", func(r auRecord) bool { return r.User == "bob" }},
		{"user=dave", func(r auRecord) bool { return r.User == "dave" }},
		{"channel=news&user=alice", func(r auRecord) bool { return r.Channel == "news" && r.User == "alice" }},
		{"channel=news&op=publish", func(r auRecord) bool { return r.Channel == "news" && r.Op == "publish" }},
		{"user=alice&op=subscribe", func(r auRecord) bool { return r.User == "alice" && r.Op == "subscribe" }},
		{"since=" + url.QueryEscape(mid.Time.Format(time.RFC3339Nano)), func(r auRecord) bool { return !r.Time.Before(mid.Time) }},
		{"until=" + url.QueryEscape(mid.Time.Format(time.RFC3339Nano)), func(r auRecord) bool { return r.Time.Before(mid.Time) }},
		{"since=" + url.QueryEscape(mid.Time.In(plus2).Format(time.RFC3339Nano)), func(r auRecord) bool { return !r.Time.Before(mid.Time) }},
		{"since=" + url.QueryEscape(secTime.In(plus2).Format(time.RFC3339)), func(r auRecord) bool { return !r.Time.Before(secTime) }},
		{"since=" + strconv.FormatInt(msTime.UnixMilli(), 10), func(r auRecord) bool { return !r.Time.Before(msTime) }},
		{"until=" + strconv.FormatInt(msTime.UnixMilli(), 10), func(r auRecord) bool { return r.Time.Before(msTime) }},
		{"since=" + url.QueryEscape(all[2].Time.Format(time.RFC3339Nano)) + "&until=" + url.QueryEscape(all[len(all)-2].Time.Format(time.RFC3339Nano)),
			func(r auRecord) bool { return !r.Time.Before(all[2].Time) && r.Time.Before(all[len(all)-2].Time) }},
		{"since=" + url.QueryEscape(all[len(all)-2].Time.Format(time.RFC3339Nano)) + "&until=" + url.QueryEscape(all[2].Time.Format(time.RFC3339Nano)),
			func(r auRecord) bool { return false }},
	}
	for _, op := range []string{"publish", "broadcast", "subscribe", "unsubscribe", "auth", "connect", "disconnect", "refused"} {
		filters = append(filters, filter{"op=" + op, func(r auRecord) bool { return r.Op == op }})
	}
	for _, f := range filters {
		got := auAudit(t, s, f.query)
		want := auFilter(all, f.keep)
		if !slices.Equal(auSeqs(got), auSeqs(want)) {
			t.Errorf("GET /api/audit?%s: seqs %v, want %v:\n%s", f.query, auSeqs(got), auSeqs(want), auList(got))
		}
	}

	// Paging: every record exactly once, in full pages, whatever the limit.
	msSince := "since=" + strconv.FormatInt(msTime.UnixMilli(), 10)
	for _, p := range []struct {
		filter string
		limit  int
	}{
		{"", 1}, {"", 2}, {"", 5}, {"op=publish", 2}, {"channel=news", 3}, {"user=alice", 1}, {msSince, 4},
	} {
		var flat []auRecord
		pages := auAuditPages(t, s, auJoin(p.filter, fmt.Sprintf("limit=%d", p.limit)), p.limit)
		for _, pg := range pages {
			flat = append(flat, pg...)
		}
		if want := auAudit(t, s, p.filter); !slices.Equal(auSeqs(flat), auSeqs(want)) {
			t.Errorf("paging GET /api/audit?%s&limit=%d (%d pages): seqs %v, want %v", p.filter, p.limit, len(pages), auSeqs(flat), auSeqs(want))
		}
	}
	if recs, next := auAuditPage(t, s, ""); len(recs) != len(all) || next != "" {
		t.Errorf("GET /api/audit without limit: %d records, next %q; want all %d (default limit 100) and no next", len(recs), next, len(all))
	}

	// Sessions: filters and paging.
	sessAll := auSessions(t, s, "")
	if len(sessAll) != 3 {
		t.Fatalf("GET /api/sessions: %d sessions, want 3: %v", len(sessAll), sessAll)
	}
	for _, se := range sessAll {
		if se.Conn == alice.ID && !slices.Equal(se.Channels, []string{"private-a1", "news"}) {
			t.Errorf("alice's session %s: channels %q, want every channel joined in order, [private-a1 news]", se, se.Channels)
		}
	}
	conns := func(ss []auSession) []string {
		var out []string
		for _, se := range ss {
			out = append(out, se.Conn)
		}
		sort.Strings(out)
		return out
	}
	sorted := func(ids ...string) []string { sort.Strings(ids); return ids }
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"active=true", sorted(alice.ID, anon.ID)},
		{"active=false", sorted(bob.ID)},
		{"user=alice", sorted(alice.ID)},
		{"user=bob", sorted(bob.ID)},
		{"user=dave", sorted(anon.ID)},
		{"user=dave&active=true", sorted(anon.ID)},
		{"user=bob&active=true", nil},
		{"user=nobody", nil},
	} {
		if got := conns(auSessions(t, s, c.query)); !slices.Equal(got, c.want) {
			t.Errorf("GET /api/sessions?%s: %v, want %v", c.query, got, c.want)
		}
	}
	for _, q := range []string{"", "active=true", "active=false", "user=dave"} {
		var flat []auSession
		for _, p := range auSessionPages(t, s, auJoin(q, "limit=1"), 1) {
			flat = append(flat, p...)
		}
		if want := auSessions(t, s, q); !reflect.DeepEqual(flat, want) {
			t.Errorf("GET /api/sessions?%s&limit=1 walked: %v, want %v", q, flat, want)
		}
	}

	// Bad requests: 400 with a JSON error; no key: 401.
	for _, p := range []string{
		"/api/audit?foo=1", "/api/audit?op=bogus", "/api/audit?op=PUBLISH", "/api/audit?limit=0", "/api/audit?limit=5000",
		"/api/audit?limit=-1", "/api/audit?limit=1001", "/api/audit?limit=ten", "/api/audit?since=yesterday", "/api/audit?until=2026-13-01T00:00:00Z",
		"/api/audit?since=2026-01-02", "/api/audit?cursor=!!!", "/api/audit?cursor=AAAA", "/api/audit?active=true",
		"/api/sessions?active=maybe", "/api/sessions?limit=0", "/api/sessions?limit=5000", "/api/sessions?cursor=!!!",
		"/api/sessions?cursor=AAAA", "/api/sessions?channel=news", "/api/sessions?op=publish",
	} {
		apiFails(t, s, "GET", p, ibAPIKey, "", http.StatusBadRequest)
	}
	for _, p := range []string{"/api/audit", "/api/sessions", "/api/audit?op=publish"} {
		apiFails(t, s, "GET", p, "", "", http.StatusUnauthorized)
		apiFails(t, s, "GET", p, "wrong-key-wrong-key", "", http.StatusUnauthorized)
	}
	for _, p := range []string{"/api/audit", "/api/sessions"} {
		if hdr := apiFails(t, s, "POST", p, ibAPIKey, "{}", http.StatusMethodNotAllowed); hdr.Get("Allow") != "GET" {
			t.Errorf("POST %s: Allow %q, want GET", p, hdr.Get("Allow"))
		}
	}
}

// ---------------------------------------------------------------------------
// TestAuditRefusals: refused ops and handshakes are audited as op "refused" with the
// attempt and the error code sent back; of a refused publish's data, only its size and
// SHA-256 are kept.

func TestAuditRefusals(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--jwt-secret", ibSecret)
	carol := auDial(t, s, "e2e-carol", ibToken(t, "carol", ibGrants{Subscribe: []string{"private-ok"}, Publish: []string{"private-ok"}}))
	anon := auDial(t, s, "e2e-anon", "")
	bin := ibDialBin(t, s, "")

	carol.refused(1, `{"id":1,"op":"subscribe","channel":"private-x"}`, "forbidden")
	carol.refused(2, `{"id":2,"op":"publish","channel":"private-x","data":{"secret":"s3","n":[1,2]}}`, "forbidden")
	carol.refused(3, `{"id":3,"op":"broadcast","data":"to all"}`, "forbidden")
	bad := ibTamper(t, ibToken(t, "carol", ibGrants{Broadcast: true}), func(m map[string]any) { m["sub"] = "mallory" })
	carol.refused(4, fmt.Sprintf(`{"id":4,"op":"auth","token":%q}`, bad), "unauthorized")
	expired := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("carol", time.Now().Add(-time.Hour), ibGrants{}))
	carol.refused(5, fmt.Sprintf(`{"id":5,"op":"auth","token":%q}`, expired), "token_expired")
	carol.pub(6, "private-ok", `"allowed"`) // the identity is unchanged
	anon.refused(1, `{"id":1,"op":"broadcast","data":{"hello":"everyone"}}`, "unauthorized")
	anon.refused(2, `{"id":2,"op":"subscribe","channel":"private-x"}`, "unauthorized")
	anon.refused(3, `{"id":3,"op":"publish","channel":"private-x","data":null}`, "unauthorized")
	bin.binRefused(1, ibBinPub(1, "private-x", []byte{0, 1, 0xfe, 0xff}, true), 3)

	// Handshakes with a bad and an expired token, from known client ports.
	handshake := func(tok string) string {
		raw := s.dialRaw(t)
		key, _ := wsKey()
		raw.write(rawRequest("GET", "/ws", "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: "+key,
			"Sec-WebSocket-Version: 13", "Authorization: Bearer "+tok))
		resp, body := raw.readResponse("GET")
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("handshake with token %.20s…: status %d body %q, want 401", tok, resp.StatusCode, body)
		}
		return raw.conn.LocalAddr().String()
	}
	badRemote := handshake(bad)
	expiredRemote := handshake(expired)

	type want struct {
		conn, user, attempt, channel, err, data, enc, remote string
	}
	wants := []want{
		{carol.ID, "carol", "subscribe", "private-x", "forbidden", "null", "", ""},
		{carol.ID, "carol", "publish", "private-x", "forbidden", "null", "", ""}, // refused: no data kept
		{carol.ID, "carol", "broadcast", "", "forbidden", "null", "", ""},
		{carol.ID, "carol", "auth", "", "unauthorized", "null", "", ""},
		{carol.ID, "carol", "auth", "", "token_expired", "null", "", ""},
		{anon.ID, "", "broadcast", "", "unauthorized", "null", "", ""},
		{anon.ID, "", "subscribe", "private-x", "unauthorized", "null", "", ""},
		{anon.ID, "", "publish", "private-x", "unauthorized", "null", "", ""},
		{bin.ID, "", "publish", "private-x", "unauthorized", "null", "", ""},
		{"", "", "connect", "", "unauthorized", "null", "", badRemote},
		{"", "", "connect", "", "token_expired", "null", "", expiredRemote},
	}
	recs := auAudit(t, s, "op=refused")
	if len(recs) != len(wants) {
		t.Fatalf("GET /api/audit?op=refused: %d records, want %d:\n%s", len(recs), len(wants), auList(recs))
	}
	node := carol.Node
	for _, w := range wants {
		what := fmt.Sprintf("refused %s by %q (%s)", w.attempt, w.conn, w.err)
		r := auFind(t, recs, 1, what, func(r auRecord) bool {
			return r.Conn == w.conn && r.Attempt == w.attempt && r.Error == w.err && r.Remote == w.remote
		})[0]
		if r.Op != "refused" || r.User != w.user || r.Channel != w.channel || r.Enc != w.enc || !jsonEqual(r.Data, []byte(w.data)) || r.Node != node {
			t.Errorf("%s: record %s, want user %q channel %q data %s enc %q node %s", what, r, w.user, w.channel, w.data, w.enc, node)
		}
		if w.conn == "" && r.Worker < 0 {
			t.Errorf("%s: record %s: a refused handshake is reported by a worker, want worker ≥ 0", what, r)
		}
	}
	// Refusals are not publishes; the one granted publish is.
	pubs := auAudit(t, s, "op=publish")
	auFind(t, pubs, 1, "carol's granted publish", func(r auRecord) bool {
		return r.Conn == carol.ID && r.Channel == "private-ok" && jsonEqual(r.Data, []byte(`"allowed"`))
	})
	if len(pubs) != 1 || len(auAudit(t, s, "op=broadcast")) != 0 || len(auAudit(t, s, "op=auth")) != 0 {
		t.Errorf("refused publishes, broadcasts or auths were audited as done:\n%s", auList(auAudit(t, s, "")))
	}
	// No session for a refused handshake.
	if n := len(auSessions(t, s, "")); n != 3 {
		t.Errorf("GET /api/sessions lists %d sessions, want the 3 accepted connections", n)
	}
	if se := auSessionMap(t, s, "")[bin.ID]; se.Protocol != "bin" {
		t.Errorf("session of the binary client %s: protocol %q, want bin", se, se.Protocol)
	}
}

// ---------------------------------------------------------------------------
// TestAuditServerAPI: publishes and broadcasts through the server API are audited
// with worker -1 and conn "".

func TestAuditServerAPI(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	sub := auDial(t, s, "e2e-sub", "")
	sub.sub(1, "news")
	apiOK(t, s, "POST", "/api/publish", `{"channel":"news","data":{"from":"backend","n":1}}`, nil)
	sub.expectMsg("news", "api", `{"from":"backend","n":1}`)
	apiOK(t, s, "POST", "/api/broadcast", `{"data":[1,"two",{"three":3}]}`, nil)
	sub.expectMsg("", "api", `[1,"two",{"three":3}]`)
	apiOK(t, s, "POST", "/api/publish", `{"channel":"empty-room","data":null}`, nil)

	all := auAudit(t, s, "")
	check := func(op, channel, data string) {
		t.Helper()
		r := auFind(t, all, 1, "the API "+op+" on "+channel, func(r auRecord) bool { return r.Op == op && r.Channel == channel })[0]
		if r.Worker != -1 || r.Conn != "" || r.User != "" || r.Node != sub.Node || !jsonEqual(r.Data, []byte(data)) || !strings.Contains(r.raw, `"worker":-1`) {
			t.Errorf("API %s record %s, want worker -1, conn \"\", user \"\", node %s, data %s", op, r, sub.Node, data)
		}
	}
	check("publish", "news", `{"from":"backend","n":1}`)
	check("broadcast", "", `[1,"two",{"three":3}]`)
	check("publish", "empty-room", `null`)
	if got := auAudit(t, s, "channel=news&op=publish"); len(got) != 1 || got[0].Worker != -1 {
		t.Errorf("GET /api/audit?channel=news&op=publish: %s, want the API publish", auList(got))
	}
	// The API opens no session.
	if ss := auSessions(t, s, ""); len(ss) != 1 || ss[0].Conn != sub.ID {
		t.Errorf("GET /api/sessions: %v, want only the subscriber's", ss)
	}
}

// TestAuditData: the data of a publish is recorded as sent: JSON as JSON (escapes,
// unicode and a large value intact), a binary client's JSON as JSON, its opaque
// bytes as base64 with "enc":"base64".
func TestAuditData(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--audit-max-data", "1MiB") // every byte kept, the 100 KiB message included
	js := auDial(t, s, "e2e-json", "")
	bin := ibDialBin(t, s, "")
	big := fmt.Sprintf(`{"big":%q}`, strings.Repeat("0123456789abcdef", 100<<10/16))
	unicode := `{"s":"h\u00e9llo \"w\u00f6rld\" \ud83d\ude00 \\ / \n ünï","n":-1.5e3,"b":[true,false,null],"o":{}}`
	js.pub(1, "data", unicode)
	js.pub(2, "data", big)
	js.pub(3, "data", `"just a string"`)
	bin.binOK(1, ibBinPub(1, "data", []byte(`{"from":"bin"}`), false))
	bin.binOK(2, ibBinPub(2, "data", []byte{0x00, 0xff, 'a', 0x80}, true))

	recs := auAudit(t, s, "channel=data&op=publish")
	if len(recs) != 5 {
		t.Fatalf("GET /api/audit?channel=data&op=publish: %d records, want 5:\n%s", len(recs), auList(recs))
	}
	for _, w := range []struct {
		conn, data, enc string
	}{
		{js.ID, unicode, ""},
		{js.ID, big, ""},
		{js.ID, `"just a string"`, ""},
		{bin.ID, `{"from":"bin"}`, ""},
		{bin.ID, `"AP9hgA=="`, "base64"},
	} {
		auFind(t, recs, 1, fmt.Sprintf("the publish of %.40s… by %s", w.data, w.conn), func(r auRecord) bool {
			return r.Conn == w.conn && r.Enc == w.enc && jsonEqual(r.Data, []byte(w.data))
		})
	}
}

// TestAuditDisabled: with --audit=false both endpoints answer 404 and the node
// serves as before.
func TestAuditDisabled(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--audit=false")
	c := auDial(t, s, "e2e-no-audit", "")
	c.sub(1, "news")
	apiOK(t, s, "POST", "/api/publish", `{"channel":"news","data":1}`, nil)
	c.expectMsg("news", "api", `1`)
	for _, p := range []string{"/api/audit", "/api/sessions", "/api/audit?op=publish"} {
		apiFails(t, s, "GET", p, ibAPIKey, "", http.StatusNotFound)
	}
}

// TestAuditDataFolderInUse: a second node on a running node's data folder refuses
// to start, and the running one is not disturbed.
func TestAuditDataFolderInUse(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	c := auDial(t, s, "e2e-first", "")
	out, code := runCLI(t, 20*time.Second, nil, "serve", "--addr", "127.0.0.1:0", "--public", s.Public,
		"--data", s.Data, "--access-log", "off", "--workers", "0", "--api-key", ibAPIKey)
	if code == 0 || code == -1 || !strings.Contains(out, "in use") {
		t.Fatalf("a second node on the same --data: exit status %d, want a refusal saying the folder is in use\n%s", code, out)
	}
	c.pingPong()
	if se := auSessionMap(t, s, "")[c.ID]; !se.Active {
		t.Fatalf("session %s of the first node's client: %v, want active", c.ID, se)
	}
}

// TestAuditRetention: with --audit-retention, old records and ended sessions are
// trimmed; sessions still open are kept however old.
func TestAuditRetention(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--audit-retention", "1s")
	keep := auDial(t, s, "e2e-kept", "")
	gone := auDial(t, s, "e2e-gone", "")
	keep.pub(1, "ret", `"old"`)
	auClose(t, gone, websocket.FormatCloseMessage(1000, ""), 1000)
	eventually(t, 10*time.Second, func() string {
		if recs := auAudit(t, s, ""); len(recs) != 0 {
			return fmt.Sprintf("%d records older than the retention still listed:\n%s", len(recs), auList(recs))
		}
		return ""
	})
	eventually(t, 10*time.Second, func() string {
		sess := auSessionMap(t, s, "")
		if _, ok := sess[gone.ID]; ok {
			return fmt.Sprintf("the ended session %s is still listed", gone.ID)
		}
		return ""
	})
	if se, ok := auSessionMap(t, s, "active=true")[keep.ID]; !ok || !se.Active {
		t.Fatalf("the open session %s was trimmed: %v (listed %v)", keep.ID, se, ok)
	}
	keep.pub(2, "ret", `"new"`)
	auFind(t, auAudit(t, s, "channel=ret"), 1, "the new publish", func(r auRecord) bool { return jsonEqual(r.Data, []byte(`"new"`)) })
}

// ---------------------------------------------------------------------------
// TestSessionCloseCodes: each way a connection ends is recorded as its session's
// close code and in its disconnect record.

func TestSessionCloseCodes(t *testing.T) {
	t.Parallel()
	t.Run("client, API and TCP", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "--api-key", ibAPIKey)
		normal := auDial(t, s, "e2e-close-1000", "")
		appCode := auDial(t, s, "e2e-close-3001", "")
		empty := auDial(t, s, "e2e-close-empty", "")
		kicked := auDial(t, s, "e2e-close-4100", "")
		vanished := auDial(t, s, "e2e-close-1006", "")
		open := auDial(t, s, "e2e-open", "")
		for _, c := range []*ibConn{normal, appCode, empty, kicked, vanished, open} {
			c.sub(1, "codes")
		}
		auClose(t, normal, websocket.FormatCloseMessage(1000, "bye"), 1000)
		auClose(t, appCode, websocket.FormatCloseMessage(3001, "app says bye"), 3001)
		auClose(t, empty, nil, websocket.CloseNoStatusReceived)
		apiOK(t, s, "POST", "/api/disconnect", fmt.Sprintf(`{"conn":%q}`, kicked.ID), nil)
		kicked.expectCloseCode(4100, defaultTimeout)
		vanished.c.Close() // no close frame

		want := map[string]int{normal.ID: 1000, appCode.ID: 3001, empty.ID: 1005, kicked.ID: 4100, vanished.ID: 1006}
		eventually(t, 5*time.Second, func() string {
			sess := auSessionMap(t, s, "")
			for id, code := range want {
				if se := sess[id]; !se.closed(code) {
					return fmt.Sprintf("session %s: %v, want closed with %d", id, se, code)
				}
			}
			if !sess[open.ID].Active {
				return fmt.Sprintf("session %v of the open connection is not active", sess[open.ID])
			}
			return ""
		})
		disc := auAudit(t, s, "op=disconnect")
		for id, code := range want {
			r := auFind(t, disc, 1, "the disconnect of "+id, func(r auRecord) bool { return r.Conn == id })[0]
			if r.Code != code || r.Channel != "" {
				t.Errorf("disconnect record %s, want code %d", r, code)
			}
		}
		if len(disc) != len(want) {
			t.Errorf("%d disconnect records, want %d:\n%s", len(disc), len(want), auList(disc))
		}
		act := auSessionMap(t, s, "active=true")
		if len(act) != 1 || !act[open.ID].Active {
			t.Errorf("GET /api/sessions?active=true: %v, want only %s", act, open.ID)
		}
		inact := auSessionMap(t, s, "active=false")
		if len(inact) != len(want) {
			t.Errorf("GET /api/sessions?active=false: %d sessions, want %d", len(inact), len(want))
		}
		for id := range want {
			if se, ok := inact[id]; !ok || se.Active || !slices.Equal(se.Channels, []string{"codes"}) {
				t.Errorf("GET /api/sessions?active=false: %s is %v, want it closed, with channels [codes]", id, se)
			}
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		t.Parallel()
		s := startServer(t, "--api-key", ibAPIKey, "--ping-interval", "300ms", "--idle-timeout", "1s")
		c, w := s.dialRawWS(t, 0)
		code, reason, _, err := c.readUntilClose(10 * time.Second) // pings go unanswered
		if code != 4000 {
			t.Fatalf("silent client: close %d %q (%v), want 4000", code, reason, err)
		}
		eventually(t, 5*time.Second, func() string {
			if se := auSessionMap(t, s, "")[w.Conn]; !se.closed(4000) {
				return fmt.Sprintf("session %s: %v, want closed with 4000", w.Conn, se)
			}
			return ""
		})
		auFind(t, auAudit(t, s, "op=disconnect"), 1, "the idle disconnect", func(r auRecord) bool { return r.Conn == w.Conn && r.Code == 4000 })
	})
}

// TestSessionUserChanges: the auth op and a token expiry change a session's user; the
// audit log has an auth record for each change, and subscriptions the expiry drops
// are audited as unsubscribes.
func TestSessionUserChanges(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--jwt-secret", ibSecret)
	c := auDial(t, s, "e2e-auth", "")
	c.sub(1, "news")
	grants := ibGrants{Subscribe: []string{"private-*"}}
	c.ok(2, fmt.Sprintf(`{"id":2,"op":"auth","token":%q}`, ibToken(t, "alice", grants)))
	c.sub(3, "private-alice")
	// The query waits for what was acknowledged before it to be committed, so the
	// session is stored as alice's before it becomes bob's. (Two user changes
	// committed together leave only the last user in the session index.)
	if se := auSessionMap(t, s, "user=alice")[c.ID]; se.User != "alice" {
		t.Fatalf("GET /api/sessions?user=alice: %s is %v, want it with user alice", c.ID, se)
	}
	c.ok(4, fmt.Sprintf(`{"id":4,"op":"auth","token":%q}`, ibToken(t, "bob", grants)))
	// A token that expires within seconds: the connection goes on anonymous.
	short := ibSign(t, jwt.SigningMethodHS256, []byte(ibSecret), ibClaims("erin", ibShortExp(), grants))
	e := auDial(t, s, "e2e-expiry", short)
	e.sub(1, "private-erin")
	other := auDial(t, s, "e2e-other", "")

	se := auSessionMap(t, s, "")[c.ID]
	if se.User != "bob" || !se.Active || !slices.Equal(se.Channels, []string{"news", "private-alice"}) {
		t.Fatalf("session %v, want user bob, active, channels [news private-alice]", se)
	}
	auths := auAudit(t, s, "op=auth")
	auFind(t, auths, 1, "the auth as alice", func(r auRecord) bool { return r.Conn == c.ID && r.User == "alice" })
	auFind(t, auths, 1, "the auth as bob", func(r auRecord) bool { return r.Conn == c.ID && r.User == "bob" })
	// Records after a change carry the new user.
	auFind(t, auAudit(t, s, "op=subscribe"), 1, "alice's subscribe", func(r auRecord) bool {
		return r.Conn == c.ID && r.User == "alice" && r.Channel == "private-alice"
	})
	for _, q := range []struct {
		query string
		has   []string
		not   []string
	}{
		{"user=bob", []string{c.ID}, []string{e.ID, other.ID}},
		{"user=erin", []string{e.ID}, []string{c.ID, other.ID}},
		// A session is listed under every user it had.
		{"user=alice", []string{c.ID}, []string{e.ID, other.ID}},
		{"user=bob&active=true", []string{c.ID}, nil},
	} {
		m := auSessionMap(t, s, q.query)
		for _, id := range q.has {
			if _, ok := m[id]; !ok {
				t.Errorf("GET /api/sessions?%s does not list %s: %v", q.query, id, m)
			}
		}
		for _, id := range q.not {
			if _, ok := m[id]; ok {
				t.Errorf("GET /api/sessions?%s lists %s", q.query, id)
			}
		}
	}

	// The expiry: token_expired, then the session is anonymous and the private
	// subscription is gone, both audited.
	m := e.readJSONWithin(10 * time.Second)
	if m.Op != "error" || m.Code != "token_expired" {
		t.Fatalf("%s: got %s, want error token_expired", e.name, m)
	}
	eventually(t, 5*time.Second, func() string {
		if se := auSessionMap(t, s, "")[e.ID]; se.User != "" || !se.Active {
			return fmt.Sprintf("session %v after the expiry, want user \"\" and active", se)
		}
		return ""
	})
	all := auAudit(t, s, "")
	auFind(t, all, 1, "the expiry's auth record", func(r auRecord) bool { return r.Op == "auth" && r.Conn == e.ID && r.User == "" })
	auFind(t, all, 1, "the expiry's unsubscribe", func(r auRecord) bool {
		return r.Op == "unsubscribe" && r.Conn == e.ID && r.Channel == "private-erin"
	})
	if se := auSessionMap(t, s, "user=erin")[e.ID]; se.Conn != e.ID {
		t.Errorf("GET /api/sessions?user=erin no longer lists %s after its expiry", e.ID)
	}
}

// ---------------------------------------------------------------------------
// Publishing under load, for the crash tests.

// auPublisher publishes on one connection at a steady rate: message n has id n and
// data {"u":"<tag>-<n>"}. It records when each ack was read.
type auPublisher struct {
	c       *ibConn
	tag     string
	channel string

	mu      sync.Mutex
	sent    int
	acked   map[int]time.Time
	refused []string // error replies
	ended   error    // how the connection ended; nil while it is open

	gone chan struct{} // closed when the reader has stopped
	done chan struct{} // closed when both goroutines have stopped
}

func (p *auPublisher) uid(n int) string { return fmt.Sprintf("%s-%d", p.tag, n) }

// run publishes up to max messages, one every `every`, until stop is closed or the
// connection ends, then waits (at most 10 s) for the outstanding acks.
func (p *auPublisher) run(max int, every time.Duration, stop <-chan struct{}) {
	p.acked = map[int]time.Time{}
	p.gone = make(chan struct{})
	p.done = make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for n := 1; n <= max; n++ {
			select {
			case <-stop:
				return
			case <-p.gone:
				return
			case <-tick.C:
			}
			msg := fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":{"u":%q}}`, n, p.channel, p.uid(n))
			if wkWrite(p.c, msg) != nil {
				return
			}
			p.mu.Lock()
			p.sent = n
			p.mu.Unlock()
		}
	}()
	go func() {
		defer close(p.done)
		defer func() { <-wrote }()
		defer close(p.gone)
		var drainUntil time.Time
		for {
			f, err := p.c.nextE(50 * time.Millisecond)
			if errors.Is(err, errIBTimeout) {
				select {
				case <-wrote:
					p.mu.Lock()
					all := len(p.acked)+len(p.refused) >= p.sent
					p.mu.Unlock()
					if drainUntil.IsZero() {
						drainUntil = time.Now().Add(10 * time.Second)
					}
					if all || time.Now().After(drainUntil) {
						return
					}
				default:
				}
				continue
			}
			if err != nil {
				p.mu.Lock()
				p.ended = err
				p.mu.Unlock()
				return
			}
			now := time.Now()
			m, err := ibParseJSON(f.p)
			p.mu.Lock()
			n, _ := strconv.Atoi(string(m.ID))
			switch {
			case err == nil && m.Op == "ack" && n > 0:
				p.acked[n] = now
			default:
				p.refused = append(p.refused, describeIB(f))
			}
			p.mu.Unlock()
		}
	}()
}

func (p *auPublisher) ackCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// auLoad starts a publisher on each client (data tags c0, c1, …); the publishers
// are stopped, and waited for, at cleanup.
func auLoad(t *testing.T, clients []*ibConn, channel string, max int, every time.Duration) []*auPublisher {
	t.Helper()
	stop := make(chan struct{})
	pubs := make([]*auPublisher, len(clients))
	for i, c := range clients {
		pubs[i] = &auPublisher{c: c, tag: fmt.Sprintf("c%d", i), channel: channel}
		pubs[i].run(max, every, stop)
	}
	t.Cleanup(func() {
		close(stop)
		for _, p := range pubs {
			p.c.c.Close()
			<-p.done
		}
	})
	return pubs
}

// auWaitLoad waits until every publisher has stopped.
func auWaitLoad(t *testing.T, pubs []*auPublisher, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for _, p := range pubs {
		select {
		case <-p.done:
		case <-deadline:
			t.Fatalf("publisher %s (conn %s) still running after %v", p.tag, p.c.ID, timeout)
		}
	}
}

// auWaitAcks waits until the publishers together have n acks.
func auWaitAcks(t *testing.T, pubs []*auPublisher, n int) {
	t.Helper()
	eventually(t, 20*time.Second, func() string {
		total := 0
		for _, p := range pubs {
			total += p.ackCount()
		}
		if total < n {
			return fmt.Sprintf("%d publishes acknowledged, waiting for %d", total, n)
		}
		return ""
	})
}

// auCheckAudited compares the acked publishes with the audit log of channel: no
// message is audited twice or by another connection, each connection's come in
// order, and it returns the acked ones missing from the log with their ack times.
func auCheckAudited(t *testing.T, s *serverProc, channel string, pubs []*auPublisher) (missing map[string]time.Time, acked, audited int) {
	t.Helper()
	byTag := map[string]*auPublisher{}
	for _, p := range pubs {
		byTag[p.tag] = p
	}
	recs := auAudit(t, s, "op=publish&channel="+channel)
	seen := map[string]bool{}
	last := map[string]int{}
	for _, r := range recs {
		var d struct{ U string }
		if json.Unmarshal(r.Data, &d) != nil {
			t.Fatalf("audit record %s: data is not a load message", r)
		}
		i := strings.LastIndexByte(d.U, '-')
		n, err := strconv.Atoi(d.U[i+1:])
		p := byTag[d.U[:max(i, 0)]]
		if i < 0 || err != nil || p == nil {
			t.Fatalf("audit record %s: data is not a load message", r)
		}
		if seen[d.U] {
			t.Fatalf("message %s audited twice (%s)", d.U, r)
		}
		seen[d.U] = true
		if r.Conn != p.c.ID || r.Channel != channel || r.Node != p.c.Node {
			t.Fatalf("audit record %s, want conn %s of publisher %s, node %s", r, p.c.ID, p.tag, p.c.Node)
		}
		if n <= last[p.tag] {
			t.Fatalf("audit record %s: message %d of %s after %d, want each connection's in order", r, n, p.tag, last[p.tag])
		}
		last[p.tag] = n
	}
	missing = map[string]time.Time{}
	for _, p := range pubs {
		p.mu.Lock()
		for n, at := range p.acked {
			acked++
			if !seen[p.uid(n)] {
				missing[p.uid(n)] = at
			}
		}
		p.mu.Unlock()
	}
	return missing, acked, len(recs)
}

// auSortedKeys lists a map's keys, sorted, for messages.
func auSortedKeys(m map[string]time.Time) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// TestAuditWorkerCrash: clients on both workers publish at a steady rate; one worker
// is killed with SIGKILL mid-run. Every publish acknowledged, on either worker, is in
// the audit log (the agent reads what the dead worker left in its rings), and the
// dead worker's sessions are closed with 1006.

func TestAuditWorkerCrash(t *testing.T) {
	t.Parallel()
	const (
		channel   = "crash-load"
		perClient = 190                   // messages per client at most
		every     = 16 * time.Millisecond // 8 clients: 500 publishes/s
	)
	s := wkStart(t) // --workers 2 --api-key, the default --audit-sync batch
	var clients []*ibConn
	var groups [wkWorkerCount][]*ibConn
	for try := 0; try < 4 && (len(groups[0]) < 2 || len(groups[1]) < 2); try++ {
		clients = append(clients, wkDialMany(t, s, 8, "", nil)...)
		groups = wkGroup(t, s, clients)
	}
	if len(groups[0]) < 2 || len(groups[1]) < 2 {
		t.Fatalf("clients per worker %d, %d: want at least 2 on each", len(groups[0]), len(groups[1]))
	}
	for i := range groups {
		groups[i] = groups[i][:min(len(groups[i]), 4)]
	}
	const victim, survivor = 0, 1
	load := append(append([]*ibConn(nil), groups[victim]...), groups[survivor]...)
	onVictim := map[*ibConn]bool{}
	for _, c := range groups[victim] {
		onVictim[c] = true
	}
	pid := wkWorkers(t, s)[victim].PID

	pubs := auLoad(t, load, channel, perClient, every*time.Duration(len(load))/8)
	auWaitAcks(t, pubs, len(load)*perClient/3)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 worker %d pid %d: %v", victim, pid, err)
	}
	auWaitLoad(t, pubs, 30*time.Second)

	for _, p := range pubs {
		p.mu.Lock()
		sent, acked, refused, ended := p.sent, len(p.acked), p.refused, p.ended
		p.mu.Unlock()
		if onVictim[p.c] {
			if code := closeCode(ended); ended == nil || code != int(closeAbnormal) {
				t.Errorf("publisher %s on the killed worker: connection ended with %v (code %d), want it cut (1006)", p.c.ID, ended, code)
			}
			t.Logf("publisher %s on the killed worker: %d sent, %d acknowledged", p.c.ID, sent, acked)
			continue
		}
		if ended != nil || sent != perClient || acked != sent || len(refused) != 0 {
			t.Errorf("publisher %s on the surviving worker: ended %v, %d sent, %d acknowledged, refusals %q; want all %d acknowledged",
				p.c.ID, ended, sent, acked, refused, perClient)
		}
	}
	missing, acked, audited := auCheckAudited(t, s, channel, pubs)
	t.Logf("%d publishes acknowledged, %d audited", acked, audited)
	if len(missing) > 0 {
		t.Fatalf("%d acknowledged publishes are not in the audit log: %v", len(missing), auSortedKeys(missing))
	}

	// The dead worker's sessions end with 1006, the survivor's are open.
	eventually(t, 5*time.Second, func() string {
		sess := auSessionMap(t, s, "")
		for _, c := range load {
			se := sess[c.ID]
			if onVictim[c] && !se.closed(1006) {
				return fmt.Sprintf("session %s on the killed worker: %v, want closed with 1006", c.ID, se)
			}
			if !onVictim[c] && !se.Active {
				return fmt.Sprintf("session %s on the surviving worker: %v, want active", c.ID, se)
			}
		}
		return ""
	})
	disc := auAudit(t, s, "op=disconnect")
	for _, c := range groups[victim] {
		auFind(t, disc, 1, "the disconnect of "+c.ID, func(r auRecord) bool { return r.Conn == c.ID && r.Code == 1006 && r.Worker == victim })
	}
}

// ---------------------------------------------------------------------------
// The agent killed with SIGKILL under load, then restarted on the same data folder.

// auAgentCrash runs the load against a node with the given --workers and
// --audit-sync, kills the agent (its workers die with it) once a third of the load
// is acknowledged, restarts the node, and returns the acked publishes missing from
// the log with their ack times, and when the kill was sent.
func auAgentCrash(t *testing.T, workers, syncMode string) (map[string]time.Time, time.Time) {
	t.Helper()
	const (
		channel   = "agent-crash-load"
		nClients  = 6
		perClient = 250
		every     = 12 * time.Millisecond // 500 publishes/s
	)
	s := startServer(t, "--api-key", ibAPIKey, "--workers", workers, "--audit-sync", syncMode)
	if workers != "0" {
		eventually(t, 5*time.Second, func() string {
			for _, w := range wkWorkers(t, s) {
				if !w.Up {
					return "waiting for the workers to be up"
				}
			}
			return ""
		})
	}
	clients := make([]*ibConn, nClients)
	for i := range clients {
		clients[i] = auDial(t, s, "e2e-load", "")
	}
	pubs := auLoad(t, clients, channel, perClient, every)
	auWaitAcks(t, pubs, nClients*perClient/3)
	killed := time.Now()
	s.Signal(syscall.SIGKILL)
	if exited, _ := s.WaitExit(5 * time.Second); !exited {
		t.Fatalf("the agent still runs 5 s after SIGKILL")
	}
	auWaitLoad(t, pubs, 30*time.Second)
	eventually(t, 5*time.Second, func() string {
		if left := wkWorkerProcs(s); len(left) != 0 {
			return fmt.Sprintf("worker processes left after the agent was killed: %+v", left)
		}
		return ""
	})

	s2 := s.restart(t)
	missing, acked, audited := auCheckAudited(t, s2, channel, pubs)
	t.Logf("--workers %s --audit-sync %s: %d publishes acknowledged before the kill, %d audited, %d acknowledged but missing",
		workers, syncMode, acked, audited, len(missing))
	// Sessions open at the kill are closed with 1006 at the restart.
	sess := auSessionMap(t, s2, "")
	for _, c := range clients {
		if se := sess[c.ID]; !se.closed(1006) {
			t.Errorf("after the restart session %s is %v, want closed with 1006", c.ID, se)
		}
	}
	return missing, killed
}

// TestAuditAgentCrashAlways: with --audit-sync=always an ack means the record is on
// disk: nothing acknowledged is lost when the agent is killed.
func TestAuditAgentCrashAlways(t *testing.T) {
	t.Parallel()
	for _, w := range []string{"0", "2"} {
		t.Run("workers="+w, func(t *testing.T) {
			t.Parallel()
			missing, _ := auAgentCrash(t, w, "always")
			if len(missing) > 0 {
				t.Fatalf("%d acknowledged publishes lost with --audit-sync=always: %v", len(missing), auSortedKeys(missing))
			}
		})
	}
}

// TestAuditAgentCrashBatch: with --audit-sync=batch the agent's queue may be lost
// with it, but only the last records: each acknowledged publish missing after the
// restart was acknowledged within the last second before the kill.
func TestAuditAgentCrashBatch(t *testing.T) {
	t.Parallel()
	for _, w := range []string{"0", "2"} {
		t.Run("workers="+w, func(t *testing.T) {
			t.Parallel()
			missing, killed := auAgentCrash(t, w, "batch")
			if len(missing) > 0 {
				oldest, newest := killed, killed.Add(-time.Hour)
				for _, at := range missing {
					if at.Before(oldest) {
						oldest = at
					}
					if at.After(newest) {
						newest = at
					}
				}
				t.Logf("the missing publishes were acknowledged %v to %v before the kill signal",
					killed.Sub(oldest).Round(time.Millisecond), killed.Sub(newest).Round(time.Millisecond))
			}
			for _, id := range auSortedKeys(missing) {
				if at := missing[id]; at.Before(killed.Add(-time.Second)) {
					t.Errorf("message %s acknowledged %v before the kill is not in the audit log", id, killed.Sub(at).Round(time.Millisecond))
				}
			}
		})
	}
}
