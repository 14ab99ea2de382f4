package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestJSONWelcome(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	seen := map[string]bool{}
	var node string
	for i := 0; i < 10; i++ {
		c := s.dialWS(t)
		w := c.Welcome
		if w.Op != "welcome" || w.Conn == "" || w.Node == "" || w.Proto != "json" {
			t.Fatalf("welcome %s, want op welcome with conn, node and proto json", w)
		}
		if seen[w.Conn] {
			t.Fatalf("conn id %q given to two connections", w.Conn)
		}
		seen[w.Conn] = true
		if node != "" && w.Node != node {
			t.Errorf("node id changed between connections: %q then %q", node, w.Node)
		}
		node = w.Node
	}
}

func TestJSONPing(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.dialWS(t)
	for i := 0; i < 3; i++ {
		c.pingPong()
	}
}

func TestJSONPubSub(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pub, sub1, sub2, other, probe := s.dialWS(t), s.dialWS(t), s.dialWS(t), s.dialWS(t), s.dialWS(t)

	pub.subscribe(1, "news") // the publisher is subscribed too, and must not get its own messages
	sub1.subscribe(1, "news")
	sub2.subscribe(1, "news")
	everyone := []*wsClient{pub, sub1, sub2, other}
	for _, c := range everyone {
		c.subscribe(2, "sentinel")
	}
	// probe publishes a sentinel after an acked publish: each receiver's next message
	// must be the sentinel, proving that nothing else was (or will be) delivered to it
	// from the earlier publish.
	sentinel := func(id int, tag string, receivers ...*wsClient) {
		t.Helper()
		probe.request(id, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"sentinel","data":%q}`, id, tag))
		for _, c := range receivers {
			m := c.read()
			if m.Op != "message" || m.Channel != "sentinel" || !jsonEqual(m.Data, []byte(fmt.Sprintf("%q", tag))) {
				t.Fatalf("conn %s: got %s, want only the sentinel %q", c.Welcome.Conn, m, tag)
			}
		}
	}

	data := `{"headline":"e2e","n":[1,2.5,-3],"ok":true,"none":null,"s":"héllo ✓"}`
	pub.request(10, `{"id":10,"op":"publish","channel":"news","data":`+data+`}`)
	for _, c := range []*wsClient{sub1, sub2} {
		m := c.expect("message", 0)
		if m.Channel != "news" || m.From != pub.Welcome.Conn || !jsonEqual(m.Data, []byte(data)) {
			t.Fatalf("conn %s got %s, want channel news from %s data %s", c.Welcome.Conn, m, pub.Welcome.Conn, data)
		}
		if len(m.ID) != 0 {
			t.Errorf("delivered message carries the publisher's request id: %s", m)
		}
	}
	// pub gets no echo of its own message; other (not on news) gets nothing.
	sentinel(11, "after-first", everyone...)

	// After unsubscribe, sub2 gets nothing more from news.
	sub2.request(20, `{"id":20,"op":"unsubscribe","channel":"news"}`)
	pub.request(21, `{"id":21,"op":"publish","channel":"news","data":"second"}`)
	if m := sub1.expect("message", 0); !jsonEqual(m.Data, []byte(`"second"`)) {
		t.Fatalf("sub1 got %s, want data \"second\"", m)
	}
	sentinel(22, "after-unsubscribe", everyone...)

	// Publishing does not require being subscribed.
	other.request(30, `{"id":30,"op":"publish","channel":"news","data":{"from":"other"}}`)
	for _, c := range []*wsClient{pub, sub1} {
		m := c.expect("message", 0)
		if m.From != other.Welcome.Conn || m.Channel != "news" {
			t.Fatalf("conn %s got %s, want a message from %s", c.Welcome.Conn, m, other.Welcome.Conn)
		}
	}
	sentinel(31, "after-other", everyone...)
	for _, c := range everyone {
		c.pingPong()
	}
}

func TestJSONDataRoundTrip(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pub, sub := s.dialWS(t), s.dialWS(t)
	sub.subscribe(1, "types")
	for i, data := range []string{
		`{"a":{"b":[true,false,null,{"c":"d"}]}}`,
		`[1,"two",3.5,[],{}]`,
		`"a string with \"quotes\", \\ and \u2028 and ✓"`,
		`42`,
		`-0.125`,
		`true`,
		`false`,
		`null`,
		`{}`,
		`""`,
		` { "spaced" : [ 1 , 2 ] } `,
	} {
		id := 100 + i
		pub.request(id, fmt.Sprintf(`{"id":%d,"op":"publish","channel":"types","data":%s}`, id, data))
		m := sub.expect("message", 0)
		if !strings.Contains(string(m.raw), `"data"`) {
			t.Fatalf("data %s: delivered message has no data field: %s", data, m)
		}
		if !jsonEqual(m.Data, []byte(data)) {
			t.Fatalf("data %s delivered as %s", data, m.Data)
		}
	}
}

func TestJSONErrors(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	long := strings.Repeat("c", 10000)
	for _, tc := range []struct {
		name string
		req  string
		id   int // the id the error must carry; 0: not checked
	}{
		{"truncated JSON", `{"id":3,"op":"subscribe","channel":"ne`, 0},
		{"not JSON", `hello server`, 0},
		{"empty message", ``, 0},
		{"JSON array", `[1,2,3]`, 0},
		{"JSON string", `"subscribe"`, 0},
		{"unknown op", `{"id":4,"op":"frobnicate","channel":"news"}`, 4},
		{"missing op", `{"id":5,"channel":"news"}`, 5},
		{"op of the wrong type", `{"id":6,"op":7}`, 6},
		{"subscribe without channel", `{"id":7,"op":"subscribe"}`, 7},
		{"subscribe empty channel", `{"id":8,"op":"subscribe","channel":""}`, 8},
		{"subscribe 129-byte channel", `{"id":9,"op":"subscribe","channel":"` + strings.Repeat("x", 129) + `"}`, 9},
		{"subscribe 10000-byte channel", `{"id":10,"op":"subscribe","channel":"` + long + `"}`, 10},
		{"subscribe channel with a space", `{"id":11,"op":"subscribe","channel":"news feed"}`, 11},
		{"subscribe channel with a slash", `{"id":12,"op":"subscribe","channel":"news/feed"}`, 12},
		{"subscribe channel with a star", `{"id":13,"op":"subscribe","channel":"news.*"}`, 13},
		{"subscribe channel with non-ASCII", `{"id":14,"op":"subscribe","channel":"néws"}`, 14},
		{"subscribe channel with a NUL", `{"id":15,"op":"subscribe","channel":"a\u0000b"}`, 15},
		{"subscribe channel of the wrong type", `{"id":16,"op":"subscribe","channel":42}`, 16},
		{"unsubscribe without channel", `{"id":17,"op":"unsubscribe"}`, 17},
		{"unsubscribe bad channel", `{"id":18,"op":"unsubscribe","channel":"a b"}`, 18},
		{"publish without channel", `{"id":19,"op":"publish","data":1}`, 19},
		{"publish empty channel", `{"id":20,"op":"publish","channel":"","data":1}`, 20},
		{"publish 10000-byte channel", `{"id":21,"op":"publish","channel":"` + long + `","data":1}`, 21},
		{"publish bad channel", `{"id":22,"op":"publish","channel":"<script>","data":1}`, 22},
		{"valid JSON with trailing garbage", `{"id":23,"op":"ping"} trailing`, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dialWS(t)
			c.send(tc.req)
			m, err := c.readE(defaultTimeout)
			if err != nil {
				t.Fatalf("request %.100q: %v (close code %d), want an error message and an open connection", tc.req, err, closeCode(err))
			}
			if m.Op != "error" || m.Code != "bad_request" || m.Message == "" {
				t.Fatalf("request %.100q: got %.300s, want op error, code bad_request and a message", tc.req, m)
			}
			if tc.id > 0 && !m.hasID(tc.id) {
				t.Fatalf("request %.100q: error %s does not carry id %d", tc.req, m, tc.id)
			}
			c.pingPong()
		})
	}
}

func TestJSONChannelNames(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := s.dialWS(t)
	for i, ch := range []string{
		"a",
		strings.Repeat("x", 128),
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@-",
		"user@example.com:inbox",
		"-", ".", "..", "_",
	} {
		id := 200 + i
		c.send(fmt.Sprintf(`{"id":%d,"op":"subscribe","channel":%q}`, id, ch))
		if m := c.read(); m.Op != "ack" || !m.hasID(id) {
			t.Fatalf("subscribe %.40q (%d bytes): got %s, want ack id %d", ch, len(ch), m, id)
		}
		c.send(fmt.Sprintf(`{"id":%d,"op":"unsubscribe","channel":%q}`, id+100, ch))
		if m := c.read(); m.Op != "ack" || !m.hasID(id+100) {
			t.Fatalf("unsubscribe %.40q: got %s, want ack id %d", ch, m, id+100)
		}
	}
}

func TestJSONDuplicateSubscribe(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pub, sub, probe := s.dialWS(t), s.dialWS(t), s.dialWS(t)
	sub.subscribe(1, "dup")
	sub.send(`{"id":2,"op":"subscribe","channel":"dup"}`)
	if m := sub.read(); !m.hasID(2) || (m.Op != "ack" && m.Op != "error") {
		t.Fatalf("second subscribe: got %s, want an ack or an error with id 2", m)
	}
	sub.subscribe(3, "probe")
	// pub and probe may be on different event loops or worker processes,
	// so their messages may reach sub in either order (PROTOCOL.md orders
	// one publisher's messages only). A double subscription would deliver
	// "once" twice, in the same fan-out, so two reads would see it twice.
	pub.request(4, `{"id":4,"op":"publish","channel":"dup","data":"once"}`)
	probe.request(5, `{"id":5,"op":"publish","channel":"probe","data":"sentinel"}`)
	got := []string{sub.expect("message", 0).Channel, sub.expect("message", 0).Channel}
	sort.Strings(got)
	if fmt.Sprint(got) != "[dup probe]" {
		t.Fatalf("got messages on %v, want one on dup and one on probe", got)
	}
	// One unsubscribe ends the subscription: nothing on dup arrives before
	// the sentinel (published after "after" was acknowledged), nor in the
	// same process before a later pong.
	sub.request(6, `{"id":6,"op":"unsubscribe","channel":"dup"}`)
	pub.request(7, `{"id":7,"op":"publish","channel":"dup","data":"after"}`)
	probe.request(8, `{"id":8,"op":"publish","channel":"probe","data":"sentinel2"}`)
	if m := sub.expect("message", 0); m.Channel != "probe" {
		t.Fatalf("got %s after unsubscribe, want only the sentinel", m)
	}
	if got := sub.messagesUntilPong(); len(got) != 0 {
		t.Fatalf("got messages on %v after unsubscribe", got)
	}
	// Unsubscribing from a channel one is not on does not break the connection.
	sub.send(`{"id":9,"op":"unsubscribe","channel":"never-subscribed"}`)
	if m := sub.read(); !m.hasID(9) || (m.Op != "ack" && m.Op != "error") {
		t.Fatalf("unsubscribe from a channel not subscribed: got %s, want ack or error with id 9", m)
	}
	sub.pingPong()
}

func TestJSONLargeMessage(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	pub := s.dialWS(t)
	subs := []*wsClient{s.dialWS(t), s.dialWS(t), s.dialWS(t)}
	for _, c := range subs {
		c.subscribe(1, "large")
	}
	// Just under the 1 MiB inbound limit; the delivered message is larger (from, channel).
	data := `"` + strings.Repeat("0123456789abcdef", (1<<20-200)/16) + `"`
	pub.request(2, `{"id":2,"op":"publish","channel":"large","data":`+data+`}`)
	for _, c := range subs {
		m := c.expect("message", 0)
		if string(m.Data) != data {
			t.Fatalf("conn %s: data of %d bytes delivered as %d bytes", c.Welcome.Conn, len(data), len(m.Data))
		}
	}
}

// TestJSONConcurrentPublishers: several publishers on one channel at once; every
// subscriber gets every message, each publisher's messages in its order.
func TestJSONConcurrentPublishers(t *testing.T) {
	t.Parallel()
	const nPub, nSub, nMsg = 4, 6, 100
	s := startServer(t)
	subs := make([]*wsClient, nSub)
	for i := range subs {
		subs[i] = s.dialWS(t)
		subs[i].subscribe(1, "multi")
	}
	pubs := make([]*wsClient, nPub)
	idx := map[string]int{}
	for i := range pubs {
		pubs[i] = s.dialWS(t)
		idx[pubs[i].Welcome.Conn] = i
	}

	errs := make(chan error, nPub+nSub)
	for p, c := range pubs {
		go func() {
			for i := 0; i < nMsg; i++ {
				if err := c.sendE(fmt.Sprintf(`{"id":%d,"op":"publish","channel":"multi","data":{"p":%d,"i":%d}}`, i+1, p, i)); err != nil {
					errs <- err
					return
				}
			}
			for i := 0; i < nMsg; i++ {
				m, err := c.readE(20 * time.Second)
				if err != nil || m.Op != "ack" {
					errs <- fmt.Errorf("publisher %d ack %d: %s %v", p, i+1, m, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for k, c := range subs {
		go func() {
			next := make([]int, nPub)
			for n := 0; n < nPub*nMsg; n++ {
				m, err := c.readE(20 * time.Second)
				if err != nil {
					errs <- fmt.Errorf("subscriber %d after %d messages: %v", k, n, err)
					return
				}
				var d struct{ P, I int }
				if err := json.Unmarshal(m.Data, &d); err != nil || m.Op != "message" {
					errs <- fmt.Errorf("subscriber %d: %s", k, m)
					return
				}
				if p, ok := idx[m.From]; !ok || p != d.P {
					errs <- fmt.Errorf("subscriber %d: from %q does not match publisher %d", k, m.From, d.P)
					return
				}
				if d.I != next[d.P] {
					errs <- fmt.Errorf("subscriber %d: publisher %d message %d arrived when %d was expected", k, d.P, d.I, next[d.P])
					return
				}
				next[d.P]++
			}
			errs <- nil
		}()
	}
	for i := 0; i < nPub+nSub; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
