package e2e

// Slow consumers must not multiply the node's memory: a frame queued for many
// subscribers that stopped reading is held once, and each of them is closed
// with 4001 once it holds more than --max-outbound bytes back. 300 subscribers
// that never read and a dozen 0.93 MiB publishes on their channel used to grow
// the server's RSS by about 6 MiB per subscriber (a copy of every frame in each
// connection's outbound buffer); the bound below is generous.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

const (
	afSubs      = 300
	afSources   = 60        // loopback source addresses the subscribers come from
	afPublishes = 12        // of afSize bytes each: past the default --max-outbound (4 MiB) and the kernel's share
	afSize      = 975_000   // bytes of JSON data per publish (0.93 MiB)
	afMaxGrowth = 128 << 20 // bytes of server RSS growth allowed
	afDrained   = 10        // subscribers read to their end at the end of the test
)

func TestAttackSlowConsumersShareFrames(t *testing.T) {
	s := startServer(t, "--workers", "0")
	pid := s.cmd.Process.Pid
	subs := make([]*rawWS, afSubs)
	for i := range subs {
		subs[i] = afSubscriber(t, s, net.IPv4(127, 0, 3, byte(1+i%afSources)), "slow")
	}
	pub := s.dialWS(t)
	base := afRSS(t, pid)
	slowBefore := sum(s.scrape(t).find(slowConsumerRE, nil))

	// Publish while sampling the server's RSS.
	stop := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		p := base
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if r := afRSSE(pid); r > p {
				p = r
			}
			select {
			case <-stop:
				peak <- p
				return
			case <-tick.C:
			}
		}
	}()
	data := `"` + strings.Repeat("x", afSize-2) + `"`
	for i := range afPublishes {
		pub.request(i+1, `{"id":`+strconv.Itoa(i+1)+`,"op":"publish","channel":"slow","data":`+data+`}`)
	}
	// Every subscriber is past the limit: closed and counted.
	eventually(t, 10*time.Second, func() string {
		m := s.scrape(t)
		closed := sum(m.find(slowConsumerRE, nil)) - slowBefore
		open := sum(m.find(regexp.MustCompile(`^zenconn_websocket_connections$`), nil))
		if closed < afSubs || open > 1 {
			return fmt.Sprintf("%v slow-consumer disconnects, %v WebSockets open; want %d disconnects and only the publisher open", closed, open, afSubs)
		}
		return ""
	})
	time.Sleep(200 * time.Millisecond)
	close(stop)
	growth := <-peak - base
	t.Logf("server RSS %d MiB before, peak growth %.1f MiB with %d subscribers × %d publishes of %d bytes",
		base>>20, float64(growth)/(1<<20), afSubs, afPublishes, afSize)
	bound := int64(afMaxGrowth)
	if os.Getenv("ZENCONN_E2E_RACE") != "" {
		bound *= 4 // the race detector's shadow memory; copies per subscriber still take gigabytes
	}
	if growth > bound {
		t.Errorf("server RSS grew by %d MiB, want at most %d MiB: each slow subscriber holds its own copy of the frames",
			growth>>20, bound>>20)
	}

	// What a subscriber got is whole frames, then the end of the connection:
	// a close frame 4001 if the kernel had room for it, else just the end.
	var wg sync.WaitGroup
	errs := make([]error, afDrained)
	for i := range afDrained {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = afDrain(subs[i*afSubs/afDrained])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("subscriber %d: %v", i*afSubs/afDrained, err)
		}
	}
	pub.pingPong() // the publisher was not held up
}

// afSubscriber connects from src, subscribes to channel and reads the ack;
// it reads nothing more unless the test asks.
func afSubscriber(t *testing.T, s *serverProc, src net.IP, channel string) *rawWS {
	t.Helper()
	d := net.Dialer{Timeout: defaultTimeout, LocalAddr: &net.TCPAddr{IP: src}}
	conn, err := d.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", s.Addr, src, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawWS{t: t, conn: conn, br: bufio.NewReaderSize(conn, 64<<10)}
	key, _ := wsKey()
	_ = conn.SetDeadline(time.Now().Add(defaultTimeout))
	req := rawRequest("GET", "/ws", "Upgrade: websocket", "Connection: Upgrade",
		"Sec-WebSocket-Key: "+key, "Sec-WebSocket-Version: 13")
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: "GET"})
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake from %s: %v %v", src, resp, err)
	}
	if _, err := c.readFrame(defaultTimeout); err != nil { // welcome
		t.Fatalf("welcome: %v", err)
	}
	c.sendText(`{"id":1,"op":"subscribe","channel":"` + channel + `"}`)
	f, err := c.readFrame(defaultTimeout)
	if err != nil || !strings.Contains(string(f.Payload), `"ack"`) {
		t.Fatalf("subscribe: %v %s", err, f.Payload)
	}
	_ = conn.SetDeadline(time.Time{})
	return c
}

// afDrain reads c to its end: frames, then EOF or a close frame with 4001.
func afDrain(c *rawWS) error {
	deadline := time.Now().Add(15 * time.Second)
	got := 0
	for {
		f, err := c.readFrame(time.Until(deadline))
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnReset(err):
			return nil
		case err != nil:
			return fmt.Errorf("after %d messages: %w", got, err)
		case f.Header.OpCode == ws.OpClose:
			if code, _ := ws.ParseCloseFrameData(f.Payload); code != 4001 {
				return fmt.Errorf("close code %d after %d messages, want 4001", code, got)
			}
			return nil
		}
		if got++; got >= afPublishes {
			return fmt.Errorf("received all %d messages: never cut off", got)
		}
	}
}

func afRSS(t *testing.T, pid int) int64 {
	t.Helper()
	r := afRSSE(pid)
	if r == 0 {
		t.Fatalf("no VmRSS for process %d", pid)
	}
	return r
}

// afRSSE is the resident set of process pid in bytes, 0 when unknown.
func afRSSE(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n << 10
		}
	}
	return 0
}
