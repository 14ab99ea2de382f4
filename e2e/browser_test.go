package e2e

// Browser end-to-end tests: headless Chromium (github.com/chromedp/chromedp)
// against the built binary. They check what only a real browser shows: the demo
// page (public/index.html) working between two tabs, and the browser's own
// WebSocket client choosing the wire encoding through subprotocols and ?proto=.
//
// Chromium must be at /usr/bin/chromium; `make test` installs it first with
// scripts/ensure-chromium.sh.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const (
	chromiumPath = "/usr/bin/chromium"
	// browserTimeout bounds everything a browser test does after Chromium has started.
	browserTimeout = 20 * time.Second
	// browserPoll bounds one wait for the page to reach a state.
	browserPoll = 5 * time.Second
)

// newBrowser starts headless Chromium for the test and returns the context of its
// first tab, bounded by browserTimeout, with extra options after the suite's. The
// tab, the browser and its profile folder are gone when the test ends; Chromium's
// own output is logged if the test failed.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("browser tests need Chromium at %s (run `bash scripts/ensure-chromium.sh`, which `make test` does): %v", chromiumPath, err)
	}
	out := newSyncBuffer()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // we run as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.CombinedOutput(out),
	)
	opts = append(opts, extra...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc() // waits for the browser process to exit
		if t.Failed() {
			t.Logf("--- chromium output (dbus noise left out) ---\n%s", chromiumOutput(out.String()))
		}
	})
	// Start the browser with a context that has no deadline (the first Run binds the
	// browser's life to it), then bound the test's actions.
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v\n%s", err, out.String())
	}
	t.Logf("chromium started in %v", time.Since(start).Round(time.Millisecond))
	return withDeadline(t, ctx)
}

// chromiumOutput is Chromium's output for a failure message, without the lines about
// the missing D-Bus (harmless here) and cut to its last 8 KiB.
func chromiumOutput(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(line, ":ERROR:dbus/") {
			b.WriteString(line)
		}
	}
	out := b.String()
	if len(out) > 8<<10 {
		out = "…" + out[len(out)-8<<10:]
	}
	return out
}

// newTab opens another tab in the browser of ctx (a context from newBrowser).
func newTab(t *testing.T, ctx context.Context) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return withDeadline(t, tab)
}

func withDeadline(t *testing.T, ctx context.Context) context.Context {
	ctx, cancel := context.WithTimeout(ctx, browserTimeout)
	t.Cleanup(cancel)
	return ctx
}

// pageErrors records uncaught exceptions and console.error calls of a tab, so a
// test can require that the page ran cleanly.
type pageErrors struct {
	mu   sync.Mutex
	errs []string
}

func watchPageErrors(t *testing.T, ctx context.Context) *pageErrors {
	t.Helper()
	pe := &pageErrors{}
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			msg = "uncaught exception: " + d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError {
				return
			}
			var parts []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			msg = "console.error: " + strings.Join(parts, " ")
		default:
			return
		}
		pe.mu.Lock()
		pe.errs = append(pe.errs, msg)
		pe.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("listening to the page: %v", err)
	}
	return pe
}

func (pe *pageErrors) check(t *testing.T, tab string) {
	t.Helper()
	pe.mu.Lock()
	defer pe.mu.Unlock()
	for _, e := range pe.errs {
		t.Errorf("tab %s: %s", tab, e)
	}
}

// moduleRoot is the folder of go.mod, found as main_test.go's buildServer does.
func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatal("go env GOMOD: not inside a module")
	}
	return filepath.Dir(gomod)
}

// evalJS evaluates expr in the tab, awaiting the promise it returns, and decodes
// the result into T.
func evalJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// jsArgs renders Go values as a JavaScript argument list.
func jsArgs(t *testing.T, args ...any) string {
	t.Helper()
	parts := make([]string, len(args))
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		parts[i] = string(b)
	}
	return strings.Join(parts, ", ")
}

// ---------------------------------------------------------------------------
// The demo page.

// demoState is what the demo page shows.
type demoState struct {
	Status string `json:"status"`
	Conn   string `json:"conn"`
	Log    string `json:"log"`
}

const demoStateJS = `({status: document.getElementById("status").textContent,
	conn: document.getElementById("conn").textContent,
	log: document.getElementById("log").textContent})`

var demoConnRE = regexp.MustCompile(`^as (\S+) on node (\S+)$`)

// demoReceived returns the server messages ("← " lines) of the page's log.
func demoReceived(t *testing.T, log string) []message {
	t.Helper()
	var ms []message
	for _, line := range strings.Split(log, "\n") {
		if p, ok := strings.CutPrefix(line, "← "); ok {
			ms = append(ms, mustParse(t, []byte(p)))
		}
	}
	return ms
}

// demoWaitReady waits until the page shows the socket open, the welcome, and the ack
// of the subscribe the page sends after it; it returns the connection id.
func demoWaitReady(t *testing.T, ctx context.Context, tab string) string {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => {
		const st = `+demoStateJS+`;
		return st.status === "open" && st.conn !== "" &&
			st.log.split("\n").some((l) => l.startsWith("← ") && JSON.parse(l.slice(2)).op === "ack");
	})()`, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(browserPoll)))
	st := evalJS[demoState](t, ctx, demoStateJS)
	if err != nil {
		t.Fatalf("tab %s: page never showed the socket open, the welcome and the subscribe ack: %v\nstatus %q conn %q log:\n%s",
			tab, err, st.Status, st.Conn, st.Log)
	}
	m := demoConnRE.FindStringSubmatch(st.Conn)
	if m == nil {
		t.Fatalf("tab %s: #conn is %q, want \"as <conn> on node <node>\"", tab, st.Conn)
	}
	var welcome, ack *message
	for _, msg := range demoReceived(t, st.Log) {
		switch {
		case msg.Op == "welcome" && welcome == nil:
			welcome = &msg
		case msg.Op == "ack" && ack == nil:
			ack = &msg
		}
	}
	switch {
	case welcome == nil:
		t.Fatalf("tab %s: no welcome in the log:\n%s", tab, st.Log)
	case welcome.Conn != m[1] || welcome.Node != m[2] || welcome.Proto != "json":
		t.Errorf("tab %s: welcome %s does not match #conn %q (or proto is not json)", tab, welcome, st.Conn)
	case ack == nil || !ack.hasID(1):
		t.Errorf("tab %s: first ack %s, want id 1 (the page's subscribe)", tab, ack)
	}
	return m[1]
}

// demoPublish types text into the page's message field and clicks Publish, as a user
// would (the form's submit handler sends the publish).
func demoPublish(t *testing.T, ctx context.Context, text string) {
	t.Helper()
	err := chromedp.Do(ctx,
		chromedp.Clear(chromedp.ID("text")),
		chromedp.SendKeys(chromedp.ID("text"), text),
		chromedp.Click(chromedp.CSS("#pub button")),
	)
	if err != nil {
		t.Fatalf("publishing %q from the page: %v", text, err)
	}
}

// demoWaitMessage waits until the page's log shows a received message whose data.text
// is text, and returns it.
func demoWaitMessage(t *testing.T, ctx context.Context, tab, text string) message {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => {
		const want = `+jsArgs(t, text)+`;
		return document.getElementById("log").textContent.split("\n").some((l) => {
			if (!l.startsWith("← ")) return false;
			const m = JSON.parse(l.slice(2));
			return m.op === "message" && m.data && m.data.text === want;
		});
	})()`, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(browserPoll)))
	st := evalJS[demoState](t, ctx, demoStateJS)
	if err != nil {
		t.Fatalf("tab %s: message %q never showed in #log: %v\nlog:\n%s", tab, text, err, st.Log)
	}
	for _, m := range demoReceived(t, st.Log) {
		var d struct {
			Text string `json:"text"`
		}
		if m.Op == "message" && json.Unmarshal(m.Data, &d) == nil && d.Text == text {
			return m
		}
	}
	t.Fatalf("tab %s: the poll saw message %q but the log has none:\n%s", tab, text, st.Log)
	return message{}
}

// TestBrowserDemoPage opens the real demo page (public/index.html) in two tabs,
// publishes from each and checks the other tab shows the message, from the
// publisher's connection id.
func TestBrowserDemoPage(t *testing.T) {
	start := time.Now()
	s := startServer(t)
	page, err := os.ReadFile(filepath.Join(moduleRoot(t), "public", "index.html"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Public, "index.html"), page, 0o644); err != nil {
		t.Fatal(err)
	}

	tabA := newBrowser(t)
	tabB := newTab(t, tabA)
	errsA := watchPageErrors(t, tabA)
	errsB := watchPageErrors(t, tabB)
	for _, ctx := range []context.Context{tabA, tabB} {
		if err := chromedp.Do(ctx, chromedp.Navigate(s.URL("/"))); err != nil {
			t.Fatalf("navigating to %s: %v", s.URL("/"), err)
		}
	}
	if title, err := chromedp.Run(tabA, chromedp.Title()); err != nil || title != "ZenConn" {
		t.Fatalf("page title %q (%v), want ZenConn: is this the demo page?", title, err)
	}
	connA := demoWaitReady(t, tabA, "A")
	connB := demoWaitReady(t, tabB, "B")
	if connA == connB {
		t.Fatalf("both tabs got connection id %q", connA)
	}

	// A → B, then B → A: each tab is subscribed to "lobby" (the page's default).
	textA := fmt.Sprintf("hello from A %d ✓", time.Now().UnixNano())
	demoPublish(t, tabA, textA)
	got := demoWaitMessage(t, tabB, "B", textA)
	if got.From != connA || got.Channel != "lobby" {
		t.Errorf("tab B got %s, want channel lobby from %s (tab A)", got, connA)
	}

	textB := fmt.Sprintf("and back from B %d", time.Now().UnixNano())
	demoPublish(t, tabB, textB)
	got = demoWaitMessage(t, tabA, "A", textB)
	if got.From != connB || got.Channel != "lobby" {
		t.Errorf("tab A got %s, want channel lobby from %s (tab B)", got, connB)
	}

	// A publisher does not receive its own message: by now each tab has the other's
	// message, which the server queued after the tab's own.
	for tab, ctx := range map[string]context.Context{"A": tabA, "B": tabB} {
		own := map[string]string{"A": textA, "B": textB}[tab]
		st := evalJS[demoState](t, ctx, demoStateJS)
		if st.Status != "open" {
			t.Errorf("tab %s: status %q, want open", tab, st.Status)
		}
		for _, m := range demoReceived(t, st.Log) {
			if m.Op == "message" && strings.Contains(string(m.Data), own) {
				t.Errorf("tab %s received its own message: %s", tab, m)
			}
			if m.Op == "error" {
				t.Errorf("tab %s got an error: %s", tab, m)
			}
		}
	}

	shot, err := chromedp.Run(tabB, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if len(shot) == 0 || !bytes.HasPrefix(shot, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(shot))
	}
	shotPath := filepath.Join(t.TempDir(), "demo-tab-b.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(shotPath); err != nil || fi.Size() == 0 {
		t.Fatalf("screenshot file %s: %v", shotPath, err)
	}
	t.Logf("screenshot of tab B (%d bytes): %s", len(shot), shotPath)

	errsA.check(t, "A")
	errsB.check(t, "B")
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// ---------------------------------------------------------------------------
// The browser's WebSocket client and the wire encodings.

// wsClientPage is a test page whose script keeps named WebSockets and their
// received messages, for the Go side to drive with chromedp.Evaluate. Binary
// messages travel to Go as hex.
const wsClientPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>ZenConn browser client</title></head>
<body><p>browser WebSocket client for the e2e tests</p>
<script>
"use strict";
const socks = {};
const toHex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
const fromHex = (h) => new Uint8Array((h.match(/../g) || []).map((x) => parseInt(x, 16)));
const wrap = (d) => typeof d === "string" ? {type: "text", text: d, hex: ""}
	: d instanceof ArrayBuffer ? {type: "binary", text: "", hex: toHex(d)}
	: {type: "other " + Object.prototype.toString.call(d), text: "", hex: ""};
const closedErr = (s) => new Error("socket closed: " + JSON.stringify(s.closed));
window.zc = {
	// open resolves once the socket is open, with what the browser negotiated.
	open(name, url, protocols) {
		return new Promise((resolve, reject) => {
			const ws = new WebSocket(url, protocols);
			ws.binaryType = "arraybuffer";
			const s = {ws, queue: [], waiters: [], closed: null, opened: false};
			socks[name] = s;
			ws.onopen = () => {
				s.opened = true;
				resolve({protocol: ws.protocol, extensions: ws.extensions, binaryType: ws.binaryType});
			};
			ws.onmessage = (e) => {
				const m = wrap(e.data);
				const w = s.waiters.shift();
				if (w) w.resolve(m); else s.queue.push(m);
			};
			ws.onclose = (e) => {
				s.closed = {code: e.code, reason: e.reason, wasClean: e.wasClean};
				if (!s.opened) reject(closedErr(s));
				for (const w of s.waiters.splice(0)) w.reject(closedErr(s));
			};
		});
	},
	// next resolves with the next message received (or already queued).
	next(name, ms) {
		const s = socks[name];
		if (s.queue.length) return Promise.resolve(s.queue.shift());
		if (s.closed) return Promise.reject(closedErr(s));
		return new Promise((resolve, reject) => {
			const w = {resolve: (m) => { clearTimeout(timer); resolve(m); },
				reject: (e) => { clearTimeout(timer); reject(e); }};
			const timer = setTimeout(() => {
				s.waiters.splice(s.waiters.indexOf(w), 1);
				reject(new Error("no message within " + ms + " ms"));
			}, ms);
			s.waiters.push(w);
		});
	},
	sendHex(name, h) { socks[name].ws.send(fromHex(h)); return true; },
	sendText(name, text) { socks[name].ws.send(text); return true; },
	// close closes the socket and resolves with the close event.
	close(name, code) {
		const s = socks[name];
		return new Promise((resolve) => {
			if (s.closed) { resolve(s.closed); return; }
			s.ws.addEventListener("close", () => resolve(s.closed));
			s.ws.close(code);
		});
	},
};
</script></body></html>
`

type jsOpened struct {
	Protocol   string `json:"protocol"`
	Extensions string `json:"extensions"`
	BinaryType string `json:"binaryType"`
}

type jsMessage struct {
	Type string `json:"type"`
	Text string `json:"text"`
	Hex  string `json:"hex"`
}

func (m jsMessage) String() string {
	if m.Type == "binary" {
		return "binary[" + m.Hex + "]"
	}
	return fmt.Sprintf("%s %q", m.Type, m.Text)
}

func (m jsMessage) bytes(t *testing.T) []byte {
	t.Helper()
	b, err := hex.DecodeString(m.Hex)
	if err != nil {
		t.Fatalf("bad hex from the page %q: %v", m.Hex, err)
	}
	return b
}

type jsClosed struct {
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	WasClean bool   `json:"wasClean"`
}

// TestBrowserBinarySubprotocol drives Chromium's own WebSocket client: the wire
// encoding chosen by subprotocol or ?proto=, the echoed ws.protocol, the frame type
// of each message (binaryType "arraybuffer"), a subscribe and the message a JSON
// publisher sends, and the close handshake.
func TestBrowserBinarySubprotocol(t *testing.T) {
	start := time.Now()
	s := startServer(t)
	if err := os.WriteFile(filepath.Join(s.Public, "wsclient.html"), []byte(wsClientPage), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := newBrowser(t)
	pageErrs := watchPageErrors(t, ctx)
	if err := chromedp.Do(ctx, chromedp.Navigate(s.URL("/wsclient.html"))); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`typeof window.zc === "object"`,
		chromedp.WithPollingTimeout(browserPoll))); err != nil {
		t.Fatalf("test page script did not load: %v", err)
	}

	pub := s.dialWS(t) // a JSON publisher (gorilla/websocket)
	pubID := 0

	cases := []struct {
		name      string
		query     string   // appended to /ws
		protocols []string // offered by the browser
		bin       bool     // binary encoding expected
		protocol  string   // ws.protocol expected ("" = none echoed)
	}{
		{"subprotocol zenconn.v1.bin", "", []string{"zenconn.v1.bin"}, true, "zenconn.v1.bin"},
		{"?proto=bin without subprotocol", "?proto=bin", []string{}, true, ""},
		{"subprotocol zenconn.v1.json", "", []string{"zenconn.v1.json"}, false, "zenconn.v1.json"},
		{"subprotocol zenconn.v1.json beats ?proto=bin", "?proto=bin", []string{"zenconn.v1.json"}, false, "zenconn.v1.json"},
		{"other subprotocol offered first", "", []string{"chat.example", "zenconn.v1.bin"}, true, "zenconn.v1.bin"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("ws%d", i)
			channel := "news"
			url := "ws://" + s.Addr + "/ws" + tc.query
			next := func() jsMessage {
				t.Helper()
				return evalJS[jsMessage](t, ctx, "zc.next("+jsArgs(t, name, browserPoll.Milliseconds())+")")
			}

			opened := evalJS[jsOpened](t, ctx, "zc.open("+jsArgs(t, name, url, tc.protocols)+")")
			if opened.Protocol != tc.protocol {
				t.Errorf("ws.protocol = %q, want %q", opened.Protocol, tc.protocol)
			}
			if opened.Extensions != "" {
				t.Errorf("ws.extensions = %q, want none negotiated", opened.Extensions)
			}

			// The welcome is the first message, in the connection's encoding.
			var conn string
			w := next()
			if tc.bin {
				b := w.bytes(t)
				if w.Type != "binary" || len(b) == 0 || b[0] != 0x11 {
					t.Fatalf("first message %s, want a binary welcome (0x11 …)", w)
				}
				m, err := ibDecode(b)
				if err != nil || m.Proto != "bin" || m.Conn == "" || m.Node == "" {
					t.Fatalf("welcome %s: %+v %v, want conn, node and proto bin", w, m, err)
				}
				conn = m.Conn
			} else {
				if w.Type != "text" {
					t.Fatalf("first message %s, want a text frame", w)
				}
				m := mustParse(t, []byte(w.Text))
				if m.Op != "welcome" || m.Proto != "json" || m.Conn == "" {
					t.Fatalf("first message %s, want a JSON welcome with proto json", w)
				}
				conn = m.Conn
			}

			// Subscribe from the browser and get the ack.
			if tc.bin {
				sub := ibBinSub(1, channel)
				if want := "8101046e657773"; hex.EncodeToString(sub) != want {
					t.Fatalf("binary subscribe is %x, want %s (PROTOCOL.md)", sub, want)
				}
				evalJS[bool](t, ctx, "zc.sendHex("+jsArgs(t, name, hex.EncodeToString(sub))+")")
				if ack := next(); ack.Type != "binary" || ack.Hex != "9201" {
					t.Fatalf("reply to the subscribe %s, want binary ack 92 01", ack)
				}
			} else {
				evalJS[bool](t, ctx, "zc.sendText("+jsArgs(t, name, `{"id":1,"op":"subscribe","channel":"`+channel+`"}`)+")")
				ack := next()
				if ack.Type != "text" {
					t.Fatalf("reply to the subscribe %s, want a text frame", ack)
				}
				if m := mustParse(t, []byte(ack.Text)); m.Op != "ack" || !m.hasID(1) {
					t.Fatalf("reply to the subscribe %s, want ack id 1", ack)
				}
			}

			// A JSON client publishes; the browser gets the data bytes verbatim.
			data := fmt.Sprintf(`{"text": "héllo ☃ %d", "n": [1, 2.50, null], "esc": "a\"b\\u00e9"}`, i)
			pubID++
			pub.request(pubID, fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":%s}`, pubID, channel, data))
			got := next()
			if tc.bin {
				b := got.bytes(t)
				if got.Type != "binary" || len(b) == 0 || b[0] != 0x14 {
					t.Fatalf("published message arrived as %s, want a binary message (0x14 …)", got)
				}
				m, err := ibDecode(b)
				if err != nil {
					t.Fatalf("message %s: %v", got, err)
				}
				if m.Channel != channel || m.From != pub.Welcome.Conn || m.Opaque || m.ID != "" {
					t.Errorf("message %s: channel %q from %q opaque %v id %q, want channel %s from %s, JSON data, no id",
						got, m.Channel, m.From, m.Opaque, m.ID, channel, pub.Welcome.Conn)
				}
				if string(m.Data) != data {
					t.Errorf("data bytes %q, want the published JSON verbatim %q", m.Data, data)
				}
			} else {
				if got.Type != "text" {
					t.Fatalf("published message arrived as %s, want a text frame", got)
				}
				m := mustParse(t, []byte(got.Text))
				if m.Op != "message" || m.Channel != channel || m.From != pub.Welcome.Conn {
					t.Errorf("message %s, want op message on %s from %s", got, channel, pub.Welcome.Conn)
				}
				if string(m.Data) != data {
					t.Errorf("data %s, want the published JSON verbatim %s", m.Data, data)
				}
			}

			// The browser closes; the server echoes the code and the close is clean.
			closed := evalJS[jsClosed](t, ctx, "zc.close("+jsArgs(t, name, 1000)+")")
			if closed.Code != 1000 || !closed.WasClean {
				t.Errorf("close: %+v, want code 1000, clean", closed)
			}
			t.Logf("conn %s: ws.protocol %q, binary %v", conn, opened.Protocol, tc.bin)
		})
	}
	pub.pingPong() // the publisher is still in sync
	pageErrs.check(t, "wsclient")
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}
