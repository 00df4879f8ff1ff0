-- backoff.lua — push a limited name back: no job of it is claimed until the back-off ends (a 429
-- from the service behind a group: its jobs stay ready, no attempt counted). A longer back-off
-- already in place is kept.
-- Called by: Queue.backoff, the worker on Retry(after=..., group=True) (Scripts.backoff)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  name     't:<type>' or 'g:<group>' with limits set (set_limit.lua)
-- ARGV[3]  ms       how long from now, in ms (1 ms to 366 days)
-- Builds   backoff (name -> until, epoch ms)
-- Returns  the back-off's end (epoch ms, server time)
-- Errors   RJ_NO_MACHINE, RJ_INVALID (also: a name with no limits set)
--!include lib/layout.lua
--!include lib/core.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
if #ARGV ~= 3 then return fail('RJ_INVALID', 'expected name, ms') end
local name, ms = ARGV[2], int_arg(ARGV[3], 1, 366 * 86400000)
local kind, base = string.match(name, '^([tg]):(.+)$')
if not kind or not valid_name(base) then return fail('RJ_INVALID', "name must be 't:<type>' or 'g:<group>'") end
if not ms then return fail('RJ_INVALID', 'ms must be an integer 1 ms to 366 days') end
if call('HEXISTS', P .. 'limits', name) == 0 then return fail('RJ_INVALID', name .. ' has no limits: set one first') end
local current = tonumber(call('HGET', P .. 'backoff', name)) or 0
local until_ms = math.max(current, NOW + ms)
if until_ms ~= current then call('HSET', P .. 'backoff', name, until_ms) end
return until_ms
