package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zenconn/server/agent"
)

// status prints the node's workers as a table, from GET /api/workers:
// zenconn status --url http://127.0.0.1:8080 --api-key KEY
func status(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080", "the node's base URL")
	key := fs.String("api-key", "", "the node's --api-key (env ZENCONN_API_KEY when not given)")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *key == "" {
		*key = os.Getenv("ZENCONN_API_KEY")
	}
	req, err := http.NewRequest("GET", strings.TrimSuffix(*url, "/")+"/api/workers", nil)
	if err != nil {
		return usageError(stderr, "status", fmt.Errorf("--url: %w", err))
	}
	req.Header.Set("X-API-Key", *key)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "zenconn status: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "zenconn status: %s: %s\n", resp.Status, strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusNotFound {
			fmt.Fprintln(stderr, "(the node runs without --api-key)")
		}
		return 1
	}
	var out struct {
		Workers []agent.WorkerInfo `json:"workers"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		fmt.Fprintf(stderr, "zenconn status: bad reply: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKER\tPID\tUP\tSTARTED\tRESTARTS\tCONNECTIONS\tSUBSCRIPTIONS\tMESSAGES IN\tMESSAGES OUT\t")
	for _, w := range out.Workers {
		fmt.Fprintf(tw, "%d\t%d\t%v\t%s\t%d\t%d\t%d\t%d\t%d\t\n", w.ID, w.PID, w.Up,
			w.Started.UTC().Format(time.RFC3339), w.Restarts, w.Connections, w.Subscriptions, w.MessagesIn, w.MessagesOut)
	}
	_ = tw.Flush()
	return 0
}
