-- add_asset.lua — link an asset (a file or URL the job produced) to an existing job. The lease
-- holder (its token), the job's owner (its user_id), or an operator (recorded) may add one;
-- nobody else. An asset for a missing job is refused, so no asset is ever orphaned; assets are
-- purged with the job.
-- Called by: Queue.add_asset, JobContext.add_asset (Scripts.add_asset)
-- KEYS[1]  machine  hash    rjobs:{Q}:machine
-- KEYS[2]  events   stream  rjobs:{Q}:events
-- ARGV[1]  prefix   "rjobs:{Q}:"
-- ARGV[2]  actor    (charset A-Z a-z 0-9 _ . : @ -, <= 200)
-- ARGV[3]  id       job id
-- ARGV[4]  token    lease token ('' = none)
-- ARGV[5]  user_id  the caller's user ('' = none)
-- ARGV[6]  asset_id
-- ARGV[7]  asset    JSON (at most 64 KiB)
-- ARGV[8]  label    asset type, for the history (a name, <= 128)
-- ARGV[9]  operator 1 = act as an operator (recorded), else 0
-- Builds   job:<id>:assets, job:<id>:history
-- Returns  asset_id
-- Errors   RJ_NO_MACHINE, RJ_INVALID, RJ_NOT_FOUND <id>, RJ_LEASE_LOST, RJ_UNAUTHORIZED
--!include lib/layout.lua
--!include lib/core.lua
--!include lib/write.lua
--!include lib/checks.lua
local err = init(KEYS, ARGV[1])
if err then return fail(err) end
local actor, id, token, user, asset_id, asset, label, operator = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], ARGV[9]
if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
if not valid_name(id) or not valid_name(asset_id) then return fail('RJ_INVALID', 'id') end
if type(asset) ~= 'string' or #asset < 2 or #asset > 65536 then return fail('RJ_INVALID', 'asset size') end
if not valid_name(label) then return fail('RJ_INVALID', 'asset type') end
if user ~= '' and not valid_name(user) then return fail('RJ_INVALID', 'user id') end
if operator ~= '0' and operator ~= '1' then return fail('RJ_INVALID', 'operator must be 0 or 1') end
if token ~= '' and not int_arg(token, 1, 9007199254740991) then return fail('RJ_INVALID', 'lease token') end
local rec = load_job(id)
if not rec.status then return fail('RJ_NOT_FOUND', id) end
if token ~= '' then
  local e = check_token(rec, token)
  if e then return fail(e) end
elseif user ~= '' then
  if field(rec, 'user_id') ~= user then return fail('RJ_UNAUTHORIZED', 'job ' .. id .. ' belongs to another user') end
elseif operator ~= '1' then
  return fail('RJ_UNAUTHORIZED', 'job ' .. id .. ': an asset needs the lease token, the owner\'s ' ..
    'user_id, or an operator')
end
op('HSET', rec.jk .. ':assets', asset_id, asset)
log_event(rec, 'asset', nil, nil, actor, label, field(rec, 'attempt'), nil, asset_id, (token == '' and user == '') or nil, false)
commit()
return asset_id
