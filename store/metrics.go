package store

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus collectors.
type metrics struct {
	lag        prometheus.GaugeFunc
	lagSeconds prometheus.GaugeFunc
	groups     prometheus.Histogram
	fsync      prometheus.Histogram
	records    prometheus.Counter
	blocked    prometheus.Counter
	trimmed    prometheus.Counter
	cut        prometheus.Counter
	diskFull   prometheus.Gauge
	fullPauses prometheus.Counter
	diskBytes  prometheus.Gauge
	quotaTrims prometheus.Counter
	paused     atomic.Bool // the writer waits for disk space (diskFull is 1)
}

// newMetrics makes the collectors; the two lag gauges read s.q when
// gathered.
func newMetrics(s *Store) metrics {
	lag := func() float64 {
		n, _ := s.q.lag()
		return float64(n)
	}
	lagSec := func() float64 {
		_, oldest := s.q.lag()
		return oldest.Seconds()
	}
	return metrics{
		lag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_audit_lag_records",
			Help: "Audit records and session updates waiting for the writer."}, lag),
		lagSeconds: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zenconn_audit_lag_seconds",
			Help: "Age of the oldest audit record waiting for the writer."}, lagSec),
		groups: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zenconn_audit_batch_records",
			Help:    "Records and session updates per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "zenconn_audit_fsync_seconds",
			Help:    "Latency of the commits that fsync the write-ahead log.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)}),
		records: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_records_total",
			Help: "Audit records committed."}),
		blocked: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_backpressure_total",
			Help: "Times a writer of records waited because the audit queue was full."}),
		trimmed: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_retention_runs_total",
			Help: "Retention passes that trimmed old records."}),
		cut: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_data_cut_total",
			Help: "Audit records whose data was longer than --audit-max-data: only its size, hash and prefix were kept."}),
		diskFull: prometheus.NewGauge(prometheus.GaugeOpts{Name: "zenconn_audit_disk_full",
			Help: "1 while the audit writer waits for free disk space (publishes waiting for it are refused as overloaded)."}),
		fullPauses: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_disk_full_pauses_total",
			Help: "Times the audit writer paused because the disk was full."}),
		diskBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "zenconn_audit_disk_bytes",
			Help: "Bytes of the audit databases on disk, as last measured for --audit-quota."}),
		quotaTrims: prometheus.NewCounter(prometheus.CounterOpts{Name: "zenconn_audit_quota_trims_total",
			Help: "Times the oldest audit records were trimmed because the databases passed --audit-quota."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.lag, m.lagSeconds, m.groups, m.fsync, m.records, m.blocked, m.trimmed,
		m.cut, m.diskFull, m.fullPauses, m.diskBytes, m.quotaTrims}
}
