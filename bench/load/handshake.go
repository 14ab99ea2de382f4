package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// load handshake: full TLS handshakes per second. CONC goroutines each loop
// over: TCP connect, a full handshake (no session cache, so never a
// resumption), one GET of --url's path on that connection (so the server
// has finished its side of the handshake and served a request), close.
// With an http:// URL the same loop without TLS: the plain reference.
// The first handshake of each goroutine verifies the certificate against
// --tls-ca; later ones check that the server sent that same certificate
// (a byte comparison), so the generator's CPU goes to the key exchange and
// not to verifying one chain thousands of times.
// Prints one JSON object: handshakes/s, the server's CPU per handshake and
// the handshakes one core of the server would do (1 s / CPU per
// handshake: the generator, on one core too, may not keep the server's
// core busy), errors.

type hsConfig struct {
	url, server, label, ca string
	conc                   int
	duration, warmup       time.Duration
	pids                   []int
}

func runHandshake(args []string) int {
	var c hsConfig
	fs := flag.NewFlagSet("handshake", flag.ExitOnError)
	fs.StringVar(&c.url, "url", "https://127.0.0.1:8443/index.html", "https:// (or http://, the plain reference) URL fetched once per connection")
	fs.StringVar(&c.server, "server", "", "server name in the JSON")
	fs.StringVar(&c.label, "label", "handshake", "test label in the JSON")
	fs.StringVar(&c.ca, "tls-ca", "", "PEM file of the trusted certificate authorities")
	fs.IntVar(&c.conc, "conc", 32, "connections in flight")
	fs.DurationVar(&c.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "time before measuring")
	pids := fs.String("server-pids", "", "server process ids, comma-separated (CPU summed)")
	_ = fs.Parse(args)
	for f := range strings.SplitSeq(*pids, ",") {
		var p int
		if _, err := fmt.Sscan(strings.TrimSpace(f), &p); err == nil && p > 0 {
			c.pids = append(c.pids, p)
		}
	}
	out, err := handshakes(&c)
	if out != nil {
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "load handshake: %v\n", err)
		return 1
	}
	return 0
}

type hsCounters struct {
	ok, fail atomic.Int64
	mu       sync.Mutex
	example  string
}

func (h *hsCounters) failed(err error) {
	if h.fail.Add(1) == 1 {
		h.mu.Lock()
		h.example = err.Error()
		h.mu.Unlock()
	}
}

func handshakes(c *hsConfig) (map[string]any, error) {
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || c.conc < 1 {
		return nil, fmt.Errorf("--url must be https:// or http:// and --conc positive")
	}
	var tc *tls.Config
	if u.Scheme == "https" {
		if tc, err = tlsClientConfig(c.ca, u.Hostname()); err != nil {
			return nil, err
		}
		tc.ClientSessionCache = nil
	}
	var cnt hsCounters
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range c.conc {
		wg.Add(1)
		go func() { defer wg.Done(); hsLoop(u, tc, stop, &cnt) }()
	}
	time.Sleep(c.warmup)
	ok0, fail0 := cnt.ok.Load(), cnt.fail.Load()
	var w cpuWindow
	w.start(c.pids)
	t0 := time.Now()
	time.Sleep(c.duration)
	span := time.Since(t0).Seconds()
	w.end()
	ok1, fail1 := cnt.ok.Load(), cnt.fail.Load()
	close(stop)
	wg.Wait()
	out := map[string]any{"mode": "handshake", "server": c.server, "test": c.label, "url": c.url,
		"conc": c.conc, "duration_s": round3(span), "handshakes": ok1 - ok0, "failures": fail1 - fail0,
		"handshakes_per_s": round3(float64(ok1-ok0) / span)}
	if len(c.pids) > 0 {
		out["server_cpu_us"] = w.total()
		if ok1 > ok0 {
			out["server_cpu_us_per_handshake"] = round3(float64(w.total()) / float64(ok1-ok0))
			if w.total() > 0 {
				// What one core of the server would do if the
				// generator kept it busy all the time.
				out["handshakes_per_core_s"] = round3(float64(ok1-ok0) * 1e6 / float64(w.total()))
			}
		}
		out["server_cpu_share"] = round3(float64(w.total()) / 1e6 / span)
	}
	if cnt.example != "" {
		out["failure_example"] = cnt.example
	}
	if ok1 == ok0 {
		return out, errors.New("no handshake completed")
	}
	return out, nil
}

// hsLoop connects, handshakes and fetches until stop is closed.
func hsLoop(u *url.URL, tc *tls.Config, stop <-chan struct{}, cnt *hsCounters) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	req := fmt.Appendf(nil, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", u.RequestURI(), u.Host)
	var cfg *tls.Config
	if tc != nil {
		cfg = tc.Clone()
	}
	verified := false
	for {
		select {
		case <-stop:
			return
		default:
		}
		leaf, err := hsOnce(host, req, cfg)
		if err != nil {
			cnt.failed(err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		cnt.ok.Add(1)
		if cfg != nil && !verified {
			verified = true
			cfg.InsecureSkipVerify = true // the chain was verified once: now compare bytes
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, leaf) {
					return errors.New("the server sent another certificate than the one verified")
				}
				return nil
			}
		}
	}
}

// hsOnce: one connection, handshake (cfg non-nil), one request, its status
// line and headers read, close. Returns the server's certificate.
func hsOnce(host string, req []byte, cfg *tls.Config) ([]byte, error) {
	raw, err := net.DialTimeout("tcp4", host, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	_ = raw.(*net.TCPConn).SetLinger(0)
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	conn := net.Conn(raw)
	var leaf []byte
	if cfg != nil {
		tc := tls.Client(raw, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		if st := tc.ConnectionState(); len(st.PeerCertificates) > 0 {
			leaf = st.PeerCertificates[0].Raw
		}
		conn = tc
	}
	if _, err := conn.Write(req); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		return nil, err
	}
	_ = resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return leaf, nil
}
