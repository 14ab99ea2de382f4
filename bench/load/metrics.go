package main

// The server's own figures for the audit log, read from its Prometheus
// endpoint (--metrics-url): before publishing starts, when it ends, and
// once the log has caught up. Only counters and histograms of the
// zenconn_audit_ families are used; a server without them (the audit log
// off, another server) gives no audit figures.

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	metricRecords      = "zenconn_audit_records_total"
	metricLag          = "zenconn_audit_lag_records"
	metricBatch        = "zenconn_audit_batch_records"
	metricFsync        = "zenconn_audit_fsync_seconds"
	metricBackpressure = "zenconn_audit_backpressure_total"

	metricGCCycles   = "go_gc_duration_seconds_count"
	metricGCSeconds  = "go_gc_duration_seconds_sum"
	metricAllocBytes = "go_memstats_alloc_bytes_total"
	metricHeapBytes  = "go_memstats_heap_alloc_bytes"
)

// promSample maps a series ("name" or `name{labels}`) to its value.
type promSample map[string]float64

// parseProm reads the Prometheus text format; comments, blank lines and
// unparsable values are skipped.
func parseProm(r io.Reader) (promSample, error) {
	m := promSample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the last space outside the labels; there is
		// no timestamp in what ZenConn writes, but skip one if present.
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], strings.TrimSpace(line[i+1:])
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], strings.TrimSpace(line[i+1:])
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[series] = v
	}
	return m, sc.Err()
}

// metricsClient keeps no idle connection (and so no goroutine) between
// the few reads of a run.
var metricsClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func scrape(url string) (promSample, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return parseProm(resp.Body)
}

// scrapeSettled reads the metrics until the audit log has caught up: no
// record waiting for its writer, at least minRecords committed, and two
// reads 100 ms apart with the same count. It gives up after limit and
// returns the last read. Without the audit metrics the first read is
// returned.
func scrapeSettled(url string, minRecords float64, limit time.Duration) (promSample, error) {
	end := time.Now().Add(limit)
	var prev promSample
	for {
		m, err := scrape(url)
		if err != nil {
			return nil, err
		}
		rec, ok := m[metricRecords]
		if !ok {
			return m, nil
		}
		if prev != nil && m[metricLag] == 0 && rec >= minRecords && rec == prev[metricRecords] {
			return m, nil
		}
		if time.Now().After(end) {
			return m, nil
		}
		prev = m
		time.Sleep(100 * time.Millisecond)
	}
}

// bucket is one cumulative histogram bucket.
type bucket struct {
	le    float64
	count float64
}

// buckets returns histogram name's cumulative buckets in m minus those in
// base, sorted by upper bound.
func buckets(m, base promSample, name string) []bucket {
	prefix := name + `_bucket{le="`
	var out []bucket
	for k, v := range m {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		out = append(out, bucket{le: le, count: v - base[k]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].le < out[j].le })
	return out
}

// bucketQuantile estimates quantile q from cumulative buckets much as
// Prometheus's histogram_quantile does: linear within the bucket that
// holds the rank; a rank in the +Inf bucket gives the largest finite
// bound. Unlike histogram_quantile, a rank in the first bucket gives that
// bucket's bound (a group of records is at least 1, not between 0 and 1).
func bucketQuantile(q float64, bs []bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].count <= 0 {
		return 0
	}
	rank := q * bs[len(bs)-1].count
	lo, prev := 0.0, 0.0
	for i, b := range bs {
		if b.count >= rank {
			switch {
			case math.IsInf(b.le, 1):
				return lo
			case i == 0 || b.count == prev:
				return b.le
			}
			return lo + (b.le-lo)*(rank-prev)/(b.count-prev)
		}
		lo, prev = b.le, b.count
	}
	return lo
}

// auditFigures compares three reads of the metrics: m0 just before
// publishing started (at t0), m1 when it ended (t1), m2 after the log
// caught up. acked is the number of publishes the server acknowledged.
// It returns nil when the server has no audit metrics.
func auditFigures(m0, m1, m2 promSample, t0, t1 time.Time, acked int64) map[string]any {
	if _, ok := m0[metricRecords]; !ok {
		return nil
	}
	d := func(m promSample, name string) float64 { return m[name] - m0[name] }
	rec := d(m2, metricRecords)
	out := map[string]any{
		"records":                  rec,
		"records_minus_acked":      rec - float64(acked),
		"records_while_publishing": d(m1, metricRecords),
		"lag_at_pub_end":           m1[metricLag],
		"lag_after":                m2[metricLag],
		"backpressure":             d(m2, metricBackpressure),
	}
	if s := t1.Sub(t0).Seconds(); s > 0 {
		out["records_per_sec"] = round3(d(m1, metricRecords) / s)
	}
	if n := d(m2, metricBatch+"_count"); n > 0 {
		bs := buckets(m2, m0, metricBatch)
		out["commits"] = n
		out["batch_mean"] = round3(d(m2, metricBatch+"_sum") / n)
		out["batch_p50"] = round3(bucketQuantile(0.5, bs))
		out["batch_p99"] = round3(bucketQuantile(0.99, bs))
	}
	if n := d(m2, metricFsync+"_count"); n > 0 {
		bs := buckets(m2, m0, metricFsync)
		out["fsyncs"] = n
		out["fsync_mean_ms"] = round3(1000 * d(m2, metricFsync+"_sum") / n)
		out["fsync_p50_ms"] = round3(1000 * bucketQuantile(0.5, bs))
		out["fsync_p99_ms"] = round3(1000 * bucketQuantile(0.99, bs))
	}
	return out
}

// goFigures is what the Go runtime of the server did between the first
// read (m0) and the last (m2): garbage collections, their pauses, bytes
// allocated, and the heap at the end. Nil without the go_ metrics.
func goFigures(m0, m2 promSample) map[string]any {
	if _, ok := m0[metricGCCycles]; !ok {
		return nil
	}
	if _, ok := m2[metricGCCycles]; !ok {
		return nil
	}
	return map[string]any{
		"gc_cycles":      m2[metricGCCycles] - m0[metricGCCycles],
		"gc_pause_ms":    round3(1000 * (m2[metricGCSeconds] - m0[metricGCSeconds])),
		"alloc_mib":      round3((m2[metricAllocBytes] - m0[metricAllocBytes]) / (1 << 20)),
		"heap_mib_after": round3(m2[metricHeapBytes] / (1 << 20)),
	}
}
