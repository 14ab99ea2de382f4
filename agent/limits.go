package agent

import (
	"github.com/zenconn/server/nodemsg"
	"github.com/zenconn/server/proto"
)

// Connections per user. Each worker refuses a handshake or an auth op
// for a user that already holds Config.MaxConnsPerUser connections in
// that worker; the node-wide bound is kept here, where every worker's
// connections are seen: a connection that takes its user past the bound
// (opened on one worker while the others hold the rest) is closed with
// 4009 as soon as its record arrives.

// countUser adds d to user's open connections ("" counts for nobody).
func (t *table) countUser(user string, d int) {
	if user == "" {
		return
	}
	if n := t.users[user] + d; n > 0 {
		t.users[user] = n
	} else {
		delete(t.users, user)
	}
}

// setUser moves connection c to user.
func (t *table) setUser(c *connRec, user string) {
	t.countUser(c.user, -1)
	c.user = user
	t.countUser(user, 1)
}

// overUserLimitLocked reports whether user holds more connections than
// the node allows. a.mu is held.
func (a *Agent) overUserLimitLocked(user string) bool {
	return user != "" && a.cfg.MaxConnsPerUser > 0 && a.tab.users[user] > a.cfg.MaxConnsPerUser
}

// evictForUser closes conn, on worker s, for taking its user past the
// node's bound.
func (a *Agent) evictForUser(s *slot, conn, user string) {
	a.userEvictions.Add(1)
	a.log.Warn("connection closed: too many connections for this user on the node", "conn", conn, "user", user,
		"limit", a.cfg.MaxConnsPerUser)
	a.send(s, nodemsg.AppendEvict(nil, conn, proto.CloseUserLimit))
}
