package engine

import (
	"net/netip"
	"testing"
	"time"
)

func TestAppendURIRedacted(t *testing.T) {
	for in, want := range map[string]string{
		"/ws":                            "/ws",
		"/ws?token=abc.def.ghi":          "/ws?token=REDACTED",
		"/ws?proto=json&token=a.b.c&x=1": "/ws?proto=json&token=REDACTED&x=1",
		"/ws?tok%65n=a.b.c":              "/ws?tok%65n=REDACTED",
		"/ws?%74oken=a&token=b":          "/ws?%74oken=REDACTED&token=REDACTED",
		"/ws?tokens=a&xtoken=b&token":    "/ws?tokens=a&xtoken=b&token",
		"/ws?token=\"a":                  "/ws?token=REDACTED",
		"/x?a=\"1\"":                     `/x?a=\x221\x22`,
		"/ws?token=":                     "/ws?token=REDACTED",
		"/ws?tok%6":                      "/ws?tok%6",
		"/ws?token%3Dx=1":                "/ws?token%3Dx=1",
	} {
		if got := string(appendURIRedacted(nil, []byte(in))); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// TestKeyGuard: MaxKeyFailures failures in the window block the address
// until the window that began with its first failure ends; other
// addresses are not affected.
func TestKeyGuard(t *testing.T) {
	var g keyGuard
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	now := time.Unix(1000, 0)
	for i := 1; i <= MaxKeyFailures; i++ {
		if g.blockedFor(a, now) != 0 {
			t.Fatalf("blocked after %d failures", i-1)
		}
		if reached := g.fail(a, now); reached != (i == MaxKeyFailures) {
			t.Fatalf("failure %d: reached=%v", i, reached)
		}
	}
	if left := g.blockedFor(a, now.Add(time.Second)); left != KeyFailureWindow-time.Second {
		t.Fatalf("blocked for %v, want %v", left, KeyFailureWindow-time.Second)
	}
	if g.blockedFor(b, now) != 0 {
		t.Fatal("another address is blocked")
	}
	if g.blockedFor(a, now.Add(KeyFailureWindow)) != 0 {
		t.Fatal("still blocked after the window")
	}
	if g.fail(a, now.Add(KeyFailureWindow)) {
		t.Fatal("a new window starts counting afresh")
	}
	if g.failures.Load() != MaxKeyFailures+1 {
		t.Fatalf("failures counter %d", g.failures.Load())
	}
}

// TestKeyGuardBounded: the guard remembers at most keyGuardMaxAddrs
// addresses, dropping those whose window ended.
func TestKeyGuardBounded(t *testing.T) {
	var g keyGuard
	now := time.Unix(1000, 0)
	for i := range keyGuardMaxAddrs {
		g.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	g.fail(netip.MustParseAddr("192.0.2.9"), now)
	if len(g.addrs) != keyGuardMaxAddrs {
		t.Fatalf("%d addresses, want %d", len(g.addrs), keyGuardMaxAddrs)
	}
	g.fail(netip.MustParseAddr("192.0.2.9"), now.Add(KeyFailureWindow))
	if len(g.addrs) != 1 {
		t.Fatalf("%d addresses after the window, want 1", len(g.addrs))
	}
}

func TestConfigMetrics(t *testing.T) {
	for _, tc := range []struct {
		metrics, key string
		ok           bool
	}{{"", "", true}, {"open", "", true}, {"off", "", true}, {"key", "", false}, {"key", "0123456789abcdef", true}, {"public", "", false}} {
		c := Config{Metrics: tc.metrics, APIKey: tc.key}
		if err := c.checkMetrics(); (err == nil) != tc.ok {
			t.Errorf("--metrics=%q key=%q: %v, want ok=%v", tc.metrics, tc.key, err, tc.ok)
		}
	}
}
