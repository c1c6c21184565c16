-- A mixed chat workload: many distinct multi-turn conversations, ~70% non-streamed and
-- ~30% streamed, on POST /v1/chat/completions.
--
-- Each request picks one of CONVERSATIONS conversations at random, and a turn between 1
-- and MAX_TURNS at random: the messages are the shared system prompt, the conversation's
-- own first user message, then for each earlier turn the assistant's answer and a follow-up
-- question. Conversation and turn contents are derived from their numbers only, so every
-- wrk thread sends the same opening for a conversation and ringway's sticky routing
-- (prefix_hash: model + system prompt + first user message) keeps it on one backend.
-- Streamed requests ask for 20 tokens (X-Mock-Tokens for ringway-mock, max_tokens for real
-- servers); non-streamed ones for 8. Bodies are ~0.8 to 2 KB.
-- Usage: wrk -t1 -c32 -d10s -s tools/wrk/mixed.lua http://127.0.0.1:40114
local CONVERSATIONS = 500
local MAX_TURNS = 8
local STREAMED_PERCENT = 30

local SYSTEM = "You are a careful senior engineer. Answer briefly and precisely, cite the "
  .. "part of the conversation you rely on, say when you are unsure, prefer plain words "
  .. "to jargon, and never invent APIs, flags or figures. When asked for code, give the "
  .. "smallest complete example that runs, then one sentence on what it does."
local WORDS = { "cache", "prefix", "token", "router", "backend", "session", "latency",
  "stream", "decode", "prefill", "kernel", "batch", "queue", "memory", "shard", "proxy",
  "socket", "thread", "budget", "metric", "replica", "cluster", "window", "context" }
local FOLLOW_UPS = { "Can you say that again in one sentence?",
  "Which part of that matters most for latency, and why?",
  "What would you measure first to check it?",
  "Give me a counter-example.",
  "Now explain it to a new engineer on the team.",
  "What is the weakest assumption in your answer?",
  "How does that change with eight backends instead of two?" }
local ANSWER = "Hello from the mock backend, one token at a time."

local function esc(s) return (s:gsub('[\\"]', "\\%0")) end

local prefixes = {}   -- conversation -> JSON up to and including its first user message
local turns = {}      -- i -> JSON of one earlier turn: the answer and follow-up i
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  math.randomseed(42 + (id or 0))
  for c = 1, CONVERSATIONS do
    local words = {}
    for i = 1, 40 do words[i] = WORDS[(c * 7 + i * i * 13 + c * i) % #WORDS + 1] end
    local first = "Conversation " .. c .. ". I am debugging a service and have these notes: "
      .. table.concat(words, " ") .. ". What should I look at first?"
    prefixes[c] = '"messages":[{"role":"system","content":"' .. esc(SYSTEM) .. '"},'
      .. '{"role":"user","content":"' .. esc(first) .. '"}'
  end
  for i = 1, #FOLLOW_UPS do
    turns[i] = ',{"role":"assistant","content":"' .. esc(ANSWER) .. '"},'
      .. '{"role":"user","content":"' .. esc(FOLLOW_UPS[i]) .. '"}'
  end
end

local plain = { ["Content-Type"] = "application/json" }
local streamed = { ["Content-Type"] = "application/json", ["X-Mock-Tokens"] = "20" }

function request()
  local c = math.random(CONVERSATIONS)
  local parts = {}
  local stream = math.random(100) <= STREAMED_PERCENT
  if stream then
    parts[1] = '{"model":"llama3.2:latest","stream":true,"max_tokens":20,'
  else
    parts[1] = '{"model":"llama3.2:latest","stream":false,"max_tokens":8,'
  end
  parts[2] = prefixes[c]
  for t = 1, math.random(MAX_TURNS) - 1 do parts[#parts + 1] = turns[(c + t) % #turns + 1] end
  parts[#parts + 1] = "]}"
  return wrk.format("POST", "/v1/chat/completions", stream and streamed or plain,
    table.concat(parts))
end

-- Print latency percentiles in a form the bench drivers parse (report.lua, next to this).
dofile((debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "") .. "report.lua")
