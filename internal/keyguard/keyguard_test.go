package keyguard

import (
	"net/netip"
	"testing"
	"time"
)

// TestGuard: MaxFailures failures in the window block the address until
// the window that began with its first failure ends; other addresses are
// not affected.
func TestGuard(t *testing.T) {
	var g Guard
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Unix(1000, 0)
	for i := 1; i <= MaxFailures; i++ {
		if g.Blocked(a, now) != 0 {
			t.Fatalf("blocked after %d failures", i-1)
		}
		if reached := g.Fail(a, now); reached != (i == MaxFailures) {
			t.Fatalf("failure %d: reached=%v", i, reached)
		}
	}
	if left := g.Blocked(a, now.Add(time.Second)); left != Window-time.Second {
		t.Fatalf("blocked for %v, want %v", left, Window-time.Second)
	}
	if g.Blocked(b, now) != 0 {
		t.Fatal("another address is blocked")
	}
	if g.Blocked(a, now.Add(Window)) != 0 {
		t.Fatal("still blocked after the window")
	}
	if g.Fail(a, now.Add(Window)) {
		t.Fatal("a new window starts counting afresh")
	}
}

// TestGuardBounded: a Guard remembers at most maxAddrs addresses,
// dropping those whose window ended.
func TestGuardBounded(t *testing.T) {
	var g Guard
	now := time.Unix(1000, 0)
	for i := range maxAddrs {
		g.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	g.Fail(netip.MustParseAddr("192.0.2.9"), now)
	if len(g.addrs) != maxAddrs {
		t.Fatalf("%d addresses, want %d", len(g.addrs), maxAddrs)
	}
	g.Fail(netip.MustParseAddr("192.0.2.9"), now.Add(Window))
	if len(g.addrs) != 1 {
		t.Fatalf("%d addresses after the window, want 1", len(g.addrs))
	}
}

func TestShouldLogOncePerSecond(t *testing.T) {
	var g Guard
	now := time.Unix(1000, 0)
	if !g.ShouldLog(now) || g.ShouldLog(now.Add(500*time.Millisecond)) || !g.ShouldLog(now.Add(time.Second)) {
		t.Fatal("ShouldLog does not allow exactly one line a second")
	}
}

func TestAddr(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.2:5000": "127.0.0.2", "[::1]:80": "::1", "[::ffff:10.0.0.1]:1": "10.0.0.1", "10.0.0.3": "10.0.0.3", "-": "invalid IP"} {
		if got := Addr(in).String(); got != want {
			t.Errorf("Addr(%q) = %s, want %s", in, got, want)
		}
	}
}
