-- lib/core.lua — shared helpers, included at the top of every script by rjobs/scripts.py.
-- Not a script of its own. Conventions every script follows:
--   ARGV[1] is the queue prefix "rjobs:{Q}:"; KEYS[1] must equal prefix.."machine" and KEYS[2]
--   prefix.."events". Every other key a script touches is built from the prefix, so it shares the
--   queue's hash tag (one Cluster slot): job:<id>, job:<id>:events, job:<id>:assets,
--   job:<id>:dependents, ready, delayed, leases, expiring, seq, wake, workers, state:<s>,
--   owner:<u>, dedupe:<k>, cache:<k>.
--   RJ.init() validates and loads the machine; scripts validate everything, then write.
--   Every function defined here is a closure created on every call (~0.1-0.2 µs each), so the
--   helpers are split: lib/move.lua (moves, edges, options), lib/purge.lua (retention); a script
--   includes only what it uses.
--   Errors are returned (never raised) as "RJ_<CODE> args...", mapped in rjobs/errors.py.
local RJ = {cascade = {}, cascading = false, wake = false, ev = {}}
local call = redis.call

-- The compiled machine, written by declare_machine.lua into two fields of the machine hash:
--   compiled:head   rj2|<jmax>,<qev>,<smax>|<more options>|<9 role states>|<leased chain>|
--   compiled:edges  |#<state>|<from>><to>|...|  (every state, then its edges)
-- jmax, qev, smax: options job_events_maxlen, queue_events, stream_maxlen (every event needs
-- them); more options, in order: max_payload, cache_ttl_ms, keep_success_ms, keep_partial_ms,
-- keep_failure_ms, keep_cancelled_ms (parsed only by the calls that use them); roles in order:
-- initial, ready, delayed, waiting, review, success, partial, failure, cancelled ('' = none).
-- A call reads the short head with one HGET and one anchored string.match; the edges are read
-- only by calls that check an edge, with a plain string.find of '|from>to|'. Nothing decodes or
-- builds the whole table per call (cjson.decode of the whole machine was ~40% of a small call).
local HEAD = '^rj2|([^,]*),([^,]*),([^|]*)|([^|]*)|([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),' ..
  '([^,]*),([^|]*)|([^|]+)|$'

-- with_edges: the call checks edges anyway (transition, finish): read them with the head in one
-- HMGET instead of a second HGET later (see RJ.edges in lib/move.lua).
function RJ.init(keys, prefix, with_edges)
  if type(prefix) ~= 'string' or keys[1] ~= prefix .. 'machine' or keys[2] ~= prefix .. 'events' then
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
  local jmax, qev, smax, more, initial, ready, delayed, waiting, review, success, partial, failure, cancelled,
    leased = string.match(head, HEAD)
  if not leased then
    return 'RJ_NO_MACHINE the stored machine was compiled by another rjobs version: ' ..
      'declare the queue again (connect a Queue) to recompile it'
  end
  local final_role = {[success] = 'success', [failure] = 'failure', [cancelled] = 'cancelled'}
  if partial ~= '' then final_role[partial] = 'partial' end
  local is_leased = {[leased] = true}
  if string.find(leased, ',', 1, true) then
    is_leased = {}
    for st in string.gmatch(leased, '[^,]+') do is_leased[st] = true end
  end
  -- m.role is m itself (one table less per call): m.role.ready == m.ready. leased is the chain
  -- as text ("a,b"); stream caps stay strings (XADD takes them as they are); `more` is parsed by
  -- RJ.opt() in lib/move.lua.
  local m = {leased = leased, is_leased = is_leased, final_role = final_role, jmax = jmax, qev = qev, smax = smax,
    more = more, initial = initial, ready = ready, delayed = delayed, waiting = waiting, review = review,
    success = success, partial = partial, failure = failure, cancelled = cancelled}
  m.role = m
  m.edges = edges
  RJ.m = m
  return nil
end

function RJ.jkey(id) return RJ.P .. 'job:' .. id end

function RJ.is_final(state) return RJ.m.final_role[state] ~= nil end

-- Valid ids/names: same charset rule as rjobs/keys.py, enforced again here so a raw EVALSHA from
-- redis-cli cannot forge keys either.
function RJ.valid_name(s, maxlen)
  return type(s) == 'string' and #s >= 1 and #s <= (maxlen or 128) and string.match(s, '^[%w_%.%-]+$') ~= nil
end

function RJ.ready_score(priority, seq)
  return (10 - tonumber(priority)) * 1e13 + tonumber(seq)
end

-- Append one event to the job's stream (jk: the job's key) and the queue's stream. Events carry
-- ids, states, actor and short text, never payloads. Missing values (nil, false as HMGET reports
-- an absent field, '') are left out.
function RJ.emit(id, jk, event, from, to, actor, msg, attempt, token, data)
  local a, n = RJ.ev, 4  -- one scratch table per call: XADD reads a[1..n]
  a[1] = 'event'; a[2] = event; a[3] = 'job'; a[4] = id
  if from and from ~= '' then a[n + 1] = 'from'; a[n + 2] = from; n = n + 2 end
  if to and to ~= '' then a[n + 1] = 'to'; a[n + 2] = to; n = n + 2 end
  if actor and actor ~= '' then a[n + 1] = 'actor'; a[n + 2] = actor; n = n + 2 end
  if msg and msg ~= '' then a[n + 1] = 'msg'; a[n + 2] = msg; n = n + 2 end
  if attempt and attempt ~= '' then a[n + 1] = 'attempt'; a[n + 2] = attempt; n = n + 2 end
  if token and token ~= '' then a[n + 1] = 'token'; a[n + 2] = token; n = n + 2 end
  if data and data ~= '' then a[n + 1] = 'data'; a[n + 2] = data; n = n + 2 end
  local m = RJ.m
  call('XADD', jk .. ':events', 'MAXLEN', '~', m.jmax, '*', unpack(a, 1, n))
  if m.qev == '1' then
    call('XADD', RJ.events_key, 'MAXLEN', '~', m.smax, '*', unpack(a, 1, n))
  end
end

-- Check a worker's lease token. Returns nil when it holds the job in a leased state.
function RJ.check_token(id, status, token, job_token)
  if token == nil or token == '' then return nil end
  if job_token ~= token or not RJ.m.is_leased[status] then
    return 'RJ_LEASE_LOST ' .. id .. ' token ' .. token .. ' is not the lease of this job (now ' ..
      tostring(status) .. ')'
  end
  return nil
end
