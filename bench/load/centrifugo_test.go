package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// fakeCent is a cluster of tiny Centrifugo-like nodes sharing one hub:
// each listener is a node, a publication reaches every subscriber of the
// channel on every node. It speaks the subset of Centrifugo's JSON protocol
// the generator uses; the connect reply and a ping ("{}") go out in one
// frame, one JSON object a line, and the clients' pongs are counted.
type fakeCent struct {
	lns   []net.Listener
	wg    sync.WaitGroup
	pongs atomic.Int64

	mu      sync.Mutex
	subs    map[*fakeConn]bool
	conns   []net.Conn
	perNode []int    // connections per node
	pubNode []string // per publish: the node of its publisher
	n       int
}

func newFakeCent(t *testing.T, nodes int) *fakeCent {
	f := &fakeCent{subs: map[*fakeConn]bool{}, perNode: make([]int, nodes)}
	for range nodes {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.lns = append(f.lns, ln)
	}
	for node, ln := range f.lns {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				f.mu.Lock()
				f.conns = append(f.conns, c)
				f.perNode[node]++
				f.n++
				id := fmt.Sprintf("n%d-c%d", node, f.n)
				f.mu.Unlock()
				f.wg.Add(1)
				go func() {
					defer f.wg.Done()
					f.serve(&fakeConn{c: c, id: id}, node)
				}()
			}
		}()
	}
	t.Cleanup(f.close)
	return f
}

func (f *fakeCent) close() {
	for _, ln := range f.lns {
		_ = ln.Close()
	}
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// centCmd is a client command of Centrifugo's JSON protocol.
type centCmd struct {
	ID        int64     `json:"id"`
	Connect   *struct{} `json:"connect"`
	Subscribe *struct {
		Channel string `json:"channel"`
	} `json:"subscribe"`
	Publish *struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	} `json:"publish"`
}

func (f *fakeCent) serve(fc *fakeConn, node int) {
	defer func() {
		f.mu.Lock()
		delete(f.subs, fc)
		f.mu.Unlock()
		fc.mu.Lock()
		fc.closed = true
		fc.mu.Unlock()
		_ = fc.c.Close()
	}()
	if _, err := ws.Upgrade(fc.c); err != nil {
		return
	}
	for {
		b, op, err := wsutil.ReadClientData(fc.rw())
		if err != nil || op != ws.OpText {
			return
		}
		if string(b) == "{}" {
			f.pongs.Add(1)
			continue
		}
		var in centCmd
		if json.Unmarshal(b, &in) != nil {
			return
		}
		if err := f.handle(fc, node, &in, b); err != nil {
			return
		}
	}
}

func (f *fakeCent) handle(fc *fakeConn, node int, in *centCmd, raw []byte) error {
	switch {
	case in.Connect != nil:
		fc.deliver(fmt.Appendf(nil, `{"id":%d,"connect":{"client":%q,"version":"0.0.0","ping":25,"pong":true}}`+"\n{}", in.ID, fc.id))
	case in.Subscribe != nil:
		f.mu.Lock()
		f.subs[fc] = true
		f.mu.Unlock()
		fc.deliver(fmt.Appendf(nil, `{"id":%d,"subscribe":{}}`, in.ID))
	case in.Publish != nil:
		f.mu.Lock()
		var to []*fakeConn
		for s := range f.subs {
			to = append(to, s)
		}
		f.pubNode = append(f.pubNode, fmt.Sprint(node))
		f.mu.Unlock()
		push := fmt.Appendf(nil, `{"push":{"channel":%q,"pub":{"data":%s,"info":{"user":"","client":%q}}}}`,
			in.Publish.Channel, in.Publish.Data, fc.id)
		for _, s := range to {
			s.deliver(push)
		}
		fc.deliver(fmt.Appendf(nil, `{"id":%d,"publish":{}}`, in.ID))
	default:
		return fmt.Errorf("unexpected command %s", raw)
	}
	return nil
}

// urls is the generator's --url for the nodes.
func (f *fakeCent) urls() string {
	var u []string
	for _, ln := range f.lns {
		u = append(u, "ws://"+ln.Addr().String()+"/connection/websocket")
	}
	return strings.Join(u, ",")
}

// TestCentrifugoFanout runs a fan-out in Centrifugo's protocol over three
// nodes: the subscribers are spread over them in turn, the publisher is on
// the node of --pub-url, every delivery arrives, the sender of each
// message is the publisher, and every ping is answered.
func TestCentrifugoFanout(t *testing.T) {
	f := newFakeCent(t, 3)
	m := runScenario(t, "fanout", []string{"--protocol", "centrifugo", "--url", f.urls(), "--pub-url", "1",
		"--subs", "7", "--rate", "200", "--duration", "300ms", "--timeout", "30s", "--drain", "3s"})
	if m["missing_deliveries"].(float64) != 0 || m["protocol_errors"].(float64) != 0 || m["published"].(float64) == 0 {
		t.Fatalf("fan-out: %v", m)
	}
	if m["received_deliveries"].(float64) != 7*m["published"].(float64) || m["gaps_or_reorders"].(float64) != 0 {
		t.Fatalf("deliveries: %v", m)
	}
	if m["protocol"] != "centrifugo" || m["urls"].(float64) != 3 || m["pub_url"].(float64) != 1 {
		t.Errorf("header: %v", m)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// 7 subscribers in turn: 3, 2, 2; the publisher on node 1.
	if got := fmt.Sprint(f.perNode); got != "[3 3 2]" {
		t.Errorf("connections per node %s, want [3 3 2]", got)
	}
	for i, n := range f.pubNode {
		if n != "1" {
			t.Fatalf("publish %d from node %s, want 1", i, n)
		}
	}
	if p := f.pongs.Load(); p != 8 {
		t.Errorf("%d pongs, want one per connection (8)", p)
	}
}

// TestTargetFlags checks the settings of --url, --pub-url and --protocol.
func TestTargetFlags(t *testing.T) {
	two := "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws"
	for _, c := range []struct {
		mode string
		args []string
		ok   bool
	}{
		{"fanout", []string{"--url", two, "--pub-url", "1"}, true},
		{"idle", []string{"--url", two}, true},
		{"fanout", []string{"--url", two, "--pub-url", "2"}, false},
		{"publish", []string{"--url", two}, false},
		{"churn", []string{"--url", two}, false},
		{"fanout", []string{"--protocol", "centrifugo"}, true},
		{"publish", []string{"--protocol", "centrifugo"}, false},
		{"churn", []string{"--protocol", "centrifugo"}, true},
		{"handshake", []string{"--protocol", "centrifugo"}, false},
		{"fanout", []string{"--protocol", "other"}, false},
		{"fanout", []string{"--url", "http://127.0.0.1:1/ws"}, false},
	} {
		_, err := parseFlags(c.mode, c.args)
		if (err == nil) != c.ok {
			t.Errorf("%s %v: error %v, want ok=%v", c.mode, c.args, err, c.ok)
		}
	}
}

// TestCentPublishFrameSize: Centrifugo publish frames have the size asked
// for and the shape of its protocol, ids from 3.
func TestCentPublishFrameSize(t *testing.T) {
	for _, size := range []int{64, 1000} {
		l := &loop{cfg: &config{size: size, channel: "c"}, cent: true, pub: &conn{wsConn: wsConn{fd: -1, phase: wsClosed}}}
		l.rnd = 1
		l.publish(l.pub, 12345)
		if len(l.pframe) != size {
			t.Errorf("size %d: frame is %d bytes", size, len(l.pframe))
		}
		var m centCmd
		if err := json.Unmarshal(unmask(t, l.pframe), &m); err != nil || m.Publish == nil {
			t.Fatalf("size %d: %v %+v", size, err, m)
		}
		var data string
		if m.ID != 3 || m.Publish.Channel != "c" || json.Unmarshal(m.Publish.Data, &data) != nil || data[:2] != "12" {
			t.Errorf("size %d: unexpected %+v", size, m)
		}
	}
}

// TestSpreadAndValidator: subscribers go to the URLs in turn, counting
// those of the processes before; the publisher to --pub-url; the
// subscriber checked in full is on another node than the publisher's.
func TestSpreadAndValidator(t *testing.T) {
	cfg, err := parseFlags("fanout", []string{"--url", "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws,ws://127.0.0.1:3/ws",
		"--subs", "10", "--procs", "2"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLoop(cfg, 5, 1, 1) // process 1 of 2: subscribers 5..9
	if err != nil {
		t.Fatal(err)
	}
	defer l.closeAll()
	var got []uint8
	for _, c := range l.conns {
		got = append(got, c.target)
	}
	if fmt.Sprint(got) != "[2 0 1 2 0 0]" {
		t.Errorf("targets %v, want [2 0 1 2 0 0] (5 subscribers from the 6th, then the publisher)", got)
	}
	if l.validator == nil {
		t.Fatal("no validator")
	}
	if l.validator.target == 0 {
		t.Errorf("validator on target 0, want one other than the publisher's (0)")
	}
}

// TestCentrifugoChurn runs the churn cycle in Centrifugo's protocol:
// connect, subscribe, publish (each answered), close handshake. The fake
// delivers every publication to every subscriber, its publisher included,
// as Centrifugo does to a publisher subscribed to its channel: the workers
// ignore those pushes, and the observer gets each publish once, from its
// publisher.
func TestCentrifugoChurn(t *testing.T) {
	f := newFakeCent(t, 1)
	m := runScenario(t, "churn", []string{"--protocol", "centrifugo", "--url", f.urls(), "--conns", "4",
		"--duration", "300ms", "--warmup", "100ms", "--server-pid", fmt.Sprint(os.Getpid()),
		"--timeout", "30s", "--drain", "2s", "--settle", "5s"})
	cycles := num(t, m, "cycles")
	if cycles < 4 || num(t, m, "cycle_errors") != 0 || num(t, m, "protocol_errors") != 0 || num(t, m, "timeouts") != 0 {
		t.Fatalf("churn: %v", m)
	}
	if num(t, m, "acked") != cycles || num(t, m, "observed") != cycles || num(t, m, "missing_deliveries") != 0 ||
		num(t, m, "extra_deliveries") != 0 {
		t.Fatalf("publishes and deliveries: %v", m)
	}
	if m["protocol"] != "centrifugo" {
		t.Errorf("protocol: %v", m["protocol"])
	}
}
