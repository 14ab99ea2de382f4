package engine

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// On real sockets, a subscriber that stops reading while large messages
// and its own small replies pile up gets all of them, intact and in order,
// once it reads again: the queue is written on each time the write watcher
// reports the socket writable.
func TestServerSlowReaderGetsEverythingInOrder(t *testing.T) {
	const (
		msgs    = 40
		size    = 256 << 10 // 10 MiB in all: more than the kernel's buffers take
		pingGap = 5
	)
	s := startServer(t, Config{MaxOutbound: 32 << 20})
	addr := s.Addr().String()
	sub := dialWS(t, addr)
	sub.send(`{"id":1,"op":"subscribe","channel":"big"}`)
	if f := sub.read(); !bytes.Contains(f.Payload, []byte(`"op":"ack"`)) {
		t.Fatalf("subscribe reply %q", f.Payload)
	}
	pub := dialWS(t, addr)
	fill := strings.Repeat("x", size)
	for i := range msgs {
		pub.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"big","data":"%04d%s"}`, i+2, i, fill))
		if f := pub.read(); !bytes.Contains(f.Payload, []byte(`"op":"ack"`)) {
			t.Fatalf("publish %d reply %q", i, f.Payload)
		}
		if i%pingGap == 0 {
			sub.send(`{"op":"ping"}`) // its pong queues behind the messages
		}
	}
	next, pongs := 0, 0
	for next < msgs || pongs < msgs/pingGap {
		f := sub.read()
		switch {
		case bytes.Contains(f.Payload, []byte(`"op":"pong"`)):
			pongs++
		case bytes.Contains(f.Payload, []byte(`"op":"message"`)):
			want := fmt.Sprintf(`"data":"%04d%s"`, next, fill)
			if !bytes.Contains(f.Payload, []byte(want)) {
				t.Fatalf("message %d: got %.80q…, want data %04d…", next, f.Payload, next)
			}
			next++
		default:
			t.Fatalf("unexpected frame %+v %.80q", f.Header, f.Payload)
		}
	}
	if slow := s.Stats().SlowClosed; slow != 0 {
		t.Errorf("%d slow-consumer closes under the limit", slow)
	}
}
