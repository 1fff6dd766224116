-- wrk script: durable authorizations, each with a fresh Idempotency-Key, spread over
-- `merchants` merchants (so every shard gets work). Optional pipelining depth.
-- usage: wrk -s bench/authorize.lua URL -- [merchants] [depth]
local counter = 0
thread_id = 0
local threads = 0

setup = function(thread)
   thread:set("thread_id", threads)
   threads = threads + 1
end

local merchants, depth
init = function(args)
   merchants = tonumber(args[1] or "64")
   depth = tonumber(args[2] or "1")
   math.randomseed(os.time() + thread_id)
end

local run_id = tostring(os.time())

local function one()
   counter = counter + 1
   local m = "m-" .. ((counter * 7 + thread_id) % merchants)
   local body = '{"merchant_id":"' .. m .. '","amount":' .. (1000 + counter % 9000) ..
      ',"currency":"KRW","reference":"bench-' .. counter .. '"}'
   local headers = {
      ["Content-Type"] = "application/json",
      ["Idempotency-Key"] = "b" .. run_id .. "-" .. thread_id .. "-" .. counter,
   }
   return wrk.format("POST", "/v1/payments/authorize", headers, body)
end

request = function()
   if depth == 1 then
      return one()
   end
   local r = {}
   for i = 1, depth do
      r[i] = one()
   end
   return table.concat(r)
end

-- A non-2xx answer is counted by wrk as "Non-2xx or 3xx responses".
