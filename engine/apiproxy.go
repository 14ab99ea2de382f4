package engine

import (
	"github.com/valyala/fasthttp"
)

// The server API lives in the node agent, which has the whole node's view.
// A worker's engine answers a request under /api/ (Config.APIKey set) on a
// file worker, never on a loop: it checks the API key, then hands the
// request to Config.APIProxy, which forwards it to the agent and fills the
// response in.

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
