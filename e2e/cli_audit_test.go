package e2e

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCLIAudit runs `zenconn audit` and `zenconn sessions` against a
// running node (--url) and then against its data folder once stopped
// (--data): both print the same records as JSON lines.
func TestCLIAudit(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	c := s.dialWS(t)
	c.subscribe(1, "cli")
	for i, ch := range []string{"cli", "cli", "other"} {
		req, _ := http.NewRequest("POST", s.URL("/api/publish"), strings.NewReader(`{"channel":"`+ch+`","data":{"n":`+strconv.Itoa(i)+`}}`))
		req.Header.Set("X-API-Key", ibAPIKey)
		resp, err := s.HTTP.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("publish: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	lines := func(out string) []map[string]any {
		var rows []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("not a JSON line: %q (%v)\n%s", l, err, out)
			}
			rows = append(rows, m)
		}
		return rows
	}
	check := func(rows []map[string]any, how string) {
		t.Helper()
		if len(rows) != 2 || rows[0]["channel"] != "cli" || rows[0]["op"] != "publish" ||
			rows[0]["data"].(map[string]any)["n"] != float64(0) || rows[1]["data"].(map[string]any)["n"] != float64(1) {
			t.Fatalf("%s: %v", how, rows)
		}
	}
	out, code := runCLI(t, 20*time.Second, nil, "audit", "--url", "http://"+s.Addr, "--api-key", ibAPIKey, "--op", "publish", "--channel", "cli")
	if code != 0 {
		t.Fatalf("audit --url: exit %d\n%s", code, out)
	}
	check(lines(out), "audit --url")
	out, code = runCLI(t, 20*time.Second, nil, "sessions", "--url", "http://"+s.Addr, "--api-key", ibAPIKey, "--active", "true")
	if code != 0 || len(lines(out)) != 1 || lines(out)[0]["conn"] != c.Welcome.Conn {
		t.Fatalf("sessions --url: exit %d\n%s", code, out)
	}
	if out, code = runCLI(t, 20*time.Second, nil, "audit", "--url", "http://"+s.Addr, "--api-key", "wrong-key-0123456789"); code != 1 || !strings.Contains(out, "401") {
		t.Fatalf("wrong key: exit %d\n%s", code, out)
	}
	if out, code = runCLI(t, 20*time.Second, nil, "audit", "--data", s.Data); code != 1 || !strings.Contains(out, "--url") {
		t.Fatalf("--data of a running node: exit %d\n%s", code, out)
	}

	s.Signal(syscall.SIGTERM)
	if ok, _ := s.WaitExit(10 * time.Second); !ok {
		t.Fatal("the node did not stop")
	}
	out, code = runCLI(t, 20*time.Second, nil, "audit", "--data", s.Data, "--op", "publish", "--channel", "cli")
	if code != 0 {
		t.Fatalf("audit --data: exit %d\n%s", code, out)
	}
	check(lines(out), "audit --data")
	out, code = runCLI(t, 20*time.Second, nil, "sessions", "--data", s.Data)
	if rows := lines(out); code != 0 || len(rows) != 1 || rows[0]["close_code"] != float64(1001) {
		t.Fatalf("sessions --data: exit %d\n%s", code, out)
	}
}
