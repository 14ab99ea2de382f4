package engine

import (
	"math"
	"math/bits"
	"time"
	"unsafe"
)

// wheelSlots is the number of one-second slots of a loop's wheel (a power
// of two): a connection whose next deadline is further away is filed in
// the farthest slot and looked at again when the wheel reaches it.
const wheelSlots = 256

// dueSlot is the wheel's extra slot: the connections a scan took out of
// the slots it reached and has not checked yet.
const dueSlot = wheelSlots

// wheel files a loop's connections by the second of their next deadline,
// so that the periodic scan (loop.scan) looks only at the connections that
// may be due rather than at all of them. It is a hashed timing wheel:
// slot s mod wheelSlots holds the connections filed for second s, for
// seconds from cur to cur+wheelSlots-1.
//
// A connection is never filed later than its next deadline (Conn.nextDue),
// but may be filed earlier: reads only postpone its deadlines (lastRead),
// so a read does not touch the wheel; the scan checks each connection of
// the slots it reaches (Conn.check) and files it again at its next
// deadline, which is how a connection that was read from moves on. What
// can bring a deadline earlier (an input phase starting, the upgrade to
// WebSocket, a token expiry, closing) calls Conn.reschedule, which moves
// the connection to the earlier slot. A closed connection leaves at once:
// its slot and position are kept in the Conn (wslot, wpos) and removal
// swaps the slot's last connection into its place.
//
// The wheel belongs to the loop's goroutine.
type wheel struct {
	slots [wheelSlots + 1][]*Conn // the last one is dueSlot
	// cur is the second the last scan reached: the next scan starts with
	// its slot again, which holds what became due later in that second.
	cur int64
	// visits counts the connections checked by scans.
	visits uint64
}

// second returns the Unix second of a time in Unix ns.
func second(ns int64) int64 { return ns / int64(time.Second) }

// file adds c, not filed, to slot i.
func (w *wheel) file(c *Conn, i int) {
	s := &w.slots[i]
	c.wslot, c.wpos = uint16(i+1), int32(len(*s))
	*s = append(*s, c)
}

// remove takes c out of the wheel if it is filed.
func (w *wheel) remove(c *Conn) {
	if c.wslot == 0 {
		return
	}
	s := &w.slots[c.wslot-1]
	last := len(*s) - 1
	moved := (*s)[last]
	(*s)[c.wpos] = moved
	moved.wpos = c.wpos
	(*s)[last] = nil
	*s = (*s)[:last]
	c.wslot = 0
}

// ahead returns how many seconds after cur slot i comes.
func (w *wheel) ahead(i int) int64 { return (int64(i) - w.cur) & (wheelSlots - 1) }

// advance takes the connections filed for the seconds from cur through
// sec out of their slots into dueSlot and makes sec the current second.
// When the clock went back, those filed from sec through cur are taken.
func (w *wheel) advance(sec int64) {
	from, to := min(w.cur, sec), max(w.cur, sec)
	from = max(from, to-wheelSlots+1)
	due := &w.slots[dueSlot]
	for s := from; s <= to; s++ {
		src := &w.slots[s&(wheelSlots-1)]
		n := len(*src)
		for _, c := range *src {
			c.wslot, c.wpos = dueSlot+1, int32(len(*due))
			*due = append(*due, c)
		}
		if s == w.cur {
			n = cap(*src) // taken by the last scan already: what it held came since
		}
		*src = emptied(*src, n)
	}
	w.cur = sec
}

// popDue takes the last connection out of dueSlot, nil when it is empty.
func (w *wheel) popDue() *Conn {
	due := &w.slots[dueSlot]
	n := len(*due)
	if n == 0 {
		return nil
	}
	c := (*due)[n-1]
	(*due)[n-1] = nil
	*due = (*due)[:n-1]
	c.wslot = 0
	return c
}

// emptied returns slot s, which held n connections, emptied: its array is
// kept for the next ones unless it is much larger than n (what a burst of
// connections left), so the wheel holds about as much as it files.
func emptied(s []*Conn, n int) []*Conn {
	if cap(s) > 2*n+64 {
		return nil
	}
	clear(s)
	return s[:0]
}

// reschedule files c at its next deadline when that comes before the slot
// it is filed in (or it is not filed), and takes a closed connection out.
// It is called wherever a deadline may come earlier; a connection the scan
// under way has yet to check is left to it.
func (c *Conn) reschedule() {
	w := &c.loop.wheel
	due, ok := c.nextDue()
	if !ok {
		w.remove(c)
		return
	}
	ahead := min(max(second(due)-w.cur, 0), wheelSlots-1)
	if c.wslot == dueSlot+1 || c.wslot != 0 && w.ahead(int(c.wslot-1)) <= ahead {
		return
	}
	w.remove(c)
	w.file(c, int((w.cur+ahead)&(wheelSlots-1)))
}

// nextDue returns the earliest time (Unix ns) at which Conn.check may have
// something to do for c; ok is false for a closed connection. A connection
// whose HTTP response is made off the loop is checked on every scan.
func (c *Conn) nextDue() (due int64, ok bool) {
	switch c.state {
	case stateClosing:
		return c.closeDue(), true
	case stateHTTP:
		if c.busy {
			return 0, true
		}
		return min(c.phaseDue(), c.idleDue()), true
	case stateWS:
		due = min(c.phaseDue(), c.idleDue(), c.pingDue())
		if c.expires != 0 {
			due = min(due, c.expires)
		}
		return due, true
	}
	return 0, false
}

// closeDue is when a closing connection is cut.
func (c *Conn) closeDue() int64 { return c.closeDeadline + 1 }

// idleDue is when a silent connection times out: IdleTimeout after its
// last read. A WebSocket times out only once it has been pinged and left
// the ping unanswered (pinged): at the loop's idle timeout after its last
// read, and not before the ping is as old as the gap between the loop's
// idle timeout and ping interval, its time to answer. So when the loop's
// keep-alive shrinks (setKeepAlive), a connection silent for longer than
// the new timeout, under the old interval, is pinged before it is closed.
func (c *Conn) idleDue() int64 {
	if c.state != stateWS {
		return c.lastRead + int64(c.srv.cfg.IdleTimeout) + 1
	}
	if !c.pinged() {
		return math.MaxInt64
	}
	l := c.loop
	return max(c.lastRead+l.idleWS, c.lastPing+l.idleWS-l.pingEvery) + 1
}

// pinged reports whether the WebSocket has a ping unanswered: nothing was
// read from it since the last one.
func (c *Conn) pinged() bool { return c.lastPing > c.lastRead }

// pingDue is when a WebSocket is pinged: once it has been silent for
// pingAfter, and never again while that ping is unanswered.
func (c *Conn) pingDue() int64 {
	if c.pinged() {
		return math.MaxInt64
	}
	return c.lastRead + c.pingAfter()
}

// pingAfter is the loop's ping interval plus a share of a tenth of it
// that is fixed for each connection (a hash of its address), so that
// connections accepted together are not pinged in the same second, and
// whose pings drift apart as their periods differ. The share stays under
// half the margin to the loop's idle timeout.
func (c *Conn) pingAfter() int64 {
	ping, idle := c.loop.pingEvery, c.loop.idleWS
	spread := max(min(ping/10, (idle-ping)/2), 0)
	share, _ := bits.Mul64(uint64(uintptr(unsafe.Pointer(c)))*0x9e3779b97f4a7c15, uint64(spread))
	return ping + int64(share)
}

// phaseDue is when the deadline of the connection's input phase has passed
// (see phaseExpired), math.MaxInt64 when no phase is under way.
func (c *Conn) phaseDue() int64 {
	cfg := &c.srv.cfg
	var limit time.Duration
	switch c.phase {
	case phaseFirst:
		limit = cfg.HandshakeTimeout
	case phaseHead:
		limit = cfg.HeaderTimeout
	case phaseBody:
		limit = cfg.BodyTimeout
	case phaseMessage:
		limit = cfg.MessageTimeout
	default:
		return math.MaxInt64
	}
	return c.phaseStart + int64(limit) + 1
}

// setKeepAlive sets the loop's ping interval and WebSocket idle timeout
// for n WebSockets: PingInterval and IdleTimeout, unless pinging n
// of them that often would take more than the loop's share of
// PingRate; then the interval is what keeps to that share, and the idle
// timeout grows in the same proportion. A connection filed in the wheel
// keeps the deadline it was filed with until the scan reaches it, so
// when the interval shrinks again, it is pinged at most one old interval
// late.
func (l *loop) setKeepAlive(n int) {
	cfg := &l.srv.cfg
	ping, idle := cfg.PingInterval, cfg.IdleTimeout
	if cfg.PingRate > 0 && n > 0 {
		share := cfg.PingRate / float64(max(cfg.Loops, 1))
		if need := time.Duration(float64(n) / share * float64(time.Second)); need > ping {
			idle = time.Duration(float64(idle) * float64(need) / float64(ping))
			ping = need
		}
	}
	l.pingEvery, l.idleWS = int64(ping), int64(idle)
}
