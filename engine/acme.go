package engine

import (
	"bytes"
	"crypto/tls"

	"github.com/valyala/fasthttp"
)

// ACMEChallengePrefix is the path of the HTTP-01 challenges of ACME (RFC
// 8555 section 8.3), followed by the token.
const ACMEChallengePrefix = "/.well-known/acme-challenge/"

// maxACMEToken bounds the token of an HTTP-01 request.
const maxACMEToken = 128

// NewCertFilesPending is NewCertFiles for files that may not exist yet
// (certificates obtained while the server runs, see Config.ACMEHTTP01):
// without a certificate every TLS handshake fails, and the first time the
// files change (appear) the watch loads them. A pair that does not load
// now is treated the same way.
func NewCertFilesPending(certFile, keyFile string, load func() (tls.Certificate, error)) *CertFiles {
	c := &CertFiles{certFile: certFile, keyFile: keyFile, load: load}
	c.stamp = c.stamps()
	if cert, err := load(); err == nil {
		c.cur.Store(&cert)
	}
	return c
}

// validACMEToken tells whether a token is base64url (RFC 8555 section
// 8.1), 1 to maxACMEToken characters.
func validACMEToken(token []byte) bool {
	if len(token) == 0 || len(token) > maxACMEToken {
		return false
	}
	for _, c := range token {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// serveACMEChallenge answers GET /.well-known/acme-challenge/<token>
// (Config.ACMEHTTP01), on plain text and TLS alike, before any redirect
// to TLS: a token that is not base64url gets 404 at once, another is
// looked up by a file worker, off the loop.
func (c *Conn) serveACMEChallenge(req *requestInfo, path []byte, keepAlive bool) {
	hdr := &c.loop.http.hdr
	if !hdr.IsGet() && !hdr.IsHead() {
		c.respondSimple(req, 405, "method not allowed\n", keepAlive, hdr.IsHead(), allowGetHead)
		return
	}
	if !validACMEToken(path[len(ACMEChallengePrefix):]) {
		c.respondSimple(req, 404, "not found\n", keepAlive, hdr.IsHead(), nil)
		return
	}
	c.startJob(c.srv.serveACMEHTTP01, req, keepAlive, nil)
}

// serveACMEHTTP01 answers a checked HTTP-01 request on a file worker.
func (s *Server) serveACMEHTTP01(ctx *fasthttp.RequestCtx) {
	token, found := bytes.CutPrefix(ctx.Path(), []byte(ACMEChallengePrefix))
	var keyAuth []byte
	ok := found && validACMEToken(token)
	if ok {
		keyAuth, ok = s.cfg.ACMEHTTP01(string(token))
	}
	if !ok {
		ctx.Error("not found\n", fasthttp.StatusNotFound)
		return
	}
	ctx.SetContentType("text/plain")
	ctx.SetBody(keyAuth)
}

// answeredFirst answers the requests that come before any route and
// reports whether it did: an HTTP-01 challenge (Config.ACMEHTTP01), then,
// with Config.TLSRedirect, every plain-text request but /healthz and
// /metrics with a redirect to TLS.
func (c *Conn) answeredFirst(req *requestInfo, path []byte, keepAlive bool) bool {
	if c.srv.cfg.ACMEHTTP01 != nil && bytes.HasPrefix(path, []byte(ACMEChallengePrefix)) {
		c.serveACMEChallenge(req, path, keepAlive)
		return true
	}
	if c.srv.cfg.TLSRedirect && string(path) != "/healthz" && string(path) != "/metrics" && !c.secure() {
		c.redirectTLS(req, keepAlive)
		return true
	}
	return false
}
