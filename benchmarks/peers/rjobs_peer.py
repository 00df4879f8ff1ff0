"""rjobs adapter for peerbench (/work/shared/peerbench), same CLI and bookkeeping as every peer:

    python benchmarks/peers/rjobs_peer.py enqueue|process|latency --n N --redis-url URL [-c 10|100]
                                          [--variant default|noevents]

Run it with the peer venv's python (``pip install -e /work/main`` there) so rjobs and the peers
share one interpreter, redis-py and hiredis. The job body is peerbench's: ``mark_done_async``
(``INCR peerbench:done``; latency mode first stores its start time with HSET), from the shared
``peers/_common.py``, imported from the peerbench checkout by path (never copied).

Worker: the ``rjobs worker`` CLI, one process: ``rjobs worker rjobs_peer:make_worker --url URL
-c C`` (rjobs.Worker on asyncio, lease 30 s, every other setting at its default; the CLI's
INFO lifecycle logging is lowered to WARNING like every peer's). Variant ``noevents`` runs the
queue with ``QueueConfig(queue_events=False)`` (per-job history stays on).

Enqueue: one-by-one ``await Queue.enqueue`` (async, the primary figure) and ``SyncQueue.enqueue``
(reported as ``one_by_one_sync_jobs_per_s``); bulk = ``Queue.enqueue_many`` with peerbench's
chunk of 1,000 requests per call (one pipeline of two 500-job scripts).
"""

from __future__ import annotations

import os
import sys

PEERBENCH = os.environ.get("PEERBENCH_ROOT", "/work/shared/peerbench")
HERE = os.path.dirname(os.path.abspath(__file__))
if PEERBENCH not in sys.path:
    sys.path.insert(0, PEERBENCH)  # `peers._common` from the shared checkout
if os.environ.get("RJOBS_SRC"):  # peerbench.sh's frozen copy of rjobs/ (else the installed rjobs)
    sys.path.insert(0, os.environ["RJOBS_SRC"])

import asyncio  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402
from typing import Any  # noqa: E402

from peers import _common as C  # noqa: E402

import rjobs  # noqa: E402
from rjobs import Worker  # noqa: E402

QUEUE = "peerbench"
RESULTS = os.environ.get("RJOBS_PEERBENCH_RESULTS", os.path.join(os.path.dirname(HERE), "results"))
# Worker logs go to our results dir, not into the (read-only) shared checkout.
C.LOGDIR = os.path.join(RESULTS, "logs")


def _config() -> rjobs.QueueConfig:
    return rjobs.QueueConfig(queue_events=os.environ.get("PEERBENCH_RJOBS_EVENTS", "1") == "1")


async def noop(ctx: Any, params: dict[str, Any]) -> None:
    await C.mark_done_async(params["i"], params.get("record", False))


def make_worker() -> Worker:
    """The target of ``rjobs worker rjobs_peer:make_worker`` (the CLI applies --url and -c)."""
    logging.getLogger().setLevel(logging.WARNING)
    queue = rjobs.Queue(QUEUE, C.url_from_env(), config=_config())
    return Worker(queue, functions={"noop": noop}, concurrency=C.concurrency_from_env(), lease=30.0)


def worker_cmd(args: Any) -> list[str]:
    # `env` execs rjobs in place (same pid, same process group): PYTHONPATH must reach this file,
    # and WorkerProc would otherwise set it to the peerbench root only.
    path = ":".join(p for p in (os.environ.get("RJOBS_SRC"), HERE, C.ROOT) if p)
    return ["env", f"PYTHONPATH={path}", "rjobs", "worker", "rjobs_peer:make_worker",
            "--url", args.redis_url, "-c", str(args.concurrency)]  # fmt: skip


async def amain(args: Any) -> None:
    version = f"{rjobs.__version__} (redis-py {pkg_version('redis')})"
    cfg = f"c{args.concurrency}" + ("" if args.variant == "default" else f"-{args.variant}")
    os.environ["PEERBENCH_RJOBS_EVENTS"] = "0" if args.variant == "noevents" else "1"
    queue = rjobs.Queue(QUEUE, args.redis_url, config=_config())

    async def bulk(n: int) -> None:
        for s in range(0, n, C.BULK_CHUNK):
            await queue.enqueue_many(
                [rjobs.JobRequest(type="noop", params={"i": i}) for i in range(s, min(n, s + C.BULK_CHUNK))]
            )

    async def waiting() -> int:
        return (await queue.counts())["queued"]

    try:
        if args.mode == "enqueue":
            C.flush(args.redis_url)
            await queue.declare()  # connect + store the machine (peers connect beforehand too)
            t = time.perf_counter()
            for i in range(args.n):
                await queue.enqueue("noop", {"i": i})
            t1 = time.perf_counter() - t
            assert await waiting() == args.n

            C.flush(args.redis_url)
            sq = rjobs.SyncQueue(QUEUE, args.redis_url, config=_config())
            sq.declare()
            t = time.perf_counter()
            for i in range(args.n):
                sq.enqueue("noop", {"i": i})
            t_sync = time.perf_counter() - t
            sq.close()
            assert await waiting() == args.n

            C.flush(args.redis_url)
            await queue.declare()
            t = time.perf_counter()
            await bulk(args.n)
            t2 = time.perf_counter() - t
            assert await waiting() == args.n
            C.report(peer="rjobs", version=version, mode="enqueue", n=args.n, config=cfg,
                     one_by_one_jobs_per_s=round(args.n / t1, 1),
                     one_by_one_sync_jobs_per_s=round(args.n / t_sync, 1),
                     bulk_jobs_per_s=round(args.n / t2, 1),
                     bulk_api="Queue.enqueue_many (1,000 per call: one pipeline of 2 scripts)")  # fmt: skip
        elif args.mode == "process":
            loop = asyncio.get_running_loop()

            def preload(n: int) -> None:  # run_process just flushed: declare again, then bulk
                asyncio.run_coroutine_threadsafe(queue.declare(), loop).result()
                asyncio.run_coroutine_threadsafe(bulk(n), loop).result()

            await asyncio.to_thread(C.run_process, args, "rjobs", version, cfg, preload, worker_cmd(args))
        elif args.mode == "latency":
            loop = asyncio.get_running_loop()

            async def warm_async() -> None:
                await queue.declare()  # start_idle_worker just flushed
                await queue.enqueue("noop", {"i": -1})

            warm = lambda: asyncio.run_coroutine_threadsafe(warm_async(), loop).result()  # noqa: E731
            w = await asyncio.to_thread(C.start_idle_worker, args, "rjobs", cfg, worker_cmd(args), warm)
            enq = {}
            for i in range(args.n):
                t0 = time.time()
                await queue.enqueue("noop", {"i": i, "record": True})
                enq[i] = t0
                await asyncio.sleep(0.005)
            await asyncio.to_thread(C.finish_latency, args, "rjobs", version, cfg, w, enq)
    finally:
        await queue.close()


def main() -> None:
    args = C.parse_args("rjobs", variants=("default", "noevents"))
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
