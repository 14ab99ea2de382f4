package engine

// Regression tests for defects found while writing the engine's tests. Each
// failed on the code it describes; the comment says what was wrong.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/zenconn/server/proto"
)

// Shutdown on a Server whose Start was never called (or failed) used to
// dereference the nil s.transport and panic; so did Addr. A caller that
// defers Shutdown right after New crashed when Start failed.
func TestShutdownWithoutStart(t *testing.T) {
	s := newTestServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return s.Shutdown(ctx)
	}()
	if err != nil {
		t.Errorf("Shutdown of a server that was never started: %v", err)
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Addr before Start: panic: %v", r)
			}
		}()
		if a := s.Addr(); a != nil {
			t.Errorf("Addr before Start = %v, want nil", a)
		}
	}()
}

// onClose relied on ws.CheckCloseFrameData alone, which accepts every code
// from 3000 up to 65535, and echoed them. RFC 6455 section 7.4.2 defines
// codes only up to 4999; 5000 and above is a protocol error to answer with
// 1002 (Autobahn cases 7.9.x).
func TestCloseCodeOutOfRange(t *testing.T) {
	for _, code := range []uint16{5000, 65535} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			s := newTestServer(t, Config{})
			l, e := newTestLoop(t, s)
			d := newConnDriver(t, s, l, e)
			upgrade(t, d)
			d.feed(clientFrame(true, ws.OpClose, []byte{byte(code >> 8), byte(code)}))
			got, _ := closeCode(t, d.t.takeOut())
			if got != proto.CloseProtocolError {
				t.Errorf("client close code %d answered with %d, want %d", code, got, proto.CloseProtocolError)
			}
			d.close()
		})
	}
}

// appendCloseFrame cut the reason at 123 bytes without regard for UTF-8,
// so a long non-ASCII reason became invalid UTF-8, which a client must
// treat as a protocol error (RFC 6455 sections 5.5.1, 8.1).
func TestCloseReasonCutOnRuneBoundary(t *testing.T) {
	reason := strings.Repeat("é", 100) // 200 bytes
	frame := appendCloseFrame(nil, 1000, reason)
	_, got := ws.ParseCloseFrameData(frame[2:])
	if !utf8.ValidString(got) {
		t.Errorf("close reason cut mid-rune: % x", got[len(got)-3:])
	}
	if want := validUTF8Prefix(reason, 123); got != want {
		t.Errorf("reason = %q (%d bytes), want the %d-byte rune-aligned prefix", got, len(got), len(want))
	}
}

// serveHTTP framed a request head at the first CRLFCRLF, but fasthttp's
// parser also accepts bare LF line ends and stops at the first empty line:
// a bare-LF head followed by a second request was parsed as the first
// only, and the second request was consumed with it and never answered.
func TestBareLFHeadKeepsNextRequest(t *testing.T) {
	s := newTestServer(t, Config{})
	l, e := newTestLoop(t, s)
	d := newConnDriver(t, s, l, e)
	d.feed([]byte("GET /healthz HTTP/1.1\nHost: x\n\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	got := statusLines(d.t.takeOut())
	if d.c.state == stateHTTP && len(got) != 2 {
		t.Errorf("two requests, the connection still open, but %d responses: %q", len(got), got)
	}
	d.close()
}
