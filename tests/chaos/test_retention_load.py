"""Retention keeps pace with a worker finishing jobs as fast as it can: under sustained load the
number of finished jobs past their retention that are still in Redis stays bounded, and memory
stops growing (before, purging fell behind at ~800 jobs/s and memory grew linearly)."""

from __future__ import annotations

import time

import anyio
import pytest
import redis

from rjobs import JobContext, JobRequest, Queue, QueueConfig, Retention, Worker, machines
from tests.invariants import assert_indexes_consistent

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(120)]
KEEP_S = 1.0


async def noop(ctx: JobContext, params: object) -> None:
    return None


async def test_expired_jobs_stay_bounded_under_sustained_load(url: str, redis_sync: redis.Redis) -> None:
    config = QueueConfig(retention=Retention(success=KEEP_S, partial=KEEP_S, failure=KEEP_S, cancelled=KEEP_S))
    async with Queue("load", url, config=config) as q:
        await q.declare()
        index = q.backend.keys.state(machines.JOB.success)
        worker = Worker(q, [noop], concurrency=50, lease=4.0)  # the reaper passes every 2 s
        samples: list[tuple[float, int, int]] = []
        done = 0

        async def produce() -> None:
            while True:
                if redis_sync.zcard(q.backend.keys.lane("noop")) < 2000:
                    await q.enqueue_many([JobRequest(type="noop", params={"i": i}) for i in range(500)])
                await anyio.sleep(0.02)

        async def sample(seconds: float) -> None:
            nonlocal done
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await anyio.sleep(0.5)
                now_s, now_us = redis_sync.time()
                now = now_s * 1000 + now_us // 1000
                # finished more than 1 s past their retention and still here
                overdue = redis_sync.zcount(index, "-inf", now - int(KEEP_S * 1000) - 1000)
                samples.append((time.monotonic(), overdue, int(redis_sync.info("memory")["used_memory"])))
            done = worker.stats.finished

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            tg.start_soon(produce)
            await sample(10.0)
            tg.cancel_scope.cancel()
    rate = done / 10.0
    overdue = [o for _, o, _ in samples]
    # The worker sustained a real rate, and at no moment did more than a fraction of a second of
    # its output sit past retention (before the fix this grew by the whole rate every second).
    assert rate > 300, f"the worker only finished {rate:.0f} jobs/s"
    assert max(overdue) <= max(500, rate * 0.5), f"overdue finished jobs grew: {overdue} at {rate:.0f} jobs/s"
    second_half = [m for t, _, m in samples[len(samples) // 2 :]]
    assert max(second_half) - min(second_half) < 20 * 1024 * 1024, "memory kept growing"
    assert_indexes_consistent(redis_sync, "load", machines.JOB)
