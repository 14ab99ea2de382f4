package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestCLIConnections runs `zenconn connections` and `zenconn channels`
// against a running node: a page of --limit with the next cursor on
// stderr, and with --all every connection exactly once, page after page.
func TestCLIConnections(t *testing.T) {
	t.Parallel()
	s := startServer(t, "--api-key", ibAPIKey)
	want := map[string]bool{}
	for i, ch := range []string{"cl-a", "cl-b", "cl-c", "cl-a", "cl-d"} {
		c := s.dialWS(t)
		c.subscribe(i+1, ch)
		want[c.Welcome.Conn] = true
	}
	rows := func(out string) (ids []string, more string) {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if m, ok := strings.CutPrefix(l, "more: --cursor "); ok {
				more = m
				continue
			}
			var e struct{ ID, Name string }
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("not a JSON line: %q (%v)\n%s", l, err, out)
			}
			ids = append(ids, e.ID+e.Name)
		}
		return ids, more
	}
	base := []string{"--url", "http://" + s.Addr, "--api-key", ibAPIKey, "--limit", "2"}
	out, code := runCLI(t, 20*time.Second, nil, append([]string{"connections"}, base...)...)
	ids, more := rows(out)
	if code != 0 || len(ids) != 2 || more != ids[1] {
		t.Fatalf("connections --limit 2: exit %d, %v, more %q\n%s", code, ids, more, out)
	}
	out, code = runCLI(t, 20*time.Second, nil, append([]string{"connections", "--all"}, base...)...)
	ids, more = rows(out)
	seen := map[string]bool{}
	for _, id := range ids {
		if !want[id] || seen[id] {
			t.Fatalf("connections --all lists %q (unknown or twice)\n%s", id, out)
		}
		seen[id] = true
	}
	if code != 0 || len(seen) != len(want) || more != "" {
		t.Fatalf("connections --all: exit %d, %d of %d connections\n%s", code, len(seen), len(want), out)
	}
	out, code = runCLI(t, 20*time.Second, nil, append([]string{"channels", "--all"}, base...)...)
	if names, _ := rows(out); code != 0 || strings.Join(names, ",") != "cl-a,cl-b,cl-c,cl-d" {
		t.Fatalf("channels --all: exit %d, %v\n%s", code, names, out)
	}
	if out, code = runCLI(t, 20*time.Second, nil, "connections"); code != 2 || !strings.Contains(out, "--url") {
		t.Fatalf("connections without --url: exit %d\n%s", code, out)
	}
}
