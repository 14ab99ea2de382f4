package engine

import (
	"bytes"
	"crypto/subtle"
	"strconv"

	"github.com/valyala/fasthttp"
)

// The server API lives in the node agent, which has the whole node's view.
// A worker's engine answers a request under /api/ (Config.APIKey set) on a
// file worker, never on a loop: it checks the API key, then hands the
// request to Config.APIProxy, which forwards it to the agent and fills the
// response in. The key is checked first on the loop, on the request head
// (refuseAPIHead): a request without the right key is answered 401 before
// any of its body is read, and one with a body is then closed, so that no
// anonymous client makes the node hold a body.

// Canned answers of the key check and of a failed hand-over, built once.
var (
	apiUnauthorized = []byte(`{"error":"missing or wrong API key"}` + "\n")
	apiNoAgent      = []byte(`{"error":"the node agent did not answer"}` + "\n")
)

// serveAPI answers one server-API request: 401 without the right key, else
// whatever the agent answers (502 when it does not).
func (s *Server) serveAPI(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	if !s.apiAuthorized(ctx) {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="zenconn-api"`)
		ctx.SetStatusCode(fasthttp.StatusUnauthorized)
		ctx.SetBody(apiUnauthorized)
		return
	}
	if err := s.cfg.APIProxy(&ctx.Request, &ctx.Response); err != nil {
		s.log.Warn("server API proxy", "err", err)
		ctx.SetStatusCode(fasthttp.StatusBadGateway)
		ctx.SetBody(apiNoAgent)
	}
}

// refuseAPIHead answers, on the loop, a server-API request whose head
// lacks the right key (401), or that has a body where there is no API
// (404), and reports whether it did. A refused request with a body ends
// the connection: its body is drained, never held.
func (c *Conn) refuseAPIHead(req *requestInfo, cl int) bool {
	hdr := &c.loop.http.hdr
	if !bytes.HasPrefix(hdr.RequestURI(), []byte("/api/")) {
		return false
	}
	keepAlive := cl == 0 && !hdr.ConnectionClose()
	switch {
	case c.srv.cfg.APIKey == "":
		if cl == 0 {
			return false // answered 404 by route, on keep-alive
		}
		c.respondSimple(req, 404, "not found\n", false, hdr.IsHead(), nil)
		return true
	case keyMatches(apiKeyOf(hdr), c.srv.cfg.APIKey):
		return false
	}
	b := append(c.loop.respBuf[:0], "HTTP/1.1 401 Unauthorized\r\nServer: zenconn\r\nContent-Type: application/json\r\n"+
		"WWW-Authenticate: Bearer realm=\"zenconn-api\"\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(apiUnauthorized)), 10)
	if !keepAlive {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	if !hdr.IsHead() {
		b = append(b, apiUnauthorized...)
	}
	c.loop.respBuf = b
	c.writeNow(b)
	c.srv.countStatus(401)
	c.srv.accessLog(c, req, 401, len(b)-bytes.Index(b, []byte("\r\n\r\n"))-4)
	if !keepAlive {
		c.linger()
	}
	return true
}

// apiKeyOf returns the key of a request: "Authorization: Bearer" or
// "X-API-Key".
func apiKeyOf(h *fasthttp.RequestHeader) []byte {
	if key := bearerToken(h.Peek("Authorization")); key != "" {
		return []byte(key)
	}
	return h.Peek("X-API-Key")
}

// keyMatches compares key with the configured one in constant time.
func keyMatches(key []byte, want string) bool {
	return subtle.ConstantTimeCompare(key, []byte(want)) == 1
}

// apiAuthorized compares the key from "Authorization: Bearer" or
// "X-API-Key" with the configured one in constant time.
func (s *Server) apiAuthorized(ctx *fasthttp.RequestCtx) bool {
	return keyMatches(apiKeyOf(&ctx.Request.Header), s.cfg.APIKey)
}
