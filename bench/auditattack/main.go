// Command auditattack measures what an anonymous client can make a node's
// audit log cost: it starts a zenconn node on loopback, sends refused then
// allowed 1 MiB publishes for a few seconds each and reports how fast the
// data folder grew, then asks /api/audit for large pages (one, then four
// at once) and reports their size, status and the node's RSS.
//
//	go build -o /tmp/zenconn ./cmd/zenconn
//	go run ./bench/auditattack -bin /tmp/zenconn -secs 5
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

const apiKey = "auditattack-api-key-0123"

func main() {
	bin := flag.String("bin", "zenconn", "the zenconn binary")
	secs := flag.Int("secs", 5, "seconds of each publish phase")
	extra := flag.String("flags", "", "more flags for zenconn serve (space-separated)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "auditattack")
	check(err)
	defer os.RemoveAll(dir)
	args := []string{"serve", "--addr", "127.0.0.1:0", "--data", filepath.Join(dir, "data"), "--public", dir,
		"--access-log", "off", "--api-key", apiKey}
	if *extra != "" {
		args = append(args, strings.Fields(*extra)...)
	}
	cmd := exec.Command(*bin, args...)
	stderr, err := cmd.StderrPipe()
	check(err)
	check(cmd.Start())
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	addr := listening(stderr)
	data := filepath.Join(dir, "data")

	for _, ph := range []struct{ name, channel string }{{"refused (private channel)", "private-x"}, {"allowed (public channel)", "fill"}} {
		before := du(data)
		n, d := flood("ws://"+addr+"/ws", ph.channel, time.Duration(*secs)*time.Second)
		time.Sleep(500 * time.Millisecond)
		grown := du(data) - before
		fmt.Printf("%-26s %5d publishes of 1 MiB in %v: --data grew %7.1f MiB (%.1f MiB/s)\n",
			ph.name, n, d.Round(time.Millisecond), float64(grown)/(1<<20), float64(grown)/(1<<20)/d.Seconds())
	}
	for _, q := range []string{"", "?limit=1000"} {
		st, size, d := get("http://" + addr + "/api/audit" + q)
		fmt.Printf("GET /api/audit%-12s status %d, %7.2f MiB in %v\n", q, st, float64(size)/(1<<20), d.Round(time.Millisecond))
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, size, d := get("http://" + addr + "/api/audit?limit=1000")
			fmt.Printf("concurrent query %d: status %d, %7.2f MiB in %v\n", i, st, float64(size)/(1<<20), d.Round(time.Millisecond))
		}()
	}
	wg.Wait()
	time.Sleep(time.Second)
	fmt.Printf("node RSS after the queries: %s\n", rss(cmd.Process.Pid))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func listening(r io.Reader) string {
	re := regexp.MustCompile(`msg="?listening"?.*\baddr="?(127\.0\.0\.1:\d+)`)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, r) }()
			return m[1]
		}
	}
	check(fmt.Errorf("the node did not start"))
	return ""
}

// flood publishes 1 MiB-class messages on channel for d from one
// anonymous connection, reading the answers, and returns how many it sent.
func flood(url, channel string, d time.Duration) (int, time.Duration) {
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	check(err)
	defer c.Close()
	_, _, err = c.ReadMessage() // welcome
	check(err)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	raw := make([]byte, (1<<20-200)*3/4)
	_, _ = rand.Read(raw)
	pad := base64.StdEncoding.EncodeToString(raw) // does not compress
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		n++
		msg := fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":"%d%s"}`, n, channel, n, pad)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			break
		}
	}
	return n, time.Since(start)
}

func get(url string) (int, int64, time.Duration) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	start := time.Now()
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, 0, time.Since(start)
	}
	defer resp.Body.Close()
	n, _ := io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, n, time.Since(start)
}

func du(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// rss is the VmRSS of pid and of its children (the workers).
func rss(pid int) string {
	var parts []string
	pids := []int{pid}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid)); err == nil {
		for _, f := range strings.Fields(string(b)) {
			var p int
			_, _ = fmt.Sscan(f, &p)
			pids = append(pids, p)
		}
	}
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				parts = append(parts, fmt.Sprintf("pid %d %s", p, strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))))
			}
		}
	}
	return strings.Join(parts, ", ")
}
