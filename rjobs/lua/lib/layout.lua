-- lib/layout.lua — GENERATED from rjobs/store/layout.py: do not edit. Regenerate with
-- `python -m rjobs.store.layout` (`--check` exits 1 when this file is stale; so does a unit test).
-- The compiled machine, written by declare_machine.lua into two fields of the machine hash:
--   compiled:head   rj4|<queue_events>,<stream_maxlen>|
--                   <max_payload>,<cache_ttl_ms>,<keep_success_ms>,<keep_partial_ms>,<keep_failure_ms>,<keep_cancelled_ms>,<keep_success_count>,<keep_partial_count>,<keep_failure_count>,<keep_cancelled_count>|
--                   <initial>,<ready>,<delayed>,<waiting>,<review>,<success>,<partial>,<failure>,<cancelled>|
--                   <leased chain>|
--   compiled:edges  |#<state>|<from>><to>|...|  (every state, then its edges)
-- A role the machine lacks is ''. Included first by every script (before lib/core.lua). Only
-- constants: a function or a table here would be built again by every call of every script.

-- The head, for string.match; it captures, in order:
--   queue_events, stream_maxlen, more (the other options, as one text: LAYOUT_MORE),
--   initial, ready, delayed, waiting, review, success, partial, failure, cancelled, leased
local LAYOUT_HEAD = '^rj4|([^,]*),([^|]*)|([^|]*)|([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^|]*)|([^|]+)|$'
-- The other options, for string.match on `more`; it captures, in order (the first ones only:
-- the count options after them are read by LAYOUT_COUNTS):
--   max_payload, cache_ttl_ms, keep_success_ms, keep_partial_ms, keep_failure_ms, keep_cancelled_ms
local LAYOUT_MORE = '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)'
-- The count options at the end of `more` (lib/purge.lua), for string.match; it captures:
--   keep_success_count, keep_partial_count, keep_failure_count, keep_cancelled_count
local LAYOUT_COUNTS = '^[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,([^,]*),([^,]*),([^,]*),([^,]*)$'
-- For declare_machine.lua: the head's version tag and how many options come first (the event
-- options); the roles in order; the options in order, name:default:lowest:highest.
local LAYOUT_VERSION, LAYOUT_EVENT_OPTIONS = 'rj4', 2
local LAYOUT_ROLES = 'initial,ready,delayed,waiting,review,success,partial,failure,cancelled'
local LAYOUT_OPTIONS = 'queue_events:1:0:1,stream_maxlen:10000:1:1000000000,max_payload:1048576:1:536870912,cache_ttl_ms:0:-1:3153600000000,keep_success_ms:-1:-1:3153600000000,keep_partial_ms:-1:-1:3153600000000,keep_failure_ms:-1:-1:3153600000000,keep_cancelled_ms:-1:-1:3153600000000,keep_success_count:-1:-1:1000000000,keep_partial_count:-1:-1:1000000000,keep_failure_count:-1:-1:1000000000,keep_cancelled_count:-1:-1:1000000000'
-- The counters (lib/write.lua): the length of a bucket (ms) and how long one is kept (s).
local METRICS_BUCKET_MS, METRICS_TTL_S = 60000, 90000
