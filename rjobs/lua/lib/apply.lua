-- lib/apply.lua — requested moves of jobs (shared by transition.lua and finish.lua; included after
-- lib/checks.lua, lib/move.lua and lib/purge.lua). A request is REQ_FIELDS ARGV fields, at these
-- offsets from its first one:
local ID, TOKEN, TARGET, RESULT, ERROR, RUN_AT, MSG, REFUND, LEASE_MS, OPERATOR = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
local REQ_FIELDS = 10
--   id; token ('' = none; finish requires one); target state; result JSON ('' = keep the stored
--   one); error JSON ('' = keep; a success without one clears an earlier attempt's); run_at epoch
--   ms (0 = none; < 0 = that many ms from the server's clock; required when the target is the
--   delayed state); msg (short reason, <= 1000 bytes); refund (1 = the attempt does not count: a
--   graceful hand-back); lease_ms (entering a leased state from outside: the new lease's length,
--   100 ms to 366 days); operator (1 = act without the token on a leased job, recorded).
-- Each request is decided on the state the earlier requests of the call leave (load_job).

-- A successful job that holds its dedupe key leaves its result in the key's cache; a job that
-- lost the key (replaced while it kept running) does not: the cache would be stale.
local function cache(rec, result)
  local dkey = field(rec, 'dedupe_key')
  local ttl = opt().cache_ttl_ms
  if not dkey or dkey == '' or ttl <= 0 then return end
  if read('GET', P .. 'dedupe:' .. dkey) ~= rec.id then return end
  if result == '' then result = field(rec, 'result') end
  if result then op('SET', P .. 'cache:' .. dkey, result, 'PX', ttl) end
end

-- Decide one request; returns 'ok', 'already' (the same fenced final move repeated) or an error
-- string "RJ_<CODE> ...". A refused request changes nothing.
local function apply(argv, pos, actor)
  local id, token, target, result, err = argv[pos + ID], argv[pos + TOKEN], argv[pos + TARGET], argv[pos + RESULT],
    argv[pos + ERROR]
  local msg, refund, operator = argv[pos + MSG], argv[pos + REFUND], argv[pos + OPERATOR]
  local run_at = int_arg(argv[pos + RUN_AT], -MAX_MS, MAX_MS)
  local lease_ms = int_arg(argv[pos + LEASE_MS], 0, 366 * 86400000)
  if not valid_name(id) then return 'RJ_INVALID job id' end
  if not is_state(target) then return 'RJ_INVALID unknown state ' .. tostring(target) end
  if not run_at then return 'RJ_INVALID run_at must be an integer number of ms' end
  if not lease_ms then return 'RJ_INVALID lease_ms must be 0 to 366 days in ms' end
  if #msg > 1000 then return 'RJ_INVALID msg longer than 1000 bytes' end
  if token ~= '' and not int_arg(token, 1, 9007199254740991) then return 'RJ_INVALID lease token' end
  if (refund ~= '0' and refund ~= '1') or (operator ~= '0' and operator ~= '1') then
    return 'RJ_INVALID refund and operator must be 0 or 1'
  end
  local maxp = opt().max_payload
  if #result > maxp or #err > maxp then return 'RJ_INVALID result or error larger than ' .. maxp .. ' bytes' end
  local rec = load_job(id)
  local status = rec.status
  if not status then return 'RJ_NOT_FOUND ' .. id end
  if token ~= '' and field(rec, 'token') == token and status == target and M.final_role[status] then return 'already' end
  local e = fence(rec, token, operator)
  if e then return e end
  if not allows(status, target) then return 'RJ_TRANSITION ' .. status .. ' ' .. target .. ' ' .. id end
  local opts = {actor = actor, msg = msg, holder = actor, token = token ~= '' and token or nil,
    operator = token == '' and M.is_leased[status] or nil}
  if target == M.delayed then
    if run_at == 0 then return 'RJ_INVALID moving to ' .. target .. ' needs run_at' end
    -- a negative run_at is a delay in ms from the server's own clock (no client clock involved)
    opts.run_at = run_at > 0 and run_at or NOW - run_at
  end
  if M.is_leased[target] and not M.is_leased[status] then
    if lease_ms < 100 then return 'RJ_INVALID moving to ' .. target .. ' takes a lease: lease_ms of at least 100' end
    opts.lease_ms = lease_ms
    opts.assign = true  -- a lease taken by hand: its holder (the actor) is the job's assignee
  end
  if target == M.waiting then
    -- a manual block: it waits for its dependencies still open, if any, else until moved on
    local open = 0
    for dep in string.gmatch(field(rec, 'depends_on') or '', '[^,]+') do
      local d = load_job(dep)
      if d.status and not M.final_role[d.status] then open = open + 1 end
    end
    hset(rec, 'deps_pending', open)
  end
  local final = M.final_role[target]
  local attempt = tonumber(field(rec, 'attempt')) or 0
  if result ~= '' then hset(rec, 'result', result) end
  if err ~= '' then
    hset(rec, 'error', err)
  elseif final == 'success' and attempt > 1 then
    hdel(rec, 'error')  -- an earlier attempt's error does not describe a success
  end
  if final == 'success' or final == 'partial' then hset(rec, 'progress', 100) end
  if refund == '1' and attempt > 0 then hset(rec, 'attempt', attempt - 1) end
  if final == 'success' then cache(rec, result) end
  move(rec, target, opts)
  return 'ok'
end

-- The body of transition.lua and finish.lua: ARGV[2] actor, ARGV[3] n, then n requests. The call
-- is validated as a whole (and, when fenced, every request must carry a token) before any
-- request is decided; each request is decided in order, due jobs of the final states reached are
-- purged (twice as many as moved, so purging keeps pace with finishing), then everything is
-- written. Returns the outcomes, or an error reply for a malformed call (nothing written).
local function apply_call(argv, fenced)
  local actor, n = argv[2], int_arg(argv[3], 1, 1000)
  local w = REQ_FIELDS
  if not n or #argv ~= 3 + n * w then return fail('RJ_INVALID', 'malformed requests') end
  if not valid_actor(actor) then return fail('RJ_INVALID', 'actor') end
  if fenced then
    for pos = 4 + TOKEN, 3 + n * w, w do
      if argv[pos] == '' then return fail('RJ_INVALID', 'finish needs a lease token') end
    end
  end
  local out, roles, seen = {}, {}, {}
  for i = 1, n do
    local pos = 4 + (i - 1) * w
    out[i] = apply(argv, pos, actor)
    local r = M.final_role[argv[pos + TARGET]]
    if out[i] == 'ok' and r and not seen[r] then seen[r] = true; roles[#roles + 1] = r end
  end
  if #roles > 0 then purge(2 * n, roles) end
  commit()
  return out
end
