package e2e

// A worker that stops reading its ring from the agent (SIGSTOP) must not hold up the
// node: the agent keeps reading the other worker, committing the audit log and
// answering durable publishes, and after --worker-stall-timeout it kills the stopped
// worker and restarts it, with an error line in the log and
// zenconn_node_worker_failures_total{reason="stalled"} on /metrics.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Timing of TestWorkersStalledWorkerIsReplaced. The ack bound is loose for a shared
// 2-core machine; an agent that waits on the stopped worker's ring falls seconds behind.
const (
	stStallTimeout = 2 * time.Second
	stAckBound     = 3 * time.Second        // publish → durable ack, at any time
	stPublishEvery = 5 * time.Millisecond   // offered rate: at most 200 messages/s…
	stPayload      = 16 << 10               // …of 16 KiB: the 4 MiB ring fills in seconds, its 16 MiB queue does not
	stRunFor       = 25 * time.Second       // the publisher gives up after this
	stWindow       = 64                     // publishes awaiting their ack, at most
	stAfterRestart = 500 * time.Millisecond // publishing goes on this long after the restart
)

func TestWorkersStalledWorkerIsReplaced(t *testing.T) {
	const channel = "st"
	s := wkStart(t, "--audit-sync", "always", "--worker-stall-timeout", stStallTimeout.String())
	subs := wkDialMany(t, s, 24, channel, nil)
	groups := wkGroup(t, s, subs)
	victim, survivor := 0, 1
	if len(groups[victim]) < 1 || len(groups[survivor]) < 2 {
		victim, survivor = 1, 0
	}
	if len(groups[victim]) < 1 || len(groups[survivor]) < 2 {
		t.Fatalf("subscribers per worker %d, %d: want some on both", len(groups[0]), len(groups[1]))
	}
	// The publisher, not subscribed, on the survivor.
	cands := wkDialMany(t, s, 8, "", nil)
	var pub *ibConn
	for _, c := range wkGroup(t, s, cands)[survivor] {
		pub = c
		break
	}
	if pub == nil {
		t.Fatalf("none of %d clients landed on worker %d", len(cands), survivor)
	}
	before := wkWorkers(t, s)
	oldPID, survivorPID := before[victim].PID, before[survivor].PID

	// The survivor's subscribers read everything, in order.
	var received [wkWorkerCount * 64]atomic.Int64
	readErrs := make([]error, len(groups[survivor])) // under errMu
	var errMu sync.Mutex
	readErr := func(i int) error {
		errMu.Lock()
		defer errMu.Unlock()
		return readErrs[i]
	}
	readStop := make(chan struct{})
	var readers sync.WaitGroup
	for i, c := range groups[survivor] {
		readers.Add(1)
		go func() {
			defer readers.Done()
			err := stReadInOrder(c, channel, &received[i], readStop)
			errMu.Lock()
			readErrs[i] = err
			errMu.Unlock()
		}()
	}
	stopReaders := sync.OnceFunc(func() { close(readStop); readers.Wait() })
	t.Cleanup(stopReaders)

	if err := syscall.Kill(oldPID, syscall.SIGSTOP); err != nil {
		t.Fatalf("kill -STOP %d: %v", oldPID, err)
	}
	stopped := time.Now()
	t.Cleanup(func() { _ = syscall.Kill(oldPID, syscall.SIGCONT) })
	res := stPublish(pub, channel, oldPID)
	t.Logf("%d messages published and acked; slowest ack %v; the stopped worker was gone %v after SIGSTOP",
		res.acked, res.slowest.Round(time.Millisecond), res.gone.Round(time.Millisecond))
	if res.err != nil {
		t.Fatalf("publishing while worker %d is stopped: %v", victim, res.err)
	}
	if res.slowest > stAckBound {
		t.Errorf("a durable publish on worker %d waited %v for its ack (bound %v): the stopped worker held up the node",
			survivor, res.slowest.Round(time.Millisecond), stAckBound)
	}
	if res.gone == 0 {
		t.Fatalf("worker %d (pid %d) still exists %v after SIGSTOP, with a stall timeout of %v", victim, oldPID, time.Since(stopped), stStallTimeout)
	}
	if res.gone < stStallTimeout {
		t.Errorf("worker %d was killed %v after SIGSTOP, before the stall timeout %v", victim, res.gone, stStallTimeout)
	}

	// Every message reached the survivor's subscribers.
	eventually(t, 10*time.Second, func() string {
		for i := range groups[survivor] {
			if n, err := received[i].Load(), readErr(i); n != int64(res.acked) || err != nil {
				return fmt.Sprintf("subscriber %d on worker %d got %d of %d messages (%v)", i, survivor, n, res.acked, err)
			}
		}
		return ""
	})
	stopReaders()

	// The stopped worker's clients were cut like a crashed worker's.
	wkParallel(t, "the stopped worker's clients", groups[victim], func(_ int, c *ibConn) error {
		var err error
		for err == nil { // messages queued before the SIGSTOP
			_, err = c.nextE(5 * time.Second)
		}
		if code := closeCode(err); errors.Is(err, errIBTimeout) || code != int(closeAbnormal) {
			return fmt.Errorf("conn %s: ended with %v (code %d), want the connection cut (1006)", c.ID, err, code)
		}
		return nil
	})

	// Replaced, counted, logged.
	eventually(t, 5*time.Second, func() string {
		ws, err := wkWorkersE(s)
		if err != nil {
			return err.Error()
		}
		if v := ws[victim]; v.PID == oldPID || !v.Up || v.Restarts != 1 || v.Connections != 0 {
			return fmt.Sprintf("GET /api/workers %+v, want worker %d with a new pid, up, 1 restart, no connections", ws, victim)
		}
		if w := ws[survivor]; w.PID != survivorPID || w.Restarts != 0 {
			return fmt.Sprintf("GET /api/workers %+v, want worker %d untouched (pid %d)", ws, survivor, survivorPID)
		}
		return ""
	})
	eventually(t, 5*time.Second, func() string {
		text, err := stScrape(s)
		if err != nil {
			return err.Error()
		}
		for w := range wkWorkerCount {
			want := 0
			if w == victim {
				want = 1
			}
			sample := fmt.Sprintf(`zenconn_node_worker_failures_total{worker="%d",reason="stalled"} %d`, w, want)
			if !strings.Contains(text, "\n"+sample+"\n") {
				return fmt.Sprintf("/metrics has no line %s:\n%s", sample, grepLines(text, "zenconn_node_worker_failures_total"))
			}
		}
		return ""
	})
	logRE := regexp.MustCompile(`level=ERROR msg="worker failed: killing it" worker=` + strconv.Itoa(victim) +
		` pid=` + strconv.Itoa(oldPID) + ` reason=stalled`)
	if !logRE.MatchString(s.Logs()) {
		t.Errorf("no log line matching %s:\n%s", logRE, grepLines(s.Logs(), "worker"))
	}

	// Their sessions ended with 1006, as for a crash.
	var sessions struct {
		Sessions []struct {
			Conn      string `json:"conn"`
			CloseCode *int   `json:"close_code"`
		} `json:"sessions"`
	}
	apiOK(t, s, "GET", "/api/sessions?active=false&limit=1000", "", &sessions)
	ended := map[string]int{}
	for _, se := range sessions.Sessions {
		if se.CloseCode != nil {
			ended[se.Conn] = *se.CloseCode
		}
	}
	for _, c := range groups[victim] {
		if code, ok := ended[c.ID]; !ok || code != int(closeAbnormal) {
			t.Errorf("session of %s on the stopped worker: ended %v with %d, want ended with 1006", c.ID, ok, code)
		}
	}

	// The audit log has every acknowledged publish (in pages bounded in
	// bytes: the cursor continues).
	listed, cursor := 0, ""
	for {
		var page struct {
			Records []json.RawMessage `json:"records"`
			Next    string            `json:"next"`
		}
		apiOK(t, s, "GET", fmt.Sprintf("/api/audit?op=publish&channel=%s&limit=1000&cursor=%s", channel, cursor), "", &page)
		listed += len(page.Records)
		if page.Next == "" || listed >= 1000 {
			break
		}
		cursor = url.QueryEscape(page.Next)
	}
	if want := min(res.acked, 1000); min(listed, 1000) != want {
		t.Errorf("GET /api/audit lists %d publishes on %s, want %d", listed, channel, want)
	}
}

// stResult is what stPublish saw.
type stResult struct {
	acked   int
	slowest time.Duration // longest wait of a publish for its ack
	gone    time.Duration // from the start to the stopped worker's end; 0: never
	err     error
}

// stPublish publishes on channel at stPublishEvery with at most stWindow acks awaited,
// until stAfterRestart after process pid is gone (or stRunFor), then waits for the
// last acks.
func stPublish(c *ibConn, channel string, pid int) stResult {
	var res stResult
	start := time.Now()
	data := strconv.Quote(strings.Repeat("x", stPayload))
	var mu sync.Mutex
	sentAt := map[int]time.Time{}
	window := make(chan struct{}, stWindow)
	acks := make(chan error, 1)
	sent := 0
	go func() { acks <- stReadAcks(c, &mu, sentAt, window, &res) }()
	tick := time.NewTicker(stPublishEvery)
	defer tick.Stop()
	for time.Since(start) < stRunFor {
		<-tick.C
		if p, ok := wkReadProc(pid); res.gone == 0 && (!ok || !p.running()) {
			res.gone = time.Since(start)
		}
		if res.gone > 0 && time.Since(start) > res.gone+stAfterRestart {
			break
		}
		select {
		case window <- struct{}{}:
		case err := <-acks:
			res.err = err
			return res
		}
		sent++
		mu.Lock()
		sentAt[sent] = time.Now()
		mu.Unlock()
		msg := fmt.Sprintf(`{"id":%d,"op":"publish","channel":%q,"data":{"seq":%d,"pad":%s}}`, sent, channel, sent, data)
		if err := wkWrite(c, msg); err != nil {
			res.err = err
			return res
		}
	}
	// Wait for the acks still awaited.
	for range stWindow {
		select {
		case window <- struct{}{}:
		case err := <-acks:
			res.err = err
			return res
		case <-time.After(stRunFor):
			res.err = fmt.Errorf("%d publishes never acked", stWindow)
			return res
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if res.acked != sent {
		res.err = fmt.Errorf("%d publishes acked, %d sent", res.acked, sent)
	}
	return res
}

// stReadAcks reads the publisher's acks, in order, freeing a window slot for each.
func stReadAcks(c *ibConn, mu *sync.Mutex, sentAt map[int]time.Time, window chan struct{}, res *stResult) error {
	for next := 1; ; next++ {
		m, err := wkReadJSON(c, stRunFor)
		if err != nil {
			return err
		}
		if m.Op != "ack" || string(m.ID) != strconv.Itoa(next) {
			return fmt.Errorf("conn %s: got %s, want the ack of publish %d", c.ID, m, next)
		}
		mu.Lock()
		res.slowest = max(res.slowest, time.Since(sentAt[next]))
		delete(sentAt, next)
		res.acked = next
		mu.Unlock()
		<-window
	}
}

// stReadInOrder reads messages on channel with seq 1, 2, … into n until stop.
func stReadInOrder(c *ibConn, channel string, n *atomic.Int64, stop <-chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		f, err := c.nextE(100 * time.Millisecond)
		if err != nil {
			if errors.Is(err, errIBTimeout) {
				continue
			}
			return err
		}
		m, err := ibParseJSON(f.p)
		if err != nil {
			return fmt.Errorf("conn %s: %w", c.ID, err)
		}
		var d struct {
			Seq int64 `json:"seq"`
		}
		if m.Op != "message" || m.Channel != channel || json.Unmarshal(m.Data, &d) != nil || d.Seq != n.Load()+1 {
			return fmt.Errorf("conn %s: got %.200s after %d messages, want message %d on %s", c.ID, m, n.Load(), n.Load()+1, channel)
		}
		n.Store(d.Seq)
	}
}

// stScrape is GET /metrics, with the error of a connection reset (a request the
// kernel had queued on the killed worker's socket).
func stScrape(s *serverProc) (string, error) {
	resp, err := s.HTTP.Get(s.URL("/metrics"))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(body), nil
}

// grepLines returns the lines of text that contain sub.
func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
