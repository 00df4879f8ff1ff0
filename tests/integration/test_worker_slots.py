"""The worker's job slots (rjobs/slots.py): concurrency long-lived tasks instead of a task per job.

What can go wrong with slots that a task per job could not do: a cancellation (heartbeat 'cancel',
timeout, lease loss) leaking out of one job's cancel scope into the slot and the jobs it runs next;
more jobs claimed than there are free slots (a local backlog of leased jobs nobody runs); and jobs
claimed but not started when the worker is cancelled, which must be handed back, not stranded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import pytest
import redis

from rjobs.client.queue import Queue
from rjobs.machines import JOB
from rjobs.models import ClaimedJob, JobRequest
from rjobs.worker.context import JobContext
from rjobs.worker.execution import JobRunner, Moves
from rjobs.worker.finisher import Finisher
from rjobs.worker.functions import job
from rjobs.worker.inflight import Held, HeldState
from rjobs.worker.leases import LeaseBook
from rjobs.worker.loop import Worker
from rjobs.worker.pool import JobSlots, Served, SlotPool
from rjobs.worker.signals import Flag, Pulse
from rjobs.worker.stats import WorkerStats
from tests.integration.test_worker import FAST, running

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` until it holds (fails after 5 s)."""
    with anyio.fail_after(5):
        while not check():  # noqa: ASYNC110 - the checks are plain values, no event to wait on
            await anyio.sleep(0.005)


class Gauge:
    """How many job bodies run at once, and the most ever seen."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self._lock = threading.Lock()  # sync bodies run in threads

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.now -= 1


# -- slot reuse: one job's cancellation stays in its own scope -----------------------------------------
async def test_a_job_cancelled_mid_run_leaves_the_other_slots_and_its_own_slot_working(queue: Queue) -> None:
    started = anyio.Event()
    stopped: list[tuple[str, bool]] = []

    async def forever(ctx: JobContext, params: None) -> None:
        started.set()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            stopped.append((ctx.cancel_reason, ctx.cancelled))
            raise

    async def steady(ctx: JobContext, params: int) -> int:
        for _ in range(5):
            await anyio.sleep(0.05)  # awaits after the cancel: a leaked cancellation would hit here
        return params

    # concurrency 2: the slot freed by the cancelled job must run later jobs normally.
    w = Worker(queue, [forever, steady], concurrency=2, lease=5, heartbeat=0.2)
    async with running(w):
        victim = await queue.enqueue("forever", None)
        with anyio.fail_after(5):
            await started.wait()
        others = [await queue.enqueue("steady", i) for i in range(3)]
        await queue.cancel(victim.id, "user asked")
        more = [await queue.enqueue("steady", i) for i in range(3, 9)]
        outs = [await queue.wait(j.id, timeout=10) for j in [*others, *more]]
    assert stopped == [("the job was cancelled", True)]
    assert [o.output for o in outs] == list(range(9)) and all(o.success for o in outs)
    assert (await queue.get(victim.id)).status == JOB.cancelled
    assert w.stats.cancelled == 1 and w.stats.finished == 9


async def test_timeouts_and_failures_do_not_leak_into_the_next_job_of_the_slot(queue: Queue) -> None:
    @job(timeout=0.1)
    async def slow(ctx: JobContext, params: None) -> None:
        await anyio.sleep(10)

    async def boom(ctx: JobContext, params: None) -> None:
        raise ValueError("boom")

    async def sleepy(ctx: JobContext, params: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        # The slot task's earlier cancellations were all taken back (3.11+ counts them).
        assert getattr(task, "cancelling", lambda: 0)() == 0
        await anyio.sleep(0.15)  # longer than slow's timeout: a timeout left armed would fire here
        await anyio.sleep(0.01)
        return params

    # One slot runs everything, one after another.
    w = Worker(queue, [slow, boom, sleepy], concurrency=1, lease=5, retry=FAST)
    async with running(w):
        jobs = []
        for i in range(3):
            jobs.append(await queue.enqueue("slow", None, max_attempts=1))
            jobs.append(await queue.enqueue("boom", None, max_attempts=1))
            jobs.append(await queue.enqueue("sleepy", i))
        outs = [await queue.wait(j.id, timeout=15) for j in jobs]
    codes = [o.error.code if o.error is not None else o.output for o in outs]
    assert codes == ["timeout", "ValueError", 0, "timeout", "ValueError", 1, "timeout", "ValueError", 2]


async def test_sync_job_sees_ctx_cancelled_while_other_slots_go_on(queue: Queue) -> None:
    started = threading.Event()
    saw: list[tuple[bool, str]] = []

    def spin(ctx: JobContext, params: None) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        saw.append((ctx.cancelled, ctx.cancel_reason))

    def add(ctx: JobContext, params: list[int]) -> int:
        assert not ctx.cancelled
        return sum(params)

    w = Worker(queue, {"spin": spin, "add": add}, concurrency=3, lease=5, heartbeat=0.2)
    async with running(w):
        victim = await queue.enqueue("spin", None)
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(started.wait)
        await queue.cancel(victim.id)
        outs = [await queue.wait((await queue.enqueue("add", [i, 1])).id, timeout=10) for i in range(6)]
        await until(lambda: bool(saw))
    assert saw == [(True, "the job was cancelled")]
    assert [o.output for o in outs] == [i + 1 for i in range(6)]


# -- the concurrency limit and the claim size ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_never_more_job_bodies_than_concurrency_and_never_claims_beyond_free_slots(
    queue: Queue, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    gauge = Gauge()
    overclaims: list[tuple[int, int]] = []
    backlog_peak = [0]
    real_add = JobSlots.add

    def checked_add(self: JobSlots, served: Served, jobs: Sequence[ClaimedJob], safe_until: float) -> None:
        if len(jobs) > self.free:
            overclaims.append((len(jobs), self.free))
        real_add(self, served, jobs, safe_until)
        # Every job waiting for a slot has an idle slot on its way to it.
        backlog_peak[0] = max(backlog_peak[0], len(self._pool))
        assert len(self._pool) <= self.concurrency - self._pool.busy

    monkeypatch.setattr(JobSlots, "add", checked_add)

    async def work_async(ctx: JobContext, params: int) -> int:
        with gauge:
            await anyio.sleep(0.001 * (params % 7))
        return params

    def work_sync(ctx: JobContext, params: int) -> int:
        with gauge:
            time.sleep(0.001 * (params % 7))
        return params

    fn = work_async if kind == "async" else work_sync
    w = Worker(queue, {"work": fn}, concurrency=7, lease=5, burst=True)
    ids = [o.id for o in await queue.enqueue_many([JobRequest(type="work", params=i) for i in range(300)])]
    with anyio.fail_after(40):
        await w.run()
    assert (await queue.counts())[JOB.success] == len(ids) == w.stats.finished
    assert overclaims == []
    assert gauge.peak == 7  # the limit is reached (300 jobs) and never passed
    assert backlog_peak[0] <= 7


# -- jobs claimed but not started -------------------------------------------------------------------------
async def test_worker_cancelled_hands_back_running_jobs_and_jobs_no_slot_started(
    queue: Queue, redis_sync: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = anyio.Event()

    async def hang(ctx: JobContext, params: int) -> None:
        started.set()
        await anyio.sleep(60)

    # Only 2 of the 4 slot tasks ever start: claimed jobs 3 and 4 stay in the backlog.
    real_start = SlotPool.start

    def start_two(self: SlotPool[Any], tg: anyio.abc.TaskGroup) -> None:
        self.size, size = 2, self.size
        try:
            real_start(self, tg)
        finally:
            self.size = size

    monkeypatch.setattr(SlotPool, "start", start_two)
    w = Worker(queue, [hang], concurrency=4, lease=30)
    ids = [o.id for o in await queue.enqueue_many([JobRequest(type="hang", params=i) for i in range(4)])]
    with anyio.move_on_after(10) as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            with anyio.fail_after(5):
                await started.wait()
            await until(lambda: w.stats.claimed == 4)
            await anyio.sleep(0.1)
            tg.cancel_scope.cancel()  # the worker itself is cancelled, not stopped
    assert not scope.cancelled_caught
    for jid in ids:
        j = await queue.get(jid)
        assert j.status == JOB.ready and j.attempt == 0, (jid, j.status, j.attempt)
    assert w.stats.handed_back == 4
    assert redis_sync.zcard(queue.backend.keys.leases) == 0


async def test_a_job_stopped_before_its_slot_starts_it_is_handed_back_without_running(queue: Queue) -> None:
    ran: list[str] = []

    async def fn(ctx: JobContext, params: None) -> None:
        ran.append(ctx.job.id)

    await queue.declare()
    runner = JobRunner({"fn": job(fn)}, worker_id="w1", retry=FAST, limiter=anyio.CapacityLimiter(1), clock=None)  # type: ignore[arg-type]
    moves = Moves(queue.machine)
    claimed = claimed_job("j1", "fn", token="7")
    held = Held(0, claimed, safe_until=time.monotonic() + 30)
    held.stop(HeldState.HANDBACK, "worker shutting down")
    request = await runner.execute(queue, moves, held)
    assert request is not None and request.target == queue.machine.ready and request.refund and request.token == "7"
    lost = Held(0, claimed, safe_until=0.0)
    lost.stop(HeldState.LOST, "the lease was lost")
    assert await runner.execute(queue, moves, lost) is None
    assert ran == []


# -- the building blocks -------------------------------------------------------------------------------------
async def test_slot_pool_runs_items_in_order_of_submission_at_most_size_at_once() -> None:
    gauge = Gauge()
    done: list[int] = []

    async def run(i: int) -> None:
        with gauge:
            await anyio.sleep(0.001 * (i % 3))
        done.append(i)

    pool: SlotPool[int] = SlotPool(3, run)
    async with anyio.create_task_group() as tg:
        pool.start(tg)
        for batch in range(5):
            for i in range(3):
                pool.submit(batch * 3 + i)
            want = (batch + 1) * 3
            await until(lambda: len(done) == want)  # noqa: B023 - awaited right here
        tg.cancel_scope.cancel()
    assert sorted(done) == list(range(15)) and gauge.peak == 3 and len(pool) == 0 and pool.busy == 0


async def test_slot_pool_drain_returns_what_no_slot_took() -> None:
    pool: SlotPool[int] = SlotPool(2, lambda i: anyio.sleep(0.01))
    for i in range(3):
        pool.submit(i)  # no slot task started
    assert len(pool) == 3 and pool.drain() == [0, 1, 2] and len(pool) == 0
    with pytest.raises(ValueError):
        SlotPool(0, lambda i: anyio.sleep(0.01))


async def test_job_slots_wake_the_claim_loop_only_when_claim_min_slots_are_free(queue: Queue) -> None:
    await queue.declare()
    book = LeaseBook(WorkerStats())
    notified: list[int] = []

    class CountingPulse(Pulse):
        def notify(self) -> None:
            notified.append(slots.running)
            super().notify()

    pulse = CountingPulse()
    runner = JobRunner({}, worker_id="w1", retry=FAST, limiter=anyio.CapacityLimiter(8), clock=None)  # type: ignore[arg-type]
    served = Served(0, queue, Moves(queue.machine), None)  # type: ignore[arg-type]
    slots = JobSlots(8, [served], runner, book, pulse)
    assert slots.claim_min == 2 and slots.free == 8
    jobs = [claimed_job(f"j{i}", "t") for i in range(8)]
    slots.add(served, jobs, 0.0)
    assert slots.free == 0 and len(book) == 8
    for i in range(8):
        slots._ended(served, next(iter(book)), None)
        assert slots.running == 7 - i
    # 8 ends: woken at 2, 3, ... 8 free slots (running 6 .. 0), not for the first one.
    assert notified == [6, 5, 4, 3, 2, 1, 0] and len(book) == 0


def claimed_job(job_id: str, job_type: str, token: str = "1") -> ClaimedJob:
    return ClaimedJob(
        id=job_id,
        type=job_type,
        params=None,
        attempt=1,
        max_attempts=3,
        token=token,
        user_id=None,
        priority=0,
        retry_count=0,
        created_ms=0,
        lease_deadline_ms=0,
    )


def test_flag_is_a_plain_set_once_flag() -> None:
    f = Flag()
    assert not f.is_set()
    f.set()
    f.set()
    assert f.is_set()


async def test_finisher_cancelled_with_a_batch_no_sender_took_keeps_it_for_flush(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    await queue.enqueue("t", None)
    claim = await queue.backend.run(queue.backend.scripts.claim("w1", 1, 30_000))
    (claimed,) = claim.jobs
    book = LeaseBook(WorkerStats())
    held = Held(0, claimed, safe_until=time.monotonic() + 30)
    book.add(held)
    finisher = Finisher(queue, "w1", book)
    monkeypatch.setattr(SlotPool, "start", lambda self, tg: None)  # senders that never take a batch
    async with anyio.create_task_group() as tg:
        tg.start_soon(finisher.run)
        await anyio.sleep(0.01)
        finisher.submit(held, Moves(queue.machine).succeed(claimed, b"1"))
        await until(lambda: finisher._inflight == 1)
        tg.cancel_scope.cancel()
    assert not finisher.idle  # the batch is back in the buffer...
    await finisher.flush()  # ...and the worker's way out sends it
    assert (await queue.get(claimed.id)).status == JOB.success and len(book) == 0
