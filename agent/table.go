package agent

import (
	"iter"
	"slices"
	"strings"
	"time"
	"unique"

	"github.com/RaduBerinde/btreemap"
)

// table is the node's connection table and its channel → worker interest
// map, as the workers reported them. It is plain data: no lock, no
// goroutine, no I/O; the Agent guards it with its mutex.
//
// Sized for a million connections: connections are kept in id order (a
// B-tree), so that a listing page starts at its cursor and costs its own
// length, never the table's; each connection's channels are a sorted
// slice sharing the channel's name; the counts per worker are kept as the
// records arrive, so that /metrics and /api/workers never walk the table.
type table struct {
	workers  int
	conns    *btreemap.BTreeMap[string, *connRec] // by id
	interest map[string]*chanRec                  // by name: who gets a publish
	names    *btreemap.BTreeMap[string, *chanRec] // the same channels, in name order
	users    map[string]int                       // user → open connections (limits.go)
	subs     int                                  // subscriptions of every connection
	// Connections and subscriptions per worker.
	workerConns, workerSubs []int
	// onChannel, if set, hears of a channel gaining its first subscriber
	// on the node (on) or losing its last; it is called under the
	// Agent's mutex and must not block.
	onChannel func(ch string, on bool)
	// visited counts the connections and channels walked (tests bound
	// it).
	visited int
}

// btreeDegree is the degree of the table's B-trees: nodes of up to 63
// entries, about 4 levels at a million.
const btreeDegree = 32

// connRec is one connection in the table.
type connRec struct {
	worker                int
	user, remote, protocl string
	// The TLS version and cipher suite (crypto/tls's numbers), 0 over
	// plain text.
	tlsVersion, tlsCipher uint16
	chans                 []string // sorted; the names are the chanRec's
	// Session fields, kept only when the node has a store.
	userAgent string
	connected int64    // Unix ns
	joined    []string // every channel joined, in order
}

// chanRec is one channel with subscribers on the node.
type chanRec struct {
	name  string
	total int           // subscribers on the node
	per   []workerCount // the workers with subscribers, by worker id
}

// workerCount is one worker's subscribers of a channel.
type workerCount struct{ worker, n int32 }

func newTable(workers int) *table {
	return &table{workers: workers, conns: btreemap.New[string, *connRec](btreeDegree, strings.Compare),
		interest: map[string]*chanRec{}, names: btreemap.New[string, *chanRec](btreeDegree, strings.Compare),
		users: map[string]int{}, workerConns: make([]int, workers), workerSubs: make([]int, workers)}
}

// intern returns s, or an equal string already in memory: the few distinct
// User-Agents, protocols and users of a million connections are then held
// once each (between garbage collections), not once per connection.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// connectedAt returns the connection time of a session, t in Unix ns.
func connectedAt(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// open adds connection id (replacing any entry of that id).
func (t *table) open(id string, c *connRec) {
	t.close(id)
	t.conns.ReplaceOrInsert(id, c)
	t.workerConns[c.worker]++
	t.countUser(c.user, 1)
}

// conn returns connection id, or nil.
func (t *table) conn(id string) *connRec {
	_, c, _ := t.conns.Get(id)
	return c
}

// close removes connection id and its interest; it returns the removed
// entry, or nil if there was none.
func (t *table) close(id string) *connRec {
	_, c, ok := t.conns.Delete(id)
	if !ok {
		return nil
	}
	for _, ch := range c.chans {
		t.dropInterest(ch, c.worker)
	}
	t.forget(c)
	return c
}

// forget takes connection c, already out of t.conns, off the counts.
func (t *table) forget(c *connRec) {
	t.subs -= len(c.chans)
	t.workerSubs[c.worker] -= len(c.chans)
	t.workerConns[c.worker]--
	t.countUser(c.user, -1)
}

// subscribe records that connection id subscribed to ch; with keepJoined
// the channel is also added to the connection's session history. It
// returns the connection (nil if unknown) and whether the subscription is
// new.
func (t *table) subscribe(id, ch string, keepJoined bool) (*connRec, bool) {
	c := t.conn(id)
	if c == nil {
		return nil, false
	}
	i, found := slices.BinarySearch(c.chans, ch)
	if found {
		return c, false
	}
	cr := t.interest[ch]
	if cr == nil {
		cr = &chanRec{name: ch}
		t.interest[ch] = cr
		t.names.ReplaceOrInsert(ch, cr)
		t.channelChanged(ch, true)
	}
	cr.add(c.worker, 1)
	c.chans = slices.Insert(c.chans, i, cr.name)
	t.subs++
	t.workerSubs[c.worker]++
	if keepJoined && !slices.Contains(c.joined, ch) {
		c.joined = append(c.joined, cr.name)
	}
	return c, true
}

// unsubscribe removes connection id's subscription to ch. It returns the
// connection (nil if unknown) and whether it was subscribed.
func (t *table) unsubscribe(id, ch string) (*connRec, bool) {
	c := t.conn(id)
	if c == nil {
		return nil, false
	}
	i, found := slices.BinarySearch(c.chans, ch)
	if !found {
		return c, false
	}
	c.chans = slices.Delete(c.chans, i, i+1)
	t.subs--
	t.workerSubs[c.worker]--
	t.dropInterest(ch, c.worker)
	return c, true
}

// add adds d subscribers of worker w.
func (cr *chanRec) add(w, d int) {
	i, found := slices.BinarySearchFunc(cr.per, int32(w), func(e workerCount, w int32) int { return int(e.worker - w) })
	if !found {
		if d <= 0 {
			return
		}
		cr.per = slices.Insert(cr.per, i, workerCount{worker: int32(w)})
	}
	n := max(int(cr.per[i].n)+d, 0)
	cr.total += n - int(cr.per[i].n)
	cr.per[i].n = int32(n)
	if n == 0 {
		cr.per = slices.Delete(cr.per, i, i+1)
	}
}

// count returns worker w's subscribers of the channel.
func (cr *chanRec) count(w int) int {
	i, found := slices.BinarySearchFunc(cr.per, int32(w), func(e workerCount, w int32) int { return int(e.worker - w) })
	if !found {
		return 0
	}
	return int(cr.per[i].n)
}

func (t *table) dropInterest(ch string, w int) {
	cr := t.interest[ch]
	if cr == nil {
		return
	}
	cr.add(w, -1)
	if cr.total == 0 {
		t.dropChannel(cr)
	}
}

func (t *table) dropChannel(cr *chanRec) {
	delete(t.interest, cr.name)
	t.names.Delete(cr.name)
	t.channelChanged(cr.name, false)
}

func (t *table) channelChanged(ch string, on bool) {
	if t.onChannel != nil {
		t.onChannel(ch, on)
	}
}

// dropWorker removes worker w's connections and interest and returns the
// removed connections by id.
func (t *table) dropWorker(w int) map[string]*connRec {
	gone, hadSubs := map[string]*connRec{}, t.workerSubs[w] > 0
	if want := t.workerConns[w]; want > 0 {
		for id, c := range t.walk("") {
			if c.worker != w {
				continue
			}
			if gone[id] = c; len(gone) == want {
				break // all of them found
			}
		}
	}
	for id, c := range gone {
		t.conns.Delete(id)
		t.forget(c)
	}
	if !hadSubs {
		return gone // no channel counts subscribers of w
	}
	var empty []*chanRec
	for _, cr := range t.interest {
		cr.add(w, -cr.count(w))
		if cr.total == 0 {
			empty = append(empty, cr)
		}
	}
	for _, cr := range empty {
		t.dropChannel(cr)
	}
	return gone
}

// targets appends to dst the workers that get a message published on
// channel by worker origin (-1: none of them): every other worker for a
// broadcast (channel "") or when all is set, else the other workers with
// subscribers of channel.
func (t *table) targets(dst []int, origin int, channel string, all bool) []int {
	if all || channel == "" {
		for w := range t.workers {
			if w != origin {
				dst = append(dst, w)
			}
		}
		return dst
	}
	if cr := t.interest[channel]; cr != nil {
		for _, e := range cr.per {
			if int(e.worker) != origin {
				dst = append(dst, int(e.worker))
			}
		}
	}
	return dst
}

// totals returns the node's connections and subscriptions.
func (t *table) totals() (conns, subs int) { return t.conns.Len(), t.subs }

// perWorker returns copies of the connections and subscriptions of each
// worker.
func (t *table) perWorker() (conns, subs []int) {
	return slices.Clone(t.workerConns), slices.Clone(t.workerSubs)
}

// connInfo is one entry of GET /api/connections.
type connInfo struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Remote   string   `json:"remote"`
	Protocol string   `json:"protocol"`
	Channels []string `json:"channels"`
	Worker   int      `json:"worker"`
	Node     string   `json:"node"`
}

// list returns up to limit connections of node with ids after the cursor
// after ("": from the first), in id order, their channels sorted, and the
// cursor of the next page ("" after the last). It walks limit+1 entries.
func (t *table) list(node, after string, limit int) (out []connInfo, next string) {
	out = make([]connInfo, 0, min(limit, t.conns.Len()))
	for id, c := range t.walk(after) {
		if len(out) == limit {
			return out, out[len(out)-1].ID
		}
		out = append(out, connInfo{ID: id, User: c.user, Remote: c.remote, Protocol: c.protocl,
			Channels: append([]string{}, c.chans...), Worker: c.worker, Node: node})
	}
	return out, ""
}

// walk yields the connections with ids after the cursor after ("": all),
// in id order, counting them in t.visited: every walk over the
// connections goes through it.
func (t *table) walk(after string) iter.Seq2[string, *connRec] {
	return func(yield func(string, *connRec) bool) {
		for id, c := range t.conns.Ascend(lowerBound(after), btreemap.Max[string]()) {
			t.visited++
			if !yield(id, c) {
				return
			}
		}
	}
}

// lowerBound is where a page after cursor starts.
func lowerBound(after string) btreemap.LowerBound[string] {
	if after == "" {
		return btreemap.Min[string]()
	}
	return btreemap.GT(after)
}

// channelInfo is one entry of GET /api/channels.
type channelInfo struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
}

// channelCount returns the number of channels with subscribers.
func (t *table) channelCount() int { return len(t.interest) }

// channels returns up to limit channels with subscribers named after the
// cursor after ("": from the first), in name order, and the cursor of the
// next page ("" after the last). It walks limit+1 entries.
func (t *table) channels(after string, limit int) (out []channelInfo, next string) {
	out = make([]channelInfo, 0, min(limit, t.names.Len()))
	for name, cr := range t.names.Ascend(lowerBound(after), btreemap.Max[string]()) {
		t.visited++
		if len(out) == limit {
			return out, out[len(out)-1].Name
		}
		out = append(out, channelInfo{name, cr.total})
	}
	return out, ""
}
