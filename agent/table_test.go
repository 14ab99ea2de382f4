package agent

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/RaduBerinde/btreemap"
)

// tableOf builds a table of 3 workers from a script of steps.
func tableOf(steps ...func(t *table)) *table {
	tab := newTable(3)
	for _, s := range steps {
		s(tab)
	}
	return tab
}

// counts returns the subscribers of ch per worker, nil when it has none.
func (t *table) counts(ch string) []int {
	cr := t.interest[ch]
	if cr == nil {
		return nil
	}
	out := make([]int, t.workers)
	for w := range out {
		out[w] = cr.count(w)
	}
	return out
}

func opened(id string, w int) func(*table) {
	return func(t *table) { t.open(id, &connRec{worker: w, user: "u-" + id}) }
}

func subbed(id, ch string) func(*table) {
	return func(t *table) { t.subscribe(id, ch, true) }
}

func TestTableSubscribeCountsInterestPerWorker(t *testing.T) {
	tab := tableOf(opened("a", 0), opened("b", 0), opened("c", 2),
		subbed("a", "news"), subbed("b", "news"), subbed("c", "news"), subbed("c", "sport"))
	if got, want := tab.counts("news"), []int{2, 0, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("interest[news] = %v, want %v", got, want)
	}
	if c, added := tab.subscribe("a", "news", true); c == nil || added {
		t.Errorf("second subscribe of a to news: %v, added %v; want the connection, not added", c, added)
	}
	if got := tab.counts("news")[0]; got != 2 {
		t.Errorf("a repeated subscribe counted again: %d", got)
	}
	if c, added := tab.subscribe("nobody", "news", true); c != nil || added {
		t.Errorf("subscribe of an unknown connection: %v, %v", c, added)
	}
	conns, subs := tab.perWorker()
	if !reflect.DeepEqual(conns, []int{2, 0, 1}) || !reflect.DeepEqual(subs, []int{2, 0, 2}) {
		t.Errorf("perWorker = %v, %v", conns, subs)
	}
	want := []channelInfo{{"news", 3}, {"sport", 1}}
	if got, _ := tab.channels("", 100); !reflect.DeepEqual(got, want) {
		t.Errorf("channels = %v, want %v", got, want)
	}
}

func TestTableUnsubscribeAndCloseForgetInterest(t *testing.T) {
	tab := tableOf(opened("a", 0), opened("b", 1), subbed("a", "news"), subbed("b", "news"), subbed("a", "x"))
	if c, removed := tab.unsubscribe("a", "news"); c == nil || !removed {
		t.Fatalf("unsubscribe a news: %v, %v", c, removed)
	}
	if _, removed := tab.unsubscribe("a", "news"); removed {
		t.Errorf("a second unsubscribe removed something")
	}
	if got := tab.counts("news"); !reflect.DeepEqual(got, []int{0, 1, 0}) {
		t.Errorf("interest[news] = %v", got)
	}
	if c := tab.close("b"); c == nil || c.user != "u-b" {
		t.Fatalf("close b = %+v", c)
	}
	if _, ok := tab.interest["news"]; ok || tab.names.Has("news") {
		t.Errorf("news is still listed with no subscriber")
	}
	if tab.close("b") != nil {
		t.Errorf("closing b twice returned an entry")
	}
	// The session history keeps every channel joined, in order.
	if c := tab.conn("a"); !reflect.DeepEqual(c.joined, []string{"news", "x"}) {
		t.Errorf("a joined %v", c.joined)
	}
}

func TestTableDropWorker(t *testing.T) {
	tab := tableOf(opened("a", 0), opened("b", 1), opened("c", 1),
		subbed("a", "news"), subbed("b", "news"), subbed("c", "solo"))
	gone := tab.dropWorker(1)
	if len(gone) != 2 || gone["b"] == nil || gone["c"] == nil {
		t.Fatalf("dropWorker(1) = %v, want b and c", gone)
	}
	if tab.conns.Len() != 1 || tab.conn("a") == nil {
		t.Errorf("%d connections after dropWorker, want a alone", tab.conns.Len())
	}
	if got := tab.counts("news"); len(tab.interest) != 1 || !reflect.DeepEqual(got, []int{1, 0, 0}) {
		t.Errorf("%d channels, news %v; want news alone, {1, 0, 0}", len(tab.interest), got)
	}
}

func TestTableTargets(t *testing.T) {
	tab := tableOf(opened("a", 0), opened("b", 1), opened("c", 2), subbed("a", "news"), subbed("c", "news"))
	for _, tc := range []struct {
		name    string
		origin  int
		channel string
		all     bool
		want    []int
	}{
		{"subscribers on other workers", 0, "news", false, []int{2}},
		{"from the API", -1, "news", false, []int{0, 2}},
		{"no subscribers", 1, "none", false, nil},
		{"broadcast", 1, "", false, []int{0, 2}},
		{"all workers", 0, "none", true, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tab.targets(nil, tc.origin, tc.channel, tc.all)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("targets(%d, %q, %v) = %v, want %v", tc.origin, tc.channel, tc.all, got, tc.want)
			}
		})
	}
}

func TestTableList(t *testing.T) {
	tab := tableOf(opened("b", 1), opened("a", 0), subbed("a", "z"), subbed("a", "m"))
	tab.conn("a").remote, tab.conn("a").protocl = "127.0.0.1:1", "json"
	want := []connInfo{
		{ID: "a", User: "u-a", Remote: "127.0.0.1:1", Protocol: "json", Channels: []string{"m", "z"}, Worker: 0},
		{ID: "b", User: "u-b", Channels: []string{}, Worker: 1},
	}
	if got, next := tab.list("", "", 100); !reflect.DeepEqual(got, want) || next != "" {
		t.Errorf("list = %+v, next %q; want %+v, no next", got, next, want)
	}
}

// TestTableTotalsFollowEveryChange: the node's totals, kept as the table
// changes, match a count of every connection after subscribes, repeated
// and unknown ones, unsubscribes, a close and a dead worker.
func TestTableTotalsFollowEveryChange(t *testing.T) {
	tab := tableOf(opened("a", 0), opened("b", 1), opened("c", 1), opened("d", 2),
		subbed("a", "news"), subbed("a", "news"), subbed("b", "news"), subbed("b", "x"),
		subbed("c", "solo"), subbed("d", "news"), subbed("nobody", "news"))
	check := func(step string) {
		t.Helper()
		conns, subs := tab.perWorker()
		wantConns, wantSubs := make([]int, tab.workers), make([]int, tab.workers)
		n, ns := 0, 0
		for _, c := range tab.conns.Ascend(btreemap.Min[string](), btreemap.Max[string]()) {
			wantConns[c.worker]++
			wantSubs[c.worker] += len(c.chans)
			n, ns = n+1, ns+len(c.chans)
		}
		if !reflect.DeepEqual(conns, wantConns) || !reflect.DeepEqual(subs, wantSubs) {
			t.Errorf("%s: per worker %v connections, %v subscriptions; counted %v, %v", step, conns, subs, wantConns, wantSubs)
		}
		if c, s := tab.totals(); c != n || s != ns {
			t.Errorf("%s: totals %d connections, %d subscriptions; counted %d, %d", step, c, s, n, ns)
		}
	}
	check("subscribed")
	tab.unsubscribe("b", "x")
	tab.unsubscribe("b", "x")
	check("unsubscribed")
	tab.close("a")
	check("closed")
	tab.dropWorker(1)
	check("worker dropped")
	if c, s := tab.totals(); c != 1 || s != 1 {
		t.Errorf("left: %d connections, %d subscriptions; want d and its one", c, s)
	}
}

// TestDropWorkerWalksOnlyWhatItMust: dropping a worker with no
// connections walks none of the table, and the walk for one that has
// some stops at its last.
func TestDropWorkerWalksOnlyWhatItMust(t *testing.T) {
	tab := newTable(3)
	for i := range 1000 {
		tab.open(fmt.Sprintf("c%04d", i), &connRec{worker: 0})
	}
	tab.open("c0000x", &connRec{worker: 1})
	tab.visited = 0
	if gone := tab.dropWorker(2); len(gone) != 0 || tab.visited != 0 {
		t.Fatalf("dropWorker of a worker without connections: %d gone, %d walked; want 0 and 0", len(gone), tab.visited)
	}
	if gone := tab.dropWorker(1); len(gone) != 1 || tab.visited > 3 {
		t.Fatalf("dropWorker(1): %d gone, %d walked; want 1, and the walk to stop after it", len(gone), tab.visited)
	}
}
