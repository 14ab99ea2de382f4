package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/zenconn/server/store"
)

// listCmd is "zenconn connections" and "zenconn channels" (name): a
// running node's GET /api/connections or /api/channels as JSON lines, one
// page of --limit at a time; without --all it ends with the next page's
// cursor on stderr when there is one.
func listCmd(name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var q queryOptions
	fs.StringVar(&q.url, "url", "", "the node's base URL, e.g. http://127.0.0.1:8080 (required)")
	fs.StringVar(&q.apiKey, "api-key", "", "the node's --api-key (env ZENCONN_API_KEY when not given)")
	fs.IntVar(&q.limit, "limit", store.DefaultLimit, "entries per page (1-1000)")
	fs.BoolVar(&q.all, "all", false, "follow the cursor through every page")
	fs.StringVar(&q.cursor, "cursor", "", "start after this cursor (the \"next\" of an earlier page)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if q.apiKey == "" {
		q.apiKey = os.Getenv("ZENCONN_API_KEY")
	}
	switch {
	case q.url == "":
		return usageError(stderr, name, errors.New("--url is required (a running node)"))
	case q.limit < 1 || q.limit > store.MaxLimit:
		return usageError(stderr, name, fmt.Errorf("--limit: must be 1-%d", store.MaxLimit))
	}
	return pageAPI(&q, "/api/"+name, name, url.Values{}, stdout, stderr, name)
}
