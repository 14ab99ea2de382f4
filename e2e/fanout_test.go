package e2e

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// dialSubscribers connects n clients, each subscribed to channel, 16 at a time.
func (s *serverProc) dialSubscribers(t *testing.T, n int, channel string) []*wsClient {
	t.Helper()
	subs := make([]*wsClient, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := s.dialWSE()
				if err != nil {
					errs[i] = err
					continue
				}
				subs[i] = c
				if err := c.sendE(fmt.Sprintf(`{"id":1,"op":"subscribe","channel":%q}`, channel)); err != nil {
					errs[i] = err
					continue
				}
				m, err := c.readE(10 * time.Second)
				if err == nil && (m.Op != "ack" || !m.hasID(1)) {
					err = fmt.Errorf("subscribe answered with %s", m)
				}
				errs[i] = err
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range subs {
			if c != nil {
				c.c.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("connecting %d subscribers: %v", n, firstErrors(errs, 5))
	}
	for _, c := range subs {
		c.t = t
	}
	return subs
}

func firstErrors(errs []error, max int) error {
	var out []error
	n := 0
	for i, err := range errs {
		if err != nil {
			n++
			if len(out) < max {
				out = append(out, fmt.Errorf("client %d: %w", i, err))
			}
		}
	}
	return fmt.Errorf("%d failed, first: %w", n, errors.Join(out...))
}

// TestFanOut: 1,000 subscribers each receive every one of 20 messages, in order.
// Not parallel: it needs the whole machine.
func TestFanOut(t *testing.T) {
	const nSubs, nMsgs = 1000, 20
	s := startServer(t)
	start := time.Now()
	subs := s.dialSubscribers(t, nSubs, "fan")
	t.Logf("%d subscribers connected in %v", nSubs, time.Since(start).Round(time.Millisecond))

	pub := s.dialWS(t)
	start = time.Now()
	for i := 0; i < nMsgs; i++ {
		pub.send(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"fan","data":{"seq":%d,"pad":"fan-out e2e"}}`, i+1, i))
	}
	for i := 0; i < nMsgs; i++ {
		pub.expect("ack", i+1)
	}

	errs := make([]error, nSubs)
	var wg sync.WaitGroup
	for k, c := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < nMsgs; i++ {
				m, err := c.readE(30 * time.Second)
				if err != nil {
					errs[k] = fmt.Errorf("message %d: %w", i, err)
					return
				}
				want := fmt.Sprintf(`{"seq":%d,"pad":"fan-out e2e"}`, i)
				if m.Op != "message" || m.Channel != "fan" || m.From != pub.Welcome.Conn || !jsonEqual(m.Data, []byte(want)) {
					errs[k] = fmt.Errorf("message %d: got %.200s, want data %s from %s", i, m, want, pub.Welcome.Conn)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("fan-out: %v", firstErrors(errs, 5))
	}
	t.Logf("%d × %d deliveries in %v", nSubs, nMsgs, time.Since(start).Round(time.Millisecond))
	pub.pingPong()
}

// TestSlowConsumer: a subscriber that never reads is disconnected once more than
// --max-outbound bytes wait for it; the others still get every message.
// Not parallel: it pushes ~10 MiB through the server.
func TestSlowConsumer(t *testing.T) {
	const (
		nMsgs   = 600
		msgSize = 16 << 10
	)
	s := startServer(t, "--max-outbound", "262144")
	slowBefore := sum(s.scrape(t).find(slowConsumerRE, nil))

	// The slow consumer: a small kernel receive buffer, subscribes, then stops reading.
	slow, _ := s.dialRawWS(t, 4096)
	slow.sendText(`{"id":1,"op":"subscribe","channel":"bulk"}`)
	f, err := slow.readFrame(defaultTimeout)
	if err != nil || mustParse(t, f.Payload).Op != "ack" {
		t.Fatalf("slow consumer subscribe: %v %s", err, describeFrames([]ws.Frame{f}))
	}
	good := s.dialWS(t)
	good.subscribe(1, "bulk")
	pub := s.dialWS(t)

	pad := strings.Repeat("z", msgSize)
	goodErr := make(chan error, 1)
	ackErr := make(chan error, 1)
	// The healthy subscriber reports each message it has read, and the publisher keeps
	// at most `window` messages (128 KiB, half of --max-outbound) ahead of it: the
	// healthy subscriber is never slow, whatever the speed of this (race-instrumented)
	// test process. The slow one falls behind by everything.
	const window = 8
	received := make(chan struct{}, nMsgs)
	go func() {
		for i := 0; i < nMsgs; i++ {
			m, err := good.readE(30 * time.Second)
			if err != nil {
				goodErr <- fmt.Errorf("message %d: %w (close code %d)", i, err, closeCode(err))
				return
			}
			if m.Op != "message" || !jsonEqual(m.Data, []byte(fmt.Sprintf(`{"seq":%d,"pad":%q}`, i, pad))) {
				goodErr <- fmt.Errorf("message %d: got %.120s", i, m)
				return
			}
			received <- struct{}{}
		}
		goodErr <- nil
	}()
	go func() {
		for i := 0; i < nMsgs; i++ {
			m, err := pub.readE(30 * time.Second)
			if err != nil || m.Op != "ack" || !m.hasID(i+1) {
				ackErr <- fmt.Errorf("ack %d: %.120s %v", i+1, m, err)
				return
			}
		}
		ackErr <- nil
	}()
	start := time.Now()
	for i := 0; i < nMsgs; i++ {
		if i >= window {
			select {
			case <-received:
			case err := <-goodErr:
				t.Fatalf("the healthy subscriber failed after %d publishes: %v", i, err)
			case <-time.After(30 * time.Second):
				t.Fatalf("the healthy subscriber stalled after %d publishes", i)
			}
		}
		if err := pub.sendE(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"bulk","data":{"seq":%d,"pad":%q}}`, i+1, i, pad)); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := <-ackErr; err != nil {
		t.Errorf("publisher: %v", err)
	}
	if err := <-goodErr; err != nil {
		t.Fatalf("the healthy subscriber lost messages while a slow one was connected: %v", err)
	}
	t.Logf("%d × %d KiB published and delivered to the healthy subscriber in %v", nMsgs, msgSize>>10, time.Since(start).Round(time.Millisecond))

	// Now drain the slow consumer: the connection must have been ended by the server
	// (possibly after a close frame 4001), not kept open with everything buffered.
	slowGot, closeSeen := 0, false
	var code ws.StatusCode
	deadline := time.Now().Add(15 * time.Second)
	for {
		f, err := slow.readFrame(time.Until(deadline))
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err) {
				break
			}
			t.Fatalf("slow consumer still connected after reading %d of %d messages: %v", slowGot, nMsgs, err)
		}
		if f.Header.OpCode == ws.OpClose {
			code, _ = ws.ParseCloseFrameData(f.Payload)
			closeSeen = true
			slow.expectEOF(defaultTimeout)
			break
		}
		if f.Header.OpCode == ws.OpText {
			slowGot++
		}
	}
	t.Logf("slow consumer read %d of %d messages, close frame %v code %d", slowGot, nMsgs, closeSeen, code)
	if closeSeen && code != 4001 {
		t.Errorf("slow consumer closed with %d, want 4001", code)
	}
	if slowGot >= nMsgs {
		t.Errorf("slow consumer received all %d messages: it was never cut off", nMsgs)
	}

	eventually(t, 5*time.Second, func() string {
		m := s.scrape(t)
		after := sum(m.find(slowConsumerRE, nil))
		if after > slowBefore {
			return ""
		}
		return fmt.Sprintf("slow-consumer counter %v → %v; families: %s", slowBefore, after, strings.Join(m.zenconnFamilies(), " "))
	})
	pub.pingPong()
	good.pingPong()
}
