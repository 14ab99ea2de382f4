// Command static turns the raw runs of bench/run-static.sh (one JSON line
// per wrk run, with wrk's totals from bench/static/report.lua and the CPU
// counters the script read around the run) into one JSON object: per file,
// every run's figures, the medians per server, the ratio of the
// candidate's requests/s to the baseline's, the target and whether it is
// met.
//
//	go run ./bench/static [--candidate zenconn] [--baseline nginx]
//	    [--target 1k=1.0 --target 100k=0.9] [--max-other 0]
//	    [--meta key=value ...] runs.jsonl
//
// main.go reads the runs (derive turns wrk's totals and the CPU counters
// into a run's figures), takes the medians and checks the targets
// (summarize); report.lua is the wrk script that prints a run's totals
// as JSON.
package main
