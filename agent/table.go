package agent

import (
	"slices"
	"sort"
	"time"
)

// table is the node's connection table and its channel → worker interest
// map, as the workers reported them. It is plain data: no lock, no
// goroutine, no I/O; the Agent guards it with its mutex.
type table struct {
	workers  int
	conns    map[string]*connRec
	interest map[string][]int // channel → subscriber count per worker
	users    map[string]int   // user → open connections (limits.go)
	subs     int              // subscriptions of every connection
	// onChannel, if set, hears of a channel gaining its first subscriber
	// on the node (on) or losing its last; it is called under the
	// Agent's mutex and must not block.
	onChannel func(ch string, on bool)
}

// connRec is one connection in the table.
type connRec struct {
	worker                int
	user, remote, protocl string
	// The TLS version and cipher suite (crypto/tls's numbers), 0 over
	// plain text.
	tlsVersion, tlsCipher uint16
	chans                 map[string]struct{}
	// Session fields, kept only when the node has a store.
	userAgent string
	connected time.Time
	joined    []string // every channel joined, in order
}

func newTable(workers int) *table {
	return &table{workers: workers, conns: map[string]*connRec{}, interest: map[string][]int{}, users: map[string]int{}}
}

// open adds connection id (replacing any entry of that id).
func (t *table) open(id string, c *connRec) {
	if c.chans == nil {
		c.chans = map[string]struct{}{}
	}
	if old := t.conns[id]; old != nil {
		t.countUser(old.user, -1)
		t.subs -= len(old.chans)
	}
	t.conns[id] = c
	t.countUser(c.user, 1)
}

// conn returns connection id, or nil.
func (t *table) conn(id string) *connRec { return t.conns[id] }

// close removes connection id and its interest; it returns the removed
// entry, or nil if there was none.
func (t *table) close(id string) *connRec {
	c := t.conns[id]
	if c == nil {
		return nil
	}
	for ch := range c.chans {
		t.dropInterest(ch, c.worker)
	}
	t.subs -= len(c.chans)
	delete(t.conns, id)
	t.countUser(c.user, -1)
	return c
}

// subscribe records that connection id subscribed to ch; with keepJoined
// the channel is also added to the connection's session history. It
// returns the connection (nil if unknown) and whether the subscription is
// new.
func (t *table) subscribe(id, ch string, keepJoined bool) (*connRec, bool) {
	c := t.conns[id]
	if c == nil {
		return nil, false
	}
	if _, ok := c.chans[ch]; ok {
		return c, false
	}
	c.chans[ch] = struct{}{}
	t.subs++
	counts := t.interest[ch]
	if counts == nil {
		counts = make([]int, t.workers)
		t.interest[ch] = counts
		t.channelChanged(ch, true)
	}
	counts[c.worker]++
	if keepJoined && !slices.Contains(c.joined, ch) {
		c.joined = append(c.joined, ch)
	}
	return c, true
}

// unsubscribe removes connection id's subscription to ch. It returns the
// connection (nil if unknown) and whether it was subscribed.
func (t *table) unsubscribe(id, ch string) (*connRec, bool) {
	c := t.conns[id]
	if c == nil {
		return nil, false
	}
	if _, ok := c.chans[ch]; !ok {
		return c, false
	}
	delete(c.chans, ch)
	t.subs--
	t.dropInterest(ch, c.worker)
	return c, true
}

func (t *table) dropInterest(ch string, w int) {
	counts := t.interest[ch]
	if counts == nil {
		return
	}
	if counts[w] > 0 {
		counts[w]--
	}
	if !anyPositive(counts) {
		delete(t.interest, ch)
		t.channelChanged(ch, false)
	}
}

func (t *table) channelChanged(ch string, on bool) {
	if t.onChannel != nil {
		t.onChannel(ch, on)
	}
}

func anyPositive(counts []int) bool {
	for _, n := range counts {
		if n > 0 {
			return true
		}
	}
	return false
}

// dropWorker removes worker w's connections and interest and returns the
// removed connections by id.
func (t *table) dropWorker(w int) map[string]*connRec {
	gone := map[string]*connRec{}
	for id, c := range t.conns {
		if c.worker == w {
			t.subs -= len(c.chans)
			delete(t.conns, id)
			t.countUser(c.user, -1)
			gone[id] = c
		}
	}
	for ch, counts := range t.interest {
		counts[w] = 0
		if !anyPositive(counts) {
			delete(t.interest, ch)
			t.channelChanged(ch, false)
		}
	}
	return gone
}

// targets appends to dst the workers that get a message published on
// channel by worker origin (-1: none of them): every other worker for a
// broadcast (channel "") or when all is set, else the other workers with
// subscribers of channel.
func (t *table) targets(dst []int, origin int, channel string, all bool) []int {
	all = all || channel == ""
	counts := t.interest[channel]
	for w := range t.workers {
		if w != origin && (all || (counts != nil && counts[w] > 0)) {
			dst = append(dst, w)
		}
	}
	return dst
}

// totals returns the node's connections and subscriptions.
func (t *table) totals() (conns, subs int) { return len(t.conns), t.subs }

// perWorker counts the connections and subscriptions of each worker.
func (t *table) perWorker() (conns, subs []int) {
	conns, subs = make([]int, t.workers), make([]int, t.workers)
	for _, c := range t.conns {
		conns[c.worker]++
		subs[c.worker] += len(c.chans)
	}
	return conns, subs
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

// list returns the connections of node, sorted by id, with their
// channels sorted.
func (t *table) list(node string) []connInfo {
	out := make([]connInfo, 0, len(t.conns))
	for id, c := range t.conns {
		chans := make([]string, 0, len(c.chans))
		for ch := range c.chans {
			chans = append(chans, ch)
		}
		sort.Strings(chans)
		out = append(out, connInfo{ID: id, User: c.user, Remote: c.remote, Protocol: c.protocl, Channels: chans, Worker: c.worker, Node: node})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// channelInfo is one entry of GET /api/channels.
type channelInfo struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
}

// channelCount returns the number of channels with subscribers.
func (t *table) channelCount() int { return len(t.interest) }

// channels returns the channels with subscribers, sorted by name.
func (t *table) channels() []channelInfo {
	out := make([]channelInfo, 0, len(t.interest))
	for ch, counts := range t.interest {
		n := 0
		for _, c := range counts {
			n += c
		}
		out = append(out, channelInfo{ch, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
