package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zenconn/server/internal/leaktest"
	"github.com/zenconn/server/link"
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/shm"
	"github.com/zenconn/server/store"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// fakeWorker is an in-process worker that speaks the ring protocol
// directly: the test drives it with script and reads the agent's answers.
type fakeWorker struct {
	toAgent []*shm.Producer
	from    *shm.Consumer
}

func (w *fakeWorker) send(t *testing.T, rec []byte) {
	t.Helper()
	if err := w.toAgent[0].Write(rec, 5*time.Second); err != nil {
		t.Errorf("ring to the agent: %v", err)
	}
}

// done waits for the agent's Done record of token.
func (w *fakeWorker) done(t *testing.T, token uint64) bool {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var m nodemsg.Msg
	for time.Now().Before(deadline) {
		found, failed := false, false
		w.from.Wait(100 * time.Millisecond)
		_, _ = w.from.Read(func(rec []byte) {
			if nodemsg.Decode(rec, &m) == nil && m.Kind == nodemsg.KindDone && m.Token == token {
				found, failed = true, m.Status != 0
			}
		})
		if found {
			return !failed
		}
	}
	t.Errorf("no Done for token %d", token)
	return false
}

// runAgent starts an agent with one in-process worker whose body is
// script; it returns when script and the agent have returned.
func runAgent(t *testing.T, st *store.Store, durable bool, script func(w *fakeWorker, a *Agent) error) (*Agent, error) {
	t.Helper()
	var a *Agent
	cfg := Config{
		Workers: 1, Loops: 1, Node: "n1", Store: st, DurableAcks: durable,
		Socket: filepath.Join(t.TempDir(), "agent.sock"), RingSize: 1 << 20,
		InProcess: func(ctx context.Context, id int, rings *link.Rings) error {
			w := &fakeWorker{from: rings.FromAgent().Consumer(), toAgent: []*shm.Producer{rings.Loop(0).Producer()}}
			if err := rings.Housekeeping().Producer().Write(nodemsg.AppendReady(nil, id, 1), time.Second); err != nil {
				return err
			}
			return script(w, a)
		},
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return a, a.Run(ctx)
}

func openStore(t *testing.T, mode store.SyncMode) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{Sync: mode})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

var errScriptDone = errors.New("script done")

// TestRecordsSessionAndAudit drives one connection through open,
// subscribe, publish, refusal and close, and checks what the store holds.
func TestRecordsSessionAndAudit(t *testing.T) {
	st := openStore(t, store.SyncBatch)
	_, err := runAgent(t, st, false, func(w *fakeWorker, a *Agent) error {
		w.send(t, nodemsg.AppendOpened(nil, "c1", "alice", "127.0.0.1:5000", "curl/8", "bin", 0, 0))
		w.send(t, nodemsg.AppendSub(nil, 7, "c1", "news"))
		w.done(t, 7)
		w.send(t, nodemsg.AppendPublish(nil, 0, "news", "c1", false, []byte(`{"n":1}`)))
		w.send(t, nodemsg.AppendPublish(nil, 0, "", "c1", true, []byte{0xff}))
		w.send(t, nodemsg.AppendRefused(nil, "c1", "alice", "subscribe", "private-x", "forbidden", "", false, nil))
		w.send(t, nodemsg.AppendUser(nil, "c1", "bob"))
		w.send(t, nodemsg.AppendUnsub(nil, "c1", "news"))
		w.send(t, nodemsg.AppendClosed(nil, "c1", 1000))
		// Read through the API, which settles the rings first.
		rec := httptest.NewRecorder()
		a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/api/audit", nil))
		var page struct {
			Records []store.Record `json:"records"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
			t.Errorf("audit reply %q: %v", rec.Body.String(), err)
		}
		var ops []string
		for _, r := range page.Records {
			ops = append(ops, r.Op+"/"+r.User+"/"+r.Channel)
			if r.Node != "n1" || r.Conn != "c1" {
				t.Errorf("record %+v", r)
			}
		}
		want := "[connect/alice/ subscribe/alice/news publish/alice/news broadcast/alice/ refused/alice/private-x auth/bob/ unsubscribe/bob/news disconnect/bob/]"
		if fmt.Sprint(ops) != want {
			t.Errorf("ops\n%v, want\n%v", ops, want)
		}
		if len(page.Records) == 8 {
			if r := page.Records[3]; !r.Opaque || string(r.Data) != "\xff" {
				t.Errorf("broadcast %+v", r)
			}
			if r := page.Records[4]; r.Attempt != "subscribe" || r.Error != "forbidden" {
				t.Errorf("refusal %+v", r)
			}
			if r := page.Records[7]; r.Code != 1000 {
				t.Errorf("disconnect %+v", r)
			}
		}
		return errScriptDone
	})
	if !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
	ss, _, err := st.Sessions(store.SessionQuery{})
	if err != nil || len(ss) != 1 {
		t.Fatalf("sessions %+v, %v", ss, err)
	}
	s := ss[0]
	if s.Conn != "c1" || s.User != "bob" || s.Remote != "127.0.0.1:5000" || s.UserAgent != "curl/8" || s.Protocol != "bin" ||
		s.Active() || s.CloseCode != 1000 || fmt.Sprint(s.Channels) != "[news]" || s.Node != "n1" {
		t.Fatalf("session %+v", s)
	}
}

// TestDeadWorkerRecordsAreKept: a worker that writes publishes and dies at
// once still has every one of them audited, since the agent reads what a
// dead worker left in its ring; its open sessions end with 1006.
func TestDeadWorkerRecordsAreKept(t *testing.T) {
	st := openStore(t, store.SyncNone)
	const n = 3000
	_, err := runAgent(t, st, false, func(w *fakeWorker, _ *Agent) error {
		w.send(t, nodemsg.AppendOpened(nil, "c1", "", "127.0.0.1:1", "", "json", 0, 0))
		for i := range n {
			w.send(t, nodemsg.AppendPublish(nil, 0, "news", "c1", false, []byte(fmt.Sprint(i))))
		}
		return errScriptDone
	})
	if !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
	if err := st.Barrier(); err != nil {
		t.Fatal(err)
	}
	got := 0
	cursor := ""
	for {
		recs, next, err := st.Audit(store.AuditQuery{Op: store.OpPublish, Limit: store.MaxLimit, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if string(r.Data) != fmt.Sprint(got) {
				t.Fatalf("record %d has data %s", got, r.Data)
			}
			got++
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if got != n {
		t.Fatalf("%d publishes audited, want %d", got, n)
	}
	ss, _, _ := st.Sessions(store.SessionQuery{})
	if len(ss) != 1 || ss[0].CloseCode != closeAbnormal {
		t.Fatalf("sessions %+v", ss)
	}
}

// TestDurableAck: with durable acks the agent answers a publish only once
// its record is committed, so the record is readable when Done arrives.
func TestDurableAck(t *testing.T) {
	st := openStore(t, store.SyncAlways)
	_, err := runAgent(t, st, true, func(w *fakeWorker, _ *Agent) error {
		w.send(t, nodemsg.AppendOpened(nil, "c1", "", "127.0.0.1:1", "", "json", 0, 0))
		for i := uint64(1); i <= 20; i++ {
			w.send(t, nodemsg.AppendPublish(nil, i, "news", "c1", false, []byte(fmt.Sprint(i))))
			if !w.done(t, i) {
				return errScriptDone
			}
			recs, _, err := st.Audit(store.AuditQuery{Op: store.OpPublish, Limit: store.MaxLimit})
			if err != nil || len(recs) != int(i) {
				t.Errorf("after Done %d: %d records, %v", i, len(recs), err)
			}
		}
		return errScriptDone
	})
	if !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
}

// TestAPIQueries: the audit endpoints say 404 when the node keeps
// no store; bad parameters get 400 with one.
func TestAPIQueries(t *testing.T) {
	noStore, err := New(Config{Workers: 1, Socket: "x", InProcess: func(context.Context, int, *link.Rings) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Workers: 1, Socket: "x", Store: openStore(t, store.SyncNone),
		InProcess: func(context.Context, int, *link.Rings) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		a      *Agent
		target string
		status int
	}{
		{noStore, "/api/audit", http.StatusNotFound},
		{noStore, "/api/sessions", http.StatusNotFound},
		{a, "/api/audit", http.StatusOK},
		{a, "/api/audit?op=publish&channel=x&user=u&since=2026-01-01T00:00:00Z&until=1900000000000&limit=5", http.StatusOK},
		{a, "/api/audit?op=bogus", http.StatusBadRequest},
		{a, "/api/audit?chanel=x", http.StatusBadRequest},
		{a, "/api/audit?since=yesterday", http.StatusBadRequest},
		{a, "/api/audit?limit=0", http.StatusBadRequest},
		{a, "/api/audit?limit=1001", http.StatusBadRequest},
		{a, "/api/audit?cursor=zz", http.StatusBadRequest},
		{a, "/api/sessions?active=true&user=u", http.StatusOK},
		{a, "/api/sessions?active=maybe", http.StatusBadRequest},
		{a, "/api/sessions?cursor=%21", http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		tc.a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", tc.target, nil))
		if rec.Code != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.target, rec.Code, rec.Body.String(), tc.status)
		}
	}
}

// TestListingsSeeReportedConnections: the connection and channel listings
// and /api/disconnect see every connection and subscription a worker
// reported before the request, however far behind the agent's reading is.
func TestListingsSeeReportedConnections(t *testing.T) {
	const n = 3000
	_, err := runAgent(t, nil, false, func(w *fakeWorker, a *Agent) error {
		for i := range n {
			id := fmt.Sprintf("c%d", i)
			w.send(t, nodemsg.AppendOpened(nil, id, "", "127.0.0.1:5000", "", "json", 0, 0))
			w.send(t, nodemsg.AppendSub(nil, 0, id, fmt.Sprintf("ch%d", i%7)))
		}
		get := func(target string, v any) {
			rec := httptest.NewRecorder()
			a.apiHandler().ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
			if err := json.Unmarshal(rec.Body.Bytes(), v); rec.Code != http.StatusOK || err != nil {
				t.Errorf("%s: %d %q %v", target, rec.Code, rec.Body.String(), err)
			}
		}
		listed, behind := 0, false
		for target := "/api/connections?limit=1000"; target != ""; {
			var conns struct {
				Connections []connInfo `json:"connections"`
				Behind      bool       `json:"behind"`
				Next        string     `json:"next"`
			}
			get(target, &conns)
			listed, behind, target = listed+len(conns.Connections), behind || conns.Behind, ""
			if conns.Next != "" {
				target = "/api/connections?limit=1000&cursor=" + url.QueryEscape(conns.Next)
			}
		}
		if listed != n || behind {
			t.Errorf("/api/connections lists %d connections (behind %v), want %d", listed, behind, n)
		}
		var chans struct {
			Channels []channelInfo `json:"channels"`
		}
		get("/api/channels", &chans)
		total := 0
		for _, c := range chans.Channels {
			total += c.Subscribers
		}
		if len(chans.Channels) != 7 || total != n {
			t.Errorf("/api/channels %+v: want 7 channels, %d subscribers", chans.Channels, n)
		}
		w.send(t, nodemsg.AppendOpened(nil, "last", "", "127.0.0.1:5001", "", "json", 0, 0))
		rec := httptest.NewRecorder()
		a.apiHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/api/disconnect", strings.NewReader(`{"conn":"last"}`)))
		if rec.Code != http.StatusOK {
			t.Errorf("POST /api/disconnect of a just reported connection: %d %s", rec.Code, rec.Body.String())
		}
		return errScriptDone
	})
	if !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
}

// TestAPIPublishReachesSelfAckedSubscriber: with one in-process worker that
// acknowledges subscriptions itself, an API publish reaches the worker even
// before the agent has read the subscription (here: never sent to it).
func TestAPIPublishReachesSelfAckedSubscriber(t *testing.T) {
	_, err := runAgent(t, nil, false, func(w *fakeWorker, a *Agent) error {
		rec := httptest.NewRecorder()
		a.apiHandler().ServeHTTP(rec, httptest.NewRequest("POST", "/api/publish", strings.NewReader(`{"channel":"news","data":1}`)))
		if rec.Code != http.StatusOK {
			t.Errorf("POST /api/publish: %d %s", rec.Code, rec.Body.String())
		}
		var m nodemsg.Msg
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			got := false
			w.from.Wait(100 * time.Millisecond)
			_, _ = w.from.Read(func(r []byte) {
				got = got || (nodemsg.Decode(r, &m) == nil && m.Kind == nodemsg.KindDeliver && m.Channel == "news")
			})
			if got {
				return errScriptDone
			}
		}
		t.Errorf("the API publish did not reach the only worker")
		return errScriptDone
	})
	if !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
}

// TestStuckWorkerHoldsBackNobody: worker 1 holds a subscriber and never
// reads its ring; worker 0's durable publishes, forwarded to worker 1, are
// still committed and answered at the store's pace, because nothing in the
// agent waits on worker 1's ring.
func TestStuckWorkerHoldsBackNobody(t *testing.T) {
	st := openStore(t, store.SyncAlways)
	const publishes = 50
	const bound = 20 * time.Second // for all of them; waiting 1 s per record would take 43 s
	var a *Agent
	cfg := Config{
		Workers: 2, Loops: 1, Node: "n1", Store: st, DurableAcks: true,
		Socket: filepath.Join(t.TempDir(), "agent.sock"), RingSize: shm.MinCapacity,
		QueueBytes: 1 << 20, StallTimeout: time.Minute,
		InProcess: func(ctx context.Context, id int, rings *link.Rings) error {
			w := &fakeWorker{from: rings.FromAgent().Consumer()}
			for _, r := range rings.ToAgent() {
				w.toAgent = append(w.toAgent, r.Producer())
			}
			if id == 1 {
				w.send(t, nodemsg.AppendOpened(nil, "stuck", "", "127.0.0.1:2", "", "json", 0, 0))
				w.send(t, nodemsg.AppendSub(nil, 0, "stuck", "news"))
				<-ctx.Done()
				return nil
			}
			for a == nil || a.Workers()[1].Subscriptions != 1 {
				time.Sleep(time.Millisecond)
			}
			w.send(t, nodemsg.AppendOpened(nil, "pub", "", "127.0.0.1:1", "", "json", 0, 0))
			start := time.Now()
			data := []byte(`"` + strings.Repeat("x", 500) + `"`)
			for i := uint64(1); i <= publishes; i++ {
				w.send(t, nodemsg.AppendPublish(nil, i, "news", "pub", false, data))
				if !w.done(t, i) {
					return errScriptDone
				}
				if d := time.Since(start); d > bound {
					t.Errorf("%d durable publishes took %v while another worker did not read its ring", i, d)
					return errScriptDone
				}
			}
			t.Logf("%d durable publishes answered in %v", publishes, time.Since(start))
			return errScriptDone
		},
	}
	var err error
	a, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Run(ctx); !errors.Is(err, errScriptDone) {
		t.Fatalf("Run: %v", err)
	}
	if f := a.Workers()[1].failures; f != [len(failureReasons)]int{} {
		t.Errorf("worker 1 failed (%v) before its stall timeout", f)
	}
}
