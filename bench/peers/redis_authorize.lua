-- Redis peer of the suite (bench/suite.py): the authorization as one Lua script, run
-- atomically by Redis with appendonly yes and appendfsync always (the answer leaves
-- after the AOF write is fsynced). redis-benchmark calls it as
--   EVALSHA <sha> 1 idem:__rand_int__ __rand_int__ <merchants>
-- KEYS[1] is a fresh idempotency key (its random digits also pick one of ARGV[2]
-- merchants, 64 when absent), ARGV[1] random digits that pick the amount. Keys derived here are not declared in
-- KEYS: fine for one Redis, not for Redis Cluster.
local digits = tonumber(string.sub(KEYS[1], -12)) or 0
local merchant = 'm-' .. (digits % (tonumber(ARGV[2]) or 64))
local amount = 1000 + (tonumber(ARGV[1]) or 0) % 99000
local idem = 'idem:' .. merchant .. ':' .. KEYS[1]
local id = redis.call('INCR', 'payment:seq')
local pid = 'pay_' .. id
-- Idempotency: SET NX; a key seen before replays the stored answer.
if not redis.call('SET', idem, pid, 'NX', 'EX', 86400) then
    return redis.call('HGET', 'payment:' .. redis.call('GET', idem), 'json')
end
local json = '{"id":"' .. pid .. '","merchant_id":"' .. merchant .. '","amount":' .. amount ..
             ',"currency":"KRW","status":"authorized"}'
redis.call('HSET', 'payment:' .. pid, 'merchant_id', merchant, 'amount', amount,
           'currency', 'KRW', 'status', 'authorized', 'json', json)
-- Ledger: one posting clearing -> pending; balances per account.
redis.call('RPUSH', 'ledger:' .. merchant, pid .. ' clearing pending ' .. amount)
redis.call('HINCRBY', 'balance:' .. merchant, 'KRW:clearing', -amount)
redis.call('HINCRBY', 'balance:' .. merchant, 'KRW:pending', amount)
-- Outbox: the event, in the same atomic script.
redis.call('XADD', 'outbox', '*', 'type', 'payment.authorized', 'merchant_id', merchant,
           'payment', json)
return json
