package e2e

// Headless Chromium over TLS: a page served over https:// by the node opens
// a wss:// WebSocket and exchanges messages, with Chromium verifying the
// node's certificate against the test CA.
//
// How Chromium trusts the test CA: Chromium on Linux takes trust anchors
// from the user's NSS database, $HOME/.pki/nssdb. The test makes one in a
// folder of its own with certutil (Debian's libnss3-tools, installed by
// scripts/ensure-tls-tools.sh), adds the CA with trust "C,," (a CA for
// server certificates) and starts Chromium with HOME set to that folder.
// Chromium then verifies the chain and the host name as it would for any
// site: no --ignore-certificate-errors flag, and no certificate pinned by
// its SPKI hash. A second server, whose certificate comes from a CA
// Chromium does not know, shows that it does verify.

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

const certutilPath = "/usr/bin/certutil"

// nssHome makes a home folder whose NSS database trusts the CA in caFile
// for server certificates, and returns it.
func nssHome(t *testing.T, caFile string) string {
	t.Helper()
	if _, err := os.Stat(certutilPath); err != nil {
		t.Fatalf("certutil is not installed (run `bash scripts/ensure-tls-tools.sh`, which `make test` does): %v", err)
	}
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + db, "--empty-password"},
		{"-A", "-d", "sql:" + db, "-n", "ZenConn e2e test CA", "-t", "C,,", "-i", caFile},
		{"-L", "-d", "sql:" + db},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, certutilPath, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("certutil %q: %v\n%s", args, err, out)
		}
		if args[0] == "-L" && !strings.Contains(string(out), "ZenConn e2e test CA") {
			t.Fatalf("certutil -L does not list the test CA:\n%s", out)
		}
	}
	return home
}

// TestTLSBrowser opens https://localhost:PORT/wsclient.html in Chromium,
// which trusts the test CA through its NSS database; the page opens
// wss://localhost:PORT/ws, subscribes, gets a Go client's message and
// publishes one back.
func TestTLSBrowser(t *testing.T) {
	start := time.Now()
	s, pki := startTLSNode(t)
	if err := os.WriteFile(filepath.Join(s.Public, "wsclient.html"), []byte(wsClientPage), 0o644); err != nil {
		t.Fatal(err)
	}
	// A server whose certificate Chromium must refuse: httptest's own,
	// from a CA that is not in the NSS database.
	untrusted := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<title>should not load</title>"))
	}))
	untrusted.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	untrusted.StartTLS()
	t.Cleanup(untrusted.Close)

	ctx := newBrowser(t, chromedp.Env("HOME="+nssHome(t, pki.CAFile)))
	pageErrs := watchPageErrors(t, ctx)
	err := chromedp.Do(ctx, chromedp.Navigate(untrusted.URL+"/"))
	if err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
		t.Fatalf("navigating to %s (a certificate from an unknown CA): %v, want net::ERR_CERT_AUTHORITY_INVALID", untrusted.URL, err)
	}

	origin := "https://localhost:" + s.port(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(origin+"/wsclient.html")); err != nil {
		t.Fatalf("navigating to %s/wsclient.html: %v", origin, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`typeof window.zc === "object"`,
		chromedp.WithPollingTimeout(browserPoll))); err != nil {
		t.Fatalf("test page script did not load: %v", err)
	}
	type pageState struct {
		Protocol string `json:"protocol"`
		Secure   bool   `json:"secure"`
	}
	if st := evalJS[pageState](t, ctx, `({protocol: location.protocol, secure: window.isSecureContext})`); st.Protocol != "https:" || !st.Secure {
		t.Fatalf("page location.protocol %q, isSecureContext %v; want https: and a secure context", st.Protocol, st.Secure)
	}
	checkBrowserWSS(t, ctx, s, "wss://localhost:"+s.port(t)+"/ws")
	pageErrs.check(t, "wsclient")
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// checkBrowserWSS opens url from the page and exchanges messages with a
// Go wss:// client, both ways.
func checkBrowserWSS(t *testing.T, ctx context.Context, s *serverProc, url string) {
	t.Helper()
	next := func() message {
		t.Helper()
		m := evalJS[jsMessage](t, ctx, "zc.next("+jsArgs(t, "tls", browserPoll.Milliseconds())+")")
		if m.Type != "text" {
			t.Fatalf("page got %s, want a text frame", m)
		}
		return mustParse(t, []byte(m.Text))
	}
	evalJS[jsOpened](t, ctx, "zc.open("+jsArgs(t, "tls", url, []string{})+")")
	welcome := next()
	if welcome.Op != "welcome" || welcome.Conn == "" {
		t.Fatalf("first message on %s: %s, want a welcome", url, welcome)
	}
	evalJS[bool](t, ctx, "zc.sendText("+jsArgs(t, "tls", `{"id":1,"op":"subscribe","channel":"tls-browser"}`)+")")
	if ack := next(); ack.Op != "ack" || !ack.hasID(1) {
		t.Fatalf("subscribe from the page answered %s, want ack id 1", ack)
	}

	goClient := s.dialWS(t)
	goClient.subscribe(1, "tls-browser")
	goClient.request(2, `{"id":2,"op":"publish","channel":"tls-browser","data":{"text":"to the browser over wss"}}`)
	if m := next(); m.Op != "message" || m.Channel != "tls-browser" || m.From != goClient.Welcome.Conn ||
		!jsonEqual(m.Data, []byte(`{"text":"to the browser over wss"}`)) {
		t.Fatalf("page got %s, want the Go client's message", m)
	}
	evalJS[bool](t, ctx, "zc.sendText("+jsArgs(t, "tls", `{"id":2,"op":"publish","channel":"tls-browser","data":"from the browser over wss"}`)+")")
	if ack := next(); ack.Op != "ack" || !ack.hasID(2) {
		t.Fatalf("publish from the page answered %s, want ack id 2", ack)
	}
	m := goClient.expectMessage(t, time.Now().Add(defaultTimeout))
	if m.From != welcome.Conn || !jsonEqual(m.Data, []byte(`"from the browser over wss"`)) {
		t.Fatalf("Go client got %s, want the page's message from %s", m, welcome.Conn)
	}
	if closed := evalJS[jsClosed](t, ctx, "zc.close("+jsArgs(t, "tls", 1000)+")"); closed.Code != 1000 || !closed.WasClean {
		t.Fatalf("closing the page's socket: %+v, want a clean 1000", closed)
	}
}
