"""Memory per waiting and per finished job of a peer, measured as bench_memory.py measures rjobs:
``used_memory`` of a fresh server before, after N reference jobs are enqueued (waiting), and after
a worker of the library ran them all with its default retention of finished jobs (finished).
The reference job: type/function ``noop``, params ``{"i": n}``, no user, no dedupe key.

    <peer venv>/bin/python benchmarks/peers/memory.py bullmq|saq|rq REDIS_URL N

Runs in the peers' venv (benchmarks/README.md, "Peers"); prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import redis


def noop(i: int = 0, **_: Any) -> None:
    """The reference job's function."""
    return None


async def anoop(ctx: Any, i: int = 0, **_: Any) -> None:
    """The reference job's function, for the async libraries."""
    return None


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def wait_until(check: Any, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the peer's worker did not finish the jobs")
        time.sleep(0.05)


def run_rq(url: str, n: int, r: redis.Redis) -> tuple[int, int]:
    from rq import Queue, SimpleWorker  # the peer's venv only

    q = Queue("mem", connection=r)
    for start in range(0, n, 1000):
        q.enqueue_many([Queue.prepare_data(noop, kwargs={"i": i}) for i in range(start, min(n, start + 1000))])
    waiting = used(r)
    SimpleWorker([q], connection=r).work(burst=True)
    return waiting, used(r)


def run_saq(url: str, n: int, r: redis.Redis) -> tuple[int, int]:
    from saq import Queue, Worker

    async def main() -> tuple[int, int]:
        q = Queue.from_url(url, name="mem")
        for i in range(n):  # SAQ has no bulk enqueue
            await q.enqueue("noop", i=i)
        waiting = used(r)
        worker = Worker(q, functions=[("noop", anoop)], concurrency=100, burst=True, dequeue_timeout=1.0)
        await worker.start()  # burst: returns once the queue is empty
        await asyncio.sleep(0.5)
        finished = used(r)
        await q.disconnect()
        return waiting, finished

    return asyncio.run(main())


def run_bullmq(url: str, n: int, r: redis.Redis) -> tuple[int, int]:
    from bullmq import Queue, Worker

    async def main() -> tuple[int, int]:
        q = Queue("mem", {"connection": url})
        for start in range(0, n, 1000):
            await q.addBulk([{"name": "noop", "data": {"i": i}} for i in range(start, min(n, start + 1000))])
        waiting = used(r)
        done = asyncio.Event()
        count = 0

        async def process(job: Any, token: Any) -> None:
            nonlocal count
            count += 1
            if count >= n:
                done.set()

        worker = Worker("mem", process, {"connection": url, "concurrency": 100})
        await asyncio.wait_for(done.wait(), 300)
        await asyncio.sleep(1.0)  # the last completions land
        finished = used(r)
        await worker.close()
        await q.close()
        return waiting, finished

    return asyncio.run(main())


def main() -> None:
    peer, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    r = redis.Redis.from_url(url)
    r.flushall()
    base = used(r)
    waiting, finished = {"rq": run_rq, "saq": run_saq, "bullmq": run_bullmq}[peer](url, n, r)
    print(json.dumps({"peer": peer, "n": n, "bytes_per_waiting_job": round((waiting - base) / n, 1),
                      "bytes_per_finished_job": round((finished - base) / n, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
