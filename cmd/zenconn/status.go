package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/zenconn/server/agent"
	"github.com/zenconn/server/cluster"
)

// status prints the node's workers as a table, from GET /api/workers,
// then the nodes of its cluster, if any, from GET /api/nodes:
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
	var out struct {
		Workers []agent.WorkerInfo `json:"workers"`
	}
	if err := getAPI(strings.TrimSuffix(*url, "/")+"/api/workers", *key, &out); err != nil {
		fmt.Fprintf(stderr, "zenconn status: %v\n", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "WORKER\tPID\tUP\tSTARTED\tRESTARTS\tCONNECTIONS\tSUBSCRIPTIONS\tMESSAGES IN\tMESSAGES OUT\t")
	for _, w := range out.Workers {
		fmt.Fprintf(tw, "%d\t%d\t%v\t%s\t%d\t%d\t%d\t%d\t%d\t\n", w.ID, w.PID, w.Up,
			w.Started.UTC().Format(time.RFC3339), w.Restarts, w.Connections, w.Subscriptions, w.MessagesIn, w.MessagesOut)
	}
	_ = tw.Flush()
	var nodes struct {
		Cluster string         `json:"cluster"`
		Nodes   []cluster.Node `json:"nodes"`
	}
	if err := getAPI(strings.TrimSuffix(*url, "/")+"/api/nodes", *key, &nodes); err != nil {
		fmt.Fprintf(stderr, "zenconn status: %v\n", err)
		return 1
	}
	if nodes.Cluster != "" {
		printNodes(stdout, nodes.Cluster, nodes.Nodes)
	}
	return 0
}

// printNodes prints the nodes of cluster name as a table.
func printNodes(w io.Writer, name string, nodes []cluster.Node) {
	fmt.Fprintf(w, "\ncluster %s:\n", name)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NODE\tADDRESS\tUP\tWORKERS\tCONNECTIONS\tSUBSCRIPTIONS\tLAST SEEN\t")
	for _, n := range nodes {
		id := n.ID
		if n.Self {
			id += " (this)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\t%d\t%s\t\n", id, n.Address, n.Up, n.Workers, n.Connections, n.Subscriptions,
			n.LastSeen.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()
}

// getAPI reads a server-API answer into v.
func getAPI(url, key string, v any) error {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	req.Header.Set("X-API-Key", key)
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		if resp.StatusCode == http.StatusNotFound {
			msg += "\n(the node runs without --api-key)"
		}
		return errors.New(msg)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("bad reply: %w", err)
	}
	return nil
}
