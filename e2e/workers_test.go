package e2e

// Multi-process mode: `zenconn serve --workers N` runs an agent that re-executes the
// binary as N worker processes sharing --addr (SO_REUSEPORT). These tests drive the
// real processes: they find the workers through GET /api/workers and /proc, spread
// clients over both workers (the kernel picks the worker per TCP connection, so a
// client's worker is learned from the "worker" field of GET /api/connections), and
// check that the node behaves as one server: pub/sub and broadcast across workers,
// the server API for the whole node, a worker killed with SIGKILL replaced without
// disturbing the other one, SIGTERM draining every worker, one access log.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

const wkWorkerCount = 2

// wkInfo is one entry of GET /api/workers.
type wkInfo struct {
	ID            int       `json:"id"`
	PID           int       `json:"pid"`
	Started       time.Time `json:"started"`
	Restarts      int       `json:"restarts"`
	Up            bool      `json:"up"`
	Connections   int       `json:"connections"`
	Subscriptions int       `json:"subscriptions"`
	MessagesIn    uint64    `json:"messages_in"`
	MessagesOut   uint64    `json:"messages_out"`
}

// wkConnInfo is one entry of GET /api/connections in multi-process mode.
type wkConnInfo struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Remote   string   `json:"remote"`
	Protocol string   `json:"protocol"`
	Channels []string `json:"channels"`
	Worker   *int     `json:"worker"`
}

// wkStart starts `zenconn serve --workers 2 --api-key …` plus extra and waits until
// GET /api/workers reports both workers up (the harness may have matched a worker's
// own "listening" line before the agent's).
func wkStart(t *testing.T, extra ...string) *serverProc {
	t.Helper()
	args := append([]string{"--workers", strconv.Itoa(wkWorkerCount), "--api-key", ibAPIKey}, extra...)
	s := startServer(t, args...)
	eventually(t, 5*time.Second, func() string {
		ws := wkWorkers(t, s)
		for _, w := range ws {
			if !w.Up || w.PID <= 0 {
				return fmt.Sprintf("GET /api/workers: %+v, want every worker up", ws)
			}
		}
		return ""
	})
	return s
}

// wkWorkers is GET /api/workers: exactly wkWorkerCount workers with ids 0, 1, ….
func wkWorkers(t *testing.T, s *serverProc) []wkInfo {
	t.Helper()
	var out struct {
		Workers *[]wkInfo `json:"workers"`
	}
	apiOK(t, s, "GET", "/api/workers", "", &out)
	if out.Workers == nil {
		t.Fatalf("GET /api/workers: no workers array")
	}
	ws := *out.Workers
	if len(ws) != wkWorkerCount {
		t.Fatalf("GET /api/workers lists %d workers (%+v), want %d", len(ws), ws, wkWorkerCount)
	}
	for i, w := range ws {
		if w.ID != i {
			t.Fatalf("GET /api/workers: entry %d has id %d (%+v), want ids 0..%d in order", i, w.ID, ws, wkWorkerCount-1)
		}
	}
	return ws
}

// wkWorkersE is GET /api/workers for a poll that may meet a connection reset (the
// error); any answer but 200 with a well-formed list fails the test.
func wkWorkersE(s *serverProc) ([]wkInfo, error) {
	t := s.t
	t.Helper()
	req, err := http.NewRequest("GET", s.URL("/api/workers"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ibAPIKey)
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /api/workers: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Workers []wkInfo `json:"workers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Workers) != wkWorkerCount {
		t.Fatalf("GET /api/workers: status %d, %d workers (%v), want 200 and %d workers", resp.StatusCode, len(out.Workers), err, wkWorkerCount)
	}
	return out.Workers, nil
}

// wkConns is GET /api/connections keyed by conn id; every entry must carry a worker
// field naming an existing worker.
func wkConns(t *testing.T, s *serverProc) map[string]wkConnInfo {
	t.Helper()
	var out struct {
		Connections *[]wkConnInfo `json:"connections"`
		Next        string        `json:"next"`
	}
	apiOK(t, s, "GET", "/api/connections?limit=1000", "", &out)
	if out.Connections == nil || out.Next != "" {
		t.Fatalf("GET /api/connections?limit=1000: no connections array, or more than one page (next %q)", out.Next)
	}
	m := map[string]wkConnInfo{}
	for _, c := range *out.Connections {
		if c.Worker == nil || *c.Worker < 0 || *c.Worker >= wkWorkerCount {
			t.Fatalf("GET /api/connections: entry %+v has no valid worker field", c)
		}
		if _, dup := m[c.ID]; dup {
			t.Fatalf("GET /api/connections lists %q twice", c.ID)
		}
		m[c.ID] = c
	}
	return m
}

// wkGroup returns, per worker, the clients that GET /api/connections places on it.
// Every client must be listed (each has a subscribe ack, so the agent knows it).
func wkGroup(t *testing.T, s *serverProc, clients []*ibConn) [wkWorkerCount][]*ibConn {
	t.Helper()
	table := wkConns(t, s)
	var g [wkWorkerCount][]*ibConn
	for _, c := range clients {
		e, ok := table[c.ID]
		if !ok {
			t.Fatalf("GET /api/connections does not list %s (a welcomed connection); %d entries", c.ID, len(table))
		}
		if e.Remote != c.c.LocalAddr().String() {
			t.Errorf("GET /api/connections: %s has remote %q, want %q", c.ID, e.Remote, c.c.LocalAddr())
		}
		g[*e.Worker] = append(g[*e.Worker], c)
	}
	return g
}

// wkDialMany connects n JSON clients, 16 at a time; client i uses token(i) (when
// token is not nil) and, when channel is not empty, subscribes to it with id 1 and
// requires the ack as the next message. The connections are closed at cleanup.
func wkDialMany(t *testing.T, s *serverProc, n int, channel string, token func(int) string) []*ibConn {
	t.Helper()
	clients, _ := wkDial(t, s, n, channel, token, false)
	return clients
}

// wkDial is wkDialMany; with early, messages on channel may come before the
// subscribe ack and are returned per client. (A worker starts delivering its own
// publishers' messages at once and acks the subscription when the agent has it,
// so on a busy channel messages can precede the ack; PROTOCOL.md only promises
// every message published after the ack.)
func wkDial(t *testing.T, s *serverProc, n int, channel string, token func(int) string, early bool) ([]*ibConn, [][]ibMsg) {
	t.Helper()
	clients := make([]*ibConn, n)
	pre := make([][]ibMsg, n)
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var o ibDialOpts
				if token != nil {
					o.BearerTok = token(i)
				}
				c, _, err := ibDialE(s, o)
				if err != nil {
					errs[i] = err
					continue
				}
				clients[i] = c
				if c.Bin {
					errs[i] = fmt.Errorf("conn %s: binary welcome, want JSON", c.ID)
					continue
				}
				if channel == "" {
					continue
				}
				pre[i], errs[i] = wkSubscribe(c, channel, early)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range clients {
			if c != nil {
				c.c.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("connecting %d clients: %v", n, firstErrors(errs, 5))
	}
	for _, c := range clients {
		c.t = t
		c.name = "conn " + c.ID
	}
	return clients, pre
}

// wkSubscribe subscribes c to channel with id 1 and waits for the ack; with early,
// the messages on channel that come first are returned (safe in any goroutine).
func wkSubscribe(c *ibConn, channel string, early bool) ([]ibMsg, error) {
	req := fmt.Sprintf(`{"id":1,"op":"subscribe","channel":%q}`, channel)
	if err := wkWrite(c, req); err != nil {
		return nil, err
	}
	var pre []ibMsg
	for {
		m, err := wkReadJSON(c, 10*time.Second)
		if err != nil {
			return pre, err
		}
		if m.Op == "ack" && string(m.ID) == "1" {
			return pre, nil
		}
		if !early || m.Op != "message" || m.Channel != channel {
			return pre, fmt.Errorf("conn %s: %s answered %s, want ack id 1", c.ID, req, m)
		}
		pre = append(pre, m)
	}
}

// wkWrite sends a text message without touching t (safe in any goroutine).
func wkWrite(c *ibConn, msg string) error {
	_ = c.c.SetWriteDeadline(time.Now().Add(defaultTimeout))
	if err := c.c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return fmt.Errorf("conn %s: write %s: %w", c.ID, msg, err)
	}
	return nil
}

// wkRequest sends req and requires the next message to be its ack (safe in any
// goroutine).
func wkRequest(c *ibConn, id int, req string, timeout time.Duration) error {
	if err := wkWrite(c, req); err != nil {
		return err
	}
	m, err := wkReadJSON(c, timeout)
	if err != nil {
		return err
	}
	if m.Op != "ack" || string(m.ID) != strconv.Itoa(id) {
		return fmt.Errorf("conn %s: %s answered %s, want ack id %d", c.ID, req, m, id)
	}
	return nil
}

// wkReadJSON reads the next message, which must be a JSON text message (safe in any
// goroutine).
func wkReadJSON(c *ibConn, timeout time.Duration) (ibMsg, error) {
	f, err := c.nextE(timeout)
	if err != nil {
		return ibMsg{}, fmt.Errorf("conn %s: read: %w", c.ID, err)
	}
	if f.typ != websocket.TextMessage {
		return ibMsg{}, fmt.Errorf("conn %s: got %s, want a JSON text message", c.ID, describeIB(f))
	}
	m, err := ibParseJSON(f.p)
	if err != nil {
		return ibMsg{}, fmt.Errorf("conn %s: %w", c.ID, err)
	}
	return m, nil
}

// wkSeq is the data of the sequenced test messages.
type wkSeq struct {
	P   int `json:"p"`
	Seq int `json:"seq"`
}

// wkParallel runs f for every client concurrently and fails with the first errors.
func wkParallel(t *testing.T, what string, clients []*ibConn, f func(i int, c *ibConn) error) {
	t.Helper()
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f(i, c) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%s: %v", what, firstErrors(errs, 5))
	}
}

// wkAllQuiet requires that none of the clients receives anything within d.
func wkAllQuiet(t *testing.T, clients []*ibConn, d time.Duration) {
	t.Helper()
	wkParallel(t, "expecting no further message", clients, func(_ int, c *ibConn) error {
		f, err := c.nextE(d)
		if err == nil {
			return fmt.Errorf("conn %s: unexpected message %s", c.ID, describeIB(f))
		}
		if !errors.Is(err, errIBTimeout) {
			return fmt.Errorf("conn %s: connection ended: %v", c.ID, err)
		}
		return nil
	})
}

// wkExpectAll requires every client's next message to be a message on ch from `from`
// with data.
func wkExpectAll(t *testing.T, what string, clients []*ibConn, ch, from, data string) {
	t.Helper()
	wkParallel(t, what, clients, func(_ int, c *ibConn) error {
		m, err := wkReadJSON(c, defaultTimeout)
		if err != nil {
			return err
		}
		if m.Op != "message" || m.Channel != ch || m.From != from || !jsonEqual(m.Data, []byte(data)) {
			return fmt.Errorf("conn %s: got %s, want message channel %q from %q data %s", c.ID, m, ch, from, data)
		}
		if ch == "" && m.has("channel") {
			return fmt.Errorf("conn %s: broadcast %s carries a channel field", c.ID, m)
		}
		return nil
	})
}

// wkEnds waits for the connection to end and returns the read error.
func wkEnds(c *ibConn, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.nextE(time.Until(deadline))
		if err == nil {
			continue // messages queued before the end
		}
		if errors.Is(err, errIBTimeout) {
			return fmt.Errorf("conn %s: still open after %v", c.ID, timeout)
		}
		return err
	}
}

// ---------------------------------------------------------------------------
// Processes, from /proc.

// wkProc is what the tests need of /proc/<pid>/stat and cmdline.
type wkProc struct {
	PID   int
	State byte
	PPID  int
	Args  []string
}

// wkReadProc reads /proc/<pid>; ok is false when there is no such process.
func wkReadProc(pid int) (wkProc, bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return wkProc{}, false
	}
	// pid (comm) state ppid …; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return wkProc{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 2 {
		return wkProc{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	p := wkProc{PID: pid, State: f[0][0], PPID: ppid}
	if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		p.Args = strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00")
	}
	return p, true
}

// running reports whether the process exists and is not a zombie.
func (p wkProc) running() bool { return p.State != 'Z' && p.State != 'X' }

// wkAllProcs lists every process.
func wkAllProcs() []wkProc {
	ents, _ := os.ReadDir("/proc")
	var out []wkProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := wkReadProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// wkChildren lists the running children of pid.
func wkChildren(pid int) []wkProc {
	var out []wkProc
	for _, p := range wkAllProcs() {
		if p.PPID == pid && p.running() {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].PID < out[j].PID })
	return out
}

// wkWorkerProcs lists the running `zenconn worker` processes of server s (whoever
// their parent is), recognised by their --data argument.
func wkWorkerProcs(s *serverProc) []wkProc {
	var out []wkProc
	for _, p := range wkAllProcs() {
		if !p.running() || len(p.Args) < 2 || p.Args[1] != "worker" {
			continue
		}
		for i := 0; i+1 < len(p.Args); i++ {
			if p.Args[i] == "--data" && p.Args[i+1] == s.Data {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func (s *serverProc) pid() int { return s.cmd.Process.Pid }

// ---------------------------------------------------------------------------
// Tests.

func TestWorkersTwoProcesses(t *testing.T) {
	t.Parallel()
	before := time.Now()
	s := wkStart(t)
	ws := wkWorkers(t, s)

	// Two worker processes, children of the agent, running this binary's worker
	// subcommand; /api/workers names exactly them.
	kids := wkChildren(s.pid())
	if len(kids) != wkWorkerCount {
		t.Fatalf("agent %d has %d running children %+v, want %d workers", s.pid(), len(kids), kids, wkWorkerCount)
	}
	byPID := map[int]wkProc{}
	for _, k := range kids {
		if len(k.Args) < 2 || k.Args[1] != "worker" {
			t.Errorf("child %d runs %q, want `%s worker …`", k.PID, k.Args, zenconnBin)
		}
		byPID[k.PID] = k
	}
	if got := wkWorkerProcs(s); len(got) != wkWorkerCount {
		t.Errorf("%d worker processes with --data %s, want %d: %+v", len(got), s.Data, wkWorkerCount, got)
	}
	for _, w := range ws {
		k, ok := byPID[w.PID]
		if !ok {
			t.Errorf("GET /api/workers: worker %d pid %d is not a child of the agent (children %+v)", w.ID, w.PID, kids)
			continue
		}
		delete(byPID, w.PID) // two entries with one pid would leave a child unnamed
		if id := argAfter(k.Args, "--worker-id"); id != strconv.Itoa(w.ID) {
			t.Errorf("worker %d (pid %d) was started with --worker-id %q", w.ID, w.PID, id)
		}
		if !w.Up || w.Restarts != 0 || w.Connections != 0 || w.Subscriptions != 0 {
			t.Errorf("GET /api/workers: %+v, want up, 0 restarts, no connections or subscriptions", w)
		}
		if w.Started.Before(before.Add(-time.Second)) || w.Started.After(time.Now()) {
			t.Errorf("GET /api/workers: worker %d started %v, want between %v and now", w.ID, w.Started, before)
		}
	}
	if len(byPID) != 0 {
		t.Errorf("children %+v are not named by GET /api/workers %+v", byPID, ws)
	}

	// The exact shape of a worker object.
	_, _, raw := apiCall(t, s, "GET", "/api/workers", ibAPIKey, "")
	var shape map[string][]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &shape); err != nil || len(shape["workers"]) != wkWorkerCount {
		t.Fatalf("GET /api/workers body %s: want {\"workers\":[%d objects]}", raw, wkWorkerCount)
	}
	for _, w := range shape["workers"] {
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if got := strings.Join(keys, ","); got != "connections,id,messages_in,messages_out,pid,restarts,started,subscriptions,up" {
			t.Errorf("worker object has keys %s, want id, pid, started, restarts, up, connections, subscriptions, messages_in, messages_out", got)
		}
	}
	// The endpoint is part of the API: key required, GET only.
	apiFails(t, s, "GET", "/api/workers", "", "", http.StatusUnauthorized)
	hdr := apiFails(t, s, "POST", "/api/workers", ibAPIKey, "{}", http.StatusMethodNotAllowed)
	if got := hdr.Get("Allow"); !strings.Contains(got, "GET") {
		t.Errorf("POST /api/workers: Allow %q, want GET", got)
	}
	s.assertServing(t)
}

func argAfter(args []string, flag string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

// TestWorkersPubSubAcross: 200 clients on two workers; sequences from publishers on
// both, a broadcast, the API. Not parallel: it needs the whole machine.
func TestWorkersPubSubAcross(t *testing.T) {
	const (
		nClients  = 200
		nPubsEach = 3 // publishers per worker
		nMsgs     = 25
		channel   = "across"
	)
	s := wkStart(t, "--jwt-secret", ibSecret)
	bcTok := ibToken(t, "boss", ibGrants{Broadcast: true})
	start := time.Now()
	clients := wkDialMany(t, s, nClients, channel, func(i int) string {
		if i == 0 {
			return bcTok
		}
		return ""
	})
	t.Logf("%d clients connected and subscribed in %v", nClients, time.Since(start).Round(time.Millisecond))
	boss := clients[0]

	// Every client is in the node's table with its worker, both workers have some;
	// every subscription is counted (the acks mean they are live node-wide).
	groups := wkGroup(t, s, clients)
	for w, g := range groups {
		if len(g) < nPubsEach+2 {
			t.Fatalf("worker %d holds %d of %d clients, want at least %d on each", w, len(g), nClients, nPubsEach+2)
		}
	}
	t.Logf("clients per worker: %d, %d", len(groups[0]), len(groups[1]))
	table := wkConns(t, s)
	if len(table) != nClients {
		t.Fatalf("GET /api/connections lists %d connections, want %d", len(table), nClients)
	}
	for _, c := range clients {
		e := table[c.ID]
		wantUser := ""
		if c == boss {
			wantUser = "boss"
		}
		if e.User != wantUser || e.Protocol != "json" || !reflect.DeepEqual(e.Channels, []string{channel}) {
			t.Errorf("GET /api/connections: %+v, want user %q protocol json channels [%s]", e, wantUser, channel)
		}
	}
	if got := apiChannels(t, s); !reflect.DeepEqual(got, map[string]int{channel: nClients}) {
		t.Fatalf("GET /api/channels = %v, want %s: %d", got, channel, nClients)
	}
	for _, w := range wkWorkers(t, s) {
		if w.Connections != len(groups[w.ID]) || w.Subscriptions != len(groups[w.ID]) {
			t.Errorf("GET /api/workers: worker %d has %d connections, %d subscriptions; the table places %d subscribed clients on it",
				w.ID, w.Connections, w.Subscriptions, len(groups[w.ID]))
		}
	}

	// Publishers on both workers (not the broadcaster) publish sequences at once.
	var pubs []*ibConn
	pubIdx := map[string]int{}
	isPub := map[*ibConn]bool{}
	for _, g := range groups {
		n := 0
		for _, c := range g {
			if c != boss && n < nPubsEach {
				pubIdx[c.ID] = len(pubs)
				pubs = append(pubs, c)
				isPub[c] = true
				n++
			}
		}
	}
	start = time.Now()
	wkParallel(t, "publishing", pubs, func(k int, c *ibConn) error {
		for i := 1; i <= nMsgs; i++ {
			if err := wkWrite(c, fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":{"p":%d,"seq":%d}}`, i, channel, k, i)); err != nil {
				return err
			}
		}
		return nil
	})
	// Every client reads len(pubs)×nMsgs messages: a subscriber every publisher's
	// sequence in order, a publisher its nMsgs acks in order and the others' sequences
	// (never its own messages).
	total := len(pubs) * nMsgs
	wkParallel(t, "receiving the sequences", clients, func(_ int, c *ibConn) error {
		next := make([]int, len(pubs))
		acks := 0
		for n := 0; n < total; n++ {
			m, err := wkReadJSON(c, 15*time.Second)
			if err != nil {
				return fmt.Errorf("after %d of %d messages: %w", n, total, err)
			}
			switch m.Op {
			case "ack":
				if !isPub[c] || string(m.ID) != strconv.Itoa(acks+1) {
					return fmt.Errorf("conn %s (publisher %v): got %s, want ack id %d", c.ID, isPub[c], m, acks+1)
				}
				acks++
			case "message":
				k, ok := pubIdx[m.From]
				if !ok || m.Channel != channel {
					return fmt.Errorf("conn %s: got %s, want a message on %s from a publisher", c.ID, m, channel)
				}
				if m.From == c.ID {
					return fmt.Errorf("conn %s: got its own message back: %s", c.ID, m)
				}
				var d wkSeq
				if err := json.Unmarshal(m.Data, &d); err != nil || d.P != k || d.Seq != next[k]+1 {
					return fmt.Errorf("conn %s: got %s, want seq %d of publisher %d (%s) next", c.ID, m, next[k]+1, k, m.From)
				}
				next[k]++
			default:
				return fmt.Errorf("conn %s: got %s, want a message or an ack", c.ID, m)
			}
		}
		return nil
	})
	t.Logf("%d publishers × %d messages to %d subscribers in %v", len(pubs), nMsgs, nClients, time.Since(start).Round(time.Millisecond))

	// A granted broadcast reaches every other client on both workers, not the sender.
	boss.ok(2, `{"id":2,"op":"broadcast","data":{"text":"all workers"}}`)
	wkExpectAll(t, "broadcast", clients[1:], "", boss.ID, `{"text":"all workers"}`)

	// The API publishes to clients on both workers, from "api".
	apiOK(t, s, "POST", "/api/publish", fmt.Sprintf(`{"channel":%q,"data":{"via":"api"}}`, channel), nil)
	wkExpectAll(t, "API publish", clients, channel, "api", `{"via":"api"}`)
	wkAllQuiet(t, clients, 150*time.Millisecond)

	// Per-worker message counters: data messages received from the worker's clients
	// exactly; messages queued to them at least every ack and delivery (at most those
	// plus the welcomes).
	var wantIn, outLow, outHigh [wkWorkerCount]uint64
	for w, g := range groups {
		for _, c := range g {
			wantIn[w]++ // subscribe
			if isPub[c] {
				wantIn[w] += nMsgs
			}
			if c == boss {
				wantIn[w]++
			}
			// sub ack + sequences/acks + broadcast (ack or message) + API message
			outLow[w] += uint64(1 + total + 1 + 1)
			outHigh[w] += uint64(1 + total + 1 + 1 + 1)
		}
	}
	var last []wkInfo
	eventually(t, 4*time.Second, func() string {
		last = wkWorkers(t, s)
		for _, w := range last {
			if w.MessagesIn != wantIn[w.ID] || w.MessagesOut < outLow[w.ID] {
				return fmt.Sprintf("GET /api/workers %+v, want messages_in %v and messages_out at least %v", last, wantIn, outLow)
			}
		}
		return ""
	})
	for _, w := range last {
		if w.MessagesOut > outHigh[w.ID] {
			t.Errorf("worker %d: messages_out %d, more than the %d messages its clients can have been sent", w.ID, w.MessagesOut, outHigh[w.ID])
		}
	}

	// /api/disconnect closes a client on each worker with 4100.
	var victims []*ibConn
	for _, g := range groups {
		for _, c := range g {
			if c != boss && !isPub[c] {
				victims = append(victims, c)
				break
			}
		}
	}
	for _, v := range victims {
		var resp map[string]any
		apiOK(t, s, "POST", "/api/disconnect", fmt.Sprintf(`{"conn":%q}`, v.ID), &resp)
		if !reflect.DeepEqual(resp, map[string]any{"disconnected": true}) {
			t.Errorf("POST /api/disconnect answered %v, want {\"disconnected\":true}", resp)
		}
	}
	for _, v := range victims {
		if seen := v.expectCloseCode(4100, defaultTimeout); len(seen) != 0 {
			t.Errorf("%s got %s before the close", v.name, describeIBs(seen))
		}
	}
	// The clients got their close frame and the server half-closed; like the
	// gorilla default they leave closing the TCP connection to the server (which
	// does so after a 2 s grace). A single-process server lists only open WebSockets,
	// so a disconnected client leaves /api/connections at once (and a second
	// disconnect is 404). The node's table must follow promptly too.
	closed := time.Now()
	listed := func() []string {
		table := wkConns(t, s)
		var ids []string
		for _, v := range victims {
			if _, ok := table[v.ID]; ok {
				ids = append(ids, v.ID)
			}
		}
		return ids
	}
	for ids := listed(); len(ids) > 0; ids = listed() {
		if time.Since(closed) > 5*time.Second {
			t.Fatalf("GET /api/connections still lists %v 5 s after their close 4100", ids)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := time.Since(closed); d > time.Second {
		t.Errorf("GET /api/connections kept listing the disconnected clients for %v after their close 4100 "+
			"(single-process mode drops them at once; /api/disconnect of them answers 200 meanwhile)", d.Round(time.Millisecond))
	}
	for _, v := range victims {
		apiFails(t, s, "POST", "/api/disconnect", ibAPIKey, fmt.Sprintf(`{"conn":%q}`, v.ID), http.StatusNotFound)
	}
	eventually(t, 4*time.Second, func() string {
		if n := len(wkConns(t, s)); n != nClients-len(victims) {
			return fmt.Sprintf("GET /api/connections lists %d connections, want %d", n, nClients-len(victims))
		}
		// Subscriptions of a closing connection count until it is gone, as in
		// single-process mode (up to the 2 s grace).
		if ch := apiChannels(t, s); ch[channel] != nClients-len(victims) {
			return fmt.Sprintf("GET /api/channels = %v, want %s: %d", ch, channel, nClients-len(victims))
		}
		return ""
	})
}

// TestWorkersKill9: a worker killed with SIGKILL is replaced within 2 s while the
// other one serves on. Not parallel: the 2 s bound is measured from the test side,
// which other tests' load would blur.
func TestWorkersKill9(t *testing.T) {
	const channel = "k"
	s := wkStart(t)
	clients := wkDialMany(t, s, 40, channel, nil)
	groups := wkGroup(t, s, clients)
	const victim, survivor = 0, 1
	if len(groups[victim]) < 1 || len(groups[survivor]) < 3 {
		t.Fatalf("clients per worker %d, %d: want some on both", len(groups[0]), len(groups[1]))
	}
	before := wkWorkers(t, s)
	oldPID, survivorPID := before[victim].PID, before[survivor].PID
	if p, ok := wkReadProc(oldPID); !ok || p.PPID != s.pid() || !p.running() {
		t.Fatalf("worker %d pid %d: %+v (exists %v), want a running child of the agent %d", victim, oldPID, p, ok, s.pid())
	}
	oldIDs := map[string]bool{}
	for _, c := range groups[victim] {
		oldIDs[c.ID] = true
	}

	// A publisher on the surviving worker keeps publishing to its neighbours, through
	// the kill and after it.
	pub, subs := groups[survivor][0], groups[survivor][1:]
	var sent atomic.Int64
	stop := make(chan struct{})
	pubDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(3 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			select {
			case <-stop:
				pubDone <- nil
				return
			case <-tick.C:
			}
			if err := wkWrite(pub, fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":{"p":0,"seq":%d}}`, seq, channel, seq)); err != nil {
				pubDone <- err
				return
			}
			sent.Store(int64(seq))
		}
	}()
	var stopOnce sync.Once
	stopPub := func() error {
		var err error
		stopOnce.Do(func() { close(stop); err = <-pubDone })
		return err
	}
	t.Cleanup(func() { _ = stopPub() })
	eventually(t, 3*time.Second, func() string {
		if n := sent.Load(); n < 20 {
			return fmt.Sprintf("%d messages published", n)
		}
		return ""
	})

	killed := time.Now()
	if err := syscall.Kill(oldPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", oldPID, err)
	}
	sentAtKill := sent.Load()

	// A replacement is up within 2 s; the survivor is untouched.
	var after []wkInfo
	eventually(t, 2*time.Second-time.Since(killed), func() string {
		// A connection the kernel had queued on the killed worker's listening socket
		// is reset with it (SO_REUSEPORT); such a request is retried.
		var err error
		if after, err = wkWorkersE(s); err != nil {
			return err.Error()
		}
		v := after[victim]
		if v.PID == oldPID || v.PID <= 0 || !v.Up || v.Restarts != 1 {
			return fmt.Sprintf("GET /api/workers %+v, want worker %d with a new pid, up, 1 restart", after, victim)
		}
		return ""
	})
	t.Logf("replacement worker pid %d started %v and seen up %v after the kill (%d messages published by then, %d at the kill)",
		after[victim].PID, after[victim].Started.Sub(killed).Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), sent.Load(), sentAtKill)
	if w := after[survivor]; w.PID != survivorPID || !w.Up || w.Restarts != 0 {
		t.Errorf("surviving worker: %+v, want pid %d, up, 0 restarts", w, survivorPID)
	}
	if p, ok := wkReadProc(after[victim].PID); !ok || p.PPID != s.pid() || !p.running() || len(p.Args) < 2 || p.Args[1] != "worker" {
		t.Errorf("replacement pid %d: %+v (exists %v), want a running `zenconn worker` child of the agent", after[victim].PID, p, ok)
	}
	if p, ok := wkReadProc(oldPID); ok && p.running() {
		t.Errorf("killed worker pid %d still running: %+v", oldPID, p)
	}

	// The killed worker's clients are gone; the agent forgets them and their
	// subscriptions.
	wkParallel(t, "the killed worker's clients", groups[victim], func(_ int, c *ibConn) error {
		err := wkEnds(c, 3*time.Second)
		if code := closeCode(err); code != int(closeAbnormal) {
			return fmt.Errorf("conn %s: ended with %v (code %d), want the connection cut (1006)", c.ID, err, code)
		}
		return nil
	})
	eventually(t, 2*time.Second, func() string {
		table := wkConns(t, s)
		for id := range oldIDs {
			if _, ok := table[id]; ok {
				return fmt.Sprintf("GET /api/connections still lists %s of the killed worker", id)
			}
		}
		if len(table) != len(groups[survivor]) {
			return fmt.Sprintf("GET /api/connections lists %d connections, want the %d of the survivor", len(table), len(groups[survivor]))
		}
		if ch := apiChannels(t, s); !reflect.DeepEqual(ch, map[string]int{channel: len(groups[survivor])}) {
			return fmt.Sprintf("GET /api/channels = %v, want %s: %d", ch, channel, len(groups[survivor]))
		}
		ws := wkWorkers(t, s)
		if ws[victim].Connections != 0 || ws[victim].Subscriptions != 0 || ws[survivor].Connections != len(groups[survivor]) {
			return fmt.Sprintf("GET /api/workers %+v, want no connections on the replacement, %d on the survivor", ws, len(groups[survivor]))
		}
		return ""
	})

	// New clients reach the replacement and work there.
	var fresh *ibConn
	var freshPre []ibMsg // messages that came before its subscribe ack
	for try := 0; fresh == nil && try < 20; try++ {
		batch, pre := wkDial(t, s, 4, channel, nil, true)
		table := wkConns(t, s)
		for k, c := range batch {
			e, ok := table[c.ID]
			if !ok {
				t.Fatalf("GET /api/connections does not list new subscriber %s", c.ID)
			}
			if *e.Worker == victim && fresh == nil {
				fresh, freshPre = c, pre[k]
				continue
			}
			c.c.Close()
		}
	}
	if fresh == nil {
		t.Fatalf("80 new connections, none served by the replacement worker")
	}
	sentAtAck := sent.Load()
	if oldIDs[fresh.ID] {
		t.Errorf("the replacement reuses connection id %s of the killed worker", fresh.ID)
	}
	eventually(t, 3*time.Second, func() string {
		if n := sent.Load(); n < sentAtAck+30 {
			return fmt.Sprintf("%d messages published", n)
		}
		return ""
	})
	if err := stopPub(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	n := int(sent.Load())
	t.Logf("%d messages published in all", n)

	// Nothing lost on the surviving worker: the publisher has every ack, its
	// neighbours every message, in order.
	wkParallel(t, "the survivor's clients", append([]*ibConn{pub}, subs...), func(_ int, c *ibConn) error {
		for i := 1; i <= n; i++ {
			m, err := wkReadJSON(c, 10*time.Second)
			if err != nil {
				return fmt.Errorf("waiting for %d of %d: %w", i, n, err)
			}
			if c == pub {
				if m.Op != "ack" || string(m.ID) != strconv.Itoa(i) {
					return fmt.Errorf("publisher %s: got %s, want ack id %d", c.ID, m, i)
				}
				continue
			}
			var d wkSeq
			if m.Op != "message" || m.Channel != channel || m.From != pub.ID || json.Unmarshal(m.Data, &d) != nil || d.Seq != i {
				return fmt.Errorf("conn %s: got %s, want seq %d from %s", c.ID, m, i, pub.ID)
			}
		}
		return nil
	})
	// The new client, subscribed through the replacement, got the publisher's messages
	// across workers: a gapless run ending with the last, from no later than the first
	// published after its ack.
	first, prev := 0, 0
	for prev < n {
		var m ibMsg
		if len(freshPre) > 0 {
			m, freshPre = freshPre[0], freshPre[1:]
		} else {
			m = fresh.readJSON()
		}
		var d wkSeq
		if m.Op != "message" || m.Channel != channel || m.From != pub.ID || json.Unmarshal(m.Data, &d) != nil {
			t.Fatalf("%s: got %s, want a message on %s from %s", fresh.name, m, channel, pub.ID)
		}
		if prev != 0 && d.Seq != prev+1 {
			t.Fatalf("%s: seq %d after %d: messages lost across workers after the restart", fresh.name, d.Seq, prev)
		}
		if prev == 0 {
			first = d.Seq
		}
		prev = d.Seq
	}
	if first > int(sentAtAck)+1 {
		t.Fatalf("%s: first message seq %d, but messages %d..%d were published after its subscribe ack", fresh.name, first, sentAtAck+1, first-1)
	}

	// Pub/sub across the two workers, both ways, and the API, once more.
	survivors := append([]*ibConn{pub}, subs...)
	fresh.pub(2, channel, `"from the replacement"`)
	wkExpectAll(t, "replacement → survivor", survivors, channel, fresh.ID, `"from the replacement"`)
	subs[0].pub(2, channel, `"from the survivor"`)
	wkExpectAll(t, "survivor → replacement", append([]*ibConn{fresh, pub}, subs[1:]...), channel, subs[0].ID, `"from the survivor"`)
	apiOK(t, s, "POST", "/api/publish", fmt.Sprintf(`{"channel":%q,"data":"api after the restart"}`, channel), nil)
	everyone := append([]*ibConn{fresh}, survivors...)
	wkExpectAll(t, "API publish after the restart", everyone, channel, "api", `"api after the restart"`)
	wkAllQuiet(t, everyone, 100*time.Millisecond)

	// The agent lived through it.
	if s.Exited() {
		t.Fatalf("the agent exited after a worker was killed")
	}
	s.assertServing(t)
}

func TestWorkersSIGTERM(t *testing.T) {
	t.Parallel()
	s := wkStart(t)
	clients := wkDialMany(t, s, 16, "term", nil)
	groups := wkGroup(t, s, clients)
	if len(groups[0]) == 0 || len(groups[1]) == 0 {
		t.Fatalf("clients per worker %d, %d: want some on both", len(groups[0]), len(groups[1]))
	}
	ws := wkWorkers(t, s)
	kids := wkChildren(s.pid())
	for _, w := range ws {
		found := false
		for _, k := range kids {
			found = found || k.PID == w.PID
		}
		if !found {
			t.Fatalf("worker %d pid %d is not among the agent's children %+v", w.ID, w.PID, kids)
		}
	}

	start := time.Now()
	s.Signal(syscall.SIGTERM)
	wkParallel(t, "clients at SIGTERM", clients, func(_ int, c *ibConn) error {
		err := wkEnds(c, 5*time.Second)
		if code := closeCode(err); code != 1001 {
			return fmt.Errorf("conn %s: ended with %v (code %d), want close 1001", c.ID, err, code)
		}
		return nil
	})
	exited, err := s.WaitExit(5*time.Second - time.Since(start))
	if !exited {
		t.Fatalf("agent still running 5 s after SIGTERM; workers %+v", wkWorkerProcs(s))
	}
	if err != nil {
		t.Fatalf("agent exit after SIGTERM: %v, want status 0", err)
	}
	t.Logf("agent exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	// The agent drains and waits for its workers: none is left when it is gone.
	for _, w := range ws {
		if p, ok := wkReadProc(w.PID); ok && p.running() {
			t.Errorf("worker %d pid %d still running after the agent exited: %+v", w.ID, w.PID, p)
		}
	}
	if left := wkWorkerProcs(s); len(left) != 0 {
		t.Errorf("worker processes left after the agent exited: %+v", left)
	}
}

// TestWorkersAgentKilled: workers die with their agent (PR_SET_PDEATHSIG), so an
// agent killed outright leaves no worker behind to hold the port.
func TestWorkersAgentKilled(t *testing.T) {
	t.Parallel()
	s := wkStart(t)
	ws := wkWorkers(t, s)
	if got := wkWorkerProcs(s); len(got) != wkWorkerCount {
		t.Fatalf("%d worker processes before the kill, want %d: %+v", len(got), wkWorkerCount, got)
	}
	s.Signal(syscall.SIGKILL)
	if exited, _ := s.WaitExit(5 * time.Second); !exited {
		t.Fatalf("agent still running after SIGKILL")
	}
	eventually(t, 2*time.Second, func() string {
		for _, w := range ws {
			if p, ok := wkReadProc(w.PID); ok && p.running() {
				return fmt.Sprintf("worker %d pid %d still running after its agent was killed: %+v", w.ID, w.PID, p)
			}
		}
		if left := wkWorkerProcs(s); len(left) != 0 {
			return fmt.Sprintf("worker processes left after the agent was killed: %+v", left)
		}
		return ""
	})
}

func TestWorkersAccessLog(t *testing.T) {
	t.Parallel()
	s := wkStart(t)
	ua := "zenconn-e2e/workers " + strings.Repeat("0123456789abcdef", 64) // long lines
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	// WebSocket handshakes whose worker is known (through the API), and plain
	// requests on fresh connections (spread by the kernel), all at once.
	const nWS, nHTTP = 24, 200
	wsTag := func(i int) string { return fmt.Sprintf("/ws?wk-before=%d", i) }
	var clients []*ibConn
	tagOf := map[string]int{} // conn id → i of its wk-before=i handshake
	var dialErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range nWS {
			c, _, err := ibDialE(s, ibDialOpts{Query: fmt.Sprintf("wk-before=%d", i), Header: http.Header{"User-Agent": {ua}}})
			if err != nil {
				dialErr = err
				return
			}
			c.t, c.name = t, "conn "+c.ID
			clients = append(clients, c)
			tagOf[c.ID] = i
			if err := wkRequest(c, 1, `{"id":1,"op":"subscribe","channel":"log"}`, defaultTimeout); err != nil {
				dialErr = err
				return
			}
		}
	}()
	httpErrs := make([]error, nHTTP)
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				req, _ := http.NewRequest("GET", s.URL(fmt.Sprintf("/index.html?wk-get=%d", i)), nil)
				req.Header.Set("User-Agent", ua)
				resp, err := hc.Do(req)
				if err != nil {
					httpErrs[i] = err
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					httpErrs[i] = fmt.Errorf("GET %s: status %d", req.URL, resp.StatusCode)
				}
			}
		}()
	}
	for i := range nHTTP {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range clients {
			c.c.Close()
		}
	})
	if dialErr != nil {
		t.Fatal(dialErr)
	}
	if err := errors.Join(httpErrs...); err != nil {
		t.Fatal(firstErrors(httpErrs, 5))
	}
	groups := wkGroup(t, s, clients)
	if len(groups[0]) == 0 || len(groups[1]) == 0 {
		t.Fatalf("WebSocket clients per worker %d, %d: want some on both", len(groups[0]), len(groups[1]))
	}

	// One line per request, whole, in the one file, from both workers.
	want := map[string]string{} // request → status
	for i := range nWS {
		want["GET "+wsTag(i)+" HTTP/1.1"] = "101"
	}
	for i := range nHTTP {
		want[fmt.Sprintf("GET /index.html?wk-get=%d HTTP/1.1", i)] = "200"
	}
	var lines []logLine
	eventually(t, 5*time.Second, func() string {
		var err error
		lines, err = readAccessLog(s.AccessLog)
		if err != nil {
			t.Fatalf("access log with two workers writing: %v", err)
		}
		got := map[string]int{}
		for _, l := range lines {
			got[l.request]++
		}
		for req := range want {
			if got[req] == 0 {
				return fmt.Sprintf("no line for %q yet (%d lines)", req, len(lines))
			}
		}
		return ""
	})
	count := map[string]int{}
	for _, l := range lines {
		if st, ok := want[l.request]; ok {
			count[l.request]++
			if l.status != st || l.agent != ua || l.host != "127.0.0.1" {
				t.Errorf("line %.200q: want status %s, host 127.0.0.1 and the long User-Agent", l.raw, st)
			}
		}
	}
	for req, n := range count {
		if n != 1 {
			t.Errorf("%d lines for %q, want 1", n, req)
		}
	}
	for w, g := range groups {
		for _, c := range g {
			if _, ok := count["GET "+wsTag(tagOf[c.ID])+" HTTP/1.1"]; !ok {
				t.Errorf("no line for the handshake of %s served by worker %d", c.ID, w)
			}
		}
	}

	// Rotation: SIGUSR1 to the agent makes every worker reopen the file.
	rotated := s.AccessLog + ".1"
	if err := os.Rename(s.AccessLog, rotated); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGUSR1)
	var seen [wkWorkerCount]bool
	afterWorker := map[int]int{}
	i := 0
	eventually(t, 5*time.Second, func() string {
		// One more handshake, on a fresh connection; the API says which worker took it.
		i++
		c, _, err := ibDialE(s, ibDialOpts{Query: fmt.Sprintf("wk-after=%d", i)})
		if err != nil {
			t.Fatalf("dial after SIGUSR1: %v", err)
		}
		c.t, c.name = t, "conn "+c.ID
		err = wkRequest(c, 1, `{"id":1,"op":"subscribe","channel":"log"}`, defaultTimeout)
		var w int
		if err == nil {
			e, ok := wkConns(t, s)[c.ID]
			if !ok {
				err = fmt.Errorf("GET /api/connections does not list %s", c.ID)
			} else {
				w = *e.Worker
			}
		}
		c.c.Close()
		if err != nil {
			t.Fatal(err)
		}
		lines, err := readAccessLog(s.AccessLog)
		if err != nil && !os.IsNotExist(err) {
			t.Fatalf("new access log: %v", err)
		}
		afterWorker[i] = w
		// A handshake line in the new file was written by the worker that took it.
		for _, l := range lines {
			var j int
			if _, err := fmt.Sscanf(l.request, "GET /ws?wk-after=%d HTTP/1.1", &j); err == nil {
				if wj, ok := afterWorker[j]; ok {
					seen[wj] = true
				}
			}
		}
		if !seen[0] || !seen[1] {
			return fmt.Sprintf("after SIGUSR1, new file %s has handshake lines from workers 0: %v, 1: %v (%d lines)", s.AccessLog, seen[0], seen[1], len(lines))
		}
		return ""
	})
	t.Logf("both workers write the new file after %d handshakes", i)

	// The rotated file kept everything from before, and both files hold whole lines.
	old, err := readAccessLog(rotated)
	if err != nil {
		t.Fatal(err)
	}
	oldReqs := map[string]bool{}
	for _, l := range old {
		oldReqs[l.request] = true
	}
	for req := range want {
		if !oldReqs[req] {
			t.Errorf("the rotated file lost %q", req)
		}
	}
	if _, err := readAccessLog(s.AccessLog); err != nil {
		t.Fatal(err)
	}
	if s.Exited() {
		t.Fatalf("agent exited on SIGUSR1")
	}
	for _, w := range wkWorkers(t, s) {
		if !w.Up || w.Restarts != 0 {
			t.Errorf("after SIGUSR1: worker %+v, want up with 0 restarts", w)
		}
	}
	s.assertServing(t)
}
