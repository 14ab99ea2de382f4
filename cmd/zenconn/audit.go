package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zenconn/server/store"
)

// queryOptions are the flags shared by "zenconn audit" and "zenconn
// sessions".
type queryOptions struct {
	url, apiKey, data string
	limit             int
	all               bool
	cursor            string
}

func (q *queryOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&q.url, "url", "", "a running node's base URL, e.g. http://127.0.0.1:8080 (needs --api-key)")
	fs.StringVar(&q.apiKey, "api-key", "", "the node's --api-key (env ZENCONN_API_KEY when not given)")
	fs.StringVar(&q.data, "data", "", "a stopped node's --data folder, read directly")
	fs.IntVar(&q.limit, "limit", store.DefaultLimit, "records per page (1-1000)")
	fs.BoolVar(&q.all, "all", false, "follow the cursor through every page")
	fs.StringVar(&q.cursor, "cursor", "", "start after this cursor (the \"next\" of an earlier page)")
}

// auditCmd is "zenconn audit": it prints audit records as JSON lines, the
// objects of GET /api/audit, from a running node or a stopped node's
// data folder; without --all it ends with the next page's cursor on
// stderr when there is one.
func auditCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var q queryOptions
	q.register(fs)
	channel := fs.String("channel", "", "only this channel")
	user := fs.String("user", "", "only this user")
	op := fs.String("op", "", "only this op: publish, broadcast, subscribe, unsubscribe, auth, connect, disconnect, refused")
	since := fs.String("since", "", "from this time on (RFC 3339 or Unix milliseconds)")
	until := fs.String("until", "", "before this time (RFC 3339 or Unix milliseconds)")
	if code, ok := parseQueryFlags(fs, args, &q, "audit", stdout, stderr); !ok {
		return code
	}
	if err := checkOp(*op); err != nil {
		return usageError(stderr, "audit", err)
	}
	params := url.Values{}
	for k, v := range map[string]string{"channel": *channel, "user": *user, "op": *op, "since": *since, "until": *until} {
		if v != "" {
			params.Set(k, v)
		}
	}
	aq := store.AuditQuery{Channel: *channel, User: *user, Op: *op, Limit: q.limit, Cursor: q.cursor}
	var err error
	if aq.Since, err = store.ParseTime(*since); err != nil {
		return usageError(stderr, "audit", fmt.Errorf("--since: %w", err))
	}
	if aq.Until, err = store.ParseTime(*until); err != nil {
		return usageError(stderr, "audit", fmt.Errorf("--until: %w", err))
	}
	if q.url != "" {
		return pageAPI(&q, "/api/audit", "records", params, stdout, stderr, "audit")
	}
	return pageStore(&q, stdout, stderr, "audit", func(st *store.Store, cursor string) ([]any, string, error) {
		aq.Cursor = cursor
		recs, next, err := st.Audit(aq)
		out := make([]any, len(recs))
		for i := range recs {
			out[i] = recs[i]
		}
		return out, next, err
	})
}

// sessionsCmd is "zenconn sessions", the same for GET /api/sessions.
func sessionsCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sessions", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var q queryOptions
	q.register(fs)
	user := fs.String("user", "", "only this user's sessions")
	active := fs.String("active", "", "true: only open sessions; false: only ended ones")
	if code, ok := parseQueryFlags(fs, args, &q, "sessions", stdout, stderr); !ok {
		return code
	}
	sq := store.SessionQuery{User: *user, Limit: q.limit}
	params := url.Values{}
	if *user != "" {
		params.Set("user", *user)
	}
	switch *active {
	case "":
	case "true", "false":
		b := *active == "true"
		sq.Active = &b
		params.Set("active", *active)
	default:
		return usageError(stderr, "sessions", fmt.Errorf("--active: %q is neither true nor false", *active))
	}
	if q.url != "" {
		return pageAPI(&q, "/api/sessions", "sessions", params, stdout, stderr, "sessions")
	}
	return pageStore(&q, stdout, stderr, "sessions", func(st *store.Store, cursor string) ([]any, string, error) {
		sq.Cursor = cursor
		ss, next, err := st.Sessions(sq)
		out := make([]any, len(ss))
		for i := range ss {
			out[i] = ss[i]
		}
		return out, next, err
	})
}

func parseQueryFlags(fs *flag.FlagSet, args []string, q *queryOptions, name string, stdout, stderr io.Writer) (int, bool) {
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code, false
	}
	if q.apiKey == "" {
		q.apiKey = os.Getenv("ZENCONN_API_KEY")
	}
	switch {
	case (q.url == "") == (q.data == ""):
		return usageError(stderr, name, errors.New("give either --url (a running node) or --data (a stopped node's folder)")), false
	case q.limit < 1 || q.limit > store.MaxLimit:
		return usageError(stderr, name, fmt.Errorf("--limit: must be 1-%d", store.MaxLimit)), false
	}
	return 0, true
}

// auditOps are the values of zenconn audit --op.
var auditOps = []string{store.OpPublish, store.OpBroadcast, store.OpSubscribe, store.OpUnsubscribe,
	store.OpAuth, store.OpConnect, store.OpDisconnect, store.OpRefused}

// checkOp refuses an --op that no record can have.
func checkOp(op string) error {
	if op == "" || slices.Contains(auditOps, op) {
		return nil
	}
	return fmt.Errorf("--op: %q is not one of %s", op, strings.Join(auditOps, ", "))
}

// pageFunc fetches the page after cursor: its items and the next cursor
// ("" on the last page); code is the exit status on failure.
type pageFunc func(cursor string) (items []any, next string, code int, err error)

// printPages prints the items of one page, or of every page with --all,
// as JSON lines; without --all it says on stderr how to get the next page.
func printPages(q *queryOptions, stdout, stderr io.Writer, name string, page pageFunc) int {
	enc := json.NewEncoder(stdout)
	cursor := q.cursor
	for {
		items, next, code, err := page(cursor)
		if err != nil {
			fmt.Fprintf(stderr, "zenconn %s: %v\n", name, err)
			return code
		}
		for _, it := range items {
			if err := enc.Encode(it); err != nil {
				return 1
			}
		}
		if next == "" {
			return 0
		}
		if !q.all {
			fmt.Fprintf(stderr, "more: --cursor %s\n", next)
			return 0
		}
		cursor = next
	}
}

// pageAPI prints a server-API listing (field holds the items).
func pageAPI(q *queryOptions, path, field string, params url.Values, stdout, stderr io.Writer, name string) int {
	client := &http.Client{Timeout: 30 * time.Second}
	return printPages(q, stdout, stderr, name, func(cursor string) ([]any, string, int, error) {
		p := url.Values{}
		for k, v := range params {
			p[k] = v
		}
		p.Set("limit", strconv.Itoa(q.limit))
		if cursor != "" {
			p.Set("cursor", cursor)
		}
		req, err := http.NewRequest("GET", strings.TrimSuffix(q.url, "/")+path+"?"+p.Encode(), nil)
		if err != nil {
			return nil, "", 2, err
		}
		req.Header.Set("X-API-Key", q.apiKey)
		resp, err := client.Do(req)
		if err != nil {
			return nil, "", 1, err
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		_ = resp.Body.Close()
		if err != nil {
			return nil, "", 1, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, "", 1, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		}
		var page map[string]json.RawMessage
		var items []json.RawMessage
		var next string
		if err := json.Unmarshal(body, &page); err == nil {
			err = json.Unmarshal(page[field], &items)
			if err == nil {
				err = json.Unmarshal(page["next"], &next)
			}
		}
		if err != nil {
			return nil, "", 1, fmt.Errorf("bad reply: %w", err)
		}
		out := make([]any, len(items))
		for i := range items {
			out[i] = items[i]
		}
		return out, next, 0, nil
	})
}

// pageStore prints the same from a stopped node's store.
func pageStore(q *queryOptions, stdout, stderr io.Writer, name string, page func(*store.Store, string) ([]any, string, error)) int {
	st, err := store.Open(filepath.Join(q.data, "pebble"), store.Options{ReadOnly: true})
	if errors.Is(err, store.ErrLocked) {
		fmt.Fprintf(stderr, "zenconn %s: a node is running on %s: query it with --url\n", name, q.data)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "zenconn %s: %v\n", name, err)
		return 1
	}
	defer st.Close()
	return printPages(q, stdout, stderr, name, func(cursor string) ([]any, string, int, error) {
		items, next, err := page(st, cursor)
		return items, next, 1, err
	})
}
