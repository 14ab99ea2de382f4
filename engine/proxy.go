package engine

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// A connection from a trusted proxy (Limits.TrustedProxies) names its
// client in one of two ways:
//
//   - a PROXY protocol header before anything else (HAProxy's proxy
//     protocol, v1 text or v2 binary): the connection is the client's,
//     counted and paced under its address from then on;
//   - otherwise, an X-Forwarded-For header on each request: the client is
//     the rightmost address in it that is not itself a trusted proxy. A
//     WebSocket handshake is then counted and paced under that address;
//     plain HTTP requests use it for the access log only.
//
// Headers from any other peer are ignored: they cannot move a client's
// count, nor what the access log records.

// forwarded is what a connection from a trusted proxy knows of its
// client; it exists only for such connections.
type forwarded struct {
	awaitHeader bool         // a PROXY header may still come first
	client      *net.TCPAddr // the client, nil while unknown
}

// proxyV2Sig is the 12-byte signature that starts a v2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// proxyV1Max is the longest v1 header (the specification's 107 bytes).
const proxyV1Max = 107

// trustedPeer reports whether a is a trusted proxy.
func (s *Server) trustedPeer(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// readProxyHeader consumes a PROXY header at the start of a trusted
// proxy's connection and returns the bytes consumed. While the header is
// incomplete it consumes nothing and f.awaitHeader stays set; a malformed
// header, or a client over its address's limits, is answered and the
// connection closed (all input consumed).
func (c *Conn) readProxyHeader(in []byte) int {
	n, ok := c.readProxyHeader0(in)
	if !ok {
		c.lim.fwd.awaitHeader = false
		return len(in)
	}
	return n
}

func (c *Conn) readProxyHeader0(in []byte) (n int, ok bool) {
	f := c.lim.fwd
	switch {
	case len(in) == 0:
		return 0, true
	case bytes.HasPrefix(proxyV2Sig, in[:min(len(in), len(proxyV2Sig))]) && in[0] == '\r':
		if len(in) < 16 {
			return 0, true
		}
		n, client, good := parseProxyV2(in)
		if !good {
			return c.proxyFail()
		}
		if n == 0 {
			return 0, true
		}
		f.awaitHeader = false
		return n, c.proxyClient(client)
	case bytes.HasPrefix([]byte("PROXY "), in[:min(len(in), 6)]):
		end := bytes.IndexByte(in, '\n')
		if end < 0 {
			if len(in) >= proxyV1Max {
				return c.proxyFail()
			}
			return 0, true
		}
		client, good := parseProxyV1(in[:end+1])
		if !good {
			return c.proxyFail()
		}
		f.awaitHeader = false
		return end + 1, c.proxyClient(client)
	}
	f.awaitHeader = false // plain HTTP: X-Forwarded-For, if any
	return 0, true
}

func (c *Conn) proxyFail() (int, bool) {
	c.httpFail(nil, 400, "malformed PROXY protocol header\n")
	return 0, false
}

// proxyClient counts the connection under the client a PROXY header
// named (an invalid address: the proxy's own connection, not counted).
func (c *Conn) proxyClient(client netip.AddrPort) bool {
	if !client.Addr().IsValid() {
		return true
	}
	c.lim.fwd.client = net.TCPAddrFromAddrPort(client)
	return c.admitClient(client.Addr())
}

// admitClient counts the connection under client, once; a refusal is
// answered 429 and closes the connection.
func (c *Conn) admitClient(client netip.Addr) bool {
	if c.lim.peer != nil {
		return true
	}
	e, err := c.srv.lim.ips.admit(client, time.Now().UnixNano())
	if err != nil {
		c.srv.countIPRefusal(err, client)
		c.writeNow(tooManyFromAddr)
		c.srv.countStatus(429)
		c.linger()
		return false
	}
	c.lim.peer = e
	return true
}

// parseProxyV1 parses "PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n".
func parseProxyV1(line []byte) (netip.AddrPort, bool) {
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	f := bytes.Fields(line)
	if len(f) >= 2 && string(f[1]) == "UNKNOWN" {
		return netip.AddrPort{}, true
	}
	if len(f) != 6 || (string(f[1]) != "TCP4" && string(f[1]) != "TCP6") {
		return netip.AddrPort{}, false
	}
	src, err := netip.ParseAddr(string(f[2]))
	if err != nil || src.Is4() != (string(f[1]) == "TCP4") {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(string(f[4]), 10, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(src, uint16(port)), true
}

// parseProxyV2 parses a v2 header: it returns its length (0 while
// incomplete) and the source address (invalid for LOCAL or a family other
// than TCP over IPv4 or IPv6); good is false for a malformed header.
func parseProxyV2(in []byte) (n int, src netip.AddrPort, good bool) {
	if !bytes.Equal(in[:12], proxyV2Sig) || in[12]>>4 != 2 {
		return 0, src, false
	}
	size := 16 + int(binary.BigEndian.Uint16(in[14:16]))
	if size > 16+536 {
		return 0, src, false
	}
	if len(in) < size {
		return 0, src, true
	}
	body := in[16:size]
	if in[12]&0xf == 0 { // LOCAL: the proxy's own connection
		return size, src, true
	}
	if in[12]&0xf != 1 {
		return 0, src, false
	}
	switch in[13] {
	case 0x11: // TCP over IPv4
		if len(body) < 12 {
			return 0, src, false
		}
		a := netip.AddrFrom4([4]byte(body[0:4]))
		return size, netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[8:10])), true
	case 0x21: // TCP over IPv6
		if len(body) < 36 {
			return 0, src, false
		}
		a := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return size, netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[32:34])), true
	}
	return size, src, true
}

// noteForwarded reads X-Forwarded-For on a request from a trusted proxy
// that sent no PROXY header: the client for the access log and, on a
// handshake, for the limits.
func (c *Conn) noteForwarded(hdr *fasthttp.RequestHeader) {
	f := c.lim.fwd
	if f == nil || c.lim.peer != nil && f.client != nil {
		return
	}
	f.client = nil
	xff := hdr.Peek("X-Forwarded-For")
	for len(xff) > 0 {
		i := bytes.LastIndexByte(xff, ',')
		item := bytes.TrimSpace(xff[i+1:])
		xff = xff[:max(i, 0)]
		a, err := netip.ParseAddr(string(item))
		if err != nil {
			return // a malformed entry: trust nothing left of it
		}
		a = a.Unmap()
		if !c.srv.trustedPeer(a) || i < 0 {
			f.client = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
			return
		}
	}
}

// admitForwarded counts a WebSocket handshake from a trusted proxy under
// the client X-Forwarded-For named; false when refused (answered).
func (c *Conn) admitForwarded() bool {
	f := c.lim.fwd
	if f == nil || c.lim.peer != nil || f.client == nil {
		return true
	}
	a, _ := netip.AddrFromSlice(f.client.IP)
	return c.admitClient(a.Unmap())
}

// clientAddr is the connection's client: the one a trusted proxy named
// (port 0 when X-Forwarded-For named it), else the TCP peer.
func (c *Conn) clientAddr() net.Addr {
	if f := c.lim.fwd; f != nil && f.client != nil {
		return f.client
	}
	return c.t.RemoteAddr()
}

// clientString is clientAddr as text: host:port, or the bare address
// when X-Forwarded-For named the client (no port is known).
func (c *Conn) clientString() string {
	if f := c.lim.fwd; f != nil && f.client != nil && f.client.Port == 0 {
		return f.client.IP.String()
	}
	return c.clientAddr().String()
}
