package main

import (
	"os/exec"
	"testing"
	"time"
)

// TestSumPSSCountsSharedPagesOnce runs two processes of one executable:
// their pages of that executable and its libraries are counted in each
// process's RSS, once in the sum of their PSS.
func TestSumPSSCountsSharedPagesOnce(t *testing.T) {
	var pids []int
	for range 2 {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Skipf("sleep: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pids = append(pids, cmd.Process.Pid)
	}
	var rss, pss int64
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// Wait until both have exec'd sleep (their RSS no longer the fork's).
		if rss, err = sumRSS(pids); err == nil && rss > 0 {
			break
		}
	}
	time.Sleep(100 * time.Millisecond)
	if rss, err = sumRSS(pids); err != nil {
		t.Fatal(err)
	}
	if pss, err = sumPSS(pids); err != nil {
		t.Fatal(err)
	}
	if pss <= 0 || pss >= rss {
		t.Fatalf("PSS %d KiB, RSS %d KiB: want 0 < PSS < RSS", pss, rss)
	}
	if _, err := readPSSKiB(1 << 30); err == nil {
		t.Fatal("PSS of a process that does not exist: no error")
	}
}
