-- POST one telemetry sample per request; (procedure, time) is unique per request: the
-- procedure id names the run and thread, the timestamp counts milliseconds from a base.
-- args: template_file path run_tag   (template holds @PID@ and @TS@ once each)
local pre, mid, post, path, tag
local counter = 0

function init(args)
  local p = split(slurp(args[1]), "@PID@")
  local q = split(p[2], "@TS@")
  pre, mid, post = p[1], q[1], q[2]
  path, tag = args[2], args[3]
end

function request()
  local c = counter
  counter = counter + 1
  local ts = string.format("2024-06-%02dT%02d:%02d:%02d.%03dZ",
    1 + math.floor(c / 86400000) % 28, math.floor(c / 3600000) % 24,
    math.floor(c / 60000) % 60, math.floor(c / 1000) % 60, c % 1000)
  local body = pre .. tag .. "-" .. tid .. mid .. ts .. post
  return wrk.format("POST", path, with_key({["Content-Type"] = "application/json"}), body)
end
