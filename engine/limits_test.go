package engine

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
)

// TestBucket: a bucket allows its burst at once, then one op per
// interval, and refills with time.
func TestBucket(t *testing.T) {
	r := newRate(10) // 10/s, burst 10
	var b bucket
	now := int64(time.Hour)
	n := 0
	for b.take(now, r) {
		n++
		if n > 100 {
			t.Fatal("the bucket never empties")
		}
	}
	if n != 10 {
		t.Fatalf("burst = %d, want 10", n)
	}
	if b.take(now+int64(50*time.Millisecond), r) {
		t.Fatal("an op 50 ms later allowed; want one per 100 ms")
	}
	if !b.take(now+int64(100*time.Millisecond), r) {
		t.Fatal("an op one interval later refused")
	}
	// Idle for a long time: full again, never more than the burst.
	later := now + int64(time.Minute)
	n = 0
	for b.take(later, r) {
		n++
	}
	if n != 10 {
		t.Fatalf("after a minute idle: burst = %d, want 10", n)
	}
	// Sustained: 100 ops over 10 s at exactly the rate all pass.
	var s bucket
	for i := 0; i < 100; i++ {
		if !s.take(now+int64(i)*r.interval, r) {
			t.Fatalf("op %d at the rate refused", i)
		}
	}
}

// TestConnLimitsSize keeps a connection's share of the limits small.
func TestConnLimitsSize(t *testing.T) {
	if n := unsafe.Sizeof(connLimits{}); n > 56 {
		t.Fatalf("connLimits is %d bytes, want at most 56", n)
	}
}

// TestIPTable: the cap and the pace per address, IPv6 by /64, release
// and sweep.
func TestIPTable(t *testing.T) {
	var tab ipTable
	tab.init(2, newRate(3))
	now := int64(time.Hour)
	a := netip.MustParseAddr("2001:db8:1:2::1")
	b := netip.MustParseAddr("2001:db8:1:2:ffff::9") // same /64
	e1, err1 := tab.admit(a, now)
	e2, err2 := tab.admit(b, now)
	if err1 != nil || err2 != nil || e1 != e2 {
		t.Fatalf("two connections of one /64: %v %v, same entry %v", err1, err2, e1 == e2)
	}
	if _, err := tab.admit(a, now); err != errPerIP {
		t.Fatalf("third connection: %v, want errPerIP", err)
	}
	if _, err := tab.admit(netip.MustParseAddr("2001:db8:1:3::1"), now); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	tab.release(e1)
	// One slot free, but the pace (3, of which 2 used and the cap's
	// refusal did not count) allows one more only.
	e3, err := tab.admit(a, now)
	if err != nil {
		t.Fatal(err)
	}
	tab.release(e3)
	if _, err := tab.admit(a, now); err != errPerIPRate {
		t.Fatalf("fourth new connection in the same instant: %v, want errPerIPRate", err)
	}
	tab.release(e2)
	tab.sweep(now + int64(time.Minute))
	for i := range tab.shards {
		if n := len(tab.shards[i].m); n != 0 && tab.shards[i].m[ipKey(a)] != nil {
			t.Fatalf("the idle address was not swept")
		}
	}
	v4 := netip.MustParseAddr("::ffff:192.0.2.1")
	if k := ipKey(v4); k != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("ipKey(%v) = %v", v4, k)
	}
}

func TestOriginAllowed(t *testing.T) {
	s := &Server{cfg: Config{Limits: Limits{AllowedOrigins: []string{"https://app.example.com", "https://*.example.org", "http://localhost:8080"}}}}
	for origin, want := range map[string]bool{
		"":                              true,
		"https://app.example.com":       true,
		"HTTPS://APP.EXAMPLE.COM":       true,
		"https://x.example.org":         true,
		"https://a.b.example.org":       true,
		"http://localhost:8080":         true,
		"https://example.org":           false,
		"https://.example.org":          false,
		"http://x.example.org":          false,
		"https://evil.com/.example.org": false,
		"https://user@x.example.org":    false,
		"https://app.example.com:444":   false,
		"null":                          false,
	} {
		if got := s.originAllowed([]byte(origin)); got != want {
			t.Errorf("originAllowed(%q) = %v, want %v", origin, got, want)
		}
	}
	for _, bad := range []string{"example.com", "https://", "https://a.*.example.com", "https://x/y"} {
		if checkOriginPattern(bad) == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}

func TestParseProxyHeaders(t *testing.T) {
	for line, want := range map[string]string{
		"PROXY TCP4 192.0.2.1 10.0.0.1 5555 80\r\n":     "192.0.2.1:5555",
		"PROXY TCP6 2001:db8::1 ::1 5555 443\r\n":       "[2001:db8::1]:5555",
		"PROXY UNKNOWN\r\n":                             "invalid AddrPort",
		"PROXY TCP4 2001:db8::1 10.0.0.1 5555 80\r\n":   "bad",
		"PROXY TCP4 192.0.2.1 10.0.0.1 99999 80\r\n":    "bad",
		"PROXY UDP4 192.0.2.1 10.0.0.1 5555 80\r\n":     "bad",
		"PROXY TCP4 192.0.2.1 10.0.0.1 5555\r\n":        "bad",
		"PROXY TCP4 192.0.2.1 10.0.0.1 5555 80 x y\r\n": "bad",
	} {
		ap, ok := parseProxyV1([]byte(line))
		got := ap.String()
		if !ok {
			got = "bad"
		}
		if got != want {
			t.Errorf("parseProxyV1(%q) = %s, want %s", line, got, want)
		}
	}
	v2 := append([]byte(nil), proxyV2Sig...)
	v2 = append(v2, 0x21, 0x11, 0, 12, 192, 0, 2, 7, 10, 0, 0, 1, 0x15, 0xb3, 0, 80)
	n, src, ok := parseProxyV2(v2)
	if !ok || n != 28 || src.String() != "192.0.2.7:5555" {
		t.Fatalf("parseProxyV2 = %d %v %v", n, src, ok)
	}
	if n, _, ok := parseProxyV2(v2[:20]); !ok || n != 0 {
		t.Fatalf("a partial v2 header: %d %v, want 0 true", n, ok)
	}
	local := append(append([]byte(nil), proxyV2Sig...), 0x20, 0x00, 0, 0)
	if n, src, ok := parseProxyV2(local); !ok || n != 16 || src.IsValid() {
		t.Fatalf("LOCAL: %d %v %v", n, src, ok)
	}
	huge := append(append([]byte(nil), proxyV2Sig...), 0x21, 0x11, 0xff, 0xff)
	if _, _, ok := parseProxyV2(huge); ok {
		t.Fatal("a 64 KiB v2 header accepted")
	}
	badVer := append(append([]byte(nil), proxyV2Sig...), 0x11, 0x11, 0, 12)
	if _, _, ok := parseProxyV2(badVer); ok {
		t.Fatal("version 1 in a v2 signature accepted")
	}
}

// TestIPPenalty: after a penalty an address opens nothing for a second.
func TestIPPenalty(t *testing.T) {
	var tab ipTable
	tab.init(100, newRate(100))
	now := int64(time.Hour)
	a := netip.MustParseAddr("192.0.2.1")
	e, err := tab.admit(a, now)
	if err != nil {
		t.Fatal(err)
	}
	tab.penalize(e, now)
	if _, err := tab.admit(a, now+int64(900*time.Millisecond)); err != errPerIPRate {
		t.Fatalf("0.9 s after a penalty: %v, want errPerIPRate", err)
	}
	if _, err := tab.admit(a, now+int64(1100*time.Millisecond)); err != nil {
		t.Fatalf("1.1 s after a penalty: %v", err)
	}
}

// TestForwardedFor: the client is the rightmost X-Forwarded-For address
// that is not a trusted proxy; a malformed entry stops the walk.
func TestForwardedFor(t *testing.T) {
	s := &Server{cfg: Config{Limits: Limits{TrustedProxies: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}}}}
	for xff, want := range map[string]string{
		"":                                    "",
		"203.0.113.9":                         "203.0.113.9",
		"198.51.100.1, 203.0.113.9":           "203.0.113.9",
		"198.51.100.1, 203.0.113.9, 10.1.1.1": "203.0.113.9",
		"10.2.2.2, 10.1.1.1":                  "10.2.2.2",
		"198.51.100.1, garbage, 10.1.1.1":     "",
		"::ffff:192.0.2.5":                    "192.0.2.5",
		"2001:db9::1, 2001:db8::5":            "2001:db9::1",
	} {
		c := &Conn{srv: s, lim: connLimits{fwd: &forwarded{}}}
		var hdr fasthttp.RequestHeader
		if xff != "" {
			hdr.Set("X-Forwarded-For", xff)
		}
		c.noteForwarded(&hdr)
		got := ""
		if cl := c.lim.fwd.client; cl != nil {
			got = cl.IP.String()
		}
		if got != want {
			t.Errorf("X-Forwarded-For %q: client %q, want %q", xff, got, want)
		}
	}
}
