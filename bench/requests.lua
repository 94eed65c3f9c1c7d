-- wrk script: replays random requests from a data file, with a bearer token; prints machine-readable totals.
-- Usage: wrk -t2 -c4 -d20s --latency -s bench/requests.lua http://127.0.0.1:8765 -- DATA.lua
-- The data file (written by `python -m bench`) returns
--   { token = "...", requests = { { method = "GET", path = "/grids/at?lon=..", body = nil }, ... } }.

local threads = 0
local prepared = {}

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local data = dofile(args[1])
  local headers = { ["Authorization"] = "Bearer " .. data.token, ["Content-Type"] = "application/json" }
  for i, r in ipairs(data.requests) do
    prepared[i] = wrk.format(r.method, r.path, headers, r.body)
  end
  math.randomseed(1000 + (tid or 0))
end

function request()
  return prepared[math.random(#prepared)]
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format("BENCH requests=%d\n", summary.requests))
  io.write(string.format("BENCH rps=%.2f\n", summary.requests / seconds))
  io.write(string.format("BENCH p50=%.3f\n", latency:percentile(50) / 1000))
  io.write(string.format("BENCH p95=%.3f\n", latency:percentile(95) / 1000))
  io.write(string.format("BENCH p99=%.3f\n", latency:percentile(99) / 1000))
  io.write(string.format("BENCH mean=%.3f\n", latency.mean / 1000))
  io.write(string.format("BENCH non2xx=%d\n", e.status))
  io.write(string.format("BENCH socket_errors=%d\n", e.connect + e.read + e.write + e.timeout))
end
