package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// line builds a raw run as run-static.sh writes it: a 5 s run of the given
// requests, responses of respBytes, serverTicks of CPU (at 100 Hz).
func line(server, file string, size int64, round int, requests, respBytes, serverTicks int64, wrkJSON bool, other int64) string {
	wrk := "null"
	if wrkJSON {
		wrk = fmt.Sprintf(`{"duration_us":5000000,"requests":%d,"bytes":%d,"errors":{"connect":0,"read":0,"write":0,"timeout":0,"status":0},"latency_us":{"mean":900.5,"stdev":100,"min":50,"max":9000,"p50":800,"p75":1000,"p90":1200,"p99":2500,"p999":4000}}`,
			requests, requests*respBytes)
	}
	// /proc/stat: user nice system idle iowait irq softirq steal guest guest_nice
	before := `{"all":[1000,0,1000,5000,10,0,0,0,0,0],"server_core":[500,0,500,2500,5,0,0,0,0,0],"load_core":[500,0,500,2500,5,0,0,0,0,0]}`
	after := fmt.Sprintf(`{"all":[%d,0,%d,5000,10,0,0,99,0,0],"server_core":[750,0,750,2500,5,0,0,0,0,0],"load_core":[700,0,700,2600,5,0,0,0,0,0]}`,
		1000+serverTicks/2+150+other, 1000+serverTicks/2+150)
	return fmt.Sprintf(`{"server":%q,"file":%q,"path":"/%s.bin","size_bytes":%d,"round":%d,"port":1,"conns":64,"threads":1,"profiled":false,`+
		`"wall_ns":5000000000,"wrk":%s,"wrk_exit":0,"wrk_cpu_s":{"user":1.0,"sys":2.0},"server_ticks":{"before":100,"after":%d},"clk_tck":100,`+
		`"procstat":{"before":%s,"after":%s}}`, server, file, file, size, round, wrk, 100+serverTicks, before, after)
}

func TestDerive(t *testing.T) {
	var r rawRun
	if err := json.Unmarshal([]byte(line("zenconn", "1k", 1024, 1, 100000, 1250, 480, true, 0)), &r); err != nil {
		t.Fatal(err)
	}
	d := derive(r)
	if !d.OK || d.RPS != 20000 || d.RespBytes != 1250 || d.ServerCPUS != 4.8 || d.ServerShare != 0.96 {
		t.Fatalf("derive: %+v", d)
	}
	if d.WrkCPUS != 3 || d.WrkShare != 0.6 || d.ServerUSReq != 48 || d.WrkUSReq != 30 {
		t.Fatalf("cpu: %+v", d)
	}
	// busy all = (240+150)*2 = 780 jiffies = 7.8 s; minus server 4.8 and wrk 3.0 = 0.
	if d.OtherShare != 0 || d.ServerCore != 1 || d.LoadCore != 0.8 {
		t.Fatalf("cores: other %v server %v load %v", d.OtherShare, d.ServerCore, d.LoadCore)
	}
	if d.LatencyUS["p99"] != 2500 || d.ErrorsTotal != 0 {
		t.Fatalf("latency/errors: %+v", d)
	}
}

func TestSummarize(t *testing.T) {
	lines := []string{
		line("zenconn", "1k", 1024, 1, 100000, 1250, 480, true, 0),
		line("nginx", "1k", 1024, 1, 110000, 1250, 480, true, 0),
		line("zenconn", "1k", 1024, 2, 120000, 1250, 480, true, 0),
		line("nginx", "1k", 1024, 2, 100000, 1250, 480, true, 0),
		line("zenconn", "100k", 102400, 1, 10000, 102700, 480, true, 0),
		line("nginx", "100k", 102400, 1, 10000, 102700, 480, true, 0),
		line("zenconn", "100k", 102400, 2, 0, 0, 0, false, 0),        // wrk failed
		line("nginx", "100k", 102400, 2, 10000, 900, 480, true, 200), // short responses, noisy
	}
	s, err := summarize(strings.NewReader(strings.Join(lines, "\n")), "zenconn", "nginx",
		map[string]float64{"1k": 1.0, "100k": 0.9, "10m": 1}, 0.3, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	one := s.Files["1k"]
	if one.Medians["zenconn"]["requests_per_sec"] != 22000 || one.Medians["nginx"]["requests_per_sec"] != 21000 {
		t.Fatalf("1k medians: %v", one.Medians)
	}
	if one.Ratio == nil || *one.Ratio != 1.048 || !one.Target.Met {
		t.Fatalf("1k target: %+v", one.Target)
	}
	// CPU per request: zenconn 48 and 40 µs (median 44), nginx 43.64 and 48 (45.82).
	if one.CPURatio == nil || *one.CPURatio != 1.041 {
		t.Fatalf("1k cpu ratio: %v", one.CPURatio)
	}
	if one.Medians["nginx"]["latency_us.p99"] != 2500 {
		t.Fatalf("nested median: %v", one.Medians["nginx"])
	}
	big := s.Files["100k"]
	if big.RunsUsed["zenconn"] != 1 || big.RunsUsed["nginx"] != 1 || len(big.Runs) != 4 {
		t.Fatalf("100k runs used: %v of %d", big.RunsUsed, len(big.Runs))
	}
	if *big.Ratio != 1 || !big.Target.Met {
		t.Fatalf("100k target: %+v", big.Target)
	}
	if s.AllMet {
		t.Fatal("all met although 10m has no run")
	}
	want := []string{"wrk gave no result", "bytes per response", "10m: target given but no run"}
	all := strings.Join(s.Problems, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("problems lack %q:\n%s", w, all)
		}
	}
	if len(s.Excluded) != 1 || !strings.Contains(s.Excluded[0], "run 8") {
		t.Errorf("excluded: %v", s.Excluded)
	}
	var buf bytes.Buffer
	if rc := run([]string{"--target", "1k=1", "--meta", "a=b", "/dev/null"}, &buf); rc != 0 {
		t.Fatalf("run: %d", rc)
	}
	if !strings.Contains(buf.String(), `"1k: target given but no run"`) {
		t.Fatalf("run output: %s", buf.String())
	}
}
