-- lib/core.lua — included first by every script (rjobs/scripts.py expands the include lines).
-- Conventions every script follows (docs/design.md, "Decisions shared by the current wave"):
--   ARGV[1] is the queue prefix "rjobs:{Q}:"; KEYS[1] must be prefix.."machine", KEYS[2]
--   prefix.."events". Every other key is built from the prefix, so it shares the queue's hash tag.
--   A script validates its arguments, reads everything it needs and decides every change in Lua
--   memory (prepare, decide), and only then writes (lib/write.lua): a refused call writes nothing,
--   and on a cluster a key that migrated aborts the script before its first write.
--   Errors are returned as "RJ_<CODE> text", mapped to exceptions by rjobs/errors.py.
local RJ = {}
local call = redis.call

-- The compiled machine, written by declare_machine.lua into two fields of the machine hash:
--   compiled:head   rj3|<qev>,<smax>|<max_payload>,<cache_ttl_ms>,<keep_success_ms>,
--                   <keep_partial_ms>,<keep_failure_ms>,<keep_cancelled_ms>|<9 role states>|<leased chain>|
--   compiled:edges  |#<state>|<from>><to>|...|  (every state, then its edges)
-- Roles in order: initial, ready, delayed, waiting, review, success, partial, failure, cancelled
-- ('' = none). The layout is defined once, in rjobs/scripts.py (COMPILED_OPTIONS, COMPILED_ROLES).
local HEAD = '^rj3|([^,]*),([^|]*)|([^|]*)|([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),' ..
  '([^,]*),([^|]*)|([^|]+)|$'

-- Check the keys, read the server time and the machine. with_edges: read the edges too (calls
-- that check an edge anyway). Returns an error string, or nil.
function RJ.init(keys, prefix, with_edges)
  if type(prefix) ~= 'string' or not string.match(prefix, '^rjobs:{[%w_%.%-]+}:$') or
    keys[1] ~= prefix .. 'machine' or keys[2] ~= prefix .. 'events' then
    return 'RJ_INVALID keys do not match the queue prefix'
  end
  RJ.P = prefix
  RJ.events_key = keys[2]
  RJ.machine_key = keys[1]
  local t = redis.call('TIME')
  RJ.now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local head, edges
  if with_edges then
    local r = call('HMGET', keys[1], 'compiled:head', 'compiled:edges')
    head, edges = r[1], r[2] or nil
  else
    head = call('HGET', keys[1], 'compiled:head')
  end
  if not head then
    if call('EXISTS', keys[1]) == 0 then return 'RJ_NO_MACHINE no state machine declared for this queue' end
    return 'RJ_NO_MACHINE the stored machine was declared by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  local qev, smax, more, initial, ready, delayed, waiting, review, success, partial, failure, cancelled,
    leased = string.match(head, HEAD)
  if not leased then
    return 'RJ_NO_MACHINE the stored machine was compiled by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  local final_role = {[success] = 'success', [failure] = 'failure', [cancelled] = 'cancelled'}
  if partial ~= '' then final_role[partial] = 'partial' end
  local is_leased, chain = {}, {}
  for st in string.gmatch(leased, '[^,]+') do is_leased[st] = true; chain[#chain + 1] = st end
  -- m.role is m itself (one table less per call): m.role.ready == m.ready
  local m = {leased = leased, chain = chain, is_leased = is_leased, final_role = final_role, qev = qev,
    smax = smax, more = more, initial = initial, ready = ready, delayed = delayed, waiting = waiting,
    review = review, success = success, partial = partial, failure = failure, cancelled = cancelled}
  m.role = m
  m.edges = edges
  RJ.m = m
  RJ.known = {[keys[1]] = true}  -- keys this call has read: known to be served here (lib/write.lua)
  return nil
end

-- Numbers from ARGV. RJ.int: a decimal integer in [lo, hi]; RJ.num: a finite number in [lo, hi]
-- (plain decimal or exponent notation: no hex, no spaces, no nan/inf). Lua's tonumber('nan')
-- passes every `x < lo or x > hi` test, so nothing else may parse a number from ARGV.
function RJ.int(v, lo, hi)
  local n
  if type(v) == 'number' then n = v
  elseif type(v) == 'string' and #v <= 20 and string.find(v, '^%-?%d+$') then n = tonumber(v)
  else return nil end
  if n ~= n or n < lo or n > hi or n % 1 ~= 0 then return nil end
  return n
end

function RJ.num(v, lo, hi)
  local n
  if type(v) == 'number' then n = v
  elseif type(v) == 'string' and #v <= 40 and string.find(v, '^[%-+]?[%d%.]+[eE]?[%-+]?%d*$') then n = tonumber(v)
  else return nil end
  if not n or n ~= n or n < lo or n > hi then return nil end
  return n
end

RJ.MAX_MS = 253402300799999  -- 9999-12-31: the largest epoch ms a job may be due at

-- Names that become part of a key (ids, types, users): the charset of rjobs/keys.py.
function RJ.valid_name(s, maxlen)
  return type(s) == 'string' and #s >= 1 and #s <= (maxlen or 128) and string.find(s, '^[%w_%.%-]+$') ~= nil
end

-- Who acts (a worker id, a client, a person): the charset of rjobs.plans' actor rule, so it goes
-- into a history entry without escaping.
function RJ.valid_actor(s)
  return type(s) == 'string' and #s >= 1 and #s <= 200 and string.find(s, '^[%w_%.:@%-]+$') ~= nil
end

function RJ.valid_dedupe_key(s)
  return type(s) == 'string' and #s >= 1 and #s <= 200 and string.find(s, '^[%w_%.%-:/@=+]+$') ~= nil
end

function RJ.jkey(id) return RJ.P .. 'job:' .. id end

function RJ.is_final(state) return RJ.m.final_role[state] ~= nil end

function RJ.ready_score(priority, seq)
  return (10 - tonumber(priority)) * 1e13 + tonumber(seq)
end

-- A read of one key that also records the key as known to be served here.
function RJ.read(cmd, key, ...)
  RJ.known[key] = true
  return call(cmd, key, ...)
end

-- The fields every loaded job record holds (more with RJ.load's `extra`).
RJ.BASE = {'status', 'token', 'attempt', 'priority', 'seq', 'started_ms', 'has_dependents', 'dedupe_key',
  'user_id', 'max_attempts', 'worker', 'executions', 'lease_deadline_ms'}
RJ.jobs = {}   -- loaded records by id: every decision of the call sees the planned state
RJ.order = {}  -- records in load order (writes follow it)

-- Load a job once per call: rec.status is false when it does not exist. rec.f holds its fields
-- as they will be after the moves planned so far; rec.set / rec.del the net changes to write.
function RJ.load(id, extra)
  local rec = RJ.jobs[id]
  if rec then
    if extra then
      local need = {}
      for _, name in ipairs(extra) do if rec.f[name] == nil then need[#need + 1] = name end end
      if #need > 0 and not rec.new then
        local v = call('HMGET', rec.jk, unpack(need))
        for i, name in ipairs(need) do rec.f[name] = v[i] end
      end
    end
    return rec
  end
  local jk = RJ.jkey(id)
  local names = RJ.BASE
  if extra then
    names = {unpack(RJ.BASE)}
    for _, name in ipairs(extra) do names[#names + 1] = name end
  end
  local v = call('HMGET', jk, unpack(names))
  local f = {}
  for i, name in ipairs(names) do f[name] = v[i] end
  rec = {id = id, jk = jk, f = f, status = f.status, orig = f.status, set = {}, del = {}}
  RJ.known[jk] = true
  RJ.jobs[id] = rec
  RJ.order[#RJ.order + 1] = rec
  return rec
end

-- A job this call creates: its keys were checked to be free (and served here) by the caller.
function RJ.new(id)
  local jk = RJ.jkey(id)
  local rec = {id = id, jk = jk, f = {}, status = false, orig = false, set = {}, del = {}, new = true}
  RJ.known[jk] = true
  RJ.jobs[id] = rec
  RJ.order[#RJ.order + 1] = rec
  return rec
end

-- A lease holder's token check: nil when `token` is the job's current one in a leased state.
function RJ.check_token(rec, token)
  if rec.f.token ~= token or not RJ.m.is_leased[rec.status] then
    return 'RJ_LEASE_LOST ' .. rec.id .. ' token ' .. token .. ' is not the lease of this job (now ' ..
      tostring(rec.status) .. ')'
  end
  return nil
end

-- Fencing (docs/design.md, decision 2): a write to a leased job presents its token, or the
-- caller says it acts as an operator. A token presented for a job that is no longer leased by
-- it is a lost lease. Returns an error string, or nil.
function RJ.fence(rec, token, operator)
  if token ~= '' then return RJ.check_token(rec, token) end
  if RJ.m.is_leased[rec.status] and operator ~= '1' then
    return 'RJ_FENCED ' .. rec.id .. ' is ' .. rec.status .. ' under a lease: pass its lease token, ' ..
      'or act as an operator'
  end
  return nil
end
