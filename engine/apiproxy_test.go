package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

const testAPIKey = "engine-test-api-key-0123"

// TestServeAPIKeyCheck: a server-API request reaches the proxy only with
// the right key (as a bearer token or X-API-Key); otherwise it gets 401
// with a JSON error, and a proxy that fails gives 502.
func TestServeAPIKeyCheck(t *testing.T) {
	var proxied int
	var proxyErr error
	s := newTestServer(t, Config{APIKey: testAPIKey, APIProxy: func(req *fasthttp.Request, resp *fasthttp.Response) error {
		proxied++
		if proxyErr != nil {
			return proxyErr
		}
		resp.SetStatusCode(fasthttp.StatusOK)
		resp.SetBodyString(`{"from":"agent"}`)
		return nil
	}})
	cases := []struct {
		name     string
		header   [2]string
		proxyErr error
		status   int
		body     string
		proxied  bool
	}{
		{"no key", [2]string{}, nil, 401, `{"error":"missing or wrong API key"}` + "\n", false},
		{"wrong key", [2]string{"Authorization", "Bearer " + testAPIKey + "x"}, nil, 401, `{"error":"missing or wrong API key"}` + "\n", false},
		{"basic auth", [2]string{"Authorization", "Basic " + testAPIKey}, nil, 401, `{"error":"missing or wrong API key"}` + "\n", false},
		{"bearer", [2]string{"Authorization", "Bearer " + testAPIKey}, nil, 200, `{"from":"agent"}`, true},
		{"x-api-key", [2]string{"X-API-Key", testAPIKey}, nil, 200, `{"from":"agent"}`, true},
		{"agent down", [2]string{"X-API-Key", testAPIKey}, errors.New("dial: refused"), 502, `{"error":"the node agent did not answer"}` + "\n", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proxied, proxyErr = 0, tc.proxyErr
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI("/api/channels")
			if tc.header[0] != "" {
				ctx.Request.Header.Set(tc.header[0], tc.header[1])
			}
			s.serveAPI(&ctx)
			if got := ctx.Response.StatusCode(); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
			if got := string(ctx.Response.Body()); got != tc.body {
				t.Errorf("body %q, want %q", got, tc.body)
			}
			if (proxied == 1) != tc.proxied {
				t.Errorf("proxied %d times, want %v", proxied, tc.proxied)
			}
			if tc.status == 401 && !strings.Contains(string(ctx.Response.Header.Peek("WWW-Authenticate")), "Bearer") {
				t.Error("401 without a Bearer WWW-Authenticate challenge")
			}
		})
	}
}

// TestNewNeedsWiring: New refuses a configuration without a bridge, or
// with an API key but no proxy to the agent; Validate, which checks the
// flags alone, accepts both.
func TestNewNeedsWiring(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no bridge", Config{}, "Config.Bridge is required"},
		{"api key without proxy", Config{Bridge: NopBridge{}, APIKey: testAPIKey}, "Config.APIProxy is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.PublicDir, cfg.CompressDir, cfg.Loops = t.TempDir(), t.TempDir(), 1
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				if s != nil {
					shutdown(t, s)
				}
				t.Fatalf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
