package engine

import (
	"bufio"
	"bytes"
	"net"
	"strconv"

	"github.com/valyala/fasthttp"
)

// headEnd returns the length of the request head at the start of b,
// through the empty line that ends it (CRLF or bare LF line ends, as the
// parser accepts both), or -1 when the head is not complete yet.
func headEnd(b []byte) int {
	start := 0
	for {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return -1
		}
		line := b[start : start+i]
		if start > 0 && (len(line) == 0 || len(line) == 1 && line[0] == '\r') {
			return start + i + 1
		}
		start += i + 1
	}
}

// requestInfo is what the access log and the router need from a request
// head; its byte slices alias the loop's header parser and stay valid until
// the next request on the loop.
type requestInfo struct {
	method, uri, protocol []byte
	referer, userAgent    []byte
}

// httpParser is a loop's reusable request-head parser.
type httpParser struct {
	hdr fasthttp.RequestHeader
	rd  bytes.Reader
	br  *bufio.Reader
}

func newHTTPParser() *httpParser {
	p := &httpParser{}
	p.br = bufio.NewReaderSize(&p.rd, maxHeadSize+512)
	return p
}

// serveHTTP handles every complete request in in, in order, and returns the
// bytes consumed. It stops at a request whose response is produced off the
// loop; the rest waits in the connection's held input until that one is
// done. A request that is not complete yet sets the connection's phase
// (head or body), whose deadline trickled bytes do not extend.
func (c *Conn) serveHTTP(in []byte) int {
	consumed := 0
	for c.state == stateHTTP && !c.busy {
		rest := in[consumed:]
		if len(rest) == 0 {
			break
		}
		headLen, ok := c.checkHead(rest)
		if !ok {
			return len(in)
		}
		if headLen < 0 {
			if c.phase != phaseFirst {
				c.setPhase(phaseHead, c.lastRead)
			}
			break
		}
		head := rest[:headLen]
		p := c.loop.http
		p.rd.Reset(head)
		p.br.Reset(&p.rd)
		p.hdr.Reset()
		if err := p.hdr.Read(p.br); err != nil {
			c.httpFail(nil, 400, "malformed request head\n")
			return len(in)
		}
		if n := p.br.Buffered(); n > 0 {
			// The parser ended the head earlier than our scan did.
			headLen -= n
			head = rest[:headLen]
		}
		req := requestInfo{
			method:    p.hdr.Method(),
			uri:       p.hdr.RequestURI(),
			protocol:  p.hdr.Protocol(),
			referer:   p.hdr.Referer(),
			userAgent: p.hdr.UserAgent(),
		}
		cl, ok := c.bodyLength(&req)
		if !ok {
			return len(in)
		}
		if len(rest) < headLen+cl {
			c.setPhase(phaseBody, c.lastRead)
			break
		}
		consumed += headLen + cl
		c.phase = phaseNone
		c.route(head, &req, rest[headLen:headLen+cl])
	}
	if c.state != stateHTTP {
		if c.state == stateWS {
			// Frames pipelined behind the upgrade request.
			return consumed + c.serveWS(in[consumed:])
		}
		return len(in)
	}
	return consumed
}

// checkHead finds the end of the request head at the start of b (-1: not
// complete yet) and refuses, answering itself (ok false), a head over the
// size limit, a malformed request line or obsolete line folding.
func (c *Conn) checkHead(b []byte) (headLen int, ok bool) {
	headLen = headEnd(b)
	switch {
	case headLen < 0 && len(b) > maxHeadSize, headLen > maxHeadSize:
		c.httpFail(nil, 431, "request head over 16 KiB\n")
		return 0, false
	case headLen < 0 && !plausibleRequestLine(b):
		c.httpFail(nil, 400, "malformed request line\n")
		return 0, false
	case headLen > 0 && hasObsFold(b[:headLen]):
		// RFC 9112 section 5.2: a server must reject obs-fold (or
		// replace it, which a proxy in front of us might not do).
		c.httpFail(nil, 400, "obsolete line folding in a header is not accepted\n")
		return 0, false
	}
	return headLen, true
}

// hasObsFold reports whether a header line of head begins with a space or
// a tab: the continuation of the line before (obs-fold).
func hasObsFold(head []byte) bool {
	return bytes.Contains(head, []byte("\n ")) || bytes.Contains(head, []byte("\n\t"))
}

// bodyLength returns the declared body length of the parsed request head
// and refuses, answering itself (ok false), a chunked body, one over the
// size limit, and a server-API request with a wrong key: those are
// answered before any of their body is read.
func (c *Conn) bodyLength(req *requestInfo) (cl int, ok bool) {
	hdr := &c.loop.http.hdr
	cl = hdr.ContentLength()
	switch {
	case cl == -1:
		c.httpFail(req, 411, "chunked request bodies are not accepted; send Content-Length\n")
		return 0, false
	case cl > maxBodySize:
		c.httpFail(req, 413, "request body over 1 MiB\n")
		return 0, false
	case cl < 0:
		cl = 0
	}
	if c.refuseAPIHead(req, cl) {
		return 0, false
	}
	return cl, true
}

// plausibleRequestLine rejects garbage early: once a first line is
// complete it must look like "METHOD SP target SP HTTP/x.y".
func plausibleRequestLine(b []byte) bool {
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return len(b) <= 8192 // a request line longer than that is garbage
	}
	line := bytes.TrimSuffix(b[:nl], []byte("\r"))
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return false
	}
	for _, ch := range line[:sp1] {
		if ch < 'A' || ch > 'Z' {
			return false
		}
	}
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 <= sp1+1 {
		return false
	}
	proto := line[sp2+1:]
	return len(proto) == 8 && bytes.HasPrefix(proto, []byte("HTTP/1."))
}

// route dispatches one complete request.
func (c *Conn) route(head []byte, req *requestInfo, body []byte) {
	hdr := &c.loop.http.hdr
	path := hdr.RequestURI()
	if i := bytes.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	keepAlive := !hdr.ConnectionClose()
	c.noteForwarded(hdr) // proxy.go
	// ACME challenges, then --tls-redirect (acme.go).
	if c.answeredFirst(req, path, keepAlive) {
		return
	}
	switch string(path) {
	case "/ws":
		c.upgradeWS(head, req)
		return
	case "/healthz":
		if !hdr.IsGet() && !hdr.IsHead() {
			c.respondSimple(req, 405, "method not allowed\n", keepAlive, hdr.IsHead(), allowGetHead)
			return
		}
		c.respondSimple(req, 200, "ok", keepAlive, hdr.IsHead(), nil)
		return
	case "/metrics":
		if c.srv.cfg.Metrics == MetricsOff {
			c.respondSimple(req, 404, "not found\n", keepAlive, hdr.IsHead(), nil)
			return
		}
		if !hdr.IsGet() && !hdr.IsHead() {
			c.respondSimple(req, 405, "method not allowed\n", keepAlive, hdr.IsHead(), allowGetHead)
			return
		}
		c.startJob(c.srv.serveMetricsFn, req, keepAlive, nil)
		return
	}
	if bytes.HasPrefix(path, []byte("/api/")) {
		if c.srv.cfg.APIKey == "" {
			c.respondSimple(req, 404, "not found\n", keepAlive, hdr.IsHead(), nil)
			return
		}
		c.startJob(c.srv.serveAPIFn, req, keepAlive, body)
		return
	}
	if !hdr.IsGet() && !hdr.IsHead() {
		c.respondSimple(req, 405, "method not allowed\n", keepAlive, false, allowGetHead)
		return
	}
	if c.srv.cfg.NoStatic {
		c.respondSimple(req, 404, "not found\n", keepAlive, hdr.IsHead(), nil)
		return
	}
	if c.serveFile(req, keepAlive) {
		return
	}
	c.startJob(nil, req, keepAlive, nil) // nil: the file, from a worker
}

var allowGetHead = []byte("Allow: GET, HEAD\r\n")

// respondSimple writes a small response built on the loop.
func (c *Conn) respondSimple(req *requestInfo, status int, body string, keepAlive, head bool, extra []byte) {
	b := c.loop.respBuf[:0]
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	b = append(b, fasthttp.StatusMessage(status)...)
	b = append(b, "\r\nServer: zenconn\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	b = append(b, extra...)
	if c.srv.hsts != "" && c.secure() {
		b = append(b, "Strict-Transport-Security: "...)
		b = append(b, c.srv.hsts...)
		b = append(b, "\r\n"...)
	}
	if !keepAlive {
		b = append(b, "Connection: close\r\n"...)
	}
	b = append(b, "\r\n"...)
	if !head {
		b = append(b, body...)
	}
	c.loop.respBuf = b
	c.writeNow(b)
	c.srv.countStatus(status)
	if req != nil {
		sent := len(body)
		if head {
			sent = 0
		}
		c.srv.accessLog(c, req, status, sent)
	}
	if !keepAlive {
		c.linger()
	}
}

// httpFail answers a request that cannot be parsed or accepted and closes
// the connection after the response.
func (c *Conn) httpFail(req *requestInfo, status int, body string) {
	if req == nil {
		req = &requestInfo{method: []byte("-")}
	}
	c.respondSimple(req, status, body, false, false, nil)
}

var canned400 = []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n")

// redirectTLS answers a plain-text request with 308 to the same URI on
// https:// at the TLS address's port (Config.TLSRedirect); a request
// without a usable Host gets 400.
func (c *Conn) redirectTLS(req *requestInfo, keepAlive bool) {
	hdr := &c.loop.http.hdr
	host, ok := redirectHost(hdr.Host())
	port := c.srv.tlsPort
	if !ok || port == 0 {
		c.respondSimple(req, 400, "bad request: no usable Host header\n", false, hdr.IsHead(), nil)
		return
	}
	loc := append([]byte("Location: https://"), host...)
	if port != 443 {
		loc = append(append(loc, ':'), strconv.Itoa(port)...)
	}
	loc = append(append(loc, hdr.RequestURI()...), "\r\n"...)
	c.respondSimple(req, 308, "this server is served over https\n", keepAlive, hdr.IsHead(), loc)
}

// redirectHost is the host of a Host header without its port, if it is a
// name or an address (nothing that could break the Location header).
func redirectHost(h []byte) ([]byte, bool) {
	if len(h) == 0 || len(h) > 255 {
		return nil, false
	}
	if h[0] == '[' {
		end := bytes.IndexByte(h, ']')
		if end < 0 {
			return nil, false
		}
		if net.ParseIP(string(h[1:end])) == nil {
			return nil, false
		}
		return h[:end+1], true
	}
	if i := bytes.IndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	for _, b := range h {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-') {
			return nil, false
		}
	}
	return h, len(h) > 0
}
