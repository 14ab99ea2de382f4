package static

import (
	"testing"

	"github.com/zenconn/server/internal/leaktest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	opts := append(leaktest.Options(),
		// fasthttp starts one process-wide goroutine that refreshes the
		// cached Date header once a second, on the first response it
		// writes, and never stops it (header.go updateServerDate).
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// fasthttp's compression helpers run on a process-wide pool of
		// workers started on first use (stackless/func.go), as the file
		// cache's gzip and brotli variants do.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp/stackless.funcWorker"),
	)
	goleak.VerifyTestMain(m, opts...)
}
