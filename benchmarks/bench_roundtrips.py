"""Redis round trips and server time per job, per operation, from ``INFO commandstats`` deltas.

Each phase runs one operation alone against a fresh server, so the EVALSHA delta of the phase
belongs to that script: calls per job (client round trips; a pipelined batch counts once per
script call), server µs per call and per job (``usec`` of EVALSHA, which includes the commands
the script runs), and the commands the script ran per job (Redis counts ``redis.call`` in
commandstats too). Phases:

* enqueue: single (one job per call) and bulk (``enqueue_many``, 1,000 per call);
* claim: the worker's claim script with max_jobs 1, 10 and 100;
* finish: the worker's finish script with 1, 10 and 100 outcomes per call;
* heartbeat: one call renewing 1, 10 and 100 leases.

claim/finish/heartbeat are driven here with exactly the calls rjobs' Worker sends
(``Scripts.claim`` / ``Scripts.finish`` / ``Scripts.heartbeat``), without the Worker, so the
numbers exist even where the Worker changes. The Worker's own total per job comes from
bench_process (its drain is wrapped in the same commandstats delta).
"""

from __future__ import annotations

from typing import Any

import common as C
import compat

import rjobs
from rjobs.models import ClaimedJob

try:
    from rjobs.store.scripts import MoveRequest
except ImportError:  # a snapshot from before the redesign
    from rjobs.scripts import MoveRequest  # type: ignore[no-redef]

WORKER_ID = "bench-worker"
LEASE_MS = 30_000


def sync_queue(url: str, queue_events: bool = True) -> rjobs.SyncQueue:
    q = rjobs.SyncQueue(C.QUEUE, url, config=rjobs.QueueConfig(queue_events=queue_events))
    q.declare()
    return q


def preload(q: rjobs.SyncQueue, n: int) -> None:
    reqs = [rjobs.JobRequest(type="noop", params={"i": i}) for i in range(n)]
    for s in range(0, n, 1000):
        q.enqueue_many(reqs[s : s + 1000])


def claim_all(q: rjobs.SyncQueue, n: int, batch: int) -> list[ClaimedJob]:
    """Lease every ready job, ``batch`` per claim call (the Worker's claim call)."""
    jobs: list[ClaimedJob] = []
    while len(jobs) < n:
        got = compat.backend(q).run(compat.claim(q, WORKER_ID, min(batch, n - len(jobs)), LEASE_MS, ["noop"]))
        if not got.jobs:
            break
        jobs += got.jobs
    return jobs


def finish_all(q: rjobs.SyncQueue, jobs: list[ClaimedJob], batch: int) -> None:
    """Complete every job with result ``null``, ``batch`` per finish call (the Worker's request)."""
    for s in range(0, len(jobs), batch):
        reqs = [MoveRequest(j.id, q.machine.success or "", token=j.token, result=b"null") for j in jobs[s : s + batch]]
        outcomes = compat.backend(q).run(compat.backend(q).scripts.finish(WORKER_ID, reqs))
        assert all(o == "ok" for o in outcomes), outcomes[:3]


def heartbeat(q: rjobs.SyncQueue, jobs: list[ClaimedJob], batch: int, calls: int) -> None:
    pairs = [(j.id, j.token) for j in jobs[:batch]]
    for _ in range(calls):
        replies = compat.backend(q).run(compat.backend(q).scripts.heartbeat(WORKER_ID, LEASE_MS, pairs))
        assert all(x == "ok" for x in replies)


def _phase(r: Any, label: str, jobs: int, fn: Any) -> dict[str, Any]:
    s0 = C.commandstats(r)
    fn()
    d = C.stats_delta(s0, C.commandstats(r))
    ev = d.get("evalsha", {"calls": 0, "usec": 0})
    parts = C.split_commands(d)
    in_scripts = sum(parts["in_scripts"].values())
    return {
        "phase": label,
        "jobs": jobs,
        "evalsha_calls": ev["calls"],
        "round_trips_per_job": round(ev["calls"] / jobs, 4),
        "server_us_per_call": round(ev["usec"] / max(ev["calls"], 1), 2),
        "server_us_per_job": round(ev["usec"] / jobs, 2),
        "commands_in_scripts_per_job": round(in_scripts / jobs, 2),
        "commands_in_scripts": parts["in_scripts"],
        # server µs inside the script per job, by command (the rest of EVALSHA's usec is Lua itself)
        "command_us_per_job": {k: round(d[k]["usec"] / jobs, 2) for k in parts["in_scripts"]},
        "lua_us_per_job": round((ev["usec"] - sum(d[k]["usec"] for k in parts["in_scripts"])) / jobs, 2),
        "other_client_commands": {k: v for k, v in parts["client"].items() if k != "evalsha"},
    }


def measure(url: str, n: int, queue_events: bool = True) -> dict[str, Any]:
    """One pass over every phase; ``n`` jobs per enqueue/claim/finish phase."""
    r = C.client(url)
    out: dict[str, Any] = {"queue_events": queue_events}

    C.fresh(r)
    q = sync_queue(url, queue_events)
    single_n = min(n, 2000)
    out["enqueue_single"] = _phase(
        r, "enqueue single", single_n, lambda: [q.enqueue("noop", {"i": i}) for i in range(single_n)]
    )
    C.fresh(r)
    q = sync_queue(url, queue_events)
    out["enqueue_bulk_1000"] = _phase(r, "enqueue_many (1,000 per call)", n, lambda: preload(q, n))

    for batch in (1, 10, 100):
        C.fresh(r)
        q = sync_queue(url, queue_events)
        m = n if batch > 1 else min(n, 2000)
        preload(q, m)
        jobs: list[ClaimedJob] = []
        out[f"claim_{batch}"] = _phase(
            r, f"claim (max_jobs={batch})", m, lambda q=q, m=m, b=batch, jobs=jobs: jobs.extend(claim_all(q, m, b))
        )
        assert len(jobs) == m, len(jobs)
        if batch == 100:
            for hb in (1, 10, 100):
                calls = 200
                out[f"heartbeat_{hb}"] = _phase(
                    r,
                    f"heartbeat ({hb} leases per call)",
                    hb * calls,
                    lambda q=q, jobs=jobs, hb=hb, c=calls: heartbeat(q, jobs, hb, c),
                )
        out[f"finish_{batch}"] = _phase(
            r, f"finish ({batch} per call)", m, lambda q=q, jobs=jobs, b=batch: finish_all(q, jobs, b)
        )
        q.close()
    return out


def run(url: str, n: int, reps: int) -> dict[str, Any]:
    """Every phase with the queue stream on and off; medians over ``reps`` passes."""
    out: dict[str, Any] = {}
    for qe in (True, False):
        tag = "events_on" if qe else "events_off"
        passes = []
        for i in range(reps):
            C.wait_for_quiet(*C.WAIT_QUIET)
            passes.append(measure(url, n, qe))
            print(f"  roundtrips {tag} rep {i + 1}/{reps} done", flush=True, file=__import__("sys").stderr)
        merged: dict[str, Any] = {"queue_events": qe}
        for phase in passes[0]:
            if phase == "queue_events":
                continue
            rows = [p[phase] for p in passes]
            row = dict(rows[0])
            for k in ("server_us_per_call", "server_us_per_job"):
                row[k] = round(C.median([x[k] for x in rows]), 2)
                row[k + "_range"] = [min(x[k] for x in rows), max(x[k] for x in rows)]
            merged[phase] = row
        out[tag] = merged
    return out
