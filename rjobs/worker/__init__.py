"""The worker: the loop (loop), running one job (execution), writing outcomes (finisher), the
job slots (pool), the jobs held and their states (inflight, signals), leases and heartbeats (leases),
the reaper, the idle wait (wake), the server clock (clock), counters (stats), the job context
(context), job functions and outcomes (functions), and the backoff policy (retry)."""
