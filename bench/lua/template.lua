-- POST a body built from a template: every @PID@ becomes an id unique to this request
-- (run tag, thread, counter), so every request carries new samples.
-- args: template_file path content_type run_tag
local pieces, path, ctype, tag
local counter = 0

function init(args)
  pieces = split(slurp(args[1]), "@PID@")
  path, ctype, tag = args[2], args[3], args[4]
end

function request()
  counter = counter + 1
  local pid = tag .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", path, with_key({["Content-Type"] = ctype}), table.concat(pieces, pid))
end
