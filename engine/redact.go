package engine

import "bytes"

// The access log never holds a client token: the value of a "token"
// query parameter (the WebSocket handshake's ?token=, grants included) is
// written as REDACTED, in the request line and in the Referer.

// redactedParam replaces the value of a secret query parameter.
const redactedParam = "REDACTED"

// appendURIRedacted appends uri to b escaped for the log (appendLogEscaped)
// with the value of every "token" query parameter replaced by REDACTED.
// Parameter names are compared after percent-decoding, as the handshake
// reads them.
func appendURIRedacted(b, uri []byte) []byte {
	q := bytes.IndexByte(uri, '?')
	if q < 0 {
		return appendLogEscaped(b, uri)
	}
	b = appendLogEscaped(b, uri[:q+1])
	rest := uri[q+1:]
	for {
		part, more, found := bytes.Cut(rest, []byte{'&'})
		if name, _, ok := bytes.Cut(part, []byte{'='}); ok && isTokenParam(name) {
			b = appendLogEscaped(b, name)
			b = append(b, '=')
			b = append(b, redactedParam...)
		} else {
			b = appendLogEscaped(b, part)
		}
		if !found {
			return b
		}
		b = append(b, '&')
		rest = more
	}
}

// isTokenParam reports whether a raw query parameter name decodes to
// "token".
func isTokenParam(name []byte) bool {
	const want = "token"
	j := 0
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch == '%' && i+2 < len(name) {
			hi, lo := unhex(name[i+1]), unhex(name[i+2])
			if hi < 0 || lo < 0 {
				return false
			}
			ch = byte(hi<<4 | lo)
			i += 2
		} else if ch == '+' {
			ch = ' '
		}
		if j >= len(want) || ch != want[j] {
			return false
		}
		j++
	}
	return j == len(want)
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
