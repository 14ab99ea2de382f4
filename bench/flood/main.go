// Command flood measures what publish floods do to a healthy client: N
// anonymous flooders, each from its own loopback address, publish as fast
// as they can (reconnecting when closed), while a healthy client on
// another address publishes a probe every interval to its own subscriber
// and records the publish → delivery latency. It runs for a bounded time
// and prints the latency percentiles, the probes lost, and what the
// flooders got back.
//
//	go run ./bench/flood -addr 127.0.0.1:8080 -flooders 4 -duration 10s
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "server address")
	flooders := flag.Int("flooders", 4, "flooding connections, each from 127.0.0.(10+i)")
	duration := flag.Duration("duration", 10*time.Second, "length of the run")
	interval := flag.Duration("interval", 10*time.Millisecond, "healthy probe interval")
	redial := flag.Duration("redial", 50*time.Millisecond, "a flooder's pause after a refused dial (0: none)")
	churn := flag.Bool("churn", false, "flooders alternate subscribe and unsubscribe instead of publishing")
	flag.Parse()
	if *churn {
		floodMsgs = [][]byte{[]byte(`{"op":"subscribe","channel":"churn"}`), []byte(`{"op":"unsubscribe","channel":"churn"}`)}
	}
	audited := auditRecords(*addr)

	var st floodStats
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < *flooders; i++ {
		wg.Add(1)
		go func(src string) { defer wg.Done(); flood(*addr, src, *redial, stop, &st) }(fmt.Sprintf("127.0.0.%d", 10+i))
	}
	time.Sleep(500 * time.Millisecond) // let the flood start
	lat, lost, err := probe(*addr, *duration, *interval)
	close(stop)
	wg.Wait()
	if err != nil {
		// A probe not delivered within a second ends the run: report
		// what was measured up to it.
		fmt.Fprintln(os.Stderr, "flood: the run ended early:", err)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("flooders=%d duration=%s probes=%d lost=%d p50=%s p90=%s p99=%s max=%s\n",
		*flooders, *duration, len(lat), lost, pct(.5), pct(.9), pct(.99), pct(1))
	fmt.Printf("flooders sent=%d acks=%d rate_limited=%d closes=%d refused_dials=%d\n",
		st.sent.Load(), st.acks.Load(), st.limited.Load(), st.closes.Load(), st.refused.Load())
	fmt.Printf("audit records written during the run: %d\n", auditRecords(*addr)-audited)
	if err != nil {
		os.Exit(1)
	}
}

// floodMsgs are what a flooder sends, in turn.
var floodMsgs = [][]byte{[]byte(`{"id":1,"op":"publish","channel":"flood","data":"0123456789012345678901234567890123456789"}`)}

// auditRecords reads zenconn_audit_records_total from /metrics (-1 when
// it cannot).
func auditRecords(addr string) int64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "zenconn_audit_records_total "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	return -1
}

type floodStats struct{ sent, acks, limited, closes, refused atomic.Int64 }

func dial(addr, src string) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second,
		NetDial: (&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).Dial}
	c, _, err := d.Dial("ws://"+addr+"/ws", nil)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.ReadMessage(); err != nil { // welcome
		c.Close()
		return nil, err
	}
	return c, nil
}

// flood publishes as fast as it can from src until stop, reconnecting
// when closed, and after redial when refused.
func flood(addr, src string, redial time.Duration, stop <-chan struct{}, st *floodStats) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := dial(addr, src)
		if err != nil {
			st.refused.Add(1)
			time.Sleep(redial)
			continue
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				_, p, err := c.ReadMessage()
				if err != nil {
					st.closes.Add(1)
					return
				}
				switch {
				case strings.Contains(string(p), `"ack"`):
					st.acks.Add(1)
				case strings.Contains(string(p), `"rate_limited"`):
					st.limited.Add(1)
				}
			}
		}()
	write:
		for {
			select {
			case <-stop:
				break write
			case <-done:
				break write
			default:
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if c.WriteMessage(websocket.TextMessage, floodMsgs[st.sent.Load()%int64(len(floodMsgs))]) != nil {
				break
			}
			st.sent.Add(1)
		}
		c.Close()
		<-done
	}
}

// probe publishes a timestamp every interval from one connection to a
// subscriber on another, both from 127.0.0.200, and returns the latencies
// and the probes not delivered within a second.
func probe(addr string, d, interval time.Duration) ([]time.Duration, int, error) {
	pub, err := dial(addr, "127.0.0.200")
	if err != nil {
		return nil, 0, err
	}
	defer pub.Close()
	sub, err := dial(addr, "127.0.0.200")
	if err != nil {
		return nil, 0, err
	}
	defer sub.Close()
	if err := sub.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"subscribe","channel":"probe"}`)); err != nil {
		return nil, 0, err
	}
	if _, _, err := sub.ReadMessage(); err != nil {
		return nil, 0, err
	}
	var lat []time.Duration
	lost := 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		sent := time.Now()
		m := `{"op":"publish","channel":"probe","data":` + strconv.FormatInt(sent.UnixNano(), 10) + `}`
		if err := pub.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			return lat, lost, err
		}
		_ = sub.SetReadDeadline(time.Now().Add(time.Second))
		for {
			_, p, err := sub.ReadMessage()
			if err != nil {
				lost++
				return lat, lost, fmt.Errorf("probe subscriber: %w", err)
			}
			if strings.Contains(string(p), strconv.FormatInt(sent.UnixNano(), 10)) {
				lat = append(lat, time.Since(sent))
				break
			}
		}
		time.Sleep(interval)
	}
	return lat, lost, nil
}
