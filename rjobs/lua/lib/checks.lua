-- lib/checks.lua — the checks some scripts need beyond lib/core.lua: finite numbers, dedupe keys,
-- and fencing (a lease holder's token, or an operator).

-- A finite number in [lo, hi] from ARGV (not nan, not inf).
local function num_arg(v, lo, hi)
  local n = tonumber(v)
  if not n or n ~= n or n < lo or n > hi then return nil end
  return n
end

local function valid_dedupe_key(s)
  return type(s) == 'string' and #s >= 1 and #s <= 200 and string.find(s, '^[%w_%.%-:/@=+]+$') ~= nil
end

-- A lease holder's token check: nil when `token` is the job's current one in a leased state.
local function check_token(rec, token)
  if field(rec, 'token') ~= token or not M.is_leased[rec.status] then
    return 'RJ_LEASE_LOST ' .. rec.id .. ' token ' .. token .. ' is not the lease of this job (now ' ..
      tostring(rec.status) .. ')'
  end
  return nil
end

-- Fencing (docs/design.md, decision 2): a write to a leased job presents its token, or the caller
-- says it acts as an operator. A token presented for a job that is no longer leased by it is a
-- lost lease. Returns an error string, or nil.
local function fence(rec, token, operator)
  if token ~= '' then return check_token(rec, token) end
  if M.is_leased[rec.status] and operator ~= '1' then
    return 'RJ_FENCED ' .. rec.id .. ' is ' .. rec.status .. ' under a lease: pass its lease token, ' ..
      'or act as an operator'
  end
  return nil
end
