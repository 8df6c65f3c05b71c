#!lua name=heatbench
-- The "Redis Function" design of issue 6: what a user could write without HeatBridge.
-- One FCALL per decision does the XADD and every projection write with the same semantics
-- as HeatBridge (CONTRACT.md §4): expiry at the entry time (ms part of the entry ID) + TTL,
-- dedupe by plan_id holding the entry ID, by_plan hash, latest replaced whole (DEL + HSET,
-- plus last_plan_id), and the latest_plan_id pointer.
--
-- FCALL heat_project 5 <stream> <dedupe> <by_plan> <latest> <pointer>
--       <ttl_plan_ms> <ttl_symbol_ms> <ttl_dedupe_ms> <plan_id> <field> <value> ...
local function at(ms, ttl)
  return string.format('%.0f', ms + ttl)
end

local function project(keys, args)
  local ttl_plan = tonumber(args[1])
  local ttl_sym = tonumber(args[2])
  local ttl_dd = tonumber(args[3])
  local plan_id = args[4]
  local id = redis.call('XADD', keys[1], '*', unpack(args, 5))
  local ms = tonumber(string.match(id, '^(%d+)'))
  local cur = redis.call('GET', keys[2])
  if cur and cur ~= id then
    return id -- a duplicate inside the dedupe window: not projected
  end
  if ttl_dd > 0 then
    redis.call('SET', keys[2], id, 'PXAT', at(ms, ttl_dd))
  end
  redis.call('HSET', keys[3], unpack(args, 5))
  redis.call('PEXPIREAT', keys[3], at(ms, ttl_plan))
  redis.call('DEL', keys[4])
  redis.call('HSET', keys[4], 'last_plan_id', plan_id, unpack(args, 5))
  redis.call('PEXPIREAT', keys[4], at(ms, ttl_sym))
  redis.call('SET', keys[5], plan_id, 'PXAT', at(ms, ttl_sym))
  return id
end

redis.register_function('heat_project', project)
