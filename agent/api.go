package agent

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/zenconn/server/proto"
	"github.com/zenconn/server/store"
)

// apiFrom is the "from" of messages published through the API.
const apiFrom = "api"

// apiHandler serves the server API for the whole node. Workers have
// checked the API key before proxying; the socket is the agent's own
// (mode 0600).
func (a *Agent) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/publish", a.apiPublish)
	mux.HandleFunc("POST /api/broadcast", a.apiBroadcast)
	mux.HandleFunc("POST /api/disconnect", a.apiDisconnect)
	mux.HandleFunc("GET /api/connections", a.scoped("connections", a.apiConnections))
	mux.HandleFunc("GET /api/channels", a.scoped("channels", a.apiChannels))
	mux.HandleFunc("GET /api/nodes", a.apiNodes)
	mux.HandleFunc("GET /api/workers", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, map[string]any{"workers": a.Workers()})
	})
	mux.HandleFunc("GET /api/sessions", a.scoped("sessions", a.apiSessions))
	mux.HandleFunc("GET /api/audit", a.scoped("records", a.apiAudit))
	mux.HandleFunc("GET /metrics", a.metrics)
	mux.HandleFunc("POST /internal/refused", a.apiRefused)
	mux.HandleFunc("GET /internal/blocked", a.apiBlocked)
	methods := map[string]string{"publish": "POST", "broadcast": "POST", "disconnect": "POST", "connections": "GET",
		"channels": "GET", "nodes": "GET", "workers": "GET", "sessions": "GET", "audit": "GET"}
	mux.HandleFunc("/api/{name}", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := methods[r.PathValue("name")]; ok {
			w.Header().Set("Allow", m)
			reply(w, http.StatusMethodNotAllowed, apiError{"use " + m})
			return
		}
		reply(w, http.StatusNotFound, apiError{"no such endpoint"})
	})
	return mux
}

type apiError struct {
	Error string `json:"error"`
}

func reply(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	replyRaw(w, status, append(b, '\n'))
}

// replyRaw answers with a JSON body already encoded (another node's).
func replyRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// decodeBody reads a JSON body into v, answering 400 itself on failure.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil || len(body) == 0 {
		reply(w, http.StatusBadRequest, apiError{"a JSON body is required"})
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		reply(w, http.StatusBadRequest, apiError{"invalid JSON body"})
		return false
	}
	return true
}

func (a *Agent) apiPublish(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Channel *string         `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	switch {
	case req.Channel == nil:
		reply(w, http.StatusBadRequest, apiError{"channel is required"})
	case !proto.ValidChannel(*req.Channel):
		reply(w, http.StatusBadRequest, apiError{"invalid channel name: 1-128 bytes of A-Z a-z 0-9 _ . : @ -"})
	case req.Data == nil:
		reply(w, http.StatusBadRequest, apiError{"data is required"})
	case !proto.ValidRaw(req.Data):
		reply(w, http.StatusBadRequest, apiError{"data is not valid JSON"})
	case a.diskFull(w):
	default:
		a.forward(-1, *req.Channel, apiFrom, req.Data, false)
		a.apiAudited(w, &store.Record{Worker: -1, Op: store.OpPublish, Channel: *req.Channel, Data: req.Data})
	}
}

// diskFull answers 503 and reports true when the audit log waits for disk
// space and acks wait for the records (--audit-sync always): the message
// is refused rather than delivered with an answer that would wait.
func (a *Agent) diskFull(w http.ResponseWriter) bool {
	if a.st == nil || !a.cfg.DurableAcks || !a.st.DiskFull() {
		return false
	}
	w.Header().Set("Retry-After", "1")
	reply(w, http.StatusServiceUnavailable, apiError{"overloaded: the audit log is paused, the disk is full; retry"})
	return true
}

// apiAudited audits a server-API publish or broadcast and answers: with
// durable acks, only once the record is committed.
func (a *Agent) apiAudited(w http.ResponseWriter, r *store.Record) {
	if a.st == nil {
		reply(w, http.StatusOK, map[string]bool{"ok": true})
		return
	}
	r.Node = a.cfg.Node
	if !a.cfg.DurableAcks {
		a.st.Append(r, nil)
		reply(w, http.StatusOK, map[string]bool{"ok": true})
		return
	}
	done := make(chan error, 1)
	a.st.Append(r, func(err error) { done <- err })
	if err := <-done; err != nil {
		reply(w, http.StatusInternalServerError, apiError{"delivered, but the audit log could not be written: " + err.Error()})
		return
	}
	reply(w, http.StatusOK, map[string]bool{"ok": true})
}

func (a *Agent) apiBroadcast(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Data json.RawMessage `json:"data"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	switch {
	case req.Data == nil:
		reply(w, http.StatusBadRequest, apiError{"data is required"})
	case !proto.ValidRaw(req.Data):
		reply(w, http.StatusBadRequest, apiError{"data is not valid JSON"})
	case a.diskFull(w):
	default:
		a.forward(-1, "", apiFrom, req.Data, false)
		a.apiAudited(w, &store.Record{Worker: -1, Op: store.OpBroadcast, Data: req.Data})
	}
}

func (a *Agent) apiDisconnect(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Conn string `json:"conn"`
	}
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Conn == "" {
		reply(w, http.StatusBadRequest, apiError{"conn is required"})
		return
	}
	settled := a.settleRings()
	node := connNode(req.Conn)
	switch {
	case a.kick(req.Conn):
		reply(w, http.StatusOK, map[string]bool{"disconnected": true})
	case a.cl != nil && node != "" && node != a.cfg.Node && a.cl.Known(node):
		a.relayDisconnect(w, r, node, req.Conn)
	case !settled:
		reply(w, http.StatusServiceUnavailable, apiError{"no such connection yet: the node is behind reading its workers; retry"})
	default:
		reply(w, http.StatusNotFound, apiError{"no such connection"})
	}
}

func (a *Agent) apiConnections(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := tablePage(w, r)
	if !ok {
		return
	}
	settled := a.settleRings()
	a.mu.Lock()
	list, next := a.tab.list(a.cfg.Node, after, limit)
	a.mu.Unlock()
	replyTable(w, settled, "connections", list, next)
}

func (a *Agent) apiChannels(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := tablePage(w, r)
	if !ok {
		return
	}
	settled := a.settleRings()
	a.mu.Lock()
	out, next := a.tab.channels(after, limit)
	a.mu.Unlock()
	replyTable(w, settled, "channels", out, next)
}

// maxCursor is the longest cursor of a table listing: a connection id or
// a channel name.
const maxCursor = 256

// tablePage reads the page a table listing asks for: the cursor (the last
// id or name of the page before) and the limit (default
// store.DefaultLimit, at most store.MaxLimit). It answers 400 itself and
// reports false on a bad one.
func tablePage(w http.ResponseWriter, r *http.Request) (after string, limit int, ok bool) {
	q := r.URL.Query()
	if !knownParams(w, q, "limit", "cursor") {
		return "", 0, false
	}
	limit, err := parseLimit(q)
	if err != nil {
		reply(w, http.StatusBadRequest, apiError{err.Error()})
		return "", 0, false
	}
	if limit == 0 {
		limit = store.DefaultLimit
	}
	after = q.Get("cursor")
	if q.Has("cursor") && (after == "" || len(after) > maxCursor) {
		reply(w, http.StatusBadRequest, apiError{"invalid cursor"})
		return "", 0, false
	}
	return after, limit, true
}

// replyTable answers a page of a listing of the agent's tables, with the
// cursor of the next page ("" on the last). The listing includes
// everything the workers reported before the request; when the agent could
// not catch up in time (settled is false) it is what the agent has, marked
// "behind":true, because an operator under overload still needs to see it.
func replyTable(w http.ResponseWriter, settled bool, name string, list any, next string) {
	if settled {
		reply(w, http.StatusOK, map[string]any{name: list, "next": next})
		return
	}
	reply(w, http.StatusOK, map[string]any{name: list, "next": next, "behind": true})
}
