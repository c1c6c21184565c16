-- A long conversation: a non-streamed POST /v1/chat/completions whose body is ~110 KB,
-- what a chat of ~30k tokens resends on every turn. The `messages` array is a system
-- prompt (~2.5 KB) then user/assistant turns of a coding session (questions with pasted
-- code and logs, answers with explanations and code), ~35 turns deep, the newest
-- question last. JSON strings carry the escapes real clients send (\n, \", \\). The body is built
-- once per wrk thread from fixed text, so every request is the same ~110 KB.
-- Usage: wrk -t2 -c32 -d10s -s tools/wrk/long-chat.lua http://127.0.0.1:40114
local TARGET = 110000  -- bytes of body: turns are added until the next would pass it

local SYSTEM = "You are an expert software engineer working inside the user's repository. "
  .. "You can read files, run commands and propose patches. Follow these rules:\n"
  .. "1. Read the relevant code before you answer; quote file paths and line numbers.\n"
  .. "2. Prefer the smallest change that fixes the problem, and explain why it is enough.\n"
  .. "3. When you propose code, give complete functions, not fragments, in fenced blocks.\n"
  .. "4. Never invent APIs, flags, configuration keys or benchmark figures.\n"
  .. "5. If a command could destroy data, say so and ask first.\n"
  .. "6. Keep answers short unless the user asks for detail; use plain words.\n"
  .. "7. When tests fail, show the failing assertion and your reading of it.\n"
  .. "8. Say \"I am not sure\" when you are not, and what would settle it.\n"

local WORDS = { "the", "request", "handler", "returns", "a", "buffer", "when", "timeout",
  "is", "reached", "and", "connection", "pool", "keeps", "idle", "sockets", "for", "each",
  "backend", "so", "retry", "path", "must", "not", "read", "stale", "bytes", "from", "an",
  "earlier", "response", "which", "means", "we", "check", "length", "before", "reuse",
  "latency", "budget", "stream", "token", "scheduler", "queue", "metric", "config" }

local CODE = {
  "fn forward(req: &Request, pool: &Pool) -> Result<Response, Error> {",
  "    let conn = pool.take(req.endpoint).or_else(|| connect(req.endpoint))?;",
  "    let started = Instant::now();",
  "    conn.write_all(&req.head).await?;",
  "    if let Some(body) = &req.body { conn.write_all(body).await?; }",
  "    let head = read_head(&mut conn, \"upstream\").await?;",
  "    metrics.ttfb.observe(started.elapsed());",
  "    Ok(Response { head, conn })",
  "}",
  "thread 'shard-0' panicked at src/proxy.rs:412:9: index out of bounds",
  "error[E0502]: cannot borrow `client.buf` as mutable because it is also borrowed",
  "test proxy::tests::retries_on_reset ... FAILED (expected 200, got 502)",
  "$ cargo test --workspace -- --nocapture 2>&1 | tail -n 40",
  "    assert_eq!(resp.status(), 200, \"body: {}\", String::from_utf8_lossy(&body));",
  "C:\\Users\\dev\\project\\target\\debug\\build.log: permission denied",
}

local function esc(s)
  return (s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n"))
end

-- Deterministic text: `n` words picked by a small linear congruential generator.
local seed = 12345
local function words(n)
  local out = {}
  for i = 1, n do
    seed = (seed * 1103515245 + 12345) % 2147483648
    out[i] = WORDS[seed % #WORDS + 1]
  end
  return table.concat(out, " ")
end

local function code(lines)
  local out = {}
  for i = 1, lines do
    seed = (seed * 1103515245 + 12345) % 2147483648
    out[i] = CODE[seed % #CODE + 1]
  end
  return "```\n" .. table.concat(out, "\n") .. "\n```"
end

local function message(role, text)
  return '{"role":"' .. role .. '","content":"' .. esc(text) .. '"}'
end

local parts = { message("system", SYSTEM) }
local size = #parts[1]
local turn = 0
while true do
  local question = "Turn " .. (turn + 1) .. ": " .. words(40) .. ".\nHere is what I see:\n"
    .. code(12) .. "\nWhy does " .. words(12) .. "?"
  local answer = "Looking at it: " .. words(120) .. ".\n\nThe fix:\n" .. code(16)
    .. "\n\nThat works because " .. words(60) .. ".\nThen run the tests again."
  local pair = message("user", question) .. "," .. message("assistant", answer)
  if size + #pair + 400 > TARGET then break end
  parts[#parts + 1] = pair
  size = size + #pair + 1
  turn = turn + 1
end
parts[#parts + 1] = message("user", "Last question, turn " .. (turn + 1) .. ": "
  .. words(30) .. "? Show me the final version of the function.")

wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"llama3.2:latest","stream":false,"max_tokens":256,"messages":['
  .. table.concat(parts, ",") .. ']}'

-- Print latency percentiles in a form the bench drivers parse (report.lua, next to this).
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "report.lua")
