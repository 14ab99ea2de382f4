// Command tlscompare measures, in one run and side by side, the TLS
// implementations ZenConn could serve on its event loops: crypto/tls as
// the engine drove it before (reads not bounded to a record, buffers kept),
// crypto/tls with the engine's reductions (engine/tlsbufs.go), and the
// non-blocking fork of crypto/tls in github.com/lesismal/llib (the one nbio
// uses), for TLS 1.2 and TLS 1.3 with an ECDSA P-256 certificate:
//
//   - idle: the live heap one established, idle server connection holds
//     (after its handshake, one ~200-byte request read and a reply
//     written), over -conns connections, and the goroutines it keeps;
//   - cpu: the time to encrypt a -size-byte WebSocket frame, one record
//     each, and in batches of 32 frames per record, median of -rounds
//     rounds in which the implementations alternate, in CPU time of the
//     thread (Linux).
//
// The client is crypto/tls with its defaults (TLS 1.3 offers the
// X25519MLKEM768 key share, as current browsers do), over an in-memory
// connection; its memory is dropped before the heap is read.
//
//	cd bench/tlscompare && go run . [-conns 2000] [-frames 1000000] [-rounds 7]
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
)

func main() {
	conns := flag.Int("conns", 2000, "idle connections per implementation and version")
	frames := flag.Int("frames", 1000000, "frames encrypted per round")
	size := flag.Int("size", 64, "WebSocket payload bytes per frame")
	rounds := flag.Int("rounds", 7, "CPU rounds (median)")
	flag.Parse()
	pki, err := newPKI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("go %s, %s/%s, GOMAXPROCS %d, llib %s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.GOMAXPROCS(0), llibVersion())
	versions := []struct {
		name string
		v    uint16
	}{{"TLS1.2", tls.VersionTLS12}, {"TLS1.3", tls.VersionTLS13}}
	fmt.Printf("\nidle: live heap per established idle server connection (%d connections)\n", *conns)
	for _, v := range versions {
		for _, k := range kinds {
			b, g, err := idle(pki, k, v.v, *conns)
			if err != nil {
				fmt.Fprintf(os.Stderr, "%s %s: %v\n", k.name, v.name, err)
				os.Exit(1)
			}
			fmt.Printf("  %-6s %-20s %6.0f B/conn  %.2f goroutines/conn  (%s)\n", v.name, k.name, b, g,
				suiteOf[k.name+" "+tls.VersionName(v.v)])
		}
	}
	fmt.Printf("\ncpu: encrypting %d-byte WebSocket frames (median of %d rounds of %d frames)\n", *size, *rounds, *frames)
	for _, v := range versions {
		for _, batch := range []int{1, 32} {
			res, err := cpu(pki, v.v, *size, batch, *frames, *rounds)
			if err != nil {
				fmt.Fprintf(os.Stderr, "cpu %s: %v\n", v.name, err)
				os.Exit(1)
			}
			for _, k := range kinds {
				fmt.Printf("  %-6s %-20s %2d frame(s)/record  %6.1f ns/frame\n", v.name, k.name, batch, res[k.name])
			}
		}
	}
}

func llibVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if strings.HasSuffix(d.Path, "lesismal/llib") {
				return d.Version
			}
		}
	}
	return "?"
}

var request = []byte("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://127.0.0.1\r\n\r\n")

var reply = []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")

// connect makes one connection of kind k and returns its server once the
// request was read and the reply received; the client is dropped.
func connect(pki *pki, k kind, vers uint16) (server, *wire, error) {
	cw, sw := newDuplex()
	srv := k.make(pki.std, pki.ll)
	errc := make(chan error, 1)
	go func() { errc <- srv.serve(sw, len(request), reply) }()
	c := tls.Client(cw, pki.client(vers))
	err := c.Handshake()
	if err == nil {
		_, err = c.Write(request)
	}
	if err == nil {
		_, err = io.ReadFull(c, make([]byte, len(reply)))
	}
	if serr := <-errc; err == nil {
		err = serr
	}
	if err == nil && c.ConnectionState().Version != vers {
		err = fmt.Errorf("negotiated %x, want %x", c.ConnectionState().Version, vers)
	}
	if err == nil {
		suiteOf[k.name+" "+tls.VersionName(vers)] = tls.CipherSuiteName(c.ConnectionState().CipherSuite)
	}
	sw.detach()
	return srv, sw, err
}

// suiteOf is the cipher suite each kind negotiated, by kind and version.
var suiteOf = map[string]string{}

func idle(pki *pki, k kind, vers uint16, n int) (perConn, goroutines float64, err error) {
	held := make([]server, 0, n)
	before, g0 := heap()
	for range n {
		srv, _, err := connect(pki, k, vers)
		if err != nil {
			return 0, 0, err
		}
		held = append(held, srv)
	}
	after, g1 := heap()
	runtime.KeepAlive(held)
	return float64(after-before) / float64(n), float64(g1-g0) / float64(n), nil
}

// threadCPU is the CPU time the calling thread used, in nanoseconds.
func threadCPU() int64 {
	var ru syscall.Rusage
	const rusageThread = 1 // RUSAGE_THREAD (Linux)
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func heap() (uint64, int) {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc, runtime.NumGoroutine()
}

// cpu returns each kind's median ns per frame.
func cpu(pki *pki, vers uint16, size, batch, frames, rounds int) (map[string]float64, error) {
	frame := make([]byte, 0, batch*(size+2))
	for range batch {
		frame = append(frame, 0x81, byte(size))
		frame = append(frame, make([]byte, size)...)
	}
	srvs := map[string]server{}
	for _, k := range kinds {
		srv, sw, err := connect(pki, k, vers)
		if err != nil {
			return nil, err
		}
		sw.sink = true
		srvs[k.name] = srv
	}
	// CPU time of this thread, not wall time: other processes on the
	// machine do not count.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	times := map[string][]float64{}
	for r := range rounds {
		for i := range kinds {
			k := kinds[(i+r)%len(kinds)] // a different order each round
			start := threadCPU()
			for range frames / batch {
				if err := srvs[k.name].write(frame); err != nil {
					return nil, err
				}
			}
			times[k.name] = append(times[k.name], float64(threadCPU()-start)/float64(frames/batch*batch))
		}
	}
	out := map[string]float64{}
	for name, t := range times {
		slices.Sort(t)
		out[name] = t[len(t)/2]
	}
	return out, nil
}
