-- A non-streamed Ollama chat: POST /api/chat with "stream":false (Ollama streams NDJSON
-- unless told not to).
-- Usage: wrk -t1 -c32 -d10s -s tools/wrk/ollama-chat.lua http://127.0.0.1:40114
wrk.method = "POST"
wrk.path = "/api/chat"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"llama3.2:latest","stream":false,"options":{"num_predict":8},'
  .. '"messages":[{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"Write a haiku about load balancers."}]}'

-- Print latency percentiles in a form the bench drivers parse.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT requests=%d duration_us=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, errors,
    latency:percentile(50), latency:percentile(99)))
end
