-- wrk script: GET <path prefix><id> over the ids of a file (one per line), round robin from a
-- per-thread random start; done() prints the figures as one JSON line prefixed with BENCH_JSON.
--   wrk -s bench/ids.lua http://127.0.0.1:PORT -- IDS_FILE [PATH_PREFIX]

local requests = {}
local n = 0
local i = 0
local counter = 0
local threads = {}

function setup(thread)
   counter = counter + 1
   thread:set("id", counter)
   table.insert(threads, thread)
end

function init(args)
   local file = args[1]
   local prefix = args[2] or "/order/"
   for line in io.lines(file) do
      if #line > 0 then
         n = n + 1
         requests[n] = wrk.format("GET", prefix .. line)
      end
   end
   if n == 0 then
      error("no ids in " .. tostring(file))
   end
   math.randomseed(os.time() + (id or 0) * 7919)
   i = math.random(n) - 1
end

function request()
   i = i + 1
   if i > n then
      i = 1
   end
   return requests[i]
end

function done(summary, latency, requests_)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p999": %d, "mean": %.1f, "max": %d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.mean, latency.max))
end
