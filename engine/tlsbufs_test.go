package engine

import (
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestTLSBuffersReachable: the engine finds crypto/tls's input and
// handshake buffers in this toolchain's tls.Conn (tlsbufs.go); without them
// every idle TLS connection keeps about 3.5 KB more.
func TestTLSBuffersReachable(t *testing.T) {
	if !tlsBufsKnown {
		t.Fatal("crypto/tls's rawInput, input and hand fields were not found in tls.Conn: update engine/tlsbufs.go for this Go release")
	}
}

// idleTLSState is what an established TLS connection holds, read on its
// loop.
type idleTLSState struct {
	established                 bool
	rawInput, input, hand, ours int // capacities and lengths still held
}

// tlsStates reads, on each loop, the state of every TLS connection.
func tlsStates(t *testing.T, s *Server) []idleTLSState {
	t.Helper()
	var out []idleTLSState
	for _, l := range s.hub.allLoops() {
		done := make(chan []idleTLSState, 1)
		err := l.exec.Execute(func() {
			var st []idleTLSState
			for c := range l.conns {
				tc, ok := c.t.(*tlsConn)
				if !ok {
					continue
				}
				tc.mu.Lock()
				hs := cap(tc.hsIn)
				tc.mu.Unlock()
				st = append(st, idleTLSState{
					established: tc.established,
					rawInput:    tlsRawInput(tc.tc).Cap(),
					input:       int(tlsInput(tc.tc).Size()),
					hand:        tlsHand(tc.tc).Cap(),
					ours:        hs + cap(tc.src) + cap(tc.wbuf),
				})
			}
			done <- st
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case st := <-done:
			out = append(out, st...)
		case <-time.After(5 * time.Second):
			t.Fatal("a loop did not run a task in 5 s")
		}
	}
	return out
}

// handshakeGoroutines counts the goroutines running a TLS handshake.
func handshakeGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "engine.(*tlsConn).handshake(")
}

// TestTLSIdleConnectionHoldsNothing: an idle established TLS connection,
// TLS 1.2 or 1.3, after its handshake and some traffic both ways, holds
// no input or handshake buffer (crypto/tls's are empty and released, ours
// are back with the loop) and no goroutine.
func TestTLSIdleConnectionHoldsNothing(t *testing.T) {
	if !tlsBufsKnown {
		t.Skip("see TestTLSBuffersReachable")
	}
	s, ca := startTLSServer(t, Config{})
	for _, vers := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		cfg := ca.ClientConfig()
		cfg.MinVersion, cfg.MaxVersion = vers, vers
		ws := dialWSSWith(t, s.Addr().String(), cfg)
		writeWSS(t, ws, `{"id":1,"op":"subscribe","channel":"idle"}`)
		if m := readWSS(t, ws); m["op"] != "ack" {
			t.Fatalf("want the subscribe ack, got %v", m)
		}
		// A message larger than a record's plaintext: several records, some
		// split across reads.
		writeWSS(t, ws, `{"id":2,"op":"publish","channel":"idle","data":"`+strings.Repeat("x", 40<<10)+`"}`)
		if m := readWSS(t, ws); m["id"] != float64(2) || m["op"] != "ack" {
			t.Fatalf("want the answer to the publish, got %v", m)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		states := tlsStates(t, s)
		ok := len(states) == 2 && handshakeGoroutines() == 0
		for _, st := range states {
			ok = ok && st.established
		}
		if ok {
			for _, st := range states {
				if st.rawInput != 0 || st.input != 0 || st.hand != 0 || st.ours != 0 {
					t.Fatalf("an idle TLS connection holds buffers: %+v", st)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 s: %d TLS connections (want 2, established), %d handshake goroutines: %+v",
				len(states), handshakeGoroutines(), states)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trickleConn writes one byte at a time, each in its own segment.
type trickleConn struct{ net.Conn }

func (c trickleConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(20 * time.Microsecond)
	}
	return len(p), nil
}

// TestTLSTrickledRecords: a client whose every byte arrives on its own
// (records, and their headers, split across reads) is served, and once
// idle its connection holds no buffer either.
func TestTLSTrickledRecords(t *testing.T) {
	s, ca := startTLSServer(t, Config{HandshakeTimeout: 30 * time.Second})
	d := websocket.Dialer{TLSClientConfig: ca.ClientConfig(), HandshakeTimeout: 30 * time.Second,
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return trickleConn{c}, err
		}}
	ws, resp, err := d.Dial("wss://"+s.Addr().String()+"/ws", nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	resp.Body.Close()
	defer ws.Close()
	if m := readWSS(t, ws); m["op"] != "welcome" {
		t.Fatalf("want welcome, got %v", m)
	}
	writeWSS(t, ws, `{"id":1,"op":"subscribe","channel":"trickle"}`)
	if m := readWSS(t, ws); m["op"] != "ack" {
		t.Fatalf("want the subscribe ack, got %v", m)
	}
	for _, st := range tlsStates(t, s) {
		if !st.established || st.rawInput != 0 || st.input != 0 || st.hand != 0 || st.ours != 0 {
			t.Fatalf("an idle TLS connection holds buffers: %+v", st)
		}
	}
}
