package engine

import (
	"bytes"
	"errors"
	"io"

	"github.com/gobwas/ws"
	"github.com/valyala/fasthttp"
	"github.com/zenconn/server/auth"
	"github.com/zenconn/server/proto"
)

// Subprotocol names a browser can offer to choose the wire protocol.
const (
	subprotoBin  = "zenconn.v1.bin"
	subprotoJSON = "zenconn.v1.json"
)

type wireChoice uint8

const (
	wireUnset wireChoice = iota
	wireJSON
	wireBin
)

// headerChoice reads X-Bin-Protocol (any value but 0 or false) and
// X-JSON-Protocol; X-Bin-Protocol wins when both are sent.
func headerChoice(hdr *fasthttp.RequestHeader) wireChoice {
	if v := hdr.Peek("X-Bin-Protocol"); v != nil && !falseValue(v) {
		return wireBin
	}
	if v := hdr.Peek("X-JSON-Protocol"); v != nil && !falseValue(v) {
		return wireJSON
	}
	return wireUnset
}

func falseValue(v []byte) bool {
	v = bytes.TrimSpace(v)
	return string(v) == "0" || bytes.EqualFold(v, []byte("false"))
}

// upgradeWS authenticates and performs the WebSocket handshake on the
// request head. The wire protocol is chosen, in this order of precedence,
// by the X-Bin-Protocol / X-JSON-Protocol headers, the zenconn.v1.bin /
// zenconn.v1.json subprotocol (echoed), the proto=bin|json query parameter,
// and otherwise JSON. A token comes as "Authorization: Bearer" or ?token=.
func (c *Conn) upgradeWS(head []byte, req *requestInfo) {
	hdr := &c.loop.http.hdr
	if !hdr.IsGet() {
		c.httpFail(req, 400, "a WebSocket handshake is a GET request\n")
		return
	}
	var query fasthttp.Args
	if uri := hdr.RequestURI(); bytes.IndexByte(uri, '?') >= 0 {
		query.ParseBytes(uri[bytes.IndexByte(uri, '?')+1:])
	}
	choice := headerChoice(hdr)
	queryChoice, ok := queryWireChoice(&query)
	if !ok {
		c.httpFail(req, 400, "proto must be bin or json\n")
		return
	}
	if !c.srv.originAllowed(hdr.Peek("Origin")) {
		c.srv.lim.refusedOrigin.Add(1)
		c.srv.logLimit("websocket handshake refused: origin not allowed", "remote", c.remoteIP(), "origin", string(hdr.Peek("Origin")))
		c.refuseHandshakeStatus(req, 403, proto.CodeForbidden, "origin not allowed\n")
		return
	}
	if !c.admitForwarded() {
		return
	}
	// Authenticate before upgrading: a bad token is an HTTP 401.
	ident, ok := c.handshakeIdentity(req, hdr, &query)
	if !ok {
		return
	}
	if ident != nil && c.srv.userFull(ident.User) {
		c.refuseHandshakeStatus(req, 429, proto.CodeLimitExceeded, "too many connections for this user\n")
		return
	}
	resp, subChoice, err := runUpgrade(head, choice)
	status := 101
	if err != nil {
		status = statusFromResponse(resp.Bytes())
		if resp.Len() == 0 {
			resp.Write(canned400)
			status = 400
		}
	}
	c.srv.accessLog(c, req, status, responseBodyLen(resp.Bytes()))
	c.srv.countStatus(status)
	if err != nil {
		c.writeNow(resp.Bytes())
		c.srv.log.Debug("websocket handshake refused", "remote", c.remoteIP(), "err", err)
		c.linger()
		return
	}
	if choice == wireUnset {
		choice = subChoice
	}
	if choice == wireUnset {
		choice = queryChoice
	}
	c.openWS(resp.Bytes(), choice == wireBin, ident, hdr.UserAgent())
}

// responseBodyLen returns the length of the body of a complete HTTP
// response (what the access log reports as sent): 0 for a 101.
func responseBodyLen(resp []byte) int {
	i := bytes.Index(resp, []byte("\r\n\r\n"))
	if i < 0 {
		return 0
	}
	return len(resp) - i - 4
}

// queryWireChoice reads the proto=bin|json query parameter; ok is false
// for any other value.
func queryWireChoice(query *fasthttp.Args) (w wireChoice, ok bool) {
	switch v := query.Peek("proto"); {
	case v == nil:
		return wireUnset, true
	case string(v) == "bin":
		return wireBin, true
	case string(v) == "json":
		return wireJSON, true
	}
	return wireUnset, false
}

// handshakeIdentity verifies the handshake's token, if any: nil for an
// anonymous connection. When the handshake is refused (a bad token, or none
// where one is required) it answers 401 itself and reports ok false.
func (c *Conn) handshakeIdentity(req *requestInfo, hdr *fasthttp.RequestHeader, query *fasthttp.Args) (ident *auth.Identity, ok bool) {
	token := bearerToken(hdr.Peek("Authorization"))
	if token == "" {
		token = string(query.Peek("token"))
	}
	switch v := c.srv.cfg.Verifier; {
	case token != "" && v == nil:
		c.refuseHandshake(req, proto.CodeUnauthorized, "this server accepts no tokens\n")
		return nil, false
	case token != "":
		id, err := v.Verify(token)
		if err != nil {
			c.srv.log.Debug("handshake token refused", "remote", c.remoteIP(), "err", err)
			code := proto.CodeUnauthorized
			if errors.Is(err, auth.ErrTokenExpired) {
				code = proto.CodeTokenExpired
			}
			c.refuseHandshake(req, code, err.Error()+"\n")
			return nil, false
		}
		return id, true
	case c.srv.cfg.RequireToken:
		c.refuseHandshake(req, proto.CodeUnauthorized, "a token is required (Authorization: Bearer or ?token=)\n")
		return nil, false
	}
	return nil, true
}

// runUpgrade runs the RFC 6455 handshake on a complete request head and
// returns the response to send (101, or the refusal gobwas/ws wrote, which
// may be empty) and the wire protocol chosen by subprotocol, if any. A
// subprotocol that disagrees with the headers' choice is not selected.
func runUpgrade(head []byte, choice wireChoice) (resp *bytes.Buffer, subChoice wireChoice, err error) {
	resp = &bytes.Buffer{}
	u := ws.Upgrader{
		ReadBufferSize: maxHeadSize + 1024,
		Protocol: func(p []byte) bool {
			var w wireChoice
			switch string(p) {
			case subprotoBin:
				w = wireBin
			case subprotoJSON:
				w = wireJSON
			default:
				return false
			}
			if choice != wireUnset && w != choice {
				return false
			}
			subChoice = w
			return true
		},
	}
	_, err = u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(head), resp})
	return resp, subChoice, err
}

// openWS makes the connection a WebSocket once the handshake succeeded:
// it reports the session to the bridge and queues the 101 response and
// the welcome, which go out together in one write.
func (c *Conn) openWS(resp []byte, bin bool, ident *auth.Identity, userAgent []byte) {
	l := c.loop
	c.out = append(c.outBuf(), resp...)
	c.state = stateWS
	c.bin = bin
	c.id = c.srv.nextConnID()
	c.setIdentity(ident)
	c.reschedule()
	l.stats.websockets.Add(1)
	si := SessionInfo{Conn: c.id, User: c.user(), Remote: c.clientString(),
		UserAgent: string(userAgent), Protocol: "json", TLSVersion: c.tlsVersion, TLSCipher: c.tlsCipher}
	if c.bin {
		si.Protocol = "bin"
	}
	c.srv.cfg.Bridge.Opened(l.idx, si)
	if c.bin {
		c.queueReply(proto.AppendBinWelcome(c.frameBuf(), c.id, c.srv.cfg.Node))
	} else {
		c.queueReply(proto.AppendWelcome(c.frameBuf(), c.id, c.srv.cfg.Node, "json"))
	}
}

// refuseHandshake answers 401 to a handshake whose token was refused and
// reports the attempt to the bridge.
func (c *Conn) refuseHandshake(req *requestInfo, code, msg string) {
	c.refuseHandshakeStatus(req, 401, code, msg)
}

// refuseHandshakeStatus answers a refused handshake with status and
// reports the attempt to the bridge.
func (c *Conn) refuseHandshakeStatus(req *requestInfo, status int, code, msg string) {
	c.srv.cfg.Bridge.Refused(c.loop.idx, Refusal{Op: "connect", Code: code, Remote: c.clientString()})
	c.httpFail(req, status, msg)
}

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header value, "" if there is none.
func bearerToken(v []byte) string {
	const prefix = "bearer "
	if len(v) <= len(prefix) || !bytes.EqualFold(v[:len(prefix)], []byte(prefix)) {
		return ""
	}
	return string(bytes.TrimSpace(v[len(prefix):]))
}
