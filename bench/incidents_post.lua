-- wrk script for POST /incidents: a report at a random sample point, bearer token, machine-readable totals.
-- The data file (written by `python -m bench`) returns { token = "...", bodies = { "{...json...}", ... } }.

local threads = 0
local prepared = {}

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local data = dofile(args[1])
  local headers = { ["Authorization"] = "Bearer " .. data.token, ["Content-Type"] = "application/json" }
  for i, body in ipairs(data.bodies) do
    prepared[i] = wrk.format("POST", "/incidents", headers, body)
  end
  math.randomseed(2000 + (tid or 0))
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
