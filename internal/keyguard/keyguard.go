// Package keyguard counts failed API-key attempts per remote address and
// says which addresses are refused: MaxFailures failures in Window refuse
// an address until the window that began with its first failure ends.
// A node's agent keeps one Guard for the whole node (its workers ask it);
// an engine without an agent keeps its own. A Guard is safe for
// concurrent use; its zero value is ready.
package keyguard

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The fixed bound on failed API-key attempts (documented in README).
const (
	MaxFailures = 10
	Window      = time.Minute
)

// maxAddrs bounds the addresses a Guard remembers; past it the entries
// whose window ended are dropped, and if none has, a new address is not
// counted (its attempts are still refused and audited).
const maxAddrs = 1 << 16

// Guard is the per-address count.
type Guard struct {
	mu    sync.Mutex
	addrs map[netip.Addr]failures

	lastLog atomic.Int64 // unix ns of the last ShouldLog that said yes
}

type failures struct {
	start time.Time // the window's start: its first failure
	n     int
}

// Blocked reports how long addr stays refused at now (0: it is not).
func (g *Guard) Blocked(addr netip.Addr, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.addrs[addr]
	if !ok || f.n < MaxFailures {
		return 0
	}
	left := f.start.Add(Window).Sub(now)
	if left <= 0 {
		delete(g.addrs, addr)
		return 0
	}
	return left
}

// Fail counts one failed attempt of addr at now and reports whether the
// address reached MaxFailures with it.
func (g *Guard) Fail(addr netip.Addr, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.addrs == nil {
		g.addrs = map[netip.Addr]failures{}
	}
	f, ok := g.addrs[addr]
	if !ok && len(g.addrs) >= maxAddrs {
		for a, e := range g.addrs {
			if now.Sub(e.start) >= Window {
				delete(g.addrs, a)
			}
		}
		if len(g.addrs) >= maxAddrs {
			return false
		}
	}
	if !ok || now.Sub(f.start) >= Window {
		f = failures{start: now}
	}
	f.n++
	g.addrs[addr] = f
	return f.n == MaxFailures
}

// ShouldLog reports whether a line about a refused address may be logged
// now: once a second at most, whatever the number of addresses.
func (g *Guard) ShouldLog(now time.Time) bool {
	ns := now.UnixNano()
	last := g.lastLog.Load()
	return ns-last >= int64(time.Second) && g.lastLog.CompareAndSwap(last, ns)
}

// Addr is the IP of a remote address "ip:port" (or a bare IP); the zero
// Addr when it has none.
func Addr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap()
	}
	return netip.Addr{}
}
