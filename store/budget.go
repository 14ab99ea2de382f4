package store

import (
	"context"
)

// pageBudget bounds a query page: the bytes of its JSON answer, estimated
// from above per record, and the query's context, checked every
// visitsPerCheck keys visited (matching or not), so that a query nobody
// waits for stops scanning.
type pageBudget struct {
	ctx    context.Context
	left   int // bytes left for the page
	visits int
}

const visitsPerCheck = 256

// MaxScan bounds the keys one page visits when its filters skip them (an
// op or active filter over a million records or sessions that do not
// match): past it the page ends with what it holds, possibly nothing, and
// its next cursor continues from the last key visited. A page's cost is
// thus bounded whatever the store holds.
const MaxScan = 10_000

func newPageBudget(ctx context.Context, maxBytes int) pageBudget {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return pageBudget{ctx: ctx, left: maxBytes}
}

// visit counts a key visited and returns the context's error when it is
// done.
func (b *pageBudget) visit() error {
	b.visits++
	if b.visits%visitsPerCheck == 0 {
		return b.ctx.Err()
	}
	return nil
}

// skipEnds reports whether a page that skips the key it just visited
// ends there (MaxScan).
func (b *pageBudget) skipEnds() bool { return b.visits >= MaxScan }

// fits reports whether an item of cost bytes goes into a page already
// holding n items, and counts it if so: the first item always goes.
func (b *pageBudget) fits(cost, n int) bool {
	if n > 0 && cost > b.left {
		return false
	}
	b.left -= cost
	return true
}

// jsonLen bounds the length of s as a JSON string: every byte that
// encoding/json may escape counted as six.
func jsonLen[T string | []byte](s T) int {
	n := 2
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == '<' || c == '>' || c == '&' || c >= 0x80:
			n += 6
		case c == '"' || c == '\\':
			n += 2
		default:
			n++
		}
	}
	return n
}

// recordCost bounds the length of r in JSON (see Record.MarshalJSON).
func recordCost(r *Record) int {
	n := 300 + jsonLen(r.Node) + jsonLen(r.Conn) + jsonLen(r.User) + jsonLen(r.Op) + jsonLen(r.Channel) +
		jsonLen(r.Attempt) + jsonLen(r.Error) + jsonLen(r.Remote) +
		jsonLen(r.Scheme) + jsonLen(r.TLSVersion) + jsonLen(r.TLSCipher)
	if r.Opaque {
		return n + (len(r.Data)+2)/3*4
	}
	return n + jsonLen(r.Data)
}

// sessionCost bounds the length of se in JSON (see Session.MarshalJSON).
func sessionCost(se *Session) int {
	n := 300 + jsonLen(se.Conn) + jsonLen(se.Node) + jsonLen(se.User) + jsonLen(se.Remote) +
		jsonLen(se.UserAgent) + jsonLen(se.Protocol) + jsonLen(se.Scheme) + jsonLen(se.TLSVersion) + jsonLen(se.TLSCipher)
	for _, ch := range se.Channels {
		n += jsonLen(ch) + 1
	}
	return n
}
