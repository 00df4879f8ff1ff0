-- lib/apply.lua — requested moves of jobs (shared by transition.lua and finish.lua).
-- A request is RJ.REQ_FIELDS ARGV fields, at these offsets from its first one:
local ID, TOKEN, TARGET, RESULT, ERROR, RUN_AT, MSG, REFUND, LEASE_MS, OPERATOR = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
RJ.REQ_FIELDS = 10
--   id; token ('' = none; finish requires one); target state; result JSON ('' = keep the stored
--   one); error JSON ('' = keep; a success without one clears an earlier attempt's); run_at epoch
--   ms (0 = none; < 0 = that many ms from the server's clock; required when the target is the
--   delayed state); msg (short reason, <= 1000 bytes); refund (1 = the attempt does not count: a
--   graceful hand-back); lease_ms (entering a leased state from outside: the new lease's length,
--   100 ms to 366 days); operator (1 = act without the token on a leased job, recorded).
-- Each request is decided on the state the earlier requests of the call leave (RJ.load).

-- Decide one request; returns 'ok', 'already' (the same fenced final move repeated) or an error
-- string "RJ_<CODE> ...". A refused request changes nothing.
function RJ.apply(argv, pos, actor)
  local m = RJ.m
  local id, token, target, result, err = argv[pos + ID], argv[pos + TOKEN], argv[pos + TARGET], argv[pos + RESULT],
    argv[pos + ERROR]
  local msg, refund, operator = argv[pos + MSG], argv[pos + REFUND], argv[pos + OPERATOR]
  local run_at = RJ.int(argv[pos + RUN_AT], -RJ.MAX_MS, RJ.MAX_MS)
  local lease_ms = RJ.int(argv[pos + LEASE_MS], 0, 366 * 86400000)
  if not RJ.valid_name(id) then return 'RJ_INVALID job id' end
  if not RJ.is_state(target) then return 'RJ_INVALID unknown state ' .. tostring(target) end
  if not run_at then return 'RJ_INVALID run_at must be an integer number of ms' end
  if not lease_ms then return 'RJ_INVALID lease_ms must be 0 to 366 days in ms' end
  if #msg > 1000 then return 'RJ_INVALID msg longer than 1000 bytes' end
  if token ~= '' and not RJ.int(token, 1, 9007199254740991) then return 'RJ_INVALID lease token' end
  if (refund ~= '0' and refund ~= '1') or (operator ~= '0' and operator ~= '1') then
    return 'RJ_INVALID refund and operator must be 0 or 1'
  end
  local maxp = RJ.opt().max_payload
  if #result > maxp or #err > maxp then return 'RJ_INVALID result or error larger than ' .. maxp .. ' bytes' end
  local rec = RJ.load(id)
  local status = rec.status
  if not status then return 'RJ_NOT_FOUND ' .. id end
  if token ~= '' and rec.f.token == token and status == target and RJ.is_final(status) then return 'already' end
  local e = RJ.fence(rec, token, operator)
  if e then return e end
  if not RJ.allows(status, target) then return 'RJ_TRANSITION ' .. status .. ' ' .. target .. ' ' .. id end
  local opts = {actor = actor, msg = msg, holder = actor, token = token ~= '' and token or nil,
    operator = token == '' and m.is_leased[status] or nil}
  if target == m.delayed then
    if run_at == 0 then return 'RJ_INVALID moving to ' .. target .. ' needs run_at' end
    -- a negative run_at is a delay in ms from the server's own clock (no client clock involved)
    opts.run_at = run_at > 0 and run_at or RJ.now - run_at
  end
  local entering = m.is_leased[target] and not m.is_leased[status]
  if entering then
    if lease_ms < 100 then return 'RJ_INVALID moving to ' .. target .. ' takes a lease: lease_ms of at least 100' end
    opts.lease_ms = lease_ms
  end
  if target == m.waiting then
    -- a manual block: it waits for its dependencies still open, if any, else until moved on
    RJ.load(id, {'depends_on'})
    local open = 0
    for dep in string.gmatch(rec.f.depends_on or '', '[^,]+') do
      local d = RJ.load(dep)
      if d.status and not RJ.is_final(d.status) then open = open + 1 end
    end
    RJ.hset(rec, 'deps_pending', open)
  end
  local final = m.final_role[target]
  local attempt = tonumber(rec.f.attempt) or 0
  if result ~= '' then RJ.hset(rec, 'result', result) end
  if err ~= '' then
    RJ.hset(rec, 'error', err)
  elseif final == 'success' and attempt > 1 then
    RJ.hdel(rec, 'error')  -- an earlier attempt's error does not describe a success
  end
  if final == 'success' or final == 'partial' then RJ.hset(rec, 'progress', 100) end
  if refund == '1' and attempt > 0 then RJ.hset(rec, 'attempt', attempt - 1) end
  if final == 'success' then RJ.cache(rec, result) end
  RJ.move(rec, target, opts)
  return 'ok'
end

-- A successful job that holds its dedupe key leaves its result in the key's cache; a job that
-- lost the key (replaced while it kept running) does not: the cache would be stale.
function RJ.cache(rec, result)
  local dkey = rec.f.dedupe_key
  local ttl = RJ.opt().cache_ttl_ms
  if not dkey or dkey == '' or ttl <= 0 then return end
  if RJ.read('GET', RJ.P .. 'dedupe:' .. dkey) ~= rec.id then return end
  if result == '' then result = redis.call('HGET', rec.jk, 'result') end
  if result then RJ.op('SET', RJ.P .. 'cache:' .. dkey, result, 'PX', ttl) end
end

-- The body of transition.lua and finish.lua: ARGV[2] actor, ARGV[3] n, then n requests. The call
-- is validated as a whole (and, when fenced, every request must carry a token) before any
-- request is decided; each request is decided in order, due jobs of the final states reached are
-- purged (twice as many as moved, so purging keeps pace with finishing), then everything is
-- written. Returns the outcomes, or an error reply for a malformed call (nothing written).
function RJ.apply_call(argv, fenced)
  local actor, n = argv[2], RJ.int(argv[3], 1, 1000)
  local w = RJ.REQ_FIELDS
  if not n or #argv ~= 3 + n * w then return redis.error_reply('RJ_INVALID malformed requests') end
  if not RJ.valid_actor(actor) then return redis.error_reply('RJ_INVALID actor') end
  if fenced then
    for pos = 4 + TOKEN, 3 + n * w, w do
      if argv[pos] == '' then return redis.error_reply('RJ_INVALID finish needs a lease token') end
    end
  end
  local out, roles, seen = {}, {}, {}
  for i = 1, n do
    local pos = 4 + (i - 1) * w
    out[i] = RJ.apply(argv, pos, actor)
    local r = RJ.m.final_role[argv[pos + TARGET]]
    if out[i] == 'ok' and r and not seen[r] then seen[r] = true; roles[#roles + 1] = r end
  end
  if #roles > 0 then RJ.purge(2 * n, roles) end
  RJ.commit()
  return out
end
