package engine

import (
	"testing"
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
