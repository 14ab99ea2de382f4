package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zenconn/server/internal/keyguard"
	"github.com/zenconn/server/shm"
)

// TestWorkerConfigExitStopsTheNode: a worker process that exits with
// ExitConfig is not restarted: the agent stops with an error at once.
func TestWorkerConfigExitStopsTheNode(t *testing.T) {
	a, err := New(Config{
		Workers: 2, Loops: 1, Socket: filepath.Join(t.TempDir(), "agent.sock"), RingSize: shm.MinCapacity,
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Command: func(int) (string, []string) { return "/bin/sh", []string{"-c", "exit 78"} },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = a.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "could not start with this configuration") || ctx.Err() != nil {
		t.Fatalf("Run = %v after %v; want the configuration error at once", err, time.Since(start))
	}
	for _, w := range a.Workers() {
		if w.Restarts != 0 {
			t.Errorf("worker %d restarted %d times", w.ID, w.Restarts)
		}
	}
}

// TestKeyAttemptsNodeWide: the agent counts the failures its workers
// report and says the address is refused once it reached the limit.
func TestKeyAttemptsNodeWide(t *testing.T) {
	a, err := New(Config{Workers: 1, Socket: "x", Command: func(int) (string, []string) { return "", nil }})
	if err != nil {
		t.Fatal(err)
	}
	h := a.apiHandler()
	call := func(method, target string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec.Body.String()
	}
	for i := range keyguard.MaxFailures {
		if got := call(http.MethodGet, "/internal/blocked?addr=192.0.2.7"); got != "0" {
			t.Fatalf("blocked after %d failures: %q", i, got)
		}
		call(http.MethodPost, "/internal/refused?worker="+string(rune('0'+i%2))+"&remote=192.0.2.7:4000")
	}
	if got := call(http.MethodGet, "/internal/blocked?addr=192.0.2.7"); got == "0" || got == "" {
		t.Fatalf("not blocked after %d failures from two workers: %q", keyguard.MaxFailures, got)
	}
	if got := call(http.MethodGet, "/internal/blocked?addr=192.0.2.8"); got != "0" {
		t.Fatalf("another address blocked: %q", got)
	}
}
