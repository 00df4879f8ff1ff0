-- lib/purge.lua — removing a job with everything it owns, and retention (docs/design.md, decision
-- 6); included after lib/move.lua by the scripts that purge or delete. A finished job is purged
-- once it has been in its final state longer than the queue keeps that outcome, or once more jobs
-- of that outcome finished after it than the queue keeps: both read from the final state's index
-- (a score range and a rank range), no other set.
local PURGE_FIELDS = {'status', 'user_id', 'dedupe_key', 'depends_on', 'type'}
local PURGE_IX = {status = 1, user_id = 2, dedupe_key = 3, depends_on = 4, type = 5}
local ALL_FINAL = {'success', 'partial', 'failure', 'cancelled'}

-- Decide the removal of a loaded job (rec.status as the moves planned so far leave it) with
-- everything it owns: the entries of its state's indexes (state, lane, delayed, leases), its owner
-- entry, its dedupe key while it holds it (and, with `with_cache`, the key's cached result), its
-- entry in the dependents sets of the jobs it waits for; commit deletes its hash, history, assets
-- and dependents set. The record then reads as a missing job for the rest of the call.
local function drop(rec, with_cache)
  local id, st = rec.id, rec.status
  if st then
    if st == M.ready then zset((lane_key_of(rec)), id, false)
    elseif st == M.delayed then zset(P .. 'delayed', id, false) end
    if M.is_leased[st] then
      zset(P .. 'leases', id, false)
      local who = FLOW and field(rec, 'assignee')
      if who then zset(P .. 'assigned:' .. who, id, false) end
      local held = FLOW and field(rec, 'lim')  -- the limit slots its claim took go back (lib/move.lua)
      if held then
        for name in string.gmatch(held, '[^,]+') do op('HINCRBY', P .. 'running', name, -1) end
      end
    end
    zset(P .. 'state:' .. st, id, false)
  end
  local user, dkey, deps = field(rec, 'user_id'), field(rec, 'dedupe_key'), field(rec, 'depends_on')
  if user and user ~= '' then zset(P .. 'owner:' .. user, id, false) end
  if dkey and dkey ~= '' then
    local dk = P .. 'dedupe:' .. dkey
    if read('GET', dk) == id then
      op('DEL', dk)
      if with_cache then op('DEL', P .. 'cache:' .. dkey) end
    end
  end
  if deps then
    for dep in string.gmatch(deps, '[^,]+') do op('SREM', P .. 'job:' .. dep .. ':dependents', id) end
  end
  rec.dropped = true  -- commit deletes it with every key it owns
  rec.status = false
end

-- The count caps per final role (-1: none), parsed on first use.
local function keep_counts()
  if not M.counts then
    local keep_success_count, keep_partial_count, keep_failure_count, keep_cancelled_count =
      string.match(M.more, LAYOUT_COUNTS)
    M.counts = {success = tonumber(keep_success_count), partial = tonumber(keep_partial_count),
      failure = tonumber(keep_failure_count), cancelled = tonumber(keep_cancelled_count)}
  end
  return M.counts
end

-- Purge one entry of a final state's index; true when a job went (a stale entry goes quietly).
local function purge_one(index, st, id)
  local rec = load_job(id, PURGE_FIELDS, PURGE_IX)
  if rec.dirty or rec.dropped then return false end
  zset(index, id, false)
  if rec.status ~= st then return false end  -- a stale entry (the hash is authoritative)
  drop(rec, false)
  return true
end

-- Decide the purge of at most `budget` jobs, looking at the final roles in `roles` (nil: all):
-- first those past their time, then the oldest beyond the count cap. Jobs this call changed are
-- left for a later call. Returns how many were purged.
local function purge(budget, roles)
  local keep, counts = opt().keep, keep_counts()
  local purged = 0
  for _, r in ipairs(roles or ALL_FINAL) do
    local st, k, cap = M[r], keep[r], counts[r]
    if purged >= budget then break end
    if st ~= '' then
      local index = P .. 'state:' .. st
      local seen = 0  -- entries read from the head of the index by the time pass
      if k and k >= 0 then
        local due = read('ZRANGEBYSCORE', index, '-inf', NOW - k, 'LIMIT', 0, budget - purged)
        seen = #due
        for _, id in ipairs(due) do
          if purge_one(index, st, id) then purged = purged + 1 end
        end
      end
      if cap and cap >= 0 and purged < budget then
        -- the oldest beyond the cap: a rank range (the time pass read a prefix of the same range)
        local excess = read('ZCARD', index) - cap
        if excess > 0 then
          local upto = math.min(excess, seen + budget - purged)
          for _, id in ipairs(read('ZRANGE', index, 0, upto - 1)) do
            if purged >= budget then break end
            if purge_one(index, st, id) then purged = purged + 1 end
          end
        end
      end
    end
  end
  return purged
end
