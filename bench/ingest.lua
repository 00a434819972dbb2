-- wrk script for bench/ingest: POSTs a realistic beacon batch (10 turn events,
-- ~4 KB) with fresh event, trace and span ids on every request, counts the
-- status codes and accepted events, and prints one machine-readable line.
--
-- Arguments (after `--`): nonce page_origin base_ms tbt_gaps [framing chunk_bytes]
--   nonce        8 hex digits, different for every wrk run (warm-up, main run),
--                so that no id repeats across runs sharing one database
--   page_origin  the Origin header, e.g. http://127.0.0.1:8123
--   base_ms      epoch milliseconds for the browser timestamps
--   tbt_gaps     time-between-tokens gaps per turn event (40)
--   framing      "sized" (Content-Length, as sendBeacon sends; the default) or
--                "chunked" (Transfer-Encoding: chunked and no Content-Length, as
--                the OpenTelemetry JS exporters send over Node's http)
--   chunk_bytes  bytes a chunk when chunked; 0 (the default): the whole body in
--                one chunk, as Node sends a body written at once

local EVENTS_PER_BATCH = 10
local GAPS_PER_TURN -- set by init()
-- A session sends SESSION_BATCHES batches; SESSION_SLOTS sessions are interleaved
-- per thread so that two batches of one session are never in flight together
-- (a real browser sends them one after another; concurrent upserts of one
-- session row would measure lock waits, not ingest).
local SESSION_SLOTS = 64
local SESSION_BATCHES = 5

local threads = {}
local next_thread_id = 1

function setup(thread)
  thread:set("tid", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

local fmt = string.format
local concat = table.concat
local random = math.random

local nonce, origin, base_ms
local chunked, chunk_bytes
local counter = 0
local gap_variants = {} -- { json = "[...]", sum = ms, p50 =, p95 =, max = }
statuses = {}  -- globals: read by done() through thread:get()
accepted = 0
body_bytes = 0

local function make_gap_variant()
  local gaps, text = {}, {}
  local sum = 0
  for i = 1, GAPS_PER_TURN do
    local g = 8 + random() * 40
    if random() < 0.05 then g = g + random() * 300 end -- the odd stall
    gaps[i] = g
    text[i] = fmt("%d", g)
    sum = sum + g
  end
  table.sort(gaps)
  return {
    json = "[" .. concat(text, ",") .. "]",
    sum = sum,
    p50 = gaps[math.max(1, math.floor(GAPS_PER_TURN * 0.5))] or 0,
    p95 = gaps[math.max(1, math.floor(GAPS_PER_TURN * 0.95))] or 0,
    max = gaps[GAPS_PER_TURN] or 0,
  }
end

function init(args)
  nonce = args[1]
  origin = args[2]
  base_ms = tonumber(args[3])
  GAPS_PER_TURN = tonumber(args[4] or "40")
  chunked = (args[5] or "sized") == "chunked"
  chunk_bytes = tonumber(args[6] or "0")
  math.randomseed(tonumber(nonce, 16) + tid * 7919)
  -- Precomputed so that request() only formats ids and times.
  for i = 1, 32 do gap_variants[i] = make_gap_variant() end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/plain;charset=UTF-8" -- what sendBeacon sends
  wrk.headers["Origin"] = origin
  wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    .. "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
  wrk.headers["Accept"] = "*/*"
  wrk.headers["Accept-Language"] = "en-US,en;q=0.9"
  wrk.headers["Referer"] = origin .. "/chat"
  if chunked then wrk.headers["Transfer-Encoding"] = "chunked" end
end

-- The body in HTTP/1.1 chunked framing: chunks of chunk_bytes (all of it in one
-- when 0), then the last chunk, no trailers.
local function chunk_frame(body)
  local size = chunk_bytes > 0 and chunk_bytes or #body
  local parts = {}
  for at = 1, #body, size do
    local piece = body:sub(at, at + size - 1)
    parts[#parts + 1] = fmt("%x\r\n%s\r\n", #piece, piece)
  end
  parts[#parts + 1] = "0\r\n\r\n"
  return concat(parts)
end

local MODELS = { "gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b-instruct" }
local OUTCOMES = { "completed", "completed", "completed", "completed", "stopped" }

local function turn_event(n, i, t0)
  local g = gap_variants[(n * EVENTS_PER_BATCH + i) % 32 + 1]
  local t_send = t0 + i * 1500
  local t_headers = t_send + 120 + random(0, 200)
  local t_first = t_headers + 150 + random(0, 400)
  local t_last = t_first + g.sum
  local t_end = t_last + 4
  local out_tokens = 200 + random(0, 400)
  -- Random hex ids made unique by construction: nonce, thread, counter, index.
  local trace_id = fmt("%s%04x%08x%02x%05x%05x", nonce, tid, n, i,
    random(0, 0xfffff), random(0, 0xfffff))
  local span_id = fmt("%04x%08x%02x%02x", tid, n, i, random(0, 255))
  return fmt(
    '{"type":"turn","id":"%s-%x-%x-%d","ts":%.1f,"trace_id":"%s","span_id":"%s",'
      .. '"url":"https://chat.example.com/api/chat",'
      .. '"t_send":%.1f,"t_headers":%.1f,"t_first_token":%.1f,"t_last_token":%.1f,"t_end":%.1f,'
      .. '"chunks":%d,"tbt_gaps":%s,"tbt_summary":{"count":%d,"p50":%.1f,"p95":%.1f,"max":%.1f},'
      .. '"output_tokens":%d,"model":"%s","usage":{"input_tokens":%d,"output_tokens":%d},'
      .. '"server_timing":[{"name":"upstream","duration":%.1f}],"outcome":"%s"}',
    nonce, tid, n, i, t_end, trace_id, span_id,
    t_send, t_headers, t_first, t_last, t_end,
    GAPS_PER_TURN + 1, g.json, GAPS_PER_TURN, g.p50, g.p95, g.max,
    out_tokens, MODELS[i % 3 + 1], 800 + random(0, 2000), out_tokens,
    t_headers - t_send - 20,
    OUTCOMES[i % 5 + 1])
end

function request()
  counter = counter + 1
  local n = counter
  local t0 = base_ms + n * 3 -- monotonic-ish browser clock, well inside 2000..2100
  local slot = n % SESSION_SLOTS
  local generation = math.floor(n / (SESSION_SLOTS * SESSION_BATCHES))
  local events = {}
  for i = 0, EVENTS_PER_BATCH - 1 do
    events[i + 1] = turn_event(n, i, t0)
  end
  local body = fmt(
    '{"v":1,"sdk":{"name":"llmrum-js","version":"0.3.1"},"sent_at":%.1f,'
      .. '"session":{"id":"sess-%s-%d-%d-%d","started_at":%.1f},'
      .. '"page":{"url":"%s/chat/c/%d","referrer":""},"user":{"id":"user-%d-%d"},"events":[%s]}',
    t0 + EVENTS_PER_BATCH * 1500 + 50,
    nonce, tid, slot, generation, base_ms - 60000,
    origin, slot, tid, slot,
    concat(events, ","))
  body_bytes = #body
  if chunked then
    -- wrk.format adds Content-Length for a body: format the head without one (it
    -- ends with the blank line) and append the framed body.
    return wrk.format(nil, nil, nil, nil) .. chunk_frame(body)
  end
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status == 202 then
    local a = string.match(body, '"accepted":%s*(%d+)')
    if a then accepted = accepted + tonumber(a) end
  end
end

function done(summary, latency, requests)
  local by_status, total_accepted, size = {}, 0, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
    total_accepted = total_accepted + thread:get("accepted")
    size = math.max(size, thread:get("body_bytes"))
  end
  local parts = {}
  for status, count in pairs(by_status) do
    table.insert(parts, fmt('"%d":%d', status, count))
  end
  local e = summary.errors
  -- One JSON line for bench/ingest to parse; latencies in microseconds.
  io.write(fmt(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"statuses":{%s},"accepted":%d,"body_bytes":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, concat(parts, ","), total_accepted, size))
end
