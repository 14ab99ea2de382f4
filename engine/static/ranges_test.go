package static

import (
	"testing"
)

// TestHugeRangeEndClamped: a Range whose last position does not fit an
// int means "to the end" (RFC 9110 section 14.1.1): 206 with the bytes to
// the end, not 416; a first position that large stays unsatisfiable.
func TestHugeRangeEndClamped(t *testing.T) {
	fx := newFileEnv(t)
	d := newMemConn()
	for _, tc := range []struct {
		rng    string
		status int
		from   int
	}{
		{"bytes=0-99999999999999999999", 206, 0},
		{"bytes=10-99999999999999999999", 206, 10},
		{"bytes=-99999999999999999999", 206, 0},
		{"bytes=99999999999999999999-", 416, 0},
		{"bytes=99999999999999999999-99999999999999999999", 416, 0},
	} {
		resp, body, _ := fx.get(d, "GET", "/app.css", "Range: "+tc.rng)
		if resp.StatusCode != tc.status {
			t.Errorf("Range: %s: status %d, want %d", tc.rng, resp.StatusCode, tc.status)
			continue
		}
		if tc.status == 206 && string(body) != string(fx.css[tc.from:]) {
			t.Errorf("Range: %s: %d bytes, want %d", tc.rng, len(body), len(fx.css)-tc.from)
		}
	}
}
