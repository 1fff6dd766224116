-- wrk script: sends `depth` GET requests per write (HTTP/1.1 pipelining).
-- usage: wrk -s bench/pipeline.lua URL -- <path> <depth>
local reqs
init = function(args)
   local path = args[1] or "/healthz"
   local depth = tonumber(args[2] or "16")
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format("GET", path)
   end
   reqs = table.concat(r)
end
request = function()
   return reqs
end
