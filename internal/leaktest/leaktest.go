// Package leaktest holds the goroutine-leak check options shared by every
// package's TestMain.
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// Options ignores only goroutines that live for the whole process by design:
// gnet's default worker pool (ants) starts its purge and clock goroutines when
// the package is initialised and never stops them, and keeps a worker that
// ran a task (gnet registers a socket of each event loop through it) idle
// until the pool's expiry.
func Options() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*goWorker).run.func1"),
	}
}

// VerifyTestMain runs the tests and then fails if any goroutine leaked.
func VerifyTestMain(m *testing.M) {
	goleak.VerifyTestMain(m, Options()...)
}
