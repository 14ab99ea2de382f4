package e2e

import (
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestShutdownSIGTERM(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	raw1, _ := s.dialRawWS(t, 0)
	raw2, _ := s.dialRawWS(t, 0)
	g := s.dialWS(t)
	g.subscribe(1, "shutdown")

	// An idle keep-alive HTTP connection must not hold up the exit.
	idle := s.dialRaw(t)
	idle.write(rawRequest("GET", "/healthz"))
	idle.readResponse("GET")

	// A request just before the signal: its access-log line may still be in the buffer.
	s.get(t, "GET", "/last-request-before-sigterm")

	start := time.Now()
	s.Signal(syscall.SIGTERM)

	var wg sync.WaitGroup
	for _, c := range []*rawWS{raw1, raw2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, reason, seen, err := c.readUntilClose(defaultTimeout)
			if code != 1001 {
				t.Errorf("raw client: close %d %q (%v), want 1001 going away; frames: %s", code, reason, err, describeFrames(seen))
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := g.readE(defaultTimeout)
		if code := closeCode(err); code != 1001 {
			t.Errorf("gorilla client: %v, want close 1001", err)
		}
	}()
	wg.Wait()

	exited, err := s.WaitExit(5*time.Second - time.Since(start))
	if !exited {
		t.Fatalf("still running 5 s after SIGTERM")
	}
	if err != nil {
		t.Fatalf("exit after SIGTERM: %v, want status 0", err)
	}
	t.Logf("exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))

	// After exit the access log has everything, without waiting for a periodic flush.
	lines, err := readAccessLog(s.AccessLog)
	if err != nil {
		t.Fatal(err)
	}
	var last, ws bool
	for _, l := range lines {
		last = last || l.request == "GET /last-request-before-sigterm HTTP/1.1"
		ws = ws || (l.request == "GET /ws HTTP/1.1" && l.status == "101")
	}
	if !last || !ws {
		t.Fatalf("access log after exit: last request logged %v, WebSocket handshake logged %v; %d lines", last, ws, len(lines))
	}
}
