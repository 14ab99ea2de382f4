package engine

import (
	"crypto/subtle"
	"slices"
	"strings"
	"time"

	"github.com/bytedance/sonic"
	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/proto"
)

// The server API, under /api/ on the client port, enabled by Config.APIKey.
// It runs on the file workers, never on a loop: reads of connection state
// are collected from each loop by a task on that loop.

// apiTimeout bounds how long a request waits for the loops' answers.
const apiTimeout = 2 * time.Second

type apiError struct {
	Error string `json:"error"`
}

func (s *Server) serveAPI(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	if !s.apiAuthorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="zenconn-api"`)
		apiReply(ctx, fasthttp.StatusUnauthorized, apiError{"missing or wrong API key"})
		return
	}
	if s.cfg.APIProxy != nil {
		if err := s.cfg.APIProxy(&ctx.Request, &ctx.Response); err != nil {
			s.log.Warn("server API proxy", "err", err)
			apiReply(ctx, fasthttp.StatusBadGateway, apiError{"the node agent did not answer"})
		}
		return
	}
	method := string(ctx.Method())
	route := strings.TrimPrefix(string(ctx.Path()), "/api/")
	want := map[string]string{
		"publish": "POST", "broadcast": "POST", "disconnect": "POST",
		"connections": "GET", "channels": "GET",
	}[route]
	switch {
	case want == "":
		apiReply(ctx, fasthttp.StatusNotFound, apiError{"no such endpoint"})
		return
	case method != want && !(want == "GET" && method == "HEAD"):
		ctx.Response.Header.Set("Allow", want)
		apiReply(ctx, fasthttp.StatusMethodNotAllowed, apiError{"use " + want})
		return
	}
	switch route {
	case "publish":
		s.apiPublish(ctx)
	case "broadcast":
		s.apiBroadcast(ctx)
	case "disconnect":
		s.apiDisconnect(ctx)
	case "connections":
		s.apiConnections(ctx)
	case "channels":
		s.apiChannels(ctx)
	}
}

// apiAuthorized compares the key from "Authorization: Bearer" or
// "X-API-Key" with the configured one in constant time.
func (s *Server) apiAuthorized(ctx *fasthttp.RequestCtx) bool {
	key := bearerToken(ctx.Request.Header.Peek("Authorization"))
	if key == "" {
		key = string(ctx.Request.Header.Peek("X-API-Key"))
	}
	return subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) == 1
}

func apiReply(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := sonic.ConfigStd.Marshal(v)
	if err != nil {
		status, b = fasthttp.StatusInternalServerError, []byte(`{"error":"encoding the reply failed"}`)
	}
	ctx.SetStatusCode(status)
	ctx.SetBody(append(b, '\n'))
}

// decodeBody decodes a JSON request body into v, answering 400 itself on
// failure.
func decodeBody(ctx *fasthttp.RequestCtx, v any) bool {
	body := ctx.PostBody()
	if len(body) == 0 {
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"a JSON body is required"})
		return false
	}
	if err := sonic.ConfigStd.Unmarshal(body, v); err != nil {
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"invalid JSON body"})
		return false
	}
	return true
}

// apiFrom is the "from" of messages published through the API.
const apiFrom = "api"

func (s *Server) apiPublish(ctx *fasthttp.RequestCtx) {
	var req struct {
		Channel *string                `json:"channel"`
		Data    sonic.NoCopyRawMessage `json:"data"`
	}
	if !decodeBody(ctx, &req) {
		return
	}
	switch {
	case req.Channel == nil:
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"channel is required"})
		return
	case !proto.ValidChannel(*req.Channel):
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"invalid channel name: 1-128 bytes of A-Z a-z 0-9 _ . : @ -"})
		return
	case req.Data == nil:
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"data is required"})
		return
	case !proto.ValidRaw(req.Data):
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"data is not valid JSON"})
		return
	}
	s.hub.publish(nil, newOutMsg(*req.Channel, apiFrom, req.Data, false), nil)
	apiReply(ctx, fasthttp.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) apiBroadcast(ctx *fasthttp.RequestCtx) {
	var req struct {
		Data sonic.NoCopyRawMessage `json:"data"`
	}
	if !decodeBody(ctx, &req) {
		return
	}
	if req.Data == nil {
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"data is required"})
		return
	}
	if !proto.ValidRaw(req.Data) {
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"data is not valid JSON"})
		return
	}
	s.hub.publish(nil, newOutMsg("", apiFrom, req.Data, false), nil)
	apiReply(ctx, fasthttp.StatusOK, map[string]bool{"ok": true})
}

func (s *Server) apiDisconnect(ctx *fasthttp.RequestCtx) {
	var req struct {
		Conn string `json:"conn"`
	}
	if !decodeBody(ctx, &req) {
		return
	}
	if req.Conn == "" {
		apiReply(ctx, fasthttp.StatusBadRequest, apiError{"conn is required"})
		return
	}
	found := false
	ok := s.onEveryLoop(func(l *loop) {
		if l.kick(req.Conn) {
			found = true
		}
	})
	switch {
	case !ok:
		apiReply(ctx, fasthttp.StatusServiceUnavailable, apiError{"the event loops did not answer in time"})
	case !found:
		apiReply(ctx, fasthttp.StatusNotFound, apiError{"no such connection"})
	default:
		apiReply(ctx, fasthttp.StatusOK, map[string]bool{"disconnected": true})
	}
}

// ConnInfo describes one WebSocket connection in the server API.
type ConnInfo struct {
	ID       string   `json:"id"`
	User     string   `json:"user"`
	Remote   string   `json:"remote"`
	Protocol string   `json:"protocol"`
	Channels []string `json:"channels"`
}

func (s *Server) apiConnections(ctx *fasthttp.RequestCtx) {
	var out []ConnInfo
	ok := s.onEveryLoop(func(l *loop) {
		for c := range l.conns {
			if c.state != stateWS {
				continue
			}
			ci := ConnInfo{ID: c.id, Remote: c.t.RemoteAddr().String(), Protocol: "json", Channels: slices.Clone(c.chans)}
			if c.bin {
				ci.Protocol = "bin"
			}
			if c.ident != nil {
				ci.User = c.ident.User
			}
			if ci.Channels == nil {
				ci.Channels = []string{}
			}
			slices.Sort(ci.Channels)
			out = append(out, ci)
		}
	})
	if !ok {
		apiReply(ctx, fasthttp.StatusServiceUnavailable, apiError{"the event loops did not answer in time"})
		return
	}
	if out == nil {
		out = []ConnInfo{}
	}
	slices.SortFunc(out, func(a, b ConnInfo) int { return strings.Compare(a.ID, b.ID) })
	apiReply(ctx, fasthttp.StatusOK, map[string]any{"connections": out})
}

// ChannelInfo describes one channel in the server API.
type ChannelInfo struct {
	Name        string `json:"name"`
	Subscribers int    `json:"subscribers"`
}

func (s *Server) apiChannels(ctx *fasthttp.RequestCtx) {
	counts := map[string]int{}
	ok := s.onEveryLoop(func(l *loop) {
		for ch, sl := range l.subs {
			counts[ch] += len(sl.conns)
		}
	})
	if !ok {
		apiReply(ctx, fasthttp.StatusServiceUnavailable, apiError{"the event loops did not answer in time"})
		return
	}
	out := make([]ChannelInfo, 0, len(counts))
	for name, n := range counts {
		out = append(out, ChannelInfo{name, n})
	}
	slices.SortFunc(out, func(a, b ChannelInfo) int { return strings.Compare(a.Name, b.Name) })
	apiReply(ctx, fasthttp.StatusOK, map[string]any{"channels": out})
}

// onEveryLoop runs fn on each loop, one loop at a time (so fn may update
// shared variables without locks), and reports whether all answered within
// apiTimeout.
func (s *Server) onEveryLoop(fn func(*loop)) bool {
	deadline := time.NewTimer(apiTimeout)
	defer deadline.Stop()
	for _, l := range s.hub.allLoops() {
		done := make(chan struct{})
		if err := l.exec.Execute(func() { fn(l); close(done) }); err != nil {
			return false
		}
		select {
		case <-done:
		case <-deadline.C:
			// fn may still run later; callers must not read what it
			// writes after a false return.
			return false
		}
	}
	return true
}
