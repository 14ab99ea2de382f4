package engine

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
	)
	goleak.VerifyTestMain(m, opts...)
}
