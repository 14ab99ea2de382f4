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
// response in. A request that declares a body has its key checked first,
// on the loop, on the request head (refuseAPIHead): without the right key
// it is answered 401 before any of its body is read and the connection is
// closed, so that no anonymous client makes the node hold a body; its
// failure is counted and audited off the loop (keyFailures).

// Canned answers of the key check and of a failed hand-over, built once.
var (
	apiUnauthorized = []byte(`{"error":"missing or wrong API key"}` + "\n")
	apiNoAgent      = []byte(`{"error":"the node agent did not answer"}` + "\n")
)

// serveAPI answers one server-API request: 429 from an address past the
// failed-key limit, 401 without the right key (told to KeyAttempts; see
// apiauth.go), else whatever the agent answers (502 when it does not).
func (s *Server) serveAPI(ctx *fasthttp.RequestCtx) {
	if !s.checkKey(ctx) {
		return
	}
	ctx.SetContentType("application/json")
	if err := s.cfg.APIProxy(&ctx.Request, &ctx.Response); err != nil {
		s.log.Warn("server API proxy", "err", err)
		ctx.SetStatusCode(fasthttp.StatusBadGateway)
		ctx.SetBody(apiNoAgent)
	}
}

// refuseAPIHead answers, on the loop, a server-API request with a body
// whose head lacks the right key (401), or a request with a body where
// there is no API (404), and reports whether it did. The connection then
// ends: the body is drained, never held. A request without a body goes on
// to serveAPI, whose key check also answers 429 to an address past the
// failed-key limit (a check that asks the agent, so not on a loop).
func (c *Conn) refuseAPIHead(req *requestInfo, cl int) bool {
	hdr := &c.loop.http.hdr
	if !bytes.HasPrefix(hdr.RequestURI(), []byte("/api/")) {
		return false
	}
	switch {
	case cl == 0:
		return false // answered by route: 404 without an API, else serveAPI
	case c.srv.cfg.APIKey == "":
		c.respondSimple(req, 404, "not found\n", false, hdr.IsHead(), nil)
		return true
	case keyMatches(apiKeyOf(hdr), c.srv.cfg.APIKey):
		return false
	}
	c.srv.keyFailed(c.clientAddr().String())
	b := append(c.loop.respBuf[:0], "HTTP/1.1 401 Unauthorized\r\nServer: zenconn\r\nContent-Type: application/json\r\n"+
		"WWW-Authenticate: Bearer realm=\"zenconn-api\"\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(apiUnauthorized)), 10)
	b = append(b, "\r\nConnection: close\r\n\r\n"...)
	if !hdr.IsHead() {
		b = append(b, apiUnauthorized...)
	}
	c.loop.respBuf = b
	c.writeNow(b)
	c.srv.countStatus(401)
	c.srv.accessLog(c, req, 401, len(b)-bytes.Index(b, []byte("\r\n\r\n"))-4)
	c.linger()
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
