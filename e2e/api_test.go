package e2e

// The server API under /api/ on the client port (--api-key): authentication, publish,
// broadcast, connection and channel listings, disconnect.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

const ibAPIKey = "e2e-api-key-0123456789"

// apiCall performs one API request; key is sent as "Authorization: Bearer" unless
// header already carries a key (or key is empty).
func apiCall(t *testing.T, s *serverProc, method, path, key, body string, header ...string) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL(path), r)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, b
}

// apiOK requires 200 and a JSON body, decoded into v when v is not nil.
func apiOK(t *testing.T, s *serverProc, method, path, body string, v any) {
	t.Helper()
	status, hdr, b := apiCall(t, s, method, path, ibAPIKey, body)
	if status != http.StatusOK {
		t.Fatalf("%s %s %s: status %d body %q, want 200", method, path, body, status, b)
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, b, err)
		}
	}
}

// apiFails requires status and a JSON body {"error":"<non-empty>"}.
func apiFails(t *testing.T, s *serverProc, method, path, key, body string, status int, header ...string) http.Header {
	t.Helper()
	got, hdr, b := apiCall(t, s, method, path, key, body, header...)
	if got != status {
		t.Fatalf("%s %s %q: status %d body %q, want %d", method, path, body, got, b, status)
	}
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || *e.Error == "" {
		t.Errorf("%s %s %q: status %d body %q, want a JSON {\"error\":...} body", method, path, body, got, b)
	}
	return hdr
}

type apiConnInfo struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Remote   string   `json:"remote"`
	Protocol string   `json:"protocol"`
	Channels []string `json:"channels"`
}

type apiChannelInfo struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
}

func apiConnections(t *testing.T, s *serverProc) map[string]apiConnInfo {
	t.Helper()
	var out struct {
		Connections *[]apiConnInfo `json:"connections"`
		Next        string         `json:"next"`
	}
	apiOK(t, s, "GET", "/api/connections?limit=1000", "", &out)
	if out.Connections == nil || out.Next != "" {
		t.Fatalf("GET /api/connections?limit=1000: no connections array, or more than one page (next %q)", out.Next)
	}
	m := map[string]apiConnInfo{}
	for _, c := range *out.Connections {
		if _, dup := m[c.ID]; dup {
			t.Fatalf("GET /api/connections lists %q twice", c.ID)
		}
		m[c.ID] = c
	}
	return m
}

func apiChannels(t *testing.T, s *serverProc) map[string]int {
	t.Helper()
	var out struct {
		Channels *[]apiChannelInfo `json:"channels"`
	}
	apiOK(t, s, "GET", "/api/channels", "", &out)
	if out.Channels == nil {
		t.Fatalf("GET /api/channels: no channels array")
	}
	m := map[string]int{}
	for _, c := range *out.Channels {
		m[c.Name] = c.Subscribers
	}
	return m
}

func TestAPIDisabled(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/connections", ""},
		{"GET", "/api/channels", ""},
		{"POST", "/api/publish", `{"channel":"news","data":1}`},
		{"POST", "/api/broadcast", `{"data":1}`},
		{"POST", "/api/disconnect", `{"conn":"x"}`},
		{"GET", "/api/nope", ""},
	} {
		for _, key := range []string{"", ibAPIKey} {
			status, _, b := apiCall(t, s, r.method, r.path, key, r.body)
			if status != http.StatusNotFound {
				t.Errorf("%s %s (key %q) without --api-key: status %d body %q, want 404", r.method, r.path, key, status, b)
			}
		}
		status, _, b := apiCall(t, s, r.method, r.path, "", r.body, "X-API-Key", ibAPIKey)
		if status != http.StatusNotFound {
			t.Errorf("%s %s (X-API-Key) without --api-key: status %d body %q, want 404", r.method, r.path, status, b)
		}
	}
	s.assertServing(t)
}

func TestAPIKeyTooShort(t *testing.T) {
	t.Parallel()
	d := t.TempDir()
	out, code := runCLI(t, 10*time.Second, nil, "serve", "--addr", "127.0.0.1:0", "--public", d,
		"--data", filepath.Join(d, "data"), "--access-log", "off", "--api-key", "fifteen-chars-x")
	if code == 0 || code == -1 {
		t.Fatalf("--api-key of 15 characters: exit status %d, want a refusal to start\n%s", code, out)
	}
}

func TestAPIAuth(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	// Six wrong keys per endpoint, each endpoint tried from an address of its
	// own (127.0.0.10, .11, …): one address gets 429 after 10 failures
	// (TestAttackStartupAPIKeyFailures), and the key must still work from
	// 127.0.0.1 below.
	ownClient := s.HTTP
	defer func() { s.HTTP = ownClient }()
	for i, r := range []struct{ method, path, body string }{
		{"GET", "/api/connections", ""},
		{"GET", "/api/channels", ""},
		{"POST", "/api/publish", `{"channel":"news","data":1}`},
		{"POST", "/api/broadcast", `{"data":1}`},
		{"POST", "/api/disconnect", `{"conn":"x"}`},
		{"GET", "/api/unknown", ""},
	} {
		s.HTTP = clientFrom(net.IPv4(127, 0, 0, byte(10+i)))
		apiFails(t, s, r.method, r.path, "", r.body, http.StatusUnauthorized)
		apiFails(t, s, r.method, r.path, ibAPIKey+"x", r.body, http.StatusUnauthorized)
		apiFails(t, s, r.method, r.path, ibAPIKey[:len(ibAPIKey)-1], r.body, http.StatusUnauthorized)
		apiFails(t, s, r.method, r.path, "", r.body, http.StatusUnauthorized, "X-API-Key", "wrong-key-wrong-key")
		apiFails(t, s, r.method, r.path, "", r.body, http.StatusUnauthorized, "Authorization", "Basic "+ibAPIKey)
		apiFails(t, s, r.method, r.path, "", r.body, http.StatusUnauthorized, "Authorization", ibAPIKey)
	}
	s.HTTP = ownClient
	// Both ways of giving the key work.
	for _, h := range [][]string{{"Authorization", "Bearer " + ibAPIKey}, {"X-API-Key", ibAPIKey}} {
		status, _, b := apiCall(t, s, "GET", "/api/connections", "", "", h...)
		if status != http.StatusOK {
			t.Errorf("GET /api/connections with %s: status %d body %q, want 200", h[0], status, b)
		}
		status, _, b = apiCall(t, s, "POST", "/api/publish", "", `{"channel":"news","data":1}`, h...)
		if status != http.StatusOK {
			t.Errorf("POST /api/publish with %s: status %d body %q, want 200", h[0], status, b)
		}
	}
	// With the key: unknown endpoint 404, wrong method 405 with Allow.
	apiFails(t, s, "GET", "/api/unknown", ibAPIKey, "", http.StatusNotFound)
	for _, r := range []struct{ method, path, allow string }{
		{"GET", "/api/publish", "POST"},
		{"PUT", "/api/publish", "POST"},
		{"GET", "/api/broadcast", "POST"},
		{"GET", "/api/disconnect", "POST"},
		{"DELETE", "/api/disconnect", "POST"},
		{"POST", "/api/connections", "GET"},
		{"POST", "/api/channels", "GET"},
	} {
		body := ""
		if r.method != "GET" {
			body = `{}`
		}
		hdr := apiFails(t, s, r.method, r.path, ibAPIKey, body, http.StatusMethodNotAllowed)
		if got := hdr.Get("Allow"); !strings.Contains(got, r.allow) {
			t.Errorf("%s %s: Allow %q, want %s", r.method, r.path, got, r.allow)
		}
	}
	s.assertServing(t)
}

func TestAPIPublish(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--jwt-secret", ibSecret)
	j := ibDialJSON(t, s, "")
	b := ibDialBin(t, s, "")
	other := ibDialJSON(t, s, "")
	j.sub(1, "news")
	b.binOK(1, ibBinSub(1, "news"))
	other.sub(1, "sports")

	var ok map[string]any
	apiOK(t, s, "POST", "/api/publish", `{"channel":"news","data":{"headline":"API works","n":[1,2]}}`, &ok)
	if !reflect.DeepEqual(ok, map[string]any{"ok": true}) {
		t.Errorf("POST /api/publish answered %v, want {\"ok\":true}", ok)
	}
	j.expectMsg("news", "api", `{"headline":"API works","n":[1,2]}`)
	b.expectMsg("news", "api", `{"headline":"API works","n":[1,2]}`)
	for _, d := range []string{`"text"`, `42`, `[]`, `false`} {
		apiOK(t, s, "POST", "/api/publish", fmt.Sprintf(`{"channel":"news","data":%s}`, d), nil)
		j.expectMsg("news", "api", d)
		b.expectMsg("news", "api", d)
	}

	// Bad requests: 400 with {"error":...}, nothing delivered.
	for _, body := range []string{
		``,
		`not json`,
		`{"channel":"news","data":`,
		`[1,2]`,
		`{"data":1}`,
		`{"channel":"news"}`,
		`{"channel":"","data":1}`,
		`{"channel":"a b","data":1}`,
		`{"channel":"news/x","data":1}`,
		`{"channel":"` + strings.Repeat("c", 129) + `","data":1}`,
		`{"channel":5,"data":1}`,
		`{"channel":"news","data":tru}`,
		`{"channel":"news","data":1} trailing`,
	} {
		apiFails(t, s, "POST", "/api/publish", ibAPIKey, body, http.StatusBadRequest)
	}
	apiOK(t, s, "POST", "/api/publish", `{"channel":"news","data":"canary"}`, nil)
	j.expectMsg("news", "api", `"canary"`)
	b.expectMsg("news", "api", `"canary"`)
	for _, c := range []*ibConn{j, b, other} {
		c.quiet(100 * time.Millisecond)
	}
}

// PROTOCOL.md: data is any JSON value, null included. The API takes the same data.
func TestAPIPublishNull(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	j := ibDialJSON(t, s, "")
	j.sub(1, "news")
	status, _, body := apiCall(t, s, "POST", "/api/publish", ibAPIKey, `{"channel":"news","data":null}`)
	if status != http.StatusOK {
		t.Fatalf(`POST /api/publish {"channel":"news","data":null}: status %d body %q, want 200 and a null message`, status, body)
	}
	j.expectMsg("news", "api", `null`)
	status, _, body = apiCall(t, s, "POST", "/api/broadcast", ibAPIKey, `{"data":null}`)
	if status != http.StatusOK {
		t.Fatalf(`POST /api/broadcast {"data":null}: status %d body %q, want 200 and a null broadcast`, status, body)
	}
	j.expectMsg("", "api", `null`)
}

func TestAPIBroadcast(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--jwt-secret", ibSecret)
	clients := []*ibConn{
		ibDialJSON(t, s, ""),
		ibDialJSON(t, s, ibToken(t, "tok", ibGrants{})),
		ibDialBin(t, s, ""),
		ibDialBin(t, s, ibToken(t, "tokbin", ibGrants{Broadcast: true})),
	}
	clients[0].sub(1, "news")
	var ok map[string]any
	apiOK(t, s, "POST", "/api/broadcast", `{"data":{"alert":"maintenance at 5"}}`, &ok)
	if !reflect.DeepEqual(ok, map[string]any{"ok": true}) {
		t.Errorf("POST /api/broadcast answered %v, want {\"ok\":true}", ok)
	}
	for _, c := range clients {
		c.expectMsg("", "api", `{"alert":"maintenance at 5"}`)
	}
	for _, body := range []string{``, `{}`, `{"channel":"news"}`, `nope`, `{"data":}`} {
		apiFails(t, s, "POST", "/api/broadcast", ibAPIKey, body, http.StatusBadRequest)
	}
	apiOK(t, s, "POST", "/api/broadcast", `{"data":"canary"}`, nil)
	for _, c := range clients {
		c.expectMsg("", "api", `"canary"`)
		c.quiet(50 * time.Millisecond)
	}
}

func TestAPIConnectionsAndChannels(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey, "--jwt-secret", ibSecret)
	if got := apiConnections(t, s); len(got) != 0 {
		t.Fatalf("connections before any client: %v, want none", got)
	}
	if got := apiChannels(t, s); len(got) != 0 {
		t.Fatalf("channels before any client: %v, want none", got)
	}

	anon := ibDialJSON(t, s, "")
	alice := ibDialBin(t, s, ibToken(t, "alice", ibGrants{Subscribe: []string{"private-*"}}))
	bob := ibDialJSON(t, s, "")
	anon.sub(1, "zeta")
	anon.sub(2, "alpha")
	anon.sub(3, "alpha") // duplicate: one subscription
	alice.binOK(1, ibBinSub(1, "private-a"))
	alice.binOK(2, ibBinSub(2, "alpha"))

	check := func() {
		t.Helper()
		got := apiConnections(t, s)
		want := map[string]apiConnInfo{
			anon.ID:  {anon.ID, "", anon.c.LocalAddr().String(), "json", []string{"alpha", "zeta"}},
			alice.ID: {alice.ID, "alice", alice.c.LocalAddr().String(), "bin", []string{"alpha", "private-a"}},
			bob.ID:   {bob.ID, "", bob.c.LocalAddr().String(), "json", []string{}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("GET /api/connections:\n got %+v\nwant %+v", got, want)
		}
	}
	check()
	if got, want := apiChannels(t, s), map[string]int{"alpha": 2, "zeta": 1, "private-a": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("GET /api/channels = %v, want %v", got, want)
	}
	// The exact shape of a connection object.
	_, _, raw := apiCall(t, s, "GET", "/api/connections", ibAPIKey, "")
	var page struct {
		Connections []map[string]json.RawMessage `json:"connections"`
		Next        *string                      `json:"next"`
	}
	if err := json.Unmarshal(raw, &page); err != nil || len(page.Connections) != 3 || page.Next == nil || *page.Next != "" {
		t.Fatalf("GET /api/connections body %s: want {\"connections\":[3 objects],\"next\":\"\"}", raw)
	}
	for _, c := range page.Connections {
		keys := make([]string, 0, len(c))
		for k := range c {
			if k == "worker" || k == "node" {
				continue // the worker and the node holding it (PROTOCOL.md)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if strings.Join(keys, ",") != "channels,id,protocol,remote,user" {
			t.Errorf("connection object has keys %v, want id, user, remote, protocol, channels", keys)
		}
	}

	// Changes are reflected: auth sets the user, unsubscribe and close remove entries.
	bob.ok(1, fmt.Sprintf(`{"id":1,"op":"auth","token":%q}`, ibToken(t, "bob", ibGrants{})))
	anon.ok(4, `{"id":4,"op":"unsubscribe","channel":"zeta"}`)
	if got := apiConnections(t, s); got[bob.ID].User != "bob" || !reflect.DeepEqual(got[anon.ID].Channels, []string{"alpha"}) {
		t.Fatalf("after auth and unsubscribe: %+v", got)
	}
	if got, want := apiChannels(t, s), map[string]int{"alpha": 2, "private-a": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("GET /api/channels after unsubscribing the last zeta subscriber = %v, want %v", got, want)
	}
	alice.c.Close()
	eventually(t, 3*time.Second, func() string {
		got := apiConnections(t, s)
		if _, ok := got[alice.ID]; ok || len(got) != 2 {
			return fmt.Sprintf("connections after alice closed: %+v", got)
		}
		if ch := apiChannels(t, s); !reflect.DeepEqual(ch, map[string]int{"alpha": 1}) {
			return fmt.Sprintf("channels after alice closed: %v", ch)
		}
		return ""
	})
	// HEAD works where GET does.
	if status, _, _ := apiCall(t, s, "HEAD", "/api/channels", ibAPIKey, ""); status != http.StatusOK {
		t.Errorf("HEAD /api/channels: status %d, want 200", status)
	}
}

func TestAPIDisconnect(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	victim := ibDialJSON(t, s, "")
	victimBin := ibDialBin(t, s, "")
	bystander := ibDialJSON(t, s, "")
	victim.sub(1, "news")
	bystander.sub(1, "news")

	var resp map[string]any
	apiOK(t, s, "POST", "/api/disconnect", fmt.Sprintf(`{"conn":%q}`, victim.ID), &resp)
	seen := victim.expectCloseCode(4100, defaultTimeout)
	if len(seen) != 0 {
		t.Errorf("victim got %s before the close", describeIBs(seen))
	}
	apiOK(t, s, "POST", "/api/disconnect", fmt.Sprintf(`{"conn":%q}`, victimBin.ID), nil)
	victimBin.expectCloseCode(4100, defaultTimeout)

	eventually(t, 3*time.Second, func() string {
		got := apiConnections(t, s)
		if len(got) != 1 || got[bystander.ID].ID == "" {
			return fmt.Sprintf("connections after the disconnects: %+v, want only %s", got, bystander.ID)
		}
		return ""
	})
	// Once gone, the id is unknown.
	apiFails(t, s, "POST", "/api/disconnect", ibAPIKey, fmt.Sprintf(`{"conn":%q}`, victim.ID), http.StatusNotFound)
	apiFails(t, s, "POST", "/api/disconnect", ibAPIKey, `{"conn":"no-such-conn"}`, http.StatusNotFound)
	for _, body := range []string{``, `{}`, `{"conn":""}`, `garbage`, `{"conn":5}`} {
		apiFails(t, s, "POST", "/api/disconnect", ibAPIKey, body, http.StatusBadRequest)
	}
	// The bystander is untouched and still gets messages.
	apiOK(t, s, "POST", "/api/publish", `{"channel":"news","data":"still here"}`, nil)
	bystander.expectMsg("news", "api", `"still here"`)
	bystander.pingPong()
}

// clientFrom is an HTTP client whose connections come from the loopback
// address ip, a new connection per request (with worker processes, each
// lands on any worker).
func clientFrom(ip net.IP) *http.Client {
	return &http.Client{Timeout: defaultTimeout, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}).DialContext}}
}
