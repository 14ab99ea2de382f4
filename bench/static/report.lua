-- wrk script of bench/run-static.sh: it only adds a done() hook, which
-- prints wrk's totals as one JSON line (prefixed with "WRKJSON ") after
-- wrk's own report. It defines no request() or response() hook, so wrk
-- keeps its fast path: one fixed request, responses only parsed.
-- Times are in microseconds, as wrk keeps them.
done = function(summary, latency, requests)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'WRKJSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,' ..
    '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency.mean, latency.stdev, latency.min, latency.max,
    p(50), p(75), p(90), p(99), p(99.9)))
end
