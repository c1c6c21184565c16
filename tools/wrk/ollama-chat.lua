-- A non-streamed Ollama chat: POST /api/chat with "stream":false (Ollama streams NDJSON
-- unless told not to).
-- Usage: wrk -t1 -c32 -d10s -s tools/wrk/ollama-chat.lua http://127.0.0.1:40114
wrk.method = "POST"
wrk.path = "/api/chat"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"llama3.2:latest","stream":false,"options":{"num_predict":8},'
  .. '"messages":[{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"Write a haiku about load balancers."}]}'

-- Print latency percentiles in a form the bench drivers parse (report.lua, next to this).
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "report.lua")
