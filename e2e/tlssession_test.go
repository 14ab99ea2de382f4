package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tlsNames is what a session records of a connection: its scheme and, for
// wss, its TLS version and cipher suite as crypto/tls names them.
func tlsNames(c *wsClient) [3]string {
	tc, ok := c.c.UnderlyingConn().(*tls.Conn)
	if !ok {
		return [3]string{"ws", "", ""}
	}
	st := tc.ConnectionState()
	return [3]string{"wss", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite)}
}

// TestTLSSessionRecorded runs the real binary with --tls-addr, in one
// process and with two workers: the sessions of wss:// connections (TLS
// 1.3 and TLS 1.2) record scheme wss, their TLS version and cipher suite,
// those of ws:// connections scheme ws, in GET /api/sessions, in `zenconn
// sessions` and in the audit's connect records; https:// requests and
// wss:// handshakes are in the access log in the combined format.
func TestTLSSessionRecorded(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			t.Parallel()
			s, tlsAddr, client := startTLSAddr(t, workers, "--api-key", ibAPIKey)
			tls12 := client.Clone()
			tls12.MaxVersion = tls.VersionTLS12
			want := map[string][3]string{}
			for _, c := range []*wsClient{
				wsDial(t, "wss://"+tlsAddr+"/ws", client),
				wsDial(t, "wss://"+tlsAddr+"/ws", tls12),
				wsDial(t, "ws://"+s.Addr+"/ws", nil),
			} {
				want[c.Welcome.Conn] = tlsNames(c)
			}
			if len(want) != 3 {
				t.Fatalf("connections %v", want)
			}
			checkSessionsTLS(t, s, want)
			checkHTTPSLogged(t, s, tlsAddr, client)
		})
	}
}

// sessionTLS is the TLS part of a session or of a connect record.
type sessionTLS struct {
	Conn       string `json:"conn"`
	Scheme     string `json:"scheme"`
	TLSVersion string `json:"tls_version"`
	TLSCipher  string `json:"tls_cipher"`
}

func (se sessionTLS) names() [3]string { return [3]string{se.Scheme, se.TLSVersion, se.TLSCipher} }

// checkSessionsTLS checks the scheme, TLS version and cipher of the
// sessions of want (conn id → names) in the server API, the CLI and the
// connect records.
func checkSessionsTLS(t *testing.T, s *serverProc, want map[string][3]string) {
	t.Helper()
	got := map[string][3]string{}
	eventually(t, 10*time.Second, func() string {
		var page struct {
			Sessions []sessionTLS `json:"sessions"`
		}
		apiOK(t, s, "GET", "/api/sessions?active=true", "", &page)
		for _, se := range page.Sessions {
			got[se.Conn] = se.names()
		}
		return sameNames("GET /api/sessions", got, want)
	})
	out, code := runCLI(t, 20*time.Second, nil, "sessions", "--url", "http://"+s.Addr, "--api-key", ibAPIKey, "--active", "true")
	if code != 0 {
		t.Fatalf("zenconn sessions: exit %d\n%s", code, out)
	}
	clear(got)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var se sessionTLS
		if err := json.Unmarshal([]byte(line), &se); err != nil {
			t.Fatalf("zenconn sessions: line %q: %v", line, err)
		}
		got[se.Conn] = se.names()
	}
	if msg := sameNames("zenconn sessions", got, want); msg != "" {
		t.Fatal(msg)
	}
	var recs struct {
		Records []sessionTLS `json:"records"`
	}
	apiOK(t, s, "GET", "/api/audit?op=connect", "", &recs)
	clear(got)
	for _, r := range recs.Records {
		got[r.Conn] = r.names()
	}
	if msg := sameNames("connect records", got, want); msg != "" {
		t.Fatal(msg)
	}
}

func sameNames(what string, got, want map[string][3]string) string {
	for conn, w := range want {
		if w[0] == "wss" && (w[1] == "" || w[2] == "") {
			return fmt.Sprintf("%s: the client's names %q are empty", what, w)
		}
		if got[conn] != w {
			return fmt.Sprintf("%s: connection %s recorded %q, want %q (all: %v)", what, conn, got[conn], w, got)
		}
	}
	return ""
}

// checkHTTPSLogged requires https:// requests and wss:// handshakes in the
// access log, in the combined format, like plain ones.
func checkHTTPSLogged(t *testing.T, s *serverProc, tlsAddr string, client *tls.Config) {
	t.Helper()
	hc := s.HTTP.Transport.(*http.Transport).Clone()
	hc.TLSClientConfig = client
	c := &http.Client{Transport: hc, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "https://"+tlsAddr+"/?over=tls", nil)
	req.Header.Set("User-Agent", "tls-log-test/1")
	req.Header.Set("Referer", "https://example.test/")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.TLS == nil || resp.StatusCode != 200 {
		t.Fatalf("GET https://%s/: status %d, TLS %v", tlsAddr, resp.StatusCode, resp.TLS != nil)
	}
	l := waitLogLine(t, s.AccessLog, "GET /?over=tls HTTP/1.1", 10*time.Second)
	if l.status != "200" || l.bytes != fmt.Sprint(len(fixtureIndex)) || l.agent != "tls-log-test/1" ||
		l.referer != "https://example.test/" || l.host != "127.0.0.1" {
		t.Fatalf("access log line %q", l.raw)
	}
	if l := waitLogLine(t, s.AccessLog, "GET /ws HTTP/1.1", 10*time.Second); l.status != "101" {
		t.Fatalf("WebSocket handshake line %q", l.raw)
	}
}
