-- wrk script shared by the benches: sends every request of a file exactly once, split between wrk's
-- threads by line number. A line is `path?query<TAB>body[<TAB>content type[<TAB>cookie]]` (content
-- type default text/xml; the cookie, `name=value`, is sent as the Cookie header). Once a thread's share is sent, its connections wait (delay) instead of sending more, so
-- wrk's latency figures hold the file's requests only; the thread stops when it has an answer to each
-- of its share. The bench watches the server's database and stops wrk with SIGINT, which prints the
-- statistics. wrk calls request() once on thread 0 before the run to check the request format; that
-- call must not use up a request.
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
      local path, rest = line:sub(1, tab - 1), line:sub(tab + 1)
      local tab2 = rest:find("\t")
      local ctype = "text/xml"
      local headers = {}
      if tab2 then
        ctype = rest:sub(tab2 + 1)
        rest = rest:sub(1, tab2 - 1)
        local tab3 = ctype:find("\t")
        if tab3 then
          headers["Cookie"] = ctype:sub(tab3 + 1)
          ctype = ctype:sub(1, tab3 - 1)
        end
      end
      headers["Content-Type"] = ctype
      table.insert(reqs, wrk.format("POST", path, headers, rest))
    end
    i = i + 1
  end
  sent = 0
  verified = (id ~= 0)
  spare = wrk.format("GET", "/healthz")
end

function delay()
  if sent >= #reqs then
    return 600000  -- this thread's share is sent: nothing more to send (ms)
  end
  return 0
end

function request()
  if not verified then
    verified = true
    return spare
  end
  sent = sent + 1
  if sent > #reqs then
    return spare  -- only if a delay ran out before the bench stopped wrk
  end
  return reqs[sent]
end

function response(status, headers, body)
  if body and body:sub(1, 5) == '{"ok"' then
    return  -- a spare health check, not one of the file's requests
  end
  answered = (answered or 0) + 1
  if answered >= #reqs then
    wrk.thread:stop()  -- this thread is done; the bench stops wrk (SIGINT) once the database has every turn
  end
end
