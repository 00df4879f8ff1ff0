"""Enqueue throughput: single enqueue (async Queue and blocking SyncQueue, one job per call, one
call at a time) and bulk enqueue (``enqueue_many``), with the queue-wide event stream on and off.

Method (same as peerbench's enqueue mode): the queue is declared and connected beforehand, the
clock runs around the enqueue loop only, and the queue length is checked afterwards. Jobs are
``noop`` with params ``{"i": i}``. Reported per run: jobs/s, client CPU µs per job (this
process) and server µs per job (``INFO commandstats`` usec of EVALSHA).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import common as C
import compat

import rjobs

BULK_CHUNK = 1000  # peerbench's chunk for every library's bulk API


def _config(queue_events: bool) -> rjobs.QueueConfig:
    return rjobs.QueueConfig(queue_events=queue_events)


def _server_us(r: Any, before: dict[str, Any], n: int) -> float:
    d = C.stats_delta(before, C.commandstats(r))
    return round(d.get("evalsha", {}).get("usec", 0) / n, 2)


def _row(kind: str, n: int, wall: float, cpu: float, server_us: float, queue_events: bool) -> dict[str, Any]:
    return {
        "kind": kind,
        "queue_events": queue_events,
        "n": n,
        "jobs_per_s": round(n / wall, 1),
        "us_per_job": round(wall / n * 1e6, 2),
        "client_cpu_us_per_job": round(cpu / n * 1e6, 2),
        "server_us_per_job": server_us,
    }


def single_async(url: str, n: int, queue_events: bool = True) -> dict[str, Any]:
    """``await queue.enqueue("noop", {"i": i})`` n times, one at a time."""
    r = C.client(url)
    C.fresh(r)

    async def go() -> tuple[float, float, float]:
        q = rjobs.Queue(C.QUEUE, url, config=_config(queue_events))
        await q.declare()
        s0 = C.commandstats(r)
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(n):
            await q.enqueue("noop", {"i": i})
        t1, c1 = time.perf_counter(), time.process_time()
        server = _server_us(r, s0, n)
        assert (await q.counts())["queued"] == n
        await q.close()
        return t1 - t0, c1 - c0, server

    wall, cpu, server = asyncio.run(go())
    return _row("single_async", n, wall, cpu, server, queue_events)


def single_get_async(url: str, n: int, raw: bool = False) -> dict[str, Any]:
    """``await queue.get(id)`` n times, one at a time, on n waiting jobs; ``raw``: the same HGETALL
    through the redis-py client instead (``await client.hgetall(key)``), for comparison."""
    r = C.client(url)
    C.fresh(r)

    async def go() -> tuple[float, float]:
        q = rjobs.Queue(C.QUEUE, url)
        ids = [o.id for o in await q.enqueue_many([rjobs.JobRequest(type="noop", params={"i": i}) for i in range(n)])]
        keys = [compat.backend(q).keys.job(i) for i in ids]
        await q.get(ids[0])
        await q.client.hgetall(keys[0])  # both paths connected before the clock starts
        c0, t0 = time.process_time(), time.perf_counter()
        if raw:
            for key in keys:
                await q.client.hgetall(key)
        else:
            for job_id in ids:
                await q.get(job_id)
        t1, c1 = time.perf_counter(), time.process_time()
        await q.close()
        return t1 - t0, c1 - c0

    wall, cpu = asyncio.run(go())
    return _row("hgetall_async_redis_py" if raw else "get_async", n, wall, cpu, 0.0, True)


def single_sync(url: str, n: int, queue_events: bool = True) -> dict[str, Any]:
    """``queue.enqueue("noop", {"i": i})`` on a SyncQueue, n times."""
    r = C.client(url)
    C.fresh(r)
    q = rjobs.SyncQueue(C.QUEUE, url, config=_config(queue_events))
    q.declare()
    s0 = C.commandstats(r)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        q.enqueue("noop", {"i": i})
    t1, c1 = time.perf_counter(), time.process_time()
    server = _server_us(r, s0, n)
    assert q.counts()["queued"] == n
    q.close()
    return _row("single_sync", n, t1 - t0, c1 - c0, server, queue_events)


def bulk(url: str, n: int, queue_events: bool = True, chunk: int = BULK_CHUNK, sync: bool = False) -> dict[str, Any]:
    """``enqueue_many`` with ``chunk`` requests per call (rjobs sends them as pipelined scripts of
    500 jobs each), async by default."""
    r = C.client(url)
    C.fresh(r)
    reqs = [rjobs.JobRequest(type="noop", params={"i": i}) for i in range(n)]

    if sync:
        q = rjobs.SyncQueue(C.QUEUE, url, config=_config(queue_events))
        q.declare()
        s0 = C.commandstats(r)
        c0, t0 = time.process_time(), time.perf_counter()
        for s in range(0, n, chunk):
            q.enqueue_many(reqs[s : s + chunk])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        server = _server_us(r, s0, n)
        assert q.counts()["queued"] == n
        q.close()
    else:

        async def go() -> tuple[float, float, float]:
            q = rjobs.Queue(C.QUEUE, url, config=_config(queue_events))
            await q.declare()
            s0 = C.commandstats(r)
            c0, t0 = time.process_time(), time.perf_counter()
            for s in range(0, n, chunk):
                await q.enqueue_many(reqs[s : s + chunk])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            server = _server_us(r, s0, n)
            assert (await q.counts())["queued"] == n
            await q.close()
            return wall, cpu, server

        wall, cpu, server = asyncio.run(go())
    kind = f"bulk_{'sync' if sync else 'async'}_chunk{chunk}"
    return _row(kind, n, wall, cpu, server, queue_events)


def run(url: str, n: int, reps: int) -> dict[str, Any]:
    """Every enqueue variant, ``reps`` times each; medians."""
    out: dict[str, Any] = {}
    for qe in (True, False):
        tag = "events_on" if qe else "events_off"
        out[f"single_async_{tag}"] = C.repeat(lambda qe=qe: single_async(url, n, qe), reps, f"enqueue async {tag}")
        out[f"single_sync_{tag}"] = C.repeat(lambda qe=qe: single_sync(url, n, qe), reps, f"enqueue sync {tag}")
        out[f"bulk_async_{tag}"] = C.repeat(lambda qe=qe: bulk(url, n, qe), reps, f"bulk async {tag}")
    out["bulk_sync_events_on"] = C.repeat(lambda: bulk(url, n, True, sync=True), reps, "bulk sync")
    out["bulk_async_one_call_events_on"] = C.repeat(lambda: bulk(url, n, True, chunk=n), reps, "bulk one call")
    return out
