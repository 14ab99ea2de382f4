package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fanoutRun(test, srv string, cpu, sys, p99 float64) string {
	return fmt.Sprintf(`{"mode":"fanout","test":%q,"server":%q,"deliveries_per_sec":%v,`+
		`"server_cpu_us_per_delivery":%v,"server_sys_us_per_delivery":%v,"server_user_us_per_delivery":%v,`+
		`"latency_us":{"p99":%v},"missing_deliveries":0}`, test, srv, 1e6/cpu, cpu, sys, cpu-sys, p99)
}

func runSummarize(t *testing.T, lines ...string) map[string]json.RawMessage {
	t.Helper()
	return runSummarizeArgs(t, []string{"--targets", "fanout"}, lines...)
}

func runSummarizeArgs(t *testing.T, args []string, lines ...string) map[string]json.RawMessage {
	t.Helper()
	name := filepath.Join(t.TempDir(), "results.jsonl")
	var in bytes.Buffer
	for _, l := range lines {
		in.WriteString(l + "\n")
	}
	if err := os.WriteFile(name, in.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if rc := summarizeTo(&out, append(args, name)); rc != 0 {
		t.Fatalf("summarize exit %d", rc)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSummarizeFloor(t *testing.T) {
	common := []string{
		fanoutRun("max", "zenconn", 0.25, 0.2, 1e5),
		fanoutRun("max", "baseline", 5, 3, 2e6),
		fanoutRun("fixed", "zenconn", 11, 9.5, 60000),
		fanoutRun("fixed", "zenconn", 11, 9.7, 64000),
		fanoutRun("fixed", "baseline", 14, 8.5, 80000),
	}
	m := runSummarize(t, append(common, fanoutRun("fixed", "floor", 8, 7.5, 40000))...)
	var tgs []map[string]any
	if err := json.Unmarshal(m["targets"], &tgs); err != nil || len(tgs) != 3 {
		t.Fatalf("targets: %v %s", err, m["targets"])
	}
	if _, ok := m["problems"]; ok {
		t.Fatalf("problems: %s", m["problems"])
	}
	var vs []struct {
		Name          string  `json:"name"`
		Candidate     float64 `json:"candidate"`
		Baseline      float64 `json:"baseline"`
		Floor         float64 `json:"floor"`
		Ratio         float64 `json:"ratio_candidate_to_floor"`
		BaselineRatio float64 `json:"ratio_baseline_to_floor"`
		FloorRatio    float64 `json:"ratio_floor_to_baseline"`
	}
	if err := json.Unmarshal(m["vs_floor"], &vs); err != nil || len(vs) != 4 {
		t.Fatalf("vs_floor: %v %s", err, m["vs_floor"])
	}
	if v := vs[0]; v.Candidate != 11 || v.Floor != 8 || v.Ratio != 1.375 || v.BaselineRatio != 1.75 || v.FloorRatio != 0.571 {
		t.Errorf("cpu: %+v", v)
	}
	if v := vs[1]; v.Candidate != 9.6 || v.Floor != 7.5 || v.Ratio != 1.28 {
		t.Errorf("kernel: %+v", v)
	}
	if v := vs[3]; v.Candidate != 62000 || v.Floor != 40000 || v.Ratio != 1.55 || v.FloorRatio != 0.5 {
		t.Errorf("p99: %+v", v)
	}

	// Without floor runs the output has no vs_floor and no new problems.
	m = runSummarize(t, common...)
	if _, ok := m["vs_floor"]; ok {
		t.Errorf("vs_floor without floor runs: %s", m["vs_floor"])
	}
	if _, ok := m["problems"]; ok {
		t.Errorf("problems: %s", m["problems"])
	}
}

func auditRun(srv string, dps, other, recMinusAcked float64) string {
	audit := ""
	if srv == "zenconn" {
		audit = fmt.Sprintf(`,"audit":{"records":100,"records_minus_acked":%v}`, recMinusAcked)
	}
	return fmt.Sprintf(`{"mode":"fanout","test":"fanout","server":%q,"deliveries_per_sec":%v,"other_cpu_share":%v,"missing_deliveries":0%s}`,
		srv, dps, other, audit)
}

// TestSummarizeAudit checks the audit target, the noisy-run filter and the
// audit record check.
func TestSummarizeAudit(t *testing.T) {
	args := []string{"--targets", "audit", "--candidate", "zenconn", "--baseline", "zenconn-noaudit", "--max-other", "0.15"}
	m := runSummarizeArgs(t, args,
		auditRun("zenconn", 3.3e6, 0.01, 0),
		auditRun("zenconn-noaudit", 3.5e6, 0.02, 0),
		auditRun("zenconn", 1.4e6, 0.9, 0), // noisy: left out
		auditRun("zenconn-noaudit", 3.6e6, 0.9, 0),
		auditRun("zenconn", 3.2e6, 0.05, 1), // one record too many
	)
	var tgs []map[string]any
	if err := json.Unmarshal(m["targets"], &tgs); err != nil || len(tgs) != 1 {
		t.Fatalf("targets: %v %s", err, m["targets"])
	}
	if tg := tgs[0]; tg["candidate"] != 3.25e6 || tg["baseline"] != 3.5e6 || tg["met"] != true {
		t.Errorf("target: %v", tg)
	}
	var excluded, problems []string
	if err := json.Unmarshal(m["excluded_from_medians"], &excluded); err != nil || len(excluded) != 2 {
		t.Errorf("excluded: %v %s", err, m["excluded_from_medians"])
	}
	if err := json.Unmarshal(m["problems"], &problems); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range problems {
		found = found || strings.Contains(p, "audit records - acked publishes = 1")
	}
	if !found {
		t.Errorf("no audit record problem in %q", problems)
	}

	// A test and server with noisy runs only keeps them, and says so.
	m = runSummarizeArgs(t, args, auditRun("zenconn", 2e6, 0.5, 0), auditRun("zenconn-noaudit", 3e6, 0.01, 0))
	if err := json.Unmarshal(m["targets"], &tgs); err != nil || len(tgs) != 1 || tgs[0]["met"] != false {
		t.Fatalf("targets: %v %s", err, m["targets"])
	}
	if !strings.Contains(string(m["problems"]), "kept in the medians although noisy") {
		t.Errorf("problems: %s", m["problems"])
	}
}
