package agent

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/zenconn/server/store"
)

// settleTimeout bounds how long a query waits for the workers' records
// published before it to be applied and committed.
const settleTimeout = 2 * time.Second

// settle makes a query see everything the node acknowledged before it:
// the workers' records (settleRings), then the store's commit of what was
// queued. It answers 503 itself and reports false when that takes more
// than settleTimeout, or when the store waits for disk space.
func (a *Agent) settle(w http.ResponseWriter, what string) bool {
	err := errBehind
	if a.settleRings() {
		err = a.st.BarrierWithin(settleTimeout)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrDiskFull):
		reply(w, http.StatusServiceUnavailable, apiError{"the " + what + " is paused: the disk is full; retry"})
	default:
		reply(w, http.StatusServiceUnavailable, apiError{"the " + what + " is behind; retry"})
	}
	return false
}

var errBehind = errors.New("behind")

// settleRings waits until each worker ring has been read up to the
// position it had when settleRings was called, so the records published
// before it (a connection its client already saw welcomed, a subscription
// already acked) are applied to the agent's tables. It reports false when
// that takes more than settleTimeout (the agent is held back by the store).
func (a *Agent) settleRings() bool {
	type mark struct {
		pos  uint64
		ring interface{ Consumed() uint64 }
	}
	var marks []mark
	for _, s := range a.slots {
		s.mu.Lock()
		for _, r := range s.rings {
			marks = append(marks, mark{r.Published(), r})
		}
		s.mu.Unlock()
	}
	deadline := time.Now().Add(settleTimeout)
	for _, m := range marks {
		for m.ring.Consumed() < m.pos {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	return true
}

func parseLimit(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > store.MaxLimit {
		return 0, errors.New("limit must be 1-" + strconv.Itoa(store.MaxLimit))
	}
	return n, nil
}

// knownParams rejects query parameters the endpoint does not take, so a
// misspelt filter is an error rather than an unfiltered answer.
func knownParams(w http.ResponseWriter, q url.Values, names ...string) bool {
	for k := range q {
		ok := false
		for _, n := range names {
			ok = ok || k == n
		}
		if !ok {
			reply(w, http.StatusBadRequest, apiError{"unknown parameter " + strconv.Quote(k)})
			return false
		}
	}
	return true
}

var validOps = map[string]bool{
	store.OpPublish: true, store.OpBroadcast: true, store.OpSubscribe: true, store.OpUnsubscribe: true,
	store.OpAuth: true, store.OpConnect: true, store.OpDisconnect: true, store.OpRefused: true,
}

func (a *Agent) apiAudit(w http.ResponseWriter, r *http.Request) {
	if a.st == nil {
		reply(w, http.StatusNotFound, apiError{"this node keeps no audit log"})
		return
	}
	q := r.URL.Query()
	if !knownParams(w, q, "channel", "user", "op", "since", "until", "limit", "cursor") {
		return
	}
	aq := store.AuditQuery{Channel: q.Get("channel"), User: q.Get("user"), Op: q.Get("op"), Cursor: q.Get("cursor")}
	var err error
	if aq.Op != "" && !validOps[aq.Op] {
		reply(w, http.StatusBadRequest, apiError{"op must be one of publish, broadcast, subscribe, unsubscribe, auth, connect, disconnect, refused"})
		return
	}
	if aq.Since, err = store.ParseTime(q.Get("since")); err != nil {
		reply(w, http.StatusBadRequest, apiError{"since: " + err.Error()})
		return
	}
	if aq.Until, err = store.ParseTime(q.Get("until")); err != nil {
		reply(w, http.StatusBadRequest, apiError{"until: " + err.Error()})
		return
	}
	if aq.Limit, err = parseLimit(q); err != nil {
		reply(w, http.StatusBadRequest, apiError{err.Error()})
		return
	}
	if !a.queries.enter(w) {
		return
	}
	defer a.queries.leave()
	if !a.settle(w, "audit log") {
		return
	}
	recs, next, err := a.st.AuditContext(r.Context(), aq)
	switch {
	case r.Context().Err() != nil:
		// Nobody waits for the answer any more (the client left, or the
		// worker's proxy gave up): the query stopped where it was.
		a.queries.gone(err)
	case errors.Is(err, store.ErrBadCursor):
		reply(w, http.StatusBadRequest, apiError{"invalid cursor"})
	case err != nil:
		a.log.Error("audit query", "err", err)
		reply(w, http.StatusInternalServerError, apiError{"the audit query failed"})
	default:
		reply(w, http.StatusOK, map[string]any{"records": recs, "next": next})
	}
}

func (a *Agent) apiSessions(w http.ResponseWriter, r *http.Request) {
	if a.st == nil {
		reply(w, http.StatusNotFound, apiError{"this node keeps no sessions"})
		return
	}
	q := r.URL.Query()
	if !knownParams(w, q, "user", "active", "limit", "cursor") {
		return
	}
	sq := store.SessionQuery{User: q.Get("user"), Cursor: q.Get("cursor")}
	switch v := q.Get("active"); v {
	case "":
	case "true", "false":
		b := v == "true"
		sq.Active = &b
	default:
		reply(w, http.StatusBadRequest, apiError{"active must be true or false"})
		return
	}
	var err error
	if sq.Limit, err = parseLimit(q); err != nil {
		reply(w, http.StatusBadRequest, apiError{err.Error()})
		return
	}
	if !a.queries.enter(w) {
		return
	}
	defer a.queries.leave()
	if !a.settle(w, "session log") {
		return
	}
	out, next, err := a.st.SessionsContext(r.Context(), sq)
	switch {
	case r.Context().Err() != nil:
		// Nobody waits for the answer any more.
		a.queries.gone(err)
	case errors.Is(err, store.ErrBadCursor):
		reply(w, http.StatusBadRequest, apiError{"invalid cursor"})
	case err != nil:
		a.log.Error("session query", "err", err)
		reply(w, http.StatusInternalServerError, apiError{"the session query failed"})
	default:
		reply(w, http.StatusOK, map[string]any{"sessions": out, "next": next})
	}
}
