-- wrk script for bench/webhook.py: replays pre-signed WeChat callbacks, each exactly once per thread slice.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file = args[1]
  local nthreads = tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == id then
      local tab = line:find("\t")
      table.insert(reqs, {line:sub(1, tab - 1), line:sub(tab + 1)})
    end
    i = i + 1
  end
end

function request()
  counter = counter + 1
  local r = reqs[((counter - 1) % #reqs) + 1]
  return wrk.format("POST", r[1], {["Content-Type"] = "text/xml"}, r[2])
end
