package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func fanoutRun(test, srv string, cpu, sys, p99 float64) string {
	return fmt.Sprintf(`{"mode":"fanout","test":%q,"server":%q,"deliveries_per_sec":%v,`+
		`"server_cpu_us_per_delivery":%v,"server_sys_us_per_delivery":%v,"server_user_us_per_delivery":%v,`+
		`"latency_us":{"p99":%v},"missing_deliveries":0}`, test, srv, 1e6/cpu, cpu, sys, cpu-sys, p99)
}

func runSummarize(t *testing.T, lines ...string) map[string]json.RawMessage {
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
	if rc := summarizeTo(&out, []string{"--targets", "fanout", name}); rc != 0 {
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
