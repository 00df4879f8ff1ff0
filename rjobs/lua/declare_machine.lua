-- declare_machine.lua — store the queue's state machine, or check it matches the stored one.
-- Called by: Queue.declare() (rjobs/scripts.py: Scripts.declare_machine)
-- KEYS[1]  machine  hash   rjobs:{Q}:machine — next:<state>, role:<role>, opt:<option>, fingerprint
-- KEYS[2]  events   stream rjobs:{Q}:events (only checked for the prefix)
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  fingerprint  canonical JSON of the machine
-- ARGV[3]  nfields  number of machine field/value pairs that follow
-- ARGV[4]  write_options  1 = store the option pairs; 0 = keep the stored ones (a queue that
--          exists keeps its retention etc. unless a client passes a config explicitly)
-- ARGV[5..] machine pairs, then option pairs (opt:<name>, integer) to the end
-- Returns  {"created" | "same" | "updated", opt name, value, ...} — the options now stored
-- Errors   RJ_INVALID (bad arguments), RJ_MACHINE_CONFLICT <stored machine name>
local machine_key, events_key = KEYS[1], KEYS[2]
local prefix, fingerprint, nfields, write_options = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if machine_key ~= prefix .. 'machine' or events_key ~= prefix .. 'events' then
  return redis.error_reply('RJ_INVALID keys do not match the queue prefix')
end
if not nfields or nfields < 1 or #ARGV < 4 + 2 * nfields or (#ARGV - 4) % 2 ~= 0 then
  return redis.error_reply('RJ_INVALID malformed machine fields')
end
if write_options ~= '0' and write_options ~= '1' then return redis.error_reply('RJ_INVALID write_options') end
for i = 5 + 2 * nfields, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 4) ~= 'opt:' or not tonumber(ARGV[i + 1]) then
    return redis.error_reply('RJ_INVALID option ' .. ARGV[i] .. ' must be opt:<name> with an integer')
  end
end
local stored = redis.call('HGET', machine_key, 'fingerprint')
if stored and stored ~= fingerprint then
  local name = redis.call('HGET', machine_key, 'name') or '?'
  return redis.error_reply('RJ_MACHINE_CONFLICT queue already uses machine ' .. name ..
    ' with a different table; use a new queue name or delete ' .. machine_key)
end
local status = 'created'
if stored then status = write_options == '1' and 'updated' or 'same' end
if status ~= 'same' then
  -- the machine fields include the compiled copy, which carries the options: written together
  local pairs_ = {'fingerprint', fingerprint}
  for i = 5, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
  redis.call('HSET', machine_key, unpack(pairs_))
end
local out = {status}
local flat = redis.call('HGETALL', machine_key)
for i = 1, #flat, 2 do
  if string.sub(flat[i], 1, 4) == 'opt:' then
    out[#out + 1] = string.sub(flat[i], 5)
    out[#out + 1] = flat[i + 1]
  end
end
return out
