package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// healthcheck is "zenconn healthcheck": exit 0 when --url answers 200
// within --timeout, else 1 with the reason on stderr. It is the image's
// HEALTHCHECK, which has no shell or curl.
func healthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "the node's health URL (http or https)")
	timeout := fs.Duration("timeout", 3*time.Second, "the most the whole check may take (100ms..1m)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *timeout < 100*time.Millisecond || *timeout > time.Minute {
		return usageError(stderr, "healthcheck", fmt.Errorf("--timeout: %s is outside 100ms..1m", *timeout))
	}
	if !strings.HasPrefix(*url, "http://") && !strings.HasPrefix(*url, "https://") {
		return usageError(stderr, "healthcheck", fmt.Errorf("--url: %q is not an http:// or https:// URL", *url))
	}
	if err := checkHealth(*url, *timeout); err != nil {
		fmt.Fprintf(stderr, "zenconn healthcheck: %s: %v\n", *url, err)
		return 1
	}
	fmt.Fprintf(stdout, "zenconn healthcheck: %s: ok\n", *url)
	return 0
}

// checkHealth GETs url, without following redirects, and wants 200
// within timeout.
func checkHealth(url string, timeout time.Duration) error {
	c := &http.Client{
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		var ue interface{ Timeout() bool }
		if errors.As(err, &ue) && ue.Timeout() {
			return fmt.Errorf("no answer within %s", timeout)
		}
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s, want 200", resp.Status)
	}
	return nil
}
