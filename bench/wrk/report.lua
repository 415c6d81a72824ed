-- wrk reporter: when a run ends, prints one line "BENCH_JSON {...}" with the numbers bench/run
-- records (requests, duration, errors, latency percentiles in microseconds). Defining only
-- `done` keeps wrk's per-request path free of Lua.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
