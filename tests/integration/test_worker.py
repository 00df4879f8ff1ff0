"""The worker against real servers: outcomes, retries, context writes, fencing, heartbeats,
cancellation, batching, burst mode and graceful shutdown."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec
import pytest
import redis

from rjobs.cli.worker import run_from_cli
from rjobs.client.queue import Queue
from rjobs.client.sync_queue import SyncQueue
from rjobs.errors import LeaseLost
from rjobs.machines import JOB, TASK
from rjobs.models import JobRequest
from rjobs.store.scripts import MoveRequest, outcome_error
from rjobs.worker.context import JobContext
from rjobs.worker.functions import Fail, JobFunction, Partial, Retry, job
from rjobs.worker.inflight import Held
from rjobs.worker.leases import LeaseKeeper
from rjobs.worker.loop import Worker, make_worker_id
from rjobs.worker.retry import RetryPolicy
from tests.helpers import job_history, keyspace_fingerprint, lease_number

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

FAST = RetryPolicy(base=0.05, factor=2.0, max_delay=0.2, jitter="none")


@asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[None]:
    """Run workers in the background; stop them (and wait for them) on the way out."""
    async with anyio.create_task_group() as tg:
        for w in workers:
            tg.start_soon(w.run)
        try:
            yield
        finally:
            for w in workers:
                w.stop(force=True)


@asynccontextmanager
async def reaping(queue: Queue) -> AsyncIterator[None]:
    """Reap expired leases every 50 ms (far more often than workers do) while the block runs."""

    async def loop() -> None:
        while True:
            await queue.backend.run(queue.backend.scripts.reap(100, 3, 0, 5000))
            await anyio.sleep(0.05)

    await queue.declare()
    async with anyio.create_task_group() as tg:
        tg.start_soon(loop)
        yield
        tg.cancel_scope.cancel()


def job_events(r: redis.Redis, q: Queue, job_id: str) -> list[dict[str, str]]:
    return job_history(r, q.backend.keys.prefix, job_id)


def to_states(events: list[dict[str, str]]) -> list[str]:
    return [e["to"] for e in events if "to" in e]


# -- outcomes -----------------------------------------------------------------------------------------
async def test_async_job_completes_with_history(queue: Queue, redis_sync: redis.Redis) -> None:
    async def add(ctx: JobContext, params: dict[str, int]) -> dict[str, Any]:
        return {"sum": params["a"] + params["b"], "attempt": ctx.attempt, "token": ctx.token}

    w = Worker(queue, [add], lease=5)
    async with running(w):
        out = await queue.wait((await queue.enqueue("add", {"a": 2, "b": 3})).id, timeout=10)
    token = out.output["token"]
    assert out.success and out.output == {"sum": 5, "attempt": 1, "token": token} and lease_number(token) == 1
    h = redis_sync.hgetall(queue.backend.keys.job(out.job_id))
    assert h[b"status"] == JOB.success.encode() and h[b"worker"] == w.worker_id.encode()
    assert msgspec.json.decode(h[b"result"]) == out.output and h[b"progress"] == b"100"
    events = job_events(redis_sync, queue, out.job_id)
    assert to_states(events) == [JOB.ready, *JOB.leased, JOB.success]
    # The claim event carries the lease token; the success event names the worker that held it.
    # (finish.lua does not put the token on its event: see the report on issue 3.)
    assert events[1]["token"] == token and events[-1]["actor"] == w.worker_id


async def test_sync_function_runs_in_a_thread_and_reports_progress(queue: Queue) -> None:
    threads: list[str] = []

    def crunch(ctx: JobContext, params: int) -> int:
        threads.append(threading.current_thread().name)
        ctx.progress_sync(50, "halfway")
        ctx.comment_sync("from a thread")
        return params * 2

    async with running(Worker(queue, {"crunch": crunch}, lease=5)):
        out = await queue.wait((await queue.enqueue("crunch", 21)).id, timeout=10)
    assert out.output == 42
    assert threads and threads[0] != threading.main_thread().name
    events = await queue.events(out.job_id)
    assert [e.event for e in events if e.event in ("progress", "comment")] == ["progress", "comment"]


class Resize(msgspec.Struct):
    width: int
    height: int = 10


async def test_typed_params_are_validated_before_the_call(queue: Queue) -> None:
    calls: list[Resize] = []

    async def resize(ctx: JobContext, params: Resize) -> int:
        calls.append(params)
        return params.width * params.height

    @job(name="explicit", params=list[int])
    def total(ctx: JobContext, params: Any) -> int:
        return sum(params)

    async with running(Worker(queue, [resize, total], lease=5)):
        bad = await queue.wait((await queue.enqueue("resize", {"width": "wide"})).id, timeout=10)
        good = await queue.wait((await queue.enqueue("resize", {"width": 3})).id, timeout=10)
        bad2 = await queue.wait((await queue.enqueue("explicit", {"not": "a list"})).id, timeout=10)
        good2 = await queue.wait((await queue.enqueue("explicit", [1, 2])).id, timeout=10)
    assert bad.status == JOB.failure and bad.error is not None and bad.error.code == "invalid_params"
    assert "Resize" in bad.error.message and "width" in bad.error.message
    assert good.output == 30 and calls == [Resize(width=3)]
    assert bad2.error is not None and bad2.error.code == "invalid_params" and good2.output == 3
    assert (await queue.get(bad.job_id)).attempt == 1  # not retried


async def test_a_type_the_worker_does_not_run_stays_ready(queue: Queue) -> None:
    async def known(ctx: JobContext, params: None) -> str:
        return "ran"

    async with running(Worker(queue, [known], lease=5)):
        nobody = (await queue.enqueue("nobody", None, max_attempts=5, priority=10)).id
        out = await queue.wait((await queue.enqueue("known", None)).id, timeout=10)
    assert out.output == "ran", "the other type is not held up"
    job = await queue.get(nobody)
    assert job.status == JOB.ready and job.attempt == 0 and job.error is None


async def test_exceptions_are_retried_with_backoff_then_fail_with_traceback(
    queue: Queue, redis_sync: redis.Redis
) -> None:
    async def flaky(ctx: JobContext, params: None) -> None:
        raise KeyError(f"missing on attempt {ctx.attempt}")

    async with running(Worker(queue, [flaky], lease=5, retry=FAST)):
        out = await queue.wait((await queue.enqueue("flaky", None, max_attempts=3)).id, timeout=10)
    assert out.status == JOB.failure and out.error is not None
    assert out.error.code == "KeyError" and "attempt 3" in out.error.message and "3 of 3" in out.error.message
    assert out.error.traceback is not None and "in flaky" in out.error.traceback
    events = job_events(redis_sync, queue, out.job_id)
    assert to_states(events).count(JOB.delayed) == 2
    # Backoff: each retry waited at least its ceiling (no jitter) before it became ready again.
    moves = [(int(e["t"]), e["to"]) for e in job_events(redis_sync, queue, out.job_id) if "to" in e]
    scheduled = [t for t, state in moves if state == JOB.delayed]
    due = [t for t, state in moves if state == JOB.ready][1:]
    assert [b - a >= wait - 20 for a, b, wait in zip(scheduled, due, (50, 100))] == [True, True]


async def test_retry_and_retry_after_are_honoured(queue: Queue, redis_sync: redis.Redis) -> None:
    class Throttled(Exception):
        retry_after = 0.25

    async def again(ctx: JobContext, params: str) -> int:
        if ctx.attempt == 1:
            raise Retry(after=0.2, reason="not yet") if params == "retry" else Throttled("429")
        return ctx.attempt

    async with running(Worker(queue, [again], lease=5, retry=RetryPolicy(base=30))):
        a = await queue.enqueue("again", "retry")
        b = await queue.enqueue("again", "throttled")
        outs = [await queue.wait(a.id, timeout=10), await queue.wait(b.id, timeout=10)]
    assert [o.output for o in outs] == [2, 2]
    for o, wait_ms in zip(outs, (200, 250)):
        t = {e["to"]: int(e["t"]) for e in job_events(redis_sync, queue, o.job_id) if "to" in e}
        due = (await queue.get(o.job_id)).scheduled_ms
        assert due is not None and t[JOB.ready] >= due  # promoted no earlier than asked
        # run_at was set when the attempt failed, a moment before the move was recorded.
        assert due - t[JOB.delayed] >= wait_ms - 30


async def test_fail_is_not_retried(queue: Queue) -> None:
    class Declined(Fail):
        pass

    async def pay(ctx: JobContext, params: str) -> None:
        raise Declined("card declined") if params == "sub" else Fail("bad input", code="bad_input")

    async with running(Worker(queue, [pay], lease=5)):
        a = await queue.wait((await queue.enqueue("pay", "sub", max_attempts=5)).id, timeout=10)
        b = await queue.wait((await queue.enqueue("pay", "x", max_attempts=5)).id, timeout=10)
    assert a.error is not None and a.error.code == "Declined" and a.error.message == "card declined"
    assert b.error is not None and b.error.code == "bad_input"
    assert (await queue.get(a.job_id)).attempt == 1 and (await queue.get(b.job_id)).attempt == 1


async def test_partial_result(url: str, queue: Queue) -> None:
    async def some(ctx: JobContext, params: None) -> Partial:
        return Partial({"done": 3}, "2 pages failed")

    task_q = Queue("tasks", url=url, machine=TASK)
    try:
        async with running(Worker(queue, [some], lease=5), Worker(task_q, [some], lease=5)):
            out = await queue.wait((await queue.enqueue("some", None)).id, timeout=10)
            task = await task_q.wait((await task_q.enqueue("some", None)).id, timeout=10)
    finally:
        await task_q.close()
    assert out.status == JOB.partial and out.output == {"done": 3}
    assert out.error is not None and out.error.message == "2 pages failed"
    # TASK has no partial state: the job fails clearly, keeping what was done.
    assert task.status == TASK.failure and task.output == {"done": 3}
    assert task.error is not None and task.error.code == "partial_unsupported"


async def test_timeout_is_a_retryable_failure(queue: Queue) -> None:
    cancelled: list[int] = []

    @job(timeout=0.2)
    async def slow(ctx: JobContext, params: None) -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.append(ctx.attempt)
            raise

    async with running(Worker(queue, [slow], lease=5, retry=FAST)):
        out = await queue.wait((await queue.enqueue("slow", None, max_attempts=2)).id, timeout=10)
    assert out.error is not None and out.error.code == "timeout" and "0.2 s" in out.error.message
    assert cancelled == [1, 2]


async def test_task_machine_cannot_retry_automatically_but_can_review(url: str) -> None:
    q = Queue("tasks", url=url, machine=TASK)
    reviewed = anyio.Event()

    async def careful(ctx: JobContext, params: str) -> str:
        if params == "boom":
            raise RuntimeError("boom")
        await ctx.review("please check", result={"draft": 1})
        reviewed.set()
        return "ignored"

    try:
        async with running(Worker(q, [careful], lease=5, retry=FAST)):
            failed = await q.wait((await q.enqueue("careful", "boom", max_attempts=3)).id, timeout=10)
            review = await q.enqueue("careful", "ok")
            with anyio.fail_after(10):
                await reviewed.wait()
            await anyio.sleep(0.2)  # the worker must not write anything after the review move
            job_ = await q.get(review.id)
    finally:
        await q.close()
    assert failed.error is not None and "not retried" in failed.error.message
    assert job_.status == TASK.review and job_.result == {"draft": 1}


# -- context writes and fencing ------------------------------------------------------------------
async def test_context_writes_are_fenced_and_recorded(queue: Queue, redis_sync: redis.Redis) -> None:
    async def produce(ctx: JobContext, params: None) -> str:
        p = await ctx.progress(40, step="render")
        assert p is not None and p.percent == 40
        await ctx.add_asset("image", "s3://bucket/out.png", file_size=12, meta={"w": 2})
        await ctx.comment("rendered")
        return "ok"

    async with running(Worker(queue, [produce], lease=5)):
        j = await queue.enqueue("produce", None, user_id="u1")
        out = await queue.wait(j.id, timeout=10)
    assert out.success
    assets = await queue.assets(j.id, user_id="u1")
    assert [(a.asset_type, a.url, a.user_id) for a in assets] == [("image", "s3://bucket/out.png", "u1")]
    kinds = [e["event"] for e in job_events(redis_sync, queue, j.id)]
    assert kinds.index("progress") < kinds.index("asset") < kinds.index("comment") < kinds.index(JOB.success)


async def test_stale_token_writes_nothing(queue: Queue, redis_sync: redis.Redis) -> None:
    await queue.declare()
    j = await queue.enqueue("x", None, max_attempts=3)
    first = await queue.backend.run(queue.backend.scripts.claim("w1", 1, 100))
    await anyio.sleep(0.15)  # let the 100 ms lease expire, then reap and re-claim it
    assert (await queue.backend.run(queue.backend.scripts.reap(10, 3, 0, 5000)))[0] == 1
    second = await queue.backend.run(queue.backend.scripts.claim("w2", 1, 5000))
    stale, current = first.jobs[0], second.jobs[0]
    assert stale.id == current.id == j.id and stale.token != current.token

    pattern = f"rjobs:{{{queue.name}}}:job:*"
    before = keyspace_fingerprint(redis_sync, pattern)
    request = MoveRequest(j.id, JOB.success, token=stale.token, result=b"1")
    outcomes = await queue.backend.run(queue.backend.scripts.finish("w1", [request]))
    assert isinstance(outcome_error(outcomes[0]), LeaseLost)
    writes = [
        lambda c: c.progress(50),
        lambda c: c.comment("late"),
        lambda c: c.add_asset("file", "file:///tmp/x"),
    ]
    for write in writes:
        ctx = JobContext(Held(0, stale, safe_until=0.0), queue, "w1")
        with pytest.raises(LeaseLost):
            await write(ctx)
        assert ctx.cancelled  # a LeaseLost stops the stale attempt
    assert keyspace_fingerprint(redis_sync, pattern) == before


# -- heartbeats, cancellation, lease loss --------------------------------------------------------------
async def test_cancel_reaches_the_running_job_within_a_heartbeat(queue: Queue, redis_sync: redis.Redis) -> None:
    started, stopped = anyio.Event(), anyio.Event()
    seen: dict[str, Any] = {}

    async def forever(ctx: JobContext, params: None) -> None:
        started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            seen["reason"], seen["flag"] = ctx.cancel_reason, ctx.cancelled
            stopped.set()
            raise

    w = Worker(queue, [forever], lease=5, heartbeat=0.2)
    async with running(w):
        j = await queue.enqueue("forever", None)
        with anyio.fail_after(5):
            await started.wait()
        await queue.cancel(j.id, "user asked")
        t0 = time.monotonic()
        with anyio.fail_after(5):
            await stopped.wait()
        elapsed = time.monotonic() - t0
        await anyio.sleep(0.3)  # a worker write would land now, if it (wrongly) made one
    assert elapsed < 2.0  # a heartbeat (0.2 s) or so; far below the 5 s lease
    assert seen == {"reason": "the job was cancelled", "flag": True}
    assert w.stats.cancelled == 1 and w.stats.finished == 0
    assert to_states(job_events(redis_sync, queue, j.id))[-1] == JOB.cancelled
    assert (await queue.get(j.id)).status == JOB.cancelled


async def test_long_async_job_keeps_its_lease(queue: Queue) -> None:
    async def long(ctx: JobContext, params: None) -> str:
        await anyio.sleep(2.5)  # five lease periods
        return ctx.token

    # Reaping all the time: a lease left unrenewed for a moment would be taken away.
    async with reaping(queue), running(Worker(queue, [long], lease=0.5)):
        out = await queue.wait((await queue.enqueue("long", None)).id, timeout=10)
    j = await queue.get(out.job_id)
    assert lease_number(out.output) == 1 and (j.attempt, j.executions, j.lease_losses) == (1, 1, 0)


async def test_sync_cpu_bound_job_keeps_its_lease(queue: Queue) -> None:
    def spin(ctx: JobContext, params: float) -> int:
        # Pure-Python CPU work holds the GIL except at the interpreter's switch interval.
        n, end = 0, time.monotonic() + params
        while time.monotonic() < end:
            n += sum(i * i for i in range(500))
        return n

    w = Worker(queue, [spin], lease=0.5)
    async with reaping(queue), running(w):
        out = await queue.wait((await queue.enqueue("spin", 2.0)).id, timeout=10)
    j = await queue.get(out.job_id)
    assert out.success and (j.attempt, j.executions, j.lease_losses) == (1, 1, 0)
    assert w.stats.heartbeat_failures == 0 and w.stats.lease_lost == 0


async def test_unrenewable_lease_cancels_the_job_before_it_expires(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[tuple[float, str]] = []

    async def stuck(ctx: JobContext, params: None) -> None:
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            stopped.append((time.time(), ctx.cancel_reason))
            raise

    w = Worker(queue, [stuck], lease=1.0)

    async def unreachable(self: LeaseKeeper, slot: int, pairs: list[tuple[str, str]]) -> list[str]:
        raise redis.ConnectionError("partitioned (test)")

    # Only heartbeats fail: claims, finishes and the reaper still reach Redis.
    monkeypatch.setattr(LeaseKeeper, "renew", unreachable)
    async with running(w):
        j = await queue.enqueue("stuck", None, max_attempts=1)
        out = await queue.wait(j.id, timeout=10)
    assert stopped and "could not be renewed" in stopped[0][1]
    # Stopped before the reaper (same host, same clock) found the lease expired.
    expired = [e for e in await queue.events(j.id) if e.event == "lease_expired"]
    assert len(expired) == 1 and stopped[0][0] * 1000 < expired[0].ts_ms
    # The worker wrote nothing for it; the reaper failed the job once the lease expired.
    assert out.status == JOB.failure and out.error is not None and out.error.code == "lease_expired"
    assert w.stats.finished == 0


async def test_lost_lease_cancels_the_job_and_its_result_is_rejected(queue: Queue, redis_sync: redis.Redis) -> None:
    release, first = anyio.Event(), anyio.Event()
    runs: list[str] = []

    async def work(ctx: JobContext, params: None) -> str:
        runs.append(ctx.token)
        first.set()
        if lease_number(ctx.token) == 1:
            with anyio.CancelScope(shield=True):  # ignores its cancel scope, like a blocking call
                await release.wait()
        return ctx.token

    w1 = Worker(queue, [work], lease=0.5)
    async with running(w1):
        j = await queue.enqueue("work", None, max_attempts=3)
        with anyio.fail_after(5):
            await first.wait()

        async def frozen(slot: int, pairs: list[tuple[str, str]]) -> list[str]:
            await anyio.sleep(3600)  # heartbeats hang: the lease runs out
            return []

        w1._keeper.renew = frozen  # type: ignore[method-assign]
        await anyio.sleep(0.8)
        w2 = Worker(queue, [work], lease=5)
        async with running(w2):
            out = await queue.wait(j.id, timeout=10)
            release.set()
            await anyio.sleep(0.3)
    assert [lease_number(t) for t in runs] == [1, 2] and out.output == runs[1]
    # Exactly one success, recorded by the second lease; the first attempt's result was dropped.
    assert to_states(job_events(redis_sync, queue, j.id)).count(JOB.success) == 1
    done = await queue.get(j.id)
    assert (done.status, done.result, str(done.token), done.lease_losses) == (JOB.success, runs[1], runs[1], 1)
    assert w1.stats.lease_lost >= 1


# -- throughput, idle pickup, burst, shutdown -------------------------------------------------------------
async def test_batching_runs_every_job_exactly_once(queue: Queue, redis_sync: redis.Redis) -> None:
    seen: Counter[str] = Counter()

    async def tick(ctx: JobContext, params: int) -> int:
        seen[ctx.job.id] += 1
        await anyio.sleep(0.001 * (params % 5))
        return params

    w = Worker(queue, [tick], concurrency=20, lease=5, burst=True)
    ids = [o.id for o in await queue.enqueue_many([JobRequest(type="tick", params=i) for i in range(200)])]
    with anyio.fail_after(30):
        await w.run()  # burst: returns once everything is done
    assert set(seen) == set(ids) and set(seen.values()) == {1}
    assert (await queue.counts())[JOB.success] == 200
    for jid in ids[::20]:
        assert to_states(job_events(redis_sync, queue, jid)).count(JOB.success) == 1
    # One round trip claims many jobs, one finish call records many outcomes.
    assert w.stats.claimed == 200 and w.stats.claim_calls < 100
    assert w.stats.finished == 200 and w.stats.finish_calls < 100


async def test_idle_worker_picks_up_a_new_job_at_once(queue: Queue) -> None:
    async def ping(ctx: JobContext, params: None) -> str:
        return "pong"

    w = Worker(queue, [ping], lease=5)
    async with running(w):
        await anyio.sleep(0.3)  # the worker is now blocked in BLPOP
        t0 = time.perf_counter()
        out = await queue.wait((await queue.enqueue("ping", None)).id, timeout=5)
        elapsed = time.perf_counter() - t0
    j = await queue.get(out.job_id)
    assert out.output == "pong"
    assert j.started_ms is not None
    print(
        f"idle pickup: enqueue->started {j.started_ms - j.created_ms} ms (server), round trip {elapsed * 1000:.1f} ms"
    )


async def test_burst_mode_exits_when_nothing_is_left(queue: Queue) -> None:
    async def noop(ctx: JobContext, params: None) -> None:
        return None

    for _ in range(5):
        await queue.enqueue("noop", None)
    future = await queue.enqueue("noop", None, delay=60)  # not due: burst mode does not wait for it
    with anyio.fail_after(10):
        await Worker(queue, [noop], lease=5, burst=True).run()
    counts = await queue.counts()
    assert counts[JOB.success] == 5 and counts[JOB.delayed] == 1
    assert (await queue.get(future.id)).status == JOB.delayed


async def test_graceful_stop_hands_running_jobs_back(queue: Queue, redis_sync: redis.Redis) -> None:
    started = anyio.Event()
    finished: list[str] = []

    async def quick(ctx: JobContext, params: None) -> None:
        started.set()
        await anyio.sleep(0.05)
        finished.append(ctx.job.id)

    async def slow(ctx: JobContext, params: None) -> None:
        await anyio.sleep(60)

    w = Worker(queue, [quick, slow], lease=30, grace=0.5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        s = await queue.enqueue("slow", None)
        q = await queue.enqueue("quick", None)
        with anyio.fail_after(5):
            await started.wait()
        t0 = time.monotonic()
        w.stop()
    took = time.monotonic() - t0
    assert finished == [q.id] and (await queue.get(q.id)).status == JOB.success  # finished within grace
    back = await queue.get(s.id)
    assert back.status == JOB.ready and back.attempt == 0 and back.executions == 1  # the attempt is refunded
    assert to_states(job_events(redis_sync, queue, s.id))[-1] == JOB.ready
    assert 0.4 < took < 3 and w.stats.handed_back == 1


# -- configuration ------------------------------------------------------------------------------------------
def test_registration_and_settings_are_validated(url: str) -> None:
    async def ok(ctx: JobContext, params: Any) -> None: ...

    def one_arg(ctx: JobContext) -> None: ...

    assert set(Worker("q", [ok, job(name="other")(ok)], url=url).functions) == {"ok", "other"}
    assert Worker("q", {"alias": ok}, url=url).functions["alias"].is_async
    with pytest.raises(TypeError, match="ctx, params"):
        Worker("q", [one_arg], url=url)
    with pytest.raises(ValueError, match="two job functions"):
        Worker("q", [ok, ok], url=url)
    with pytest.raises(ValueError):
        Worker("q", {"bad name!": ok}, url=url)
    for bad in ({"concurrency": 0}, {"lease": 0.01}, {"heartbeat": 40.0}, {"max_lease_losses": 0}):
        with pytest.raises(ValueError):
            Worker("q", [ok], url=url, **bad)
    wid = make_worker_id()
    assert Worker("q", [ok], url=url, worker_id=wid).worker_id == wid
    assert isinstance(job(ok), JobFunction)


async def test_one_worker_serves_several_queues(url: str, queue: Queue) -> None:
    other = Queue("other", url=url)

    async def where(ctx: JobContext, params: None) -> str:
        return ctx.queue.name

    try:
        async with running(Worker([queue, other], [where], lease=5)):
            await anyio.sleep(0.2)  # idle, blocked on both wake lists
            a = await other.wait((await other.enqueue("where", None)).id, timeout=5)
            b = await queue.wait((await queue.enqueue("where", None)).id, timeout=5)
    finally:
        await other.close()
    assert (a.output, b.output) == ("other", "work")


def test_run_from_cli_applies_overrides_and_burst(url: str) -> None:
    with SyncQueue("cli", url=url) as q:
        ids = [q.enqueue("sleepy", {"first": 0}).id for _ in range(3)]
        code = run_from_cli("tests.workerapp:make_worker", url=url, queues=["cli"], concurrency=2, burst=True)
        assert code == 0
        assert {q.get(i).status for i in ids} == {JOB.success}
    for bad in ("tests.workerapp:missing", "no_colon", "tests.workerapp:QUEUE"):
        assert run_from_cli(bad, url=url, queues=None, concurrency=None, burst=True) == 2  # usage: not a Worker


@pytest.mark.anyio
async def test_a_worker_waits_for_its_server_to_come_up(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    from rjobs.cli.server import LocalServer, find_valkey_binary, free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = LocalServer(find_valkey_binary(), port=port, data_dir=tmp_path / "late")

    async def double(ctx: Any, params: Any) -> int:
        return int(params["n"]) * 2

    worker = Worker("late", functions={"double": double}, url=url, burst=True)
    with caplog.at_level("WARNING", logger="rjobs.worker"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await anyio.sleep(0.8)  # nothing listens yet: the worker logs and tries again
            await anyio.to_thread.run_sync(server.start)
    try:
        assert any("cannot start yet" in r.getMessage() for r in caplog.records)
        with pytest.raises(redis.ConnectionError):  # with a time limit, it gives up
            await Worker("late", functions={"double": double}, url="redis://127.0.0.1:1/0", start_timeout=0.5).run()
    finally:
        server.stop()


async def test_every_outcome_leaves_a_log_line(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    async def flaky(ctx: JobContext, params: None) -> None:
        ctx.log.info("trying")
        raise KeyError(f"missing on attempt {ctx.attempt}")

    async def fine(ctx: JobContext, params: None) -> int:
        return 1

    with caplog.at_level("DEBUG", logger="rjobs.job"):
        async with running(Worker(queue, [flaky, fine], lease=5, retry=FAST)):
            bad = await queue.enqueue("flaky", None, max_attempts=2)
            good = await queue.enqueue("fine", None)
            await queue.wait(bad.id, timeout=10)
            await queue.wait(good.id, timeout=10)
    mine = [r for r in caplog.records if r.name == "rjobs.job" and getattr(r, "job_id", None) == bad.id]
    warnings = [r.getMessage() for r in mine if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "retrying in" in warnings[0]
    failed = next(r for r in mine if r.levelname == "ERROR")
    assert "ended failed" in failed.getMessage() and failed.exc_info is not None and "KeyError" in failed.getMessage()
    assert {(r.job_type, r.queue) for r in mine} == {("flaky", queue.name)}  # type: ignore[attr-defined]
    assert sum(r.getMessage() == "trying" for r in mine) == 2  # ctx.log carries the job's fields
    ok = [r for r in caplog.records if getattr(r, "job_id", None) == good.id]
    assert [r.levelname for r in ok] == ["DEBUG", "INFO"] and "succeeded in" in ok[-1].getMessage()


async def test_a_job_without_params_runs_a_typed_function_with_the_empty_value(queue: Queue) -> None:
    async def count(ctx: JobContext, params: dict[str, int]) -> int:
        return len(params)

    async with running(Worker(queue, [count], lease=5)):
        out = await queue.wait((await queue.enqueue("count")).id, timeout=10)
    assert (out.success, out.output) == (True, 0)
