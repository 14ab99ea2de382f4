package store

import (
	"slices"
)

// sessionHold is the queue's part that keeps sessions waiting for the
// writer: the latest state of each, in order of first change. Changes of a
// session already held are merged into its one write. In the batch and none
// sync modes the queue lets a session wait the sync interval after its first
// change (see queue.take): a connection that opens, subscribes and closes
// within it costs one write of its session, already closed, and no
// active-session marker set then deleted. The queue's lock guards it.
type sessionHold struct {
	latest map[string]*Session // by connection id
	// former lists the users a held session had before a merged change
	// replaced them: the session stays indexed under each.
	former map[string][]string
	order  []string // connection ids in order of first change
	since  []int64  // when each of order was first changed (Unix ns)
}

func newSessionHold() sessionHold {
	return sessionHold{latest: map[string]*Session{}, former: map[string][]string{}}
}

// len is the number of sessions held.
func (h *sessionHold) len() int { return len(h.order) }

// oldest is when the first session held was first changed (Unix ns); only
// with len() > 0.
func (h *sessionHold) oldest() int64 { return h.since[0] }

// merge makes se the state of its session if that session is held, and
// reports whether it was; se is copied.
func (h *sessionHold) merge(se *Session) bool {
	cur := h.latest[se.Conn]
	if cur == nil {
		return false
	}
	if cur.User != "" && cur.User != se.User {
		h.former[se.Conn] = append(h.former[se.Conn], cur.User)
	}
	first := cur.First
	*cur = *se
	cur.First = first // nothing stored yet if the first change held was the first
	cur.Channels = slices.Clone(se.Channels)
	return true
}

// add holds a session not held yet, first changed at now (Unix ns); se is
// copied.
func (h *sessionHold) add(se *Session, now int64) {
	cp := *se
	cp.Channels = slices.Clone(se.Channels)
	h.latest[se.Conn] = &cp
	h.order = append(h.order, se.Conn)
	h.since = append(h.since, now)
}

// dueBy is the number of sessions first changed at or before limit (Unix
// ns): the first ones in order.
func (h *sessionHold) dueBy(limit int64) int {
	n, _ := slices.BinarySearch(h.since, limit+1)
	return n
}

// takeInto moves the first n sessions, and their former users, into g.
func (h *sessionHold) takeInto(n int, g *group) {
	for _, id := range h.order[:n] {
		g.sessions = append(g.sessions, h.latest[id])
		g.former = append(g.former, h.former[id])
		delete(h.latest, id)
		delete(h.former, id)
	}
	rest := copy(h.order, h.order[n:])
	clear(h.order[rest:])
	h.order = h.order[:rest]
	h.since = h.since[:copy(h.since, h.since[n:])]
}
