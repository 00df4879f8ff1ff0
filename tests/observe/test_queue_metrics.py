"""The queues' metrics for a dashboard (``render_queue_metrics``) on real servers: jobs per state,
ready jobs per type, the counters of jobs created, claimed and finished, live workers, the oldest
waiting job and the pause flag, as prometheus_client's parser reads them; a scrape writes nothing."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from rjobs.client.queue import Queue
from rjobs.models import JobRequest
from rjobs.observe.prometheus import render_queue_metrics
from rjobs.worker.context import JobContext
from rjobs.worker.functions import Fail
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint
from tests.invariants import assert_indexes_consistent
from tests.observe.scrape import samples, value

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def a(ctx: JobContext, params: Any) -> str:
    return "ok"


async def b(ctx: JobContext, params: Any) -> None:
    raise Fail("no", code="declined")


async def until_counts(q: Queue, **expected: int) -> None:
    for _ in range(1000):  # 20 s
        counts = await q.counts()
        if {s: counts[s] for s in expected} == expected:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"never {expected}: {counts}")


async def test_a_scrape_reports_what_redis_holds_and_writes_nothing(url: str, redis_sync: redis.Redis) -> None:
    async with Queue("shop", url=url) as shop, Queue("idle", url=url) as idle:
        await idle.declare()
        await shop.enqueue_many([JobRequest(type="a")] * 3 + [JobRequest(type="b")])
        worker = Worker(shop, [a, b], worker_id="w-shop", lease=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await until_counts(shop, completed=3, failed=1)
            await shop.pause("for the test")
            await shop.enqueue_many([JobRequest(type="a")] * 2)  # paused: they wait
            await anyio.sleep(0.05)
            body, content_type = await render_queue_metrics([shop, idle, shop])
            worker.stop()
        found = samples(body.decode())
        before = keyspace_fingerprint(redis_sync)
        after_stop = samples((await render_queue_metrics([shop]))[0].decode())
        assert keyspace_fingerprint(redis_sync) == before, "a scrape only reads"
        counts = assert_indexes_consistent(redis_sync, "shop", shop.machine)

    assert content_type.startswith("text/plain")
    assert counts["completed"] == 3 and counts["failed"] == 1 and counts["queued"] == 2

    def shop_value(name: str, **labels: str) -> float | None:
        return value(found, name, queue="shop", **labels)

    assert shop_value("rjobs_queue_jobs", state="completed") == 3
    assert shop_value("rjobs_queue_jobs", state="failed") == 1
    assert shop_value("rjobs_queue_jobs", state="queued") == 2
    assert shop_value("rjobs_queue_jobs", state="processing") == 0
    assert shop_value("rjobs_queue_ready", type="a") == 2
    assert shop_value("rjobs_queue_enqueued_total", type="a") == 5
    assert shop_value("rjobs_queue_enqueued_total", type="b") == 1
    assert shop_value("rjobs_queue_claimed_total", type="a") == 3
    assert shop_value("rjobs_queue_claimed_total", type="b") == 1
    assert shop_value("rjobs_queue_finished_total", type="a", state="completed") == 3
    assert shop_value("rjobs_queue_finished_total", type="b", state="failed") == 1
    assert shop_value("rjobs_queue_finished_total", type="b", state="completed") is None
    assert shop_value("rjobs_queue_workers") == 1
    assert shop_value("rjobs_queue_paused") == 1
    oldest = shop_value("rjobs_queue_oldest_waiting_seconds")
    assert oldest is not None and 0.04 <= oldest < 20
    # a queue with nothing yet is reported, all zeros
    assert value(found, "rjobs_queue_jobs", queue="idle", state="queued") == 0
    assert value(found, "rjobs_queue_workers", queue="idle") == 0
    assert value(found, "rjobs_queue_paused", queue="idle") == 0
    assert value(found, "rjobs_queue_oldest_waiting_seconds", queue="idle") == 0
    assert not [k for k in found if k[0] == "rjobs_queue_enqueued_total" and ("queue", "idle") in k[1]]
    # the queue named twice is reported once (a duplicate would make the exposition invalid)
    assert len([k for k in found if k[0] == "rjobs_queue_paused"]) == 2
    # once the worker stopped, it is no longer counted
    assert value(after_stop, "rjobs_queue_workers", queue="shop") == 0
    assert value(after_stop, "rjobs_queue_enqueued_total", queue="shop", type="a") == 5


async def test_no_queue_is_an_exposition_without_samples() -> None:
    body, content_type = await render_queue_metrics([])
    assert samples(body.decode()) == {} and "text/plain" in content_type
