package e2e

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

var tlsAddrRE = regexp.MustCompile(`msg="?listening"?.*\btls_addr="?(127\.0\.0\.1:\d+)"?`)

// startTLSAddr starts the real binary with --addr plain and --tls-addr
// serving TLS, with extra flags; it returns the server (its Addr and HTTP
// client plain), the TLS address and the client configuration that
// verifies it.
func startTLSAddr(t *testing.T, workers string, extra ...string) (*serverProc, string, *tls.Config) {
	t.Helper()
	root := t.TempDir()
	flags, client := tlsFiles(t, root)
	args := append(append(flags, "--tls-addr", "127.0.0.1:0", "--workers", workers), extra...)
	s := startServerWith(t, root, nil, nil, nil, args...)
	m := tlsAddrRE.FindStringSubmatch(s.Stderr.String())
	if m == nil {
		t.Fatalf("no tls_addr in the listening line:\n%s", s.Logs())
	}
	return s, m[1], client
}

// wsDial dials url's /ws with the TLS configuration cfg (nil for ws://) and
// reads the welcome.
func wsDial(t *testing.T, url string, cfg *tls.Config) *wsClient {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout, TLSClientConfig: cfg}
	c, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	wc := &wsClient{t: t, c: c}
	t.Cleanup(func() { c.Close() })
	if wc.Welcome, err = wc.readE(defaultTimeout); err != nil || wc.Welcome.Op != "welcome" {
		t.Fatalf("welcome on %s: %v %v", url, wc.Welcome, err)
	}
	return wc
}

// TestTLSSecondAddress runs the real binary with --tls-addr, in one
// process and with two workers: --addr serves plain http:// and ws://, the
// TLS address https:// and wss://, and a message published on one reaches
// subscribers of both.
func TestTLSSecondAddress(t *testing.T) {
	for _, workers := range []string{"0", "2"} {
		t.Run("workers="+workers, func(t *testing.T) {
			t.Parallel()
			s, tlsAddr, client := startTLSAddr(t, workers)
			resp, body := s.get(t, "GET", "/")
			if resp.StatusCode != 200 || string(body) != fixtureIndex || resp.TLS != nil {
				t.Fatalf("plain GET /: %d, TLS %v", resp.StatusCode, resp.TLS)
			}
			hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: client}}
			r, err := hc.Get("https://" + tlsAddr + "/big.txt")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 200 || !bytes.Equal(b, fixtureBig) || r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
				t.Fatalf("https GET /big.txt: %d, %d bytes", r.StatusCode, len(b))
			}
			var subs []*wsClient
			for i := 0; i < 4; i++ {
				subs = append(subs, wsDial(t, "ws://"+s.Addr+"/ws", nil), wsDial(t, "wss://"+tlsAddr+"/ws", client))
			}
			for _, c := range subs {
				c.subscribe(1, "both")
			}
			for i, pub := range []*wsClient{wsDial(t, "wss://"+tlsAddr+"/ws", client), wsDial(t, "ws://"+s.Addr+"/ws", nil)} {
				data := fmt.Sprintf("message %d", i)
				pub.request(10+i, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"both","data":%q}`, 10+i, data))
				deadline := time.Now().Add(defaultTimeout)
				for _, c := range subs {
					if m := c.expectMessage(t, deadline); !strings.Contains(string(m.raw), data) {
						t.Fatalf("got %s, want %q", m.raw, data)
					}
				}
			}
			checkPlainToTLS(t, &serverProc{t: t, Addr: tlsAddr})
		})
	}
}

// TestTLSRedirect: with --tls-redirect, plain requests on --addr get 308 to
// https:// at the TLS port (a client that follows it gets the file over
// verified TLS), a plain WebSocket handshake gets 308 too, /healthz is
// answered plain. With --hsts the responses over TLS carry
// Strict-Transport-Security, the plain ones do not.
func TestTLSRedirect(t *testing.T) {
	t.Parallel()
	s, tlsAddr, client := startTLSAddr(t, "2", "--tls-redirect", "--hsts", "8760h")
	_, port, _ := strings.Cut(tlsAddr, ":")
	noFollow := &http.Client{Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get("http://" + s.Addr + "/logo.png?v=2")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := "https://127.0.0.1:" + port + "/logo.png?v=2"; resp.StatusCode != 308 || resp.Header.Get("Location") != want {
		t.Fatalf("plain GET: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if h := resp.Header.Get("Strict-Transport-Security"); h != "" {
		t.Fatalf("plain 308 with Strict-Transport-Security %q", h)
	}
	follow := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: client}}
	resp, err = follow.Get("http://" + s.Addr + "/logo.png")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(b, fixturePNG) || resp.TLS == nil {
		t.Fatalf("followed redirect: %d, %d bytes, TLS %v", resp.StatusCode, len(b), resp.TLS != nil)
	}
	if h := resp.Header.Get("Strict-Transport-Security"); h != "max-age=31536000" {
		t.Fatalf("https response: Strict-Transport-Security %q, want max-age=31536000", h)
	}
	d := websocket.Dialer{HandshakeTimeout: defaultTimeout}
	if c, r, err := d.Dial("ws://"+s.Addr+"/ws", nil); err == nil {
		c.Close()
		t.Fatal("plain WebSocket accepted with --tls-redirect")
	} else if r == nil || r.StatusCode != 308 {
		t.Fatalf("plain WebSocket: %v %v, want 308", r, err)
	}
	if r, body := s.get(t, "GET", "/healthz"); r.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("plain /healthz: %d %q", r.StatusCode, body)
	}
	wsDial(t, "wss://"+tlsAddr+"/ws", client).pingPong()
}

// TestTLSAddrFlagsChecked: --tls-addr and --tls-redirect without what they
// need stop the start, naming the flag.
func TestTLSAddrFlagsChecked(t *testing.T) {
	t.Parallel()
	flags, _ := tlsFiles(t, t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-addr", "127.0.0.1:0"}, "--tls-addr: needs --tls-cert"},
		{append(flags, "--tls-redirect"), "--tls-redirect: needs --tls-addr"},
		{[]string{"--hsts", "1h"}, "--hsts: needs --tls-cert"},
		{append(flags, "--hsts", "-1s"), "--hsts: must not be negative"},
		{append(flags, "--tls-addr", "127.0.0.1"), "--tls-addr"},
		{append(flags, "--addr", "127.0.0.1:18443", "--tls-addr", "127.0.0.1:18443"), "--tls-addr: port 18443 is --addr's"},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data", t.TempDir(), "--public", "off"}, tc.args...)
		out, code := runCLI(t, 20*time.Second, nil, args...)
		if code != 2 || !strings.Contains(out, tc.want) {
			t.Fatalf("%v: exit %d, output %q; want 2 and %q", tc.args, code, out, tc.want)
		}
	}
}
