-- wrk script for bench/memorial_bench.py: sends every pre-signed callback of the file once (split between
-- threads by line number). Once a thread's share is used up it replays its last callback (a WeChat retry:
-- answered from the dedup record, never counted twice) until it has as many answers as callbacks; the bench,
-- which watches the database, then stops wrk with SIGINT. wrk calls request() once on thread 0 before the run to check the request
-- format; that call must not use up a callback.
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
  sent = 0
  verified = (id ~= 0)
end

function request()
  if not verified then
    verified = true
    local r = reqs[1]
    return wrk.format("POST", r[1], {["Content-Type"] = "text/xml"}, r[2])
  end
  sent = sent + 1
  local r = reqs[math.min(sent, #reqs)]
  return wrk.format("POST", r[1], {["Content-Type"] = "text/xml"}, r[2])
end

function response(status, headers, body)
  answered = (answered or 0) + 1
  if answered >= #reqs then
    wrk.thread:stop()  -- this thread is done; the bench stops wrk (SIGINT) once the database has every turn
  end
end
