-- GET one path, or rotate through the paths listed one per line in a file.
-- args: [paths_file]
local paths = nil
local n = 0

function init(args)
  if args[1] ~= nil then
    paths = {}
    for line in io.lines(args[1]) do
      if line ~= "" then paths[#paths + 1] = line end
    end
    n = tid * 7919
  end
end

function request()
  if paths == nil then
    return wrk.format("GET", nil, with_key())
  end
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1], with_key())
end
