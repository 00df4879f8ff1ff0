"""Enqueue -> start latency with an idle worker (peerbench's latency mode).

Method: start the worker (``record`` job body, concurrency 10), push one warm-up job through, let
it sit idle 1 s (blocked on BLPOP of the wake list), then enqueue 200 jobs one at a time from an
async client with ``sleep(0.005)`` between them. Latency = ``time.time()`` at the first line of
the job body (stored by the job with HSET) - ``time.time()`` taken just *before* the enqueue call,
so it includes the enqueue round trip itself. Worker and client run on the same host, so both
clocks are the same clock.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import bench_process as P
import common as C
import worker_app as W

import rjobs


def measure(
    url: str, n: int = 200, concurrency: int = 10, queue_events: bool = True, gap: float = 0.005
) -> dict[str, Any]:
    r = C.client(url)
    C.fresh(r)
    q = rjobs.Queue(W.QUEUE, url, config=rjobs.QueueConfig(queue_events=queue_events))
    tag = f"latency-c{concurrency}-{'ev' if queue_events else 'noev'}"
    w = P.WorkerProcess(url, concurrency, "record", queue_events, tag)
    try:

        async def go() -> dict[int, float]:
            await q.declare()
            await q.enqueue("noop", {"i": -1})
            deadline = time.time() + 60
            while int(r.get(W.DONE) or 0) < 1:
                if not w.alive() or time.time() > deadline:
                    raise RuntimeError(f"worker did not run the warm-up job:\n{w.tail()}")
                await asyncio.sleep(0.005)
            await asyncio.sleep(1.0)
            sent = {}
            for i in range(n):
                t0 = time.time()
                await q.enqueue("noop", {"i": i})
                sent[i] = t0
                await asyncio.sleep(gap)
            deadline = time.time() + 30
            while int(r.get(W.DONE) or 0) < n + 1:
                if time.time() > deadline:
                    raise RuntimeError(f"only {r.get(W.DONE)} of {n + 1} jobs ran:\n{w.tail()}")
                await asyncio.sleep(0.005)
            await q.close()
            return sent

        sent = asyncio.run(go())
        time.sleep(0.2)
        starts = {int(k): float(v) for k, v in r.hgetall(W.STARTS).items()}
    finally:
        w.stop()
    lat = [(starts[i] - t0) * 1000 for i, t0 in sent.items()]
    return {
        "concurrency": concurrency,
        "queue_events": queue_events,
        "n": len(lat),
        "p50_ms": round(C.percentile(lat, 0.5), 3),
        "p99_ms": round(C.percentile(lat, 0.99), 3),
        "mean_ms": round(statistics.mean(lat), 3),
        "max_ms": round(max(lat), 3),
    }


def run(url: str, n: int, reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for qe in (True, False):
        tag = f"c10_{'events_on' if qe else 'events_off'}"
        out[tag] = C.repeat(lambda qe=qe: measure(url, n, 10, qe), reps, f"latency {tag}")
    return out
