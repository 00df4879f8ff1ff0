-- add_asset.lua — link an asset (a file or URL the job produced) to an existing job (seed 000).
-- Either the worker holding the lease (token) or the job's owner (user_id) may add one; an asset
-- for a missing job is rejected, so no asset is ever orphaned. Assets are purged with the job.
-- Called by: Queue.add_asset, JobContext.add_asset (Scripts.add_asset)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor
-- ARGV[3]  id       job id
-- ARGV[4]  token    lease token ('' = not fenced)
-- ARGV[5]  user_id  owner check ('' = none)
-- ARGV[6]  asset_id
-- ARGV[7]  asset    JSON (at most 64 KiB)
-- ARGV[8]  label    short text for the event (asset type)
-- Builds   job:<id>, job:<id>:assets, job:<id>:events
-- Returns  asset_id
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_LEASE_LOST, RJ_UNAUTHORIZED
--!include lib/core.lua
local err = RJ.init(KEYS, ARGV[1])
if err then return redis.error_reply(err) end
local actor, id, token, user, asset_id, asset, label = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if not RJ.valid_name(id) or not RJ.valid_name(asset_id) then return redis.error_reply('RJ_INVALID id') end
if #asset > 65536 or #label > 200 then return redis.error_reply('RJ_INVALID asset too large') end
local jk = RJ.jkey(id)
local f = redis.call('HMGET', jk, 'status', 'token', 'user_id', 'attempt')
if not f[1] then return redis.error_reply('RJ_NOT_FOUND ' .. id) end
local e = RJ.check_token(id, f[1], token, f[2])
if e then return redis.error_reply(e) end
if user ~= '' and f[3] ~= user then return redis.error_reply('RJ_UNAUTHORIZED job ' .. id .. ' belongs to another user') end
redis.call('HSET', jk .. ':assets', asset_id, asset)
RJ.emit(id, jk, 'asset', nil, nil, actor, label, f[4], nil, asset_id)
return asset_id
