// Command attackinput measures what anonymous clients that trickle input
// cost a ZenConn node: slowloris heads (with a legitimate client's connect
// and round trip measured meanwhile) and trickled maximum-size messages or
// request bodies (with the server's resident memory sampled). It is
// bounded in connections and time and only dials loopback addresses.
//
//	attackinput -mode slowloris -addr 127.0.0.1:8080 -conns 2000 -for 60s
//	attackinput -mode trickle-ws -addr 127.0.0.1:8080 -pid $PID -conns 1000
//	attackinput -mode trickle-body -addr 127.0.0.1:8080 -pid $PID -conns 1000 -key KEY
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

func main() {
	mode := flag.String("mode", "slowloris", "slowloris, trickle-ws or trickle-body")
	addr := flag.String("addr", "127.0.0.1:8080", "server address (loopback only)")
	conns := flag.Int("conns", 2000, "attacking connections (at most 5000)")
	dur := flag.Duration("for", 60*time.Second, "run time (at most 5 minutes)")
	pid := flag.Int("pid", 0, "server process whose resident memory (with its children) is sampled")
	size := flag.Int("size", 1<<20, "declared message or body size (trickle modes)")
	key := flag.String("key", "", "API key sent with trickled bodies (empty: none)")
	flag.Parse()
	if host, _, err := net.SplitHostPort(*addr); err != nil || !net.ParseIP(host).IsLoopback() {
		fmt.Fprintln(os.Stderr, "attackinput: -addr must be a loopback address")
		os.Exit(2)
	}
	*conns = min(*conns, 5000)
	*dur = min(*dur, 5*time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var out map[string]any
	switch *mode {
	case "slowloris":
		out = slowloris(ctx, *addr, *conns, *pid)
	case "trickle-ws", "trickle-body":
		out = trickle(ctx, *addr, *conns, *pid, *size, *mode == "trickle-body", *key)
	default:
		fmt.Fprintln(os.Stderr, "attackinput: unknown -mode")
		os.Exit(2)
	}
	out["mode"], out["conns"], out["seconds"] = *mode, *conns, dur.Seconds()
	b, _ := json.MarshalIndent(out, "", "  ")
	fmt.Println(string(b))
}

// dialFrom dials addr from the loopback source address of attacker i:
// 127.0.0.2 and up, 500 connections each.
func dialFrom(ctx context.Context, addr string, i int) (net.Conn, error) {
	src := net.IPv4(127, 0, byte(i/500/250), byte(2+i/500%250))
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

// slowloris keeps conns connections each sending one byte of a
// never-ending request head every 5 s, reconnecting when closed, and
// probes the server with a legitimate WebSocket client every 50 ms.
func slowloris(ctx context.Context, addr string, conns, pid int) map[string]any {
	var open, closedByServer, dialFail atomic.Int64
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * time.Millisecond) // ramp up over conns ms
			for ctx.Err() == nil {
				c, err := dialFrom(ctx, addr, i)
				if err != nil {
					dialFail.Add(1)
					sleepCtx(ctx, 200*time.Millisecond)
					continue
				}
				open.Add(1)
				if loris(ctx, c) {
					closedByServer.Add(1)
				}
				open.Add(-1)
				c.Close()
			}
		}()
	}
	time.Sleep(min(time.Duration(conns)*time.Millisecond+2*time.Second, 10*time.Second))
	var connect, rtt []time.Duration
	var fails int
	var failMsgs []string
	var openSamples []int64
	rssStart := rss(pid)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for n := 0; ctx.Err() == nil; n++ {
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		cd, rd, err := probe(addr)
		if err != nil {
			fails++
			if len(failMsgs) < 5 {
				failMsgs = append(failMsgs, err.Error())
			}
		} else {
			connect, rtt = append(connect, cd), append(rtt, rd)
		}
		if n%20 == 0 {
			openSamples = append(openSamples, open.Load())
		}
	}
	rssEnd := rss(pid)
	wg.Wait()
	return map[string]any{
		"probes": len(rtt) + fails, "probe_failures": fails, "failure_examples": failMsgs,
		"connect_ms": pct(connect), "round_trip_ms": pct(rtt),
		"attacker_open_samples": openSamples, "attacker_closed_by_server": closedByServer.Load(),
		"attacker_dial_failures": dialFail.Load(), "server_rss_mib": []float64{rssStart, rssEnd},
	}
}

// loris trickles a request head on c until the server closes it (true) or
// the run ends.
func loris(ctx context.Context, c net.Conn) bool {
	gone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c)
		close(gone)
	}()
	head := []byte("GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	for i := 0; ; i++ {
		b := byte('a')
		if i < len(head) {
			b = head[i]
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{b}); err != nil {
			return true
		}
		select {
		case <-gone:
			return true
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Second):
		}
	}
}

// probe connects, opens a WebSocket, reads the welcome, and times a ping
// round trip.
func probe(addr string) (connect, rtt time.Duration, err error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	connect = time.Since(start)
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, " 101 ") {
		return 0, 0, fmt.Errorf("handshake: %q %v", strings.TrimSpace(line), err)
	}
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return 0, 0, err
		}
		if l == "\r\n" {
			break
		}
	}
	if _, err := ws.ReadFrame(br); err != nil { // welcome
		return 0, 0, err
	}
	if err := ws.WriteFrame(c, ws.MaskFrame(ws.NewTextFrame([]byte(`{"op":"ping"}`)))); err != nil {
		return 0, 0, err
	}
	if _, err := ws.ReadFrame(br); err != nil {
		return 0, 0, err
	}
	return connect, time.Since(start), nil
}

// trickle opens conns connections that each declare a size-byte WebSocket
// message (or request body) and send all of it but the last byte, then
// hold; it samples the server's resident memory meanwhile.
func trickle(ctx context.Context, addr string, conns, pid, size int, body bool, key string) map[string]any {
	rss0 := rss(pid)
	var sent, refused, held atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // connections being filled at once
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			c, first, err := fillOne(ctx, addr, i, size, body, key)
			<-sem
			if err != nil {
				return
			}
			defer c.Close()
			sent.Add(1)
			held.Add(1)
			// Hold until the server answers or closes, or the run ends.
			_ = c.SetReadDeadline(time.Now().Add(time.Until(deadlineOf(ctx))))
			if first == nil {
				var b [16]byte
				n, _ := io.ReadAtLeast(c, b[:], 2)
				first = b[:n]
			}
			if len(first) > 0 && ctx.Err() == nil {
				held.Add(-1)
				refused.Add(1)
			}
		}()
	}
	var peak float64
	var samples []float64
	for ctx.Err() == nil {
		r := rss(pid)
		peak = max(peak, r)
		samples = append(samples, r)
		sleepCtx(ctx, time.Second)
	}
	wg.Wait()
	return map[string]any{
		"declared_bytes": size, "connections_filled": sent.Load(), "answered_or_closed": refused.Load(),
		"still_held_at_end": held.Load(), "server_rss_mib_before": rss0, "server_rss_mib_peak": peak,
		"server_rss_mib_samples": samples,
	}
}

// fillOne opens one connection and sends all but the last byte of a
// size-byte message or body. first is what the server already answered,
// if anything.
func fillOne(ctx context.Context, addr string, i, size int, body bool, key string) (net.Conn, []byte, error) {
	c, err := dialFrom(ctx, addr, i)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	var data []byte
	if body {
		hdr := "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(size) + "\r\n"
		if key != "" {
			hdr += "X-API-Key: " + key + "\r\n"
		}
		data = append([]byte(hdr+"\r\n"), bytes.Repeat([]byte("a"), size-1)...)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				c.Close()
				return nil, nil, err
			}
			if l == "\r\n" {
				break
			}
		}
		if _, err := ws.ReadFrame(br); err != nil {
			c.Close()
			return nil, nil, err
		}
		var f bytes.Buffer
		_ = ws.WriteFrame(&f, ws.MaskFrame(ws.NewTextFrame(make([]byte, size))))
		data = f.Bytes()[:f.Len()-1]
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, err = c.Write(data)
	_ = c.SetDeadline(time.Time{})
	if err != nil {
		return c, []byte("write failed"), nil
	}
	if br.Buffered() > 0 {
		b, _ := br.Peek(br.Buffered())
		return c, b, nil
	}
	return &bufConn{Conn: c, r: br}, nil, nil
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// rss returns the resident memory of pid and its children, in MiB.
func rss(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	total := 0.0
	pids := []int{pid}
	for len(pids) > 0 {
		p := pids[0]
		pids = pids[1:]
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		if err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
					kb, _ := strconv.ParseFloat(f[1], 64)
					total += kb / 1024
				}
			}
		}
		tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(p) + "/task")
		for _, t := range tasks {
			ch, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/task/" + t.Name() + "/children")
			for _, f := range strings.Fields(string(ch)) {
				if n, err := strconv.Atoi(f); err == nil {
					pids = append(pids, n)
				}
			}
		}
	}
	return total
}

// pct returns p50, p99 and max in milliseconds.
func pct(d []time.Duration) map[string]float64 {
	if len(d) == 0 {
		return nil
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return map[string]float64{"p50": ms(d[len(d)/2]), "p99": ms(d[len(d)*99/100]), "max": ms(d[len(d)-1]), "n": float64(len(d))}
}
