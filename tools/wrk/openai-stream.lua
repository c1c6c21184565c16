-- A streamed OpenAI chat completion: POST /v1/chat/completions with "stream":true, 20
-- tokens, one SSE event each (plus the final chunk and "data: [DONE]"), chunked encoding.
-- X-Mock-Tokens makes ringway-mock produce 20 tokens (its default is 8); real servers
-- ignore it and stop at max_tokens. wrk's latency is the time to the end of the stream.
-- Usage: wrk -t1 -c32 -d10s -s tools/wrk/openai-stream.lua http://127.0.0.1:40114
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Mock-Tokens"] = "20"
wrk.body = '{"model":"llama3.2:latest","stream":true,"max_tokens":20,'
  .. '"messages":[{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"Write a haiku about load balancers."}]}'

-- Print latency percentiles in a form the bench drivers parse (report.lua, next to this).
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "report.lua")
