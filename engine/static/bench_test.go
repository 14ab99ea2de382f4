package static

import (
	"bufio"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkStaticFile answers a GET for a 1 KiB and a 100 KiB file: from
// memory (AppendCached, what a loop does for a cached hit), and through a
// worker and fasthttp's FS (the cache disabled: Go, then the job run on
// this goroutine). The head is parsed once, outside the timed loop; the
// engine's BenchmarkHTTPCachedFile measures the whole loop path.
func BenchmarkStaticFile(b *testing.B) {
	for _, path := range []string{"memory", "worker"} {
		for _, size := range []int{1 << 10, 100 << 10} {
			b.Run(fmt.Sprintf("%s/%dk", path, size>>10), func(b *testing.B) {
				benchStaticFile(b, path == "worker", size)
			})
		}
	}
}

func benchStaticFile(b *testing.B, worker bool, size int) {
	root := b.TempDir()
	writeFile(b, root, "f.js", strings.Repeat("x", size))
	var clock atomic.Int64
	s := newTestServer(b, root, &clock)
	if worker {
		s.files.maxFile = -1
	}
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader("GET /f.js HTTP/1.1\r\nHost: x\r\nUser-Agent: bench\r\n\r\n"))); err != nil {
		b.Fatal(err)
	}
	c := &memConn{}
	var (
		date Date
		buf  []byte
	)
	serve := func() {
		resp, _, _, ok := s.AppendCached(buf[:0], &date, &h, 0, true)
		if ok {
			buf = resp
			c.write(resp)
			return
		}
		if !s.Go(c, &h, nil, 0, true, nil) || s.RunPending() != 1 {
			b.Fatal("the request was not answered")
		}
	}
	serve() // fills the cache
	before := c.nbytes
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		serve()
	}
	b.StopTimer()
	if per := (c.nbytes - before) / b.N; per < size {
		b.Fatalf("%d bytes per response, want at least %d", per, size)
	}
}
