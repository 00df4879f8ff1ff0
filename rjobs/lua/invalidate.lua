-- invalidate.lua — drop the cached result of a dedupe key.
-- Called by: Queue.invalidate (Scripts.invalidate)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  dedupe_key  (charset A-Z a-z 0-9 _ . - : / @ = +, 1-200)
-- Builds   cache:<dedupe_key>
-- Returns  1 when a cached result was dropped, else 0
-- Errors   RJ_NO_MACHINE, RJ_INVALID
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/checks.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
if not valid_dedupe_key(ARGV[2]) then return fail('RJ_INVALID', 'dedupe key') end
return redis.call('DEL', P .. 'cache:' .. ARGV[2])
