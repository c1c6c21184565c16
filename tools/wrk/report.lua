-- Not a workload: the `done` reporter the workload scripts here share. Each loads it with
--   dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "report.lua")
-- which finds this file next to the script however wrk was given its path.
--
-- Prints one line the bench drivers parse:
-- RESULT requests=N duration_us=N errors=N p50_us=N p99_us=N timeouts=N
-- errors = connect + read + write + timeout errors + non-2xx/3xx responses.
-- timeouts = wrk 4.1's timeout errors alone: responses that took longer than its
-- --timeout (2 s by default). wrk records no latency above --timeout (they are missing
-- from p50/p99) and counts each such response once here, so this is the number of
-- requests slower than --timeout that completed within the run.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d timeouts=%d\n",
    summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(99), summary.errors.timeout))
end
