-- Shared by every script: a per-thread id, and one JSON line of results at the end.
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

-- The services run with authentication on, as deployed: each request carries the key.
local bench_key = os.getenv("MR_BENCH_KEY")

function with_key(headers)
  headers = headers or {}
  if bench_key ~= nil and bench_key ~= "" then
    headers["Authorization"] = "Bearer " .. bench_key
  end
  return headers
end

function split(text, mark)
  local pieces, start = {}, 1
  while true do
    local i, j = string.find(text, mark, start, true)
    if i == nil then
      pieces[#pieces + 1] = string.sub(text, start)
      return pieces
    end
    pieces[#pieces + 1] = string.sub(text, start, i - 1)
    start = j + 1
  end
end

function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"lat_mean_us":%.1f,"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency.mean, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(95), latency:percentile(99),
    latency:percentile(99.9)))
end
