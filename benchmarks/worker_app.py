"""The worker process the rjobs benchmarks spawn (one process, rjobs.Worker, asyncio).

    python benchmarks/worker_app.py --url URL -c 10 [--mode noop|incr|record] [--queue-events 0|1]
                                    [--stats FILE]

Job functions (all ``async def fn(ctx, params)``, registered as type ``noop``):

* ``noop``   returns None: nothing but rjobs' own work (claim, run, finish, history).
* ``incr``   peerbench's bookkeeping: ``INCR peerbench:done`` through redis.asyncio.
* ``record`` latency mode: ``time.time()`` at the first line of the body, stored with
  ``HSET rjbench:starts <i> <t>``, then ``INCR rjbench:done``.

SIGTERM stops the worker gracefully (the Worker's own signal handling); its WorkerStats are then
written to ``--stats`` as JSON. ``RJBENCH_METRICS=1`` in the environment serves the worker's
Prometheus metrics (rjobs.observe, on a free port), to measure what they cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

# the repo's rjobs (or RJOBS_SRC's, see common.py)
sys.path.insert(0, os.environ.get("RJOBS_SRC") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import anyio
import redis.asyncio as aredis

import rjobs
from rjobs import Worker

QUEUE = "bench"
STARTS = "rjbench:starts"
DONE = "rjbench:done"
_client: aredis.Redis | None = None


def _redis() -> aredis.Redis:
    global _client
    if _client is None:
        _client = aredis.Redis.from_url(os.environ["RJBENCH_URL"])
    return _client


async def noop(ctx: Any, params: Any) -> None:
    return None


async def incr(ctx: Any, params: Any) -> None:
    await _redis().incr("peerbench:done")


async def record(ctx: Any, params: Any) -> None:
    t = time.time()
    r = _redis()
    await r.hset(STARTS, str(params["i"]), repr(t))
    await r.incr(DONE)


FUNCTIONS = {"noop": noop, "incr": incr, "record": record}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("-c", "--concurrency", type=int, default=10)
    p.add_argument("--mode", choices=list(FUNCTIONS), default="noop")
    p.add_argument("--queue-events", type=int, default=1)
    p.add_argument("--stats", default=None)
    p.add_argument("--keep", type=float, default=-1.0, help="retention of finished jobs, s (-1: the default)")
    a = p.parse_args()
    os.environ["RJBENCH_URL"] = a.url
    logging.basicConfig(level=logging.WARNING)
    config = rjobs.QueueConfig(queue_events=bool(a.queue_events))
    if a.keep >= 0:
        keep = rjobs.Retention(success=a.keep, partial=a.keep, failure=a.keep, cancelled=a.keep)
        config = rjobs.QueueConfig(queue_events=bool(a.queue_events), retention=keep)
    queue = rjobs.Queue(QUEUE, a.url, config=config)
    worker = Worker(queue, functions={"noop": FUNCTIONS[a.mode]}, concurrency=a.concurrency, lease=30.0)
    if os.environ.get("RJBENCH_METRICS") == "1":
        from rjobs.observe.prometheus import serve_worker_metrics

        serve_worker_metrics(worker, 0, "127.0.0.1")

    async def go() -> None:
        await worker.run(install_signal_handlers=True)
        await queue.close()

    anyio.run(go, backend="asyncio")
    if a.stats:
        with open(a.stats, "w") as f:
            json.dump(vars(worker.stats), f)


if __name__ == "__main__":
    main()
