"""Many calls in flight on one async queue: waits share one blocking reader, reads share the
link, and the queue keeps a small, bounded number of connections (issue: keep every promise at
the edges, 12)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import redis
import redis.asyncio as aredis

from rjobs import JobNotFound, Queue, QueueConfig, RjobsError, SyncQueue, WaitTimeout
from rjobs.store.scripts import Cmd
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

NAME = "under-test"


def named(url: str) -> str:
    """The URL with a client name, so CLIENT LIST tells this queue's connections apart."""
    return f"{url}?client_name={NAME}"


async def connections(admin: aredis.Redis, name: str = NAME) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c.get("name") == name]


@asynccontextmanager
async def admin_client(url: str) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110 - the checks are plain values, no event to wait on
            await anyio.sleep(0.01)


def waiting(q: Queue) -> int:
    """Waiters registered with the queue's reader in this event loop."""
    reader = q._waits._reader
    return 0 if reader is None else sum(len(group) for group in reader.waiters.values())


async def test_a_thousand_waits_gets_and_enqueues_in_flight_share_a_few_connections(url: str) -> None:
    n = 1000

    async def echo(ctx: JobContext, params: dict[str, int]) -> dict[str, int]:
        return {"i": params["i"]}

    async with Queue("conc", named(url)) as q, Queue("conc", url) as worker_queue, admin_client(url) as admin:
        await q.declare()
        outcomes: dict[int, Any] = {}
        gets: dict[int, Any] = {}
        errors: list[BaseException] = []

        async def one(i: int) -> None:
            try:
                job = await q.enqueue("echo", {"i": i})
                async with anyio.create_task_group() as tg:

                    async def get() -> None:
                        gets[i] = await q.get(job.id)

                    tg.start_soon(get)
                    outcomes[i] = (job.id, await q.wait(job.id, timeout=90))
            except BaseException as exc:  # every failure is reported below, not just the first
                errors.append(exc)
                raise

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
            await until(lambda: waiting(q) == n, within=60)
            during = await connections(admin)
            assert 1 <= len(during) <= 5, f"{n} waits in flight on {len(during)} connections: {during}"
            assert [c for c in during if c["cmd"] == "xread"], "one blocking reader serves the waits"
            await Worker(worker_queue, [echo], concurrency=100, burst=True).run()
        assert not errors, errors[:3]
        assert len(outcomes) == n and len(gets) == n
        for i, (job_id, outcome) in outcomes.items():
            assert (outcome.job_id, outcome.status, outcome.success, outcome.output) == (
                job_id,
                "completed",
                True,
                {"i": i},
            )
            assert gets[i].id == job_id and gets[i].params == {"i": i}
        assert len(await connections(admin)) <= 5
        assert waiting(q) == 0, "every waiter unregistered"


async def test_a_wait_on_a_job_that_is_already_final_returns_at_once(url: str) -> None:
    async with Queue("final", url) as q:
        job = await q.enqueue("t")
        await q.cancel(job.id, "done with it")
        started = time.monotonic()
        outcome = await q.wait(job.id, timeout=5)
        assert outcome.status == "cancelled" and not outcome.success and outcome.error is not None
        assert (await q.wait(job.id, timeout=0)).status == "cancelled", "timeout 0 still looks once"
        assert time.monotonic() - started < 0.5
        assert not q._waits.reading, "no reader was started for jobs that were final already"


async def test_a_waiter_whose_job_is_deleted_gets_job_not_found_within_a_second(url: str) -> None:
    async with Queue("deleted", url) as q:
        gone, kept = (await q.enqueue("t")).id, (await q.enqueue("t")).id
        results: dict[str, Any] = {}

        async def wait(job_id: str) -> None:
            try:
                results[job_id] = await q.wait(job_id, timeout=10)
            except JobNotFound as exc:
                results[job_id] = (exc, time.monotonic())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, gone)
            tg.start_soon(wait, kept)
            await until(lambda: waiting(q) == 2)
            deleted = time.monotonic()
            await q.client.delete(q.backend.keys.job(gone))  # as a purge leaves it
            await until(lambda: gone in results)
            await q.cancel(kept)
        assert isinstance(results[gone][0], JobNotFound)
        assert results[gone][1] - deleted < 1.6, "noticed by the reader's re-check, not at the timeout"
        assert results[kept].status == "cancelled"


async def test_each_waiter_has_its_own_timeout(url: str) -> None:
    async with Queue("timeouts", url) as q:
        short, long = (await q.enqueue("t")).id, (await q.enqueue("t")).id
        results: dict[str, Any] = {}

        async def wait(job_id: str, seconds: float) -> None:
            started = time.monotonic()
            try:
                results[job_id] = await q.wait(job_id, timeout=seconds)
            except WaitTimeout as exc:
                results[job_id] = (exc, time.monotonic() - started)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, short, 0.3)
            tg.start_soon(wait, long, 5)
            await until(lambda: short in results)
            await q.cancel(long)
        exc, took = results[short]
        assert isinstance(exc, WaitTimeout) and "still queued" in str(exc) and 0.25 < took < 1.0
        assert results[long].status == "cancelled"
        with pytest.raises(WaitTimeout):
            await q.wait(short, timeout=0)


async def test_a_job_that_ended_unseen_before_the_deadline_is_an_outcome_not_a_timeout(url: str) -> None:
    """With the queue stream off (today's scripts then write no entry at all) only the re-checks
    see a job end; the last look at the deadline makes a wait shorter than the re-check period
    still report the outcome."""
    async with Queue("unseen", url, config=QueueConfig(queue_events=False)) as q:
        job = (await q.enqueue("t")).id
        async with anyio.create_task_group() as tg:
            tg.start_soon(_cancel_later, q, job, 0.2)
            assert (await q.wait(job, timeout=0.5)).status == "cancelled"
    with SyncQueue("unseen", url) as sq:
        job = sq.enqueue("t").id
        timer = threading.Timer(0.2, lambda: sq.cancel(job))
        timer.start()
        assert sq.wait(job, timeout=0.5).status == "cancelled"
        timer.join()


async def _cancel_later(q: Queue, job_id: str, delay: float) -> None:
    await anyio.sleep(delay)
    await q.cancel(job_id)


async def test_cancelling_half_of_the_waiters_leaves_the_others_waiting(url: str) -> None:
    async with Queue("half", url) as q:
        ids = [o.id for o in await q.enqueue_many([_request() for _ in range(1000)])]
        results: dict[str, Any] = {}
        scopes: list[anyio.CancelScope] = []

        async def wait(job_id: str, scope: anyio.CancelScope) -> None:
            with scope:
                results[job_id] = await q.wait(job_id, timeout=30)

        async with anyio.create_task_group() as tg:
            for job_id in ids:
                scopes.append(scope := anyio.CancelScope())
                tg.start_soon(wait, job_id, scope)
            await until(lambda: waiting(q) == 1000)
            for scope in scopes[::2]:
                scope.cancel()
            await until(lambda: waiting(q) == 500)
            await q.bulk_cancel(ids)
        assert sorted(results) == sorted(ids[1::2])
        assert {r.status for r in results.values()} == {"cancelled"}
        assert waiting(q) == 0


async def test_killing_the_readers_connection_mid_wait_does_not_fail_the_waits(url: str) -> None:
    async with Queue("kill", named(url)) as q, admin_client(url) as admin:
        ids = [o.id for o in await q.enqueue_many([_request() for _ in range(50)])]
        results: dict[str, Any] = {}

        async def wait(job_id: str) -> None:
            results[job_id] = await q.wait(job_id, timeout=20)

        async with anyio.create_task_group() as tg:
            for job_id in ids:
                tg.start_soon(wait, job_id)
            await until(lambda: waiting(q) == 50)
            reader = [c for c in await connections(admin) if c["cmd"] == "xread"]
            assert len(reader) == 1
            await admin.execute_command("CLIENT", "KILL", "ID", reader[0]["id"])
            await anyio.sleep(0.1)  # the reader notices and reconnects
            await q.bulk_cancel(ids[:25])
            await q.bulk_cancel(ids[25:])
        assert len(results) == 50 and {r.status for r in results.values()} == {"cancelled"}
        after = [c for c in await connections(admin) if c["cmd"] == "xread"]
        assert after and after[0]["id"] != reader[0]["id"], "a new reader connection"


async def test_final_entries_trimmed_by_maxlen_still_end_the_waits(url: str, redis_sync: redis.Redis) -> None:
    config = QueueConfig(stream_maxlen=10)
    async with Queue("trim", url, config=config) as q:
        waited = [o.id for o in await q.enqueue_many([_request() for _ in range(20)])]
        others = [o.id for o in await q.enqueue_many([_request() for _ in range(1000)])]
        results: dict[str, Any] = {}

        async def wait(job_id: str) -> None:
            results[job_id] = await q.wait(job_id, timeout=20)

        async with anyio.create_task_group() as tg:
            for job_id in waited:
                tg.start_soon(wait, job_id)
            await until(lambda: waiting(q) == 20)
            # one script: the waited jobs' final entries first, then 1,000 more that trim them away
            await q.bulk_cancel(waited + others)
            started = time.monotonic()
        assert time.monotonic() - started < 2.5, "settled by the re-check (about once a second)"
        assert {r.status for r in results.values()} == {"cancelled"} and len(results) == 20
        left = {f[b"job"].decode() for _, f in redis_sync.xrange(q.backend.keys.events)}
        assert not left & set(waited), "the waited jobs' entries were trimmed before the reader saw them"


async def test_the_reader_stops_when_idle_and_starts_again_on_demand(url: str) -> None:
    async with Queue("idle", named(url)) as q, admin_client(url) as admin:
        q._waits.idle_stop = 0.2
        job = await q.enqueue("t")
        async with anyio.create_task_group() as tg:
            tg.start_soon(q.wait, job.id, 5)
            await until(lambda: q._waits.reading)
            await q.cancel(job.id)
        await until(lambda: not q._waits.reading, within=3)
        await anyio.sleep(0.05)
        assert not [c for c in await connections(admin) if c["cmd"] == "xread"], "its connection is closed"
        again = await q.enqueue("t")
        async with anyio.create_task_group() as tg:
            tg.start_soon(q.wait, again.id, 5)
            await until(lambda: q._waits.reading)
            await q.cancel(again.id)


async def test_close_fails_pending_waits_and_stops_the_reader(url: str) -> None:
    q = Queue("closing", url)
    job = await q.enqueue("t")
    failed: list[BaseException] = []

    async def wait() -> None:
        try:
            await q.wait(job.id, timeout=10)
        except RjobsError as exc:
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await until(lambda: waiting(q) == 1)
        await q.close()
    assert failed and "closed" in str(failed[0]) and not q._waits.reading


async def test_waits_and_reads_without_a_link_wait_for_pooled_connections(url: str) -> None:
    """A client rjobs cannot open links for (here: a connection class it does not know, as with
    TLS or a credential provider) keeps the pool: 300 calls in flight on a 5-connection pool wait
    for a connection instead of failing with MaxConnectionsError, and waits do not hold one each."""

    class Custom(aredis.Connection):
        pass

    pool = aredis.ConnectionPool.from_url(url, max_connections=5, connection_class=Custom)
    client = aredis.Redis(connection_pool=pool)
    async with Queue("pooled", client=client) as q:
        ids = [o.id for o in await q.enqueue_many([_request() for _ in range(150)])]
        results: dict[str, Any] = {}

        async def wait(job_id: str) -> None:
            results[job_id] = await q.wait(job_id, timeout=30)

        async def get(job_id: str) -> None:
            assert (await q.get(job_id)).id == job_id

        async with anyio.create_task_group() as tg:
            for job_id in ids:
                tg.start_soon(wait, job_id)
                tg.start_soon(get, job_id)
            await until(lambda: waiting(q) == 150)
            await q.bulk_cancel(ids)
        assert len(results) == 150 and {r.status for r in results.values()} == {"cancelled"}
    await client.aclose()
    await pool.aclose()  # the client does not own it


async def test_plain_reads_over_the_link_have_the_forms_redis_py_gives(url: str) -> None:
    """The plans read replies as redis-py parses them; over a link the same parsing is applied."""
    async with Queue("forms", url) as q, admin_client(url) as admin:
        job = await q.enqueue("t", {"a": 1}, user_id="u1")
        await admin.zadd("z", {"m1": 1.5, "m2": 2})
        await admin.rpush("l", "a", "b")
        k = q.backend.keys
        commands = [
            ("HGETALL", k.job(job.id)),
            ("HMGET", k.job(job.id), "status", "nope"),
            ("HGET", k.job(job.id), "status"),
            ("XRANGE", k.events, "-", "+"),
            ("LRANGE", "l", 0, -1),
            ("XREVRANGE", k.events, "+", "-", "COUNT", 1),
            ("XREAD", "COUNT", 10, "STREAMS", k.events, "0-0"),
            ("XREAD", "COUNT", 10, "STREAMS", k.events, "$"),
            ("ZRANGE", "z", 0, -1, "WITHSCORES"),
            ("ZREVRANGE", "z", 0, -1, "WITHSCORES"),
            ("ZREVRANGE", "z", 0, -1),
            ("ZCARD", "z"),
            ("EXISTS", k.job(job.id)),
            ("GET", "missing"),
        ]
        for args in commands:
            over_link = await q.backend.command(Cmd(args))
            through_redis_py = await admin.execute_command(*args)
            assert _pairs(over_link) == _pairs(through_redis_py), args
        batch = await q.backend.run_many([Cmd(args) for args in commands])
        assert [_pairs(r) for r in batch] == [_pairs(await q.backend.command(Cmd(a))) for a in commands]
        seconds, micros = await q.backend.command(Cmd(("TIME",)))
        assert isinstance(seconds, int) and isinstance(micros, int)


def _pairs(value: Any) -> Any:
    """Score pairs as tuples (redis-py gives [member, score] lists on RESP3, tuples on RESP2)."""
    if isinstance(value, list) and value and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
        return [(a, b) for a, b in value]
    return value


def test_sync_wait_reads_the_queue_stream(url: str) -> None:
    with SyncQueue("sync-wait", url, config=QueueConfig(stream_maxlen=10)) as q:
        done, gone = q.enqueue("t").id, q.enqueue("t").id
        others = [o.id for o in q.enqueue_many([_request() for _ in range(500)])]

        def later() -> None:
            time.sleep(0.2)
            with SyncQueue("sync-wait", url) as other:
                other.bulk_cancel([done, *others])  # the final entry of `done` is trimmed at once
                other.client.delete(other.backend.keys.job(gone))

        thread = threading.Thread(target=later)
        thread.start()
        started = time.monotonic()
        assert q.wait(done, timeout=10).status == "cancelled"
        with pytest.raises(JobNotFound):
            q.wait(gone, timeout=10)
        assert time.monotonic() - started < 3
        thread.join()
        with pytest.raises(WaitTimeout):
            q.wait(q.enqueue("t").id, timeout=0.2)


def _request() -> Any:
    from rjobs import JobRequest

    return JobRequest(type="t")
