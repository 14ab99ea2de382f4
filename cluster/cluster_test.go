package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/zenconn/server/nodemsg"
)

// host is a Host that records what it is given.
type host struct {
	mu   sync.Mutex
	got  []nodemsg.Msg
	beat Beat
	more chan struct{}
}

func newHost() *host { return &host{more: make(chan struct{}, 1<<16)} }

func (h *host) Deliver(rec []byte, m *nodemsg.Msg) {
	h.mu.Lock()
	cp := *m
	cp.Data = append([]byte(nil), m.Data...)
	h.got = append(h.got, cp)
	h.mu.Unlock()
	h.more <- struct{}{}
}

func (h *host) Beat() Beat { return h.beat }
func (h *host) Flush()     {}

func (h *host) API() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"method":%q,"url":%q,"body":%q}`, r.Method, r.URL.RequestURI(), body)
	})
}

// wait returns the messages once there are n, or fails after 5 s.
func (h *host) wait(t *testing.T, n int) []nodemsg.Msg {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		h.mu.Lock()
		if len(h.got) >= n {
			out := append([]nodemsg.Msg(nil), h.got...)
			h.mu.Unlock()
			return out
		}
		h.mu.Unlock()
		select {
		case <-h.more:
		case <-deadline:
			h.mu.Lock()
			defer h.mu.Unlock()
			t.Fatalf("got %d messages, want %d", len(h.got), n)
		}
	}
}

func (h *host) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// startNATS runs a NATS server on port (0: any) and returns it.
func startNATS(t testing.TB, port int) *server.Server {
	t.Helper()
	if port == 0 {
		port = server.RANDOM_PORT
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("NATS not ready")
	}
	t.Cleanup(s.Shutdown)
	return s
}

func join(t *testing.T, url, node string, h Host, mod func(*Config)) *Cluster {
	t.Helper()
	cfg := Config{NATS: url, Node: node, Address: node + ":8080", Beat: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := Start(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func rec(channel, from, data string) []byte {
	return nodemsg.AppendDeliver(nil, channel, from, false, []byte(data))
}

// live subscribes c to ch and waits for Live.
func live(t *testing.T, c *Cluster, ch string) {
	t.Helper()
	c.Want(ch, true)
	done := make(chan struct{})
	c.Live(ch, func(error) { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never live", ch)
	}
}

func TestAppendToken(t *testing.T) {
	for in, want := range map[string]string{"news": "news", "room.1": "room%2E1", "a:b@c-d_e": "a:b@c-d_e", "x y*>": "x%20y%2A%3E"} {
		if got := string(AppendToken(nil, in)); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []Config{
		{NATS: "foo://x"}, {NATS: "nats://h:1", Name: "a.b"}, {NATS: "nats://h:1", Routes: []string{"nats://x:1"}},
		{NATS: Embedded, Listen: "nope"}, {NATS: "nats://h:1", Cert: "c"}, {NATS: "nats://h:1", Creds: "f", User: "u"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: accepted", c)
		}
	}
	ok := Config{NATS: "nats://a:1,nats://b:2"}
	if err := ok.Validate(); err != nil || ok.Name != "zenconn" || ok.Buffer != 8<<20 {
		t.Fatalf("%v %+v", err, ok)
	}
}

// TestMessagesFollowInterest: a node receives a channel's messages once
// it has said it wants them and Live answered, in the publisher's order,
// never its own, and not those of channels it does not want.
func TestMessagesFollowInterest(t *testing.T) {
	s := startNATS(t, 0)
	ha, hb := newHost(), newHost()
	a := join(t, s.ClientURL(), "a", ha, nil)
	b := join(t, s.ClientURL(), "b", hb, nil)
	live(t, a, "room.1")
	live(t, b, "room.1")
	const n = 500
	for i := range n {
		b.Publish("room.1", rec("room.1", "b-1", fmt.Sprint(i)))
		b.Publish("other", rec("other", "b-1", "x"))
	}
	got := ha.wait(t, n)
	for i, m := range got {
		if m.Channel != "room.1" || string(m.Data) != fmt.Sprint(i) {
			t.Fatalf("message %d: %s %q", i, m.Channel, m.Data)
		}
	}
	a.Publish("", rec("", "a-1", "all"))
	if m := hb.wait(t, 1); m[0].Channel != "" || string(m[0].Data) != "all" {
		t.Fatalf("broadcast: %+v", m[0])
	}
	time.Sleep(100 * time.Millisecond)
	if ha.count() != n || hb.count() != 1 {
		t.Fatalf("a got %d (want %d: not its own), b got %d (want 1: not its own room.1)", ha.count(), n, hb.count())
	}
	a.Want("room.1", false)
	eventually(t, func() bool { return a.Stats().Channels == 0 })
	b.Publish("room.1", rec("room.1", "b-1", "late"))
	time.Sleep(100 * time.Millisecond)
	if ha.count() != n {
		t.Fatal("a message reached a node after it dropped its interest")
	}
	if st := b.Stats(); st.Published != 2*n+1 || !st.Connected {
		t.Fatalf("b stats %+v", st)
	}
}

// TestLiveAcrossRoutes: with two NATS servers joined by routes (the
// embedded mode), a subscription is live only once the other server
// routes its messages here: a publish on the other node right after Live
// arrives.
func TestLiveAcrossRoutes(t *testing.T) {
	p1, p2, r1, r2 := freePort(t), freePort(t), freePort(t), freePort(t)
	ha, hb := newHost(), newHost()
	emb := func(listen, clusterListen int, route int) func(*Config) {
		return func(c *Config) {
			c.Listen, c.ClusterListen = fmt.Sprintf("127.0.0.1:%d", listen), fmt.Sprintf("127.0.0.1:%d", clusterListen)
			c.Routes = []string{fmt.Sprintf("nats://127.0.0.1:%d", route)}
		}
	}
	a := join(t, Embedded, "a", ha, emb(p1, r1, r2))
	b := join(t, Embedded, "b", hb, emb(p2, r2, r1))
	eventually(t, func() bool { return len(a.Up()) == 1 && len(b.Up()) == 1 })
	for i := range 20 {
		ch := fmt.Sprint("c", i)
		live(t, a, ch)
		b.Publish(ch, rec(ch, "b-1", ch))
		if got := ha.wait(t, i+1); string(got[i].Data) != ch {
			t.Fatalf("got %q, want %q", got[i].Data, ch)
		}
	}
}

// TestPeersAndAsk: nodes see each other up with their figures, answer
// each other's API requests, and a node whose heartbeats stop is down
// within DownAfter.
func TestPeersAndAsk(t *testing.T) {
	s := startNATS(t, 0)
	ha, hb := newHost(), newHost()
	hb.beat = Beat{Workers: 3, Connections: 7}
	a := join(t, s.ClientURL(), "a", ha, nil)
	b := join(t, s.ClientURL(), "b", hb, nil)
	eventually(t, func() bool { n := a.Nodes(); return len(n) == 2 && n[1].Up && n[1].Workers == 3 })
	if n := a.Nodes(); !n[0].Self || n[0].ID != "a" || n[1].ID != "b" || n[1].Connections != 7 || n[1].Address != "b:8080" {
		t.Fatalf("nodes %+v", n)
	}
	b.Emit(KindConnect, Event{Conn: "b-2"})
	eventually(t, func() bool { return a.Nodes()[1].Connections == 8 })
	ans := a.Ask(t.Context(), "b", "POST", "/api/disconnect", []byte(`{"conn":"b-2"}`))
	if ans.Err != nil || ans.Status != http.StatusAccepted || !strings.Contains(string(ans.Body), `b-2`) {
		t.Fatalf("answer %+v %s", ans, ans.Body)
	}
	if ans := a.Ask(t.Context(), "b", "GET", "/metrics", nil); ans.Status != http.StatusNotFound {
		t.Fatalf("a path not served to peers answered %d", ans.Status)
	}
	// b dies without a word: its connection goes, its heartbeats stop.
	close(b.stop)
	b.wg.Wait()
	b.nc.Close()
	start := time.Now()
	eventually(t, func() bool { return !a.Nodes()[1].Up })
	if d := time.Since(start); d > time.Second {
		t.Fatalf("down after %v", d)
	}
	if ans := a.Ask(t.Context(), "b", "GET", "/api/connections", nil); ans.Err == nil {
		t.Fatal("a dead node answered")
	}
}

// TestEventsForAnyClient: events are JSON on P.event.<node>.<kind>, for
// any NATS client.
func TestEventsForAnyClient(t *testing.T) {
	s := startNATS(t, 0)
	a := join(t, s.ClientURL(), "a", newHost(), func(c *Config) { c.Name = "app1" })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, _ := nc.SubscribeSync("app1.event.>")
	_ = nc.Flush()
	a.Emit(KindSubscribe, Event{Conn: "a-1", User: "u", Channel: "room.1"})
	m, err := sub.NextMsg(3 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var ev Event
	if m.Subject != "app1.event.a.subscribe" || json.Unmarshal(m.Data, &ev) != nil || ev.Node != "a" || ev.Channel != "room.1" || ev.Time.IsZero() {
		t.Fatalf("%s %s", m.Subject, m.Data)
	}
}

// TestOutage: NATS away, a node keeps going, buffers up to its bound and
// counts the rest; when NATS comes back on the same address, interest is
// re-established and messages flow again.
func TestOutage(t *testing.T) {
	port := freePort(t)
	s := startNATS(t, port)
	ha, hb := newHost(), newHost()
	a := join(t, s.ClientURL(), "a", ha, nil)
	b := join(t, s.ClientURL(), "b", hb, func(c *Config) { c.Buffer = 4 << 10 })
	live(t, a, "news")
	s.Shutdown()
	eventually(t, func() bool { return !b.Stats().Connected })
	for range 200 {
		b.Publish("news", rec("news", "b-1", strings.Repeat("x", 100)))
	}
	if st := b.Stats(); st.DroppedBuffer == 0 || st.DroppedBuffer == 200 {
		t.Fatalf("dropped %d of 200 with a 4 KiB buffer", st.DroppedBuffer)
	}
	startNATS(t, port)
	eventually(t, func() bool { return a.Stats().Connected && b.Stats().Connected })
	kept := 200 - int(b.Stats().DroppedBuffer)
	// Buffered messages may be sent before a's subscription is back; the
	// next ones must arrive.
	eventually(t, func() bool {
		b.Publish("news", rec("news", "b-1", "after"))
		return ha.count() > 0 && string(ha.wait(t, 1)[ha.count()-1].Data) == "after"
	})
	t.Logf("kept %d in the buffer; %d arrived", kept, ha.count())
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
