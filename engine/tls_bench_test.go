package engine

import (
	"context"
	"crypto/tls"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/zenconn/server/internal/testca"
)

// BenchmarkSocketFanout publishes a 64-byte message to subscribers on real
// loopback sockets, plain and over TLS, and waits until every subscriber
// has read it; one op is one message to all. The clients run in the same
// process, so the figure includes their reads (and, with TLS, their
// decryption): compare the two, not the absolute rate.
func BenchmarkSocketFanout(b *testing.B) {
	const subs = 200
	for _, useTLS := range []bool{false, true} {
		name := "plain"
		if useTLS {
			name = "tls"
		}
		b.Run(name+"/subs="+strconv.Itoa(subs), func(b *testing.B) {
			addr, client := benchServer(b, useTLS, subs)
			var wg sync.WaitGroup
			conns := make([]*websocket.Conn, subs)
			for i := range conns {
				conns[i] = benchDial(b, addr, client)
				if err := conns[i].WriteMessage(websocket.TextMessage, []byte(`{"id":1,"op":"subscribe","channel":"b"}`)); err != nil {
					b.Fatal(err)
				}
				if _, _, err := conns[i].ReadMessage(); err != nil { // ack
					b.Fatal(err)
				}
			}
			pub := benchDial(b, addr, client)
			got := make(chan struct{}, subs)
			for _, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						if _, _, err := c.ReadMessage(); err != nil {
							return
						}
						got <- struct{}{}
					}
				}()
			}
			msg := []byte(`{"op":"publish","channel":"b","data":"0123456789012345678901234567890123456789012345678901234567890123"}`)
			b.ResetTimer()
			for b.Loop() {
				if err := pub.WriteMessage(websocket.TextMessage, msg); err != nil {
					b.Fatal(err)
				}
				for range subs {
					select {
					case <-got:
					case <-time.After(10 * time.Second):
						b.Fatal("a delivery did not arrive in 10 s")
					}
				}
			}
			b.ReportMetric(float64(b.N*subs)/b.Elapsed().Seconds(), "deliveries/s")
			b.StopTimer()
			for _, c := range conns {
				c.Close()
			}
			wg.Wait()
		})
	}
}

func benchServer(b *testing.B, useTLS bool, subs int) (string, *tls.Config) {
	cfg := Config{Addr: "127.0.0.1:0", Loops: 1, Limits: Limits{MaxConnsPerIP: 10 * subs, ConnRatePerIP: 10 * subs, PublishRate: 1000000}}
	var client *tls.Config
	if useTLS {
		ca, err := testca.New()
		if err != nil {
			b.Fatal(err)
		}
		cfg.TLS = TLSConfig(ca.Server, tls.VersionTLS12)
		client = ca.ClientConfig()
	}
	s := newTestServer(b, cfg)
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s.Addr().String(), client
}

func benchDial(b *testing.B, addr string, client *tls.Config) *websocket.Conn {
	d := websocket.Dialer{TLSClientConfig: client, HandshakeTimeout: 5 * time.Second}
	scheme := "ws://"
	if client != nil {
		scheme = "wss://"
	}
	c, resp, err := d.Dial(scheme+addr+"/ws", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if _, _, err := c.ReadMessage(); err != nil { // welcome
		b.Fatal(err)
	}
	return c
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
