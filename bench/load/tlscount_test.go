package main

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tlsScripted serves TLS 1.3 (max) with ca's certificate on one connection:
// it answers the first line with "ok\n", then writes each of writes as
// its own record once send is closed.
func tlsScripted(t *testing.T, cfg *tls.Config, writes []string, send <-chan struct{}) string {
	t.Helper()
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = ln.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("the scripted server did not end")
		}
	})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			return
		}
		_, _ = c.Write([]byte("ok\n"))
		select {
		case <-send:
		case <-time.After(10 * time.Second):
			return
		}
		for _, w := range writes {
			_, _ = c.Write([]byte(w))
		}
		// Until the client closes its socket.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.Copy(io.Discard, c)
	}()
	return ln.Addr().String()
}

// TestDetachedBridgeCountsRecords: once detached, a connection's records
// are read undecrypted from its TCP socket, and their plaintext sizes add
// up to what the server wrote, for TLS 1.3 and TLS 1.2 alike.
func TestDetachedBridgeCountsRecords(t *testing.T) {
	ca, file := caFile(t)
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		srvCfg := &tls.Config{Certificates: []tls.Certificate{ca.Server}, MaxVersion: v}
		writes := []string{strings.Repeat("a", 100), strings.Repeat("b", 5000), "c"}
		send := make(chan struct{})
		addr := tlsScripted(t, srvCfg, writes, send)
		cfg, err := tlsClientConfig(file, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		fails := newTLSFails()
		fd, br, err := dialTLSPair(addr, cfg, 5*time.Second, fails)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Write(fd, []byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		if got := readFd(t, fd, 3); string(got) != "ok\n" {
			t.Fatalf("TLS %#x: answer %q (handshake error %v)", v, got, fails.first())
		}
		raw, overhead, err := br.detach()
		_ = unix.Close(fd)
		if err != nil {
			t.Fatalf("TLS %#x: detach: %v", v, err)
		}
		close(send)
		r := &rawRecords{overhead: overhead}
		deadline := time.Now().Add(5 * time.Second)
		for r.plain < 5101 && time.Now().Before(deadline) {
			got := readFd(t, raw, 1)
			if len(got) == 0 {
				break
			}
			for _, b := range chunks(got) {
				if err := r.feed(b); err != nil {
					t.Fatalf("TLS %#x: %v", v, err)
				}
			}
		}
		_ = unix.Close(raw)
		// Go's server may cut a write in two records (dynamic record sizing).
		if r.plain != 5101 || r.records < 3 || r.left != 0 || r.hdrN != 0 {
			t.Fatalf("TLS %#x: %d plaintext bytes in %d records (left %d), want 5101 in 3 or more", v, r.plain, r.records, r.left)
		}
	}
}

// chunks cuts b into pieces of 1, 2, 3, ... bytes, so that record headers
// and bodies arrive split.
func chunks(b []byte) [][]byte {
	var out [][]byte
	for n := 1; len(b) > 0; n++ {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func TestRawRecordsRefuseWhatIsNotApplicationData(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"alert", []byte{21, 3, 3, 0, 19}, "alert"},
		{"handshake", []byte{22, 3, 3, 0, 40}, "not application data"},
		{"shorter than its overhead", []byte{23, 3, 3, 0, 17}, "length 17"},
		{"too long", []byte{23, 3, 3, 0x48, 0x01}, "length"},
	} {
		r := &rawRecords{overhead: 17}
		if err := r.feed(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestSampleChoice(t *testing.T) {
	cfg := &config{tlsSample: 50, tlsSampleMin: 20, procs: 2}
	n := 0
	for i := range 2500 {
		if isSample(cfg, i) {
			n++
		}
	}
	// 10 first ones (20 over 2 processes), then every 50th past them.
	if n != 10+49 {
		t.Fatalf("%d samples of 2500, want 59", n)
	}
	if cfg.tlsSample = 0; !isSample(cfg, 7) {
		t.Fatal("without --tls-sample every subscriber decrypts")
	}
}

func TestPublishDataKeepsItsLength(t *testing.T) {
	l := &loop{cfg: &config{size: 64, channel: "c", window: 1}}
	c := &conn{role: rolePub, sentAt: make([]int64, 1)}
	lens := map[int]bool{}
	for i := range 2000 {
		c.pubSent = int64(i * 997) // ids of 1 to 7 digits
		frame := l.appendPublish(nil, c, int64(i)*1e7)
		body := string(l.pbody)
		lens[len(body[strings.Index(body, `"data":"`):])] = true
		if i == 0 && len(frame) != 64 {
			t.Fatalf("first publish: %d bytes, want 64", len(frame))
		}
	}
	if len(lens) != 1 {
		t.Fatalf("data lengths %v, want one", lens)
	}
}

func TestSampleFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--protocol", "centrifugo", "--tls-sample", "50"}, "centrifugo"},
		{[]string{"--tls-sample", "-1"}, "--tls-sample"},
		{[]string{"--tls-sample", "50", "--tls-sample-min", "0"}, "--tls-sample-min"},
	} {
		_, err := parseFlags("fanout", append([]string{"--url", "wss://127.0.0.1:1/ws"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseFlags("fanout", []string{"--url", "wss://127.0.0.1:1/ws", "--tls-sample", "50"}); err != nil {
		t.Fatal(err)
	}
}

// TestFanoutCountsTLSRecords runs a fan-out over TLS against the fake node
// with --tls-sample: the samples decrypt, the other subscribers count
// their deliveries from record sizes (the fake node writes a frame's
// header and payload in two records), and every count is exact.
func TestFanoutCountsTLSRecords(t *testing.T) {
	ca, file := caFile(t)
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	newFakeNodeOn(t, tls.NewListener(tcp, &tls.Config{Certificates: []tls.Certificate{ca.Server}}), 0, 0)
	m := runScenario(t, "fanout", []string{"--url", "wss://" + tcp.Addr().String() + "/ws", "--tls-ca", file,
		"--tls-sample", "3", "--tls-sample-min", "2", "--subs", "12", "--rate", "300", "--duration", "300ms",
		"--timeout", "30s", "--drain", "3s"})
	published := num(t, m, "published")
	if published == 0 || num(t, m, "missing_deliveries") != 0 || num(t, m, "protocol_errors") != 0 ||
		num(t, m, "received_deliveries") != 12*published {
		t.Fatalf("fan-out: %v", m)
	}
	// Samples: subscribers 0, 1 (the minimum), 3, 6 and 9.
	if num(t, m, "tls_count.sample_conns") != 5 || num(t, m, "tls_count.counted_conns") != 7 ||
		num(t, m, "tls_count.deliveries") != 7*published || num(t, m, "tls_count.records") < 7*published {
		t.Fatalf("tls_count: %v", m["tls_count"])
	}
	if num(t, m, "tls_count.frame_bytes_min") != num(t, m, "tls_count.frame_bytes_max") || num(t, m, "latency_us.samples") != 5*published {
		t.Fatalf("frame sizes or latency samples: %v %v", m["tls_count"], m["latency_us"])
	}
}
