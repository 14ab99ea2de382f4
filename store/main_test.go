package store

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/zenconn/server/internal/leaktest"
)

// holdEnv makes the test binary a child that holds a store open: it opens
// the folder named by the variable, prints "ready" and keeps the store
// open until its standard input is closed.
const holdEnv = "ZENCONN_STORE_TEST_HOLD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(holdEnv); dir != "" {
		os.Exit(holdStore(dir))
	}
	leaktest.VerifyTestMain(m)
}

func holdStore(dir string) int {
	s, err := Open(dir, Options{Sync: SyncAlways})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
	if err := s.Close(); err != nil {
		fmt.Println("error", err)
		return 1
	}
	return 0
}
