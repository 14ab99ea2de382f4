package static

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// clampRange rewrites a single byte range whose positions do not fit an
// int (fasthttp's parser would refuse it, 416) into the range it means
// for any file this server can hold: "bytes=N-<huge>" is "bytes=N-" (to
// the end), "bytes=-<huge>" is "bytes=0-" (the whole file). RFC 9110
// section 14.1.1: a last position at or past the end means the end.
// A first position that large is unsatisfiable and is left to give 416.
func clampRange(h *fasthttp.RequestHeader) {
	v := h.Peek(fasthttp.HeaderRange)
	eq := bytes.IndexByte(v, '=')
	if eq < 0 || !bytes.EqualFold(bytes.TrimSpace(v[:eq]), []byte("bytes")) || bytes.IndexByte(v, ',') >= 0 {
		return
	}
	spec := bytes.TrimSpace(v[eq+1:])
	dash := bytes.IndexByte(spec, '-')
	if dash < 0 {
		return
	}
	first, last := spec[:dash], spec[dash+1:]
	if !allDigits(last) || len(last) < maxIntDigits || (len(first) > 0 && !allDigits(first)) {
		return
	}
	if _, err := fasthttp.ParseUint(last); err == nil {
		return // fits: fasthttp clamps it itself
	}
	if len(first) == 0 {
		first = []byte("0")
	}
	h.Set(fasthttp.HeaderRange, "bytes="+string(first)+"-")
}

// maxIntDigits is the fewest digits of a position that may overflow.
const maxIntDigits = 18

func allDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return false
		}
	}
	return true
}
