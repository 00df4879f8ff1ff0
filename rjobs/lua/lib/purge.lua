-- lib/purge.lua — retention (included after lib/core.lua by reap.lua and the finishing scripts).

-- Purge finished jobs whose retention ended: the hash, its streams, assets, dependents set, and
-- every index entry that points at it. Bounded by `limit` per call.
function RJ.purge(limit)
  local P = RJ.P
  local due = call('ZRANGEBYSCORE', P .. 'expiring', '-inf', RJ.now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    local jk = RJ.jkey(id)
    local f = call('HMGET', jk, 'status', 'user_id', 'dedupe_key', 'depends_on')
    if f[1] then call('ZREM', P .. 'state:' .. f[1], id) end
    if f[2] and f[2] ~= '' then call('ZREM', P .. 'owner:' .. f[2], id) end
    if f[3] and f[3] ~= '' then
      local dk = P .. 'dedupe:' .. f[3]
      if call('GET', dk) == id then call('DEL', dk) end
    end
    if f[4] then
      for dep in string.gmatch(f[4], '[^,]+') do call('SREM', RJ.jkey(dep) .. ':dependents', id) end
    end
    call('DEL', jk, jk .. ':events', jk .. ':assets', jk .. ':dependents')
    call('ZREM', P .. 'expiring', id)
  end
  return #due
end
