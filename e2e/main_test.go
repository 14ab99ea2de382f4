// Package e2e is a black-box end-to-end test suite for the zenconn binary.
//
// It shares no code with the server: TestMain builds ./cmd/zenconn once, every
// test starts its own child process on 127.0.0.1:0 (see startServer), and talks
// to it only over the wire (net/http, raw TCP with hand-built WebSocket frames,
// gorilla/websocket) and through the files and signals a operator would use.
//
// Environment knobs:
//
//	ZENCONN_E2E_BIN=/path/to/zenconn  use a prebuilt binary instead of building one
//	ZENCONN_E2E_RACE=1                build the server with -race as well
//	ZENCONN_E2E_WORKERS=2             every node with two worker processes
//	ZENCONN_E2E_CLUSTER=1             startServer starts two nodes of one cluster (an
//	                                  embedded NATS server) and WebSocket clients
//	                                  alternate between them
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// zenconnBin is the path of the server binary under test, set by TestMain.
var zenconnBin string

func TestMain(m *testing.M) {
	flag.Parse()
	// Most tests spend their time waiting on a child process (timers, polls),
	// not on CPU; with the default -parallel=GOMAXPROCS (2 here) the suite
	// would mostly sleep. Heavy tests (fan-out) are not parallel.
	parallelSet := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.parallel" {
			parallelSet = true
		}
	})
	if !parallelSet {
		_ = flag.Set("test.parallel", "4")
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "zenconn-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)

	bin, err := buildServer(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	zenconnBin = bin

	code := m.Run()
	stopSharedNATS()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: goroutine leak: %v\n", err)
			code = 1
		}
	}
	return code
}

// buildServer compiles ./cmd/zenconn from the module root into dir.
func buildServer(dir string) (string, error) {
	if bin := os.Getenv("ZENCONN_E2E_BIN"); bin != "" {
		return bin, nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding module root: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("finding module root: not inside a module")
	}
	root := filepath.Dir(gomod)

	bin := filepath.Join(dir, "zenconn")
	args := []string{"build", "-o", bin}
	if os.Getenv("ZENCONN_E2E_RACE") != "" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/zenconn")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}
