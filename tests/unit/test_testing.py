"""rjobs.testing: real queues on fakeredis running the same Lua scripts, drained by the real Worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import fakeredis
import pytest

from rjobs import Actor, Cron, InvalidTransition, JobNotFound, JobRequest, SyncQueue
from rjobs.machines import TASK
from rjobs.store.scripts import load_script, script_names
from rjobs.testing import (
    InMemoryQueue,
    drain,
    memory_queue,
    memory_server,
    memory_sync_queue,
    rjobs_queue,  # noqa: F401 - the fixtures, imported the way docs/testing.md tells users to
    rjobs_server,  # noqa: F401
    rjobs_sync_queue,  # noqa: F401
    run_until_empty,
)
from rjobs.worker.functions import Fail, Partial

pytestmark = pytest.mark.anyio


async def resize(ctx: Any, params: dict[str, int]) -> dict[str, int]:
    await ctx.progress(50, step="resizing")
    await ctx.add_asset("image", f"mem://out/{params['w']}.png")
    await ctx.comment("resized")
    return {"w": params["w"]}


async def flaky(ctx: Any, params: Any) -> str:
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return "third time lucky"


async def always_broken(ctx: Any, params: Any) -> None:
    raise RuntimeError("never works")


async def declined(ctx: Any, params: Any) -> None:
    raise Fail("card declined", code="declined")


async def half(ctx: Any, params: Any) -> Partial:
    return Partial({"rows": 9}, "1 row rejected")


def sync_double(ctx: Any, params: dict[str, int]) -> int:
    return params["n"] * 2


FUNCTIONS = {
    "resize": resize,
    "flaky": flaky,
    "always_broken": always_broken,
    "declined": declined,
    "half": half,
    "double": sync_double,
}


async def test_memory_queue_is_a_real_queue_with_a_sync_twin() -> None:
    q = memory_queue("images")
    out = await q.enqueue("resize", {"w": 10}, user_id="u1")
    sync = q.sync()
    assert isinstance(sync, SyncQueue) and sync.get(out.id).status == "queued"
    sync.cancel(out.id, "changed my mind")
    job = await q.get(out.id)
    assert job.status == "cancelled" and job.error is not None and job.error.message == "changed my mind"
    with pytest.raises(InvalidTransition):
        await q.cancel(out.id)
    with pytest.raises(JobNotFound):
        await q.get("nope")
    other = q.sibling("emails")
    assert await other.counts() == dict.fromkeys(other.machine.states, 0)  # same server, separate queue
    assert (await memory_queue("images").counts())["cancelled"] == 0  # a fresh server each time
    await q.close()


async def test_drain_runs_every_outcome_with_the_real_worker() -> None:
    q = memory_queue()
    ids = {
        name: (await q.enqueue(name, params, max_attempts=3)).id
        for name, params in [
            ("resize", {"w": 64}),
            ("flaky", None),
            ("always_broken", None),
            ("declined", None),
            ("half", None),
            ("double", {"n": 21}),
        ]
    }
    counts = await drain(q, FUNCTIONS)
    assert counts["completed"] == 3 and counts["failed"] == 2 and counts["partial"] == 1
    assert counts["queued"] == counts["scheduled"] == counts["processing"] == 0
    jobs = {name: await q.get(i) for name, i in ids.items()}
    assert jobs["resize"].result == {"w": 64} and jobs["resize"].progress.percent == 100
    assert [a.url for a in await q.assets(ids["resize"])] == ["mem://out/64.png"]
    assert "comment" in [e.event for e in await q.events(ids["resize"])]
    assert (jobs["flaky"].status, jobs["flaky"].attempt, jobs["flaky"].result) == ("completed", 3, "third time lucky")
    assert (jobs["always_broken"].status, jobs["always_broken"].attempt) == ("failed", 3)
    assert jobs["declined"].attempt == 1 and jobs["declined"].error is not None
    assert jobs["declined"].error.code == "declined"
    assert jobs["half"].status == "partial" and jobs["half"].result == {"rows": 9}
    assert jobs["double"].result == 42


async def test_drain_skips_delays_unless_told_not_to() -> None:
    q = memory_queue()
    later = (await q.enqueue("double", {"n": 1}, delay=3600)).id
    await drain(q, FUNCTIONS, skip_delays=False)
    assert (await q.get(later)).status == "scheduled"
    await drain(q, FUNCTIONS)
    assert (await q.get(later)).status == "completed"


async def test_dependencies_and_wait_on_the_in_memory_server() -> None:
    q = memory_queue()
    first = (await q.enqueue("double", {"n": 1})).id
    second = (await q.enqueue("double", {"n": 2}, depends_on=[first])).id
    assert (await q.get(second)).status == "waiting"
    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, q, FUNCTIONS)
        outcome = await q.wait(second, timeout=10)  # XREAD BLOCK on fakeredis, woken by the worker
    assert outcome.success and outcome.output == 4


async def test_many_waits_share_one_blocking_reader_on_fakeredis() -> None:
    """fakeredis' async XREAD BLOCK blocks without holding up the event loop, so the in-memory
    queue uses the same reader as a real server's: woken by the stream, not by the 1 s re-check."""
    q = memory_queue()
    ids = [o.id for o in await q.enqueue_many([JobRequest(type="t") for _ in range(100)])]
    results: dict[str, Any] = {}

    async def wait(job_id: str) -> None:
        results[job_id] = await q.wait(job_id, timeout=10)

    async with anyio.create_task_group() as tg:
        for job_id in ids:
            tg.start_soon(wait, job_id)
        await anyio.sleep(0.3)
        assert q._waits.reading and len(results) == 0
        cancelled = time.monotonic()
        await q.bulk_cancel(ids)
    assert time.monotonic() - cancelled < 0.6
    assert len(results) == 100 and {r.status for r in results.values()} == {"cancelled"}
    await q.close()
    assert not q._waits.reading


def test_sync_wait_on_fakeredis() -> None:
    q = memory_sync_queue()
    job_id = q.enqueue("t").id
    timer = threading.Timer(0.2, lambda: q.cancel(job_id))
    timer.start()
    assert q.wait(job_id, timeout=5).status == "cancelled"
    timer.join()


async def test_custom_machine_runs_on_fakeredis() -> None:
    q = memory_queue("tasks", machine=TASK)
    out = await q.enqueue("double", {"n": 5})
    await drain(q, FUNCTIONS)
    job = await q.get(out.id)
    assert job.status == "completed" and job.result == 10
    history = [(e.from_state, e.to_state) for e in await q.events(out.id) if e.to_state]
    assert history == [
        (None, "queued"),
        ("queued", "assigned"),
        ("assigned", "in_progress"),
        ("in_progress", "completed"),
    ]


async def test_every_shipped_script_runs_on_fakeredis() -> None:
    q = memory_queue()
    a = (await q.enqueue("resize", {"w": 1}, dedupe_key="k")).id
    b = (await q.enqueue("double", {"n": 1}, delay=60)).id
    await q.set_priority(b, "urgent")
    await q.comment(a, "hello", actor="tester")
    await q.add_asset(a, "doc", "mem://a", operator=True)
    await q.transition(b, "queued")
    await drain(q, FUNCTIONS)
    await q.invalidate("k")
    await q.bulk_cancel([a, b])
    cancelled = (await q.enqueue("always_broken")).id
    await q.cancel(cancelled)
    await q.retry(cancelled)
    await q.backend.run(q.backend.scripts.heartbeat("w", 1000, []))
    await q.backend.run(q.backend.scripts.reap(10, 3, 10, 60_000))
    assert await q.pause("test") and await q.resume()
    await q.set_limit(group="g", concurrency=1)
    await q.backoff(1, group="g")
    assert await q.name_actors(Actor("human", "alice", "Alice")) == 1
    assert await q.set_schedule(Cron("tick", "double", every=60)) == "created"
    await q.backend.run(q.backend.scripts.cron_tick("w1", "tick", 1, None))  # a stale tick: refused, but run
    assert await q.remove_schedule("tick")
    assert await q.delete((await q.enqueue("double", {"n": 2})).id) == 1
    await q.enqueue("double", {"n": 3}, delay=60)
    assert await q.drain() == 2  # that one and the retried job
    assert await q.obliterate() >= 1 and await q.counts() == dict.fromkeys(q.machine.states, 0)
    # fakeredis cannot read a shebang: it runs the legacy copies
    loaded = await q.client.script_exists(*[load_script(n).legacy_sha for n in script_names()])
    assert dict(zip(script_names(), loaded)) == dict.fromkeys(script_names(), True)


def test_run_until_empty_from_sync_code() -> None:
    sync = memory_sync_queue("reports")
    ids = [sync.enqueue("double", {"n": n}).id for n in range(5)]
    counts = run_until_empty(sync, FUNCTIONS, concurrency=2)
    assert counts["completed"] == 5
    assert [sync.get(i).result for i in ids] == [0, 2, 4, 6, 8]
    shared = memory_server()
    async_side = InMemoryQueue("q", server=shared)
    sync_side = async_side.sync()
    job_id = sync_side.enqueue("half").id
    run_until_empty(async_side, FUNCTIONS)
    assert sync_side.get(job_id).status == "partial"


async def test_run_until_empty_refuses_inside_async_code() -> None:
    with pytest.raises(RuntimeError, match=r"await rjobs\.testing\.drain"):
        run_until_empty(memory_queue(), FUNCTIONS)


def test_run_until_empty_needs_an_in_memory_queue() -> None:
    real = SyncQueue("q", "redis://127.0.0.1:1/0")  # never connected: rejected before any I/O
    with pytest.raises(TypeError, match="in-memory"):
        run_until_empty(real, FUNCTIONS)


async def test_fixtures(rjobs_queue: InMemoryQueue, rjobs_sync_queue: SyncQueue) -> None:  # noqa: F811
    job_id = rjobs_sync_queue.enqueue("resize", {"w": 3}).id
    await drain(rjobs_queue, FUNCTIONS)
    assert (await rjobs_queue.get(job_id)).status == "completed"
    assert isinstance(rjobs_queue.server, fakeredis.FakeServer)
