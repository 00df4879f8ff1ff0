"""Deleting jobs (delete.lua): one or many, with everything a job owns, the ownership check, running
jobs only with force (a real worker holding one finds it gone), the dependents policies, and
refusals that write nothing (API and raw EVALSHA). Against the real servers, with the keyspace
checked after each promise."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import redis

from rjobs import (
    HasDependents,
    JobNotFound,
    JobRunning,
    SyncQueue,
    Unauthorized,
    ValidationError,
    machines,
)
from rjobs.client.queue import Queue
from rjobs.store.scripts import load_script
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint, script_for
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB
NAME = "del"


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue(NAME, url, actor="ops") as queue:
        yield queue


def assert_gone(client: redis.Redis, queue: str, job_id: str) -> None:
    """Nothing of the job remains: no key of its own, no member of any zset or set, no string
    naming it, and the queue's invariants hold."""
    prefix = f"rjobs:{{{queue}}}:"
    for key in client.scan_iter(match=prefix + "*", count=1000):
        name = key.decode()
        assert f"job:{job_id}" not in name, f"{name} outlives the job"
        kind = client.type(key).decode()
        if kind == "zset":
            assert client.zscore(key, job_id) is None, f"{name} still lists {job_id}"
        elif kind == "set":
            assert not client.sismember(key, job_id), f"{name} still lists {job_id}"
        elif kind == "string" and not name.endswith(":seq"):
            assert client.get(key) != job_id.encode(), f"{name} still names {job_id}"
    assert_indexes_consistent(client, queue, JOB)


def claim(q: SyncQueue, n: int = 1) -> Any:
    return q.backend.run(q.backend.scripts.claim("w1", n, 30_000)).jobs


def test_a_deleted_job_takes_everything_it_owns(q: SyncQueue, redis_sync: redis.Redis) -> None:
    parent = q.enqueue("t").id
    job = q.enqueue("t", {"a": 1}, user_id="u1", dedupe_key="k1", depends_on=[parent]).id
    q.add_asset(job, "image", "s3://x", operator=True)
    q.comment(job, "hello")
    assert redis_sync.sismember(q.backend.keys.job_dependents(parent), job)
    assert q.delete(job) == 1
    assert_gone(redis_sync, NAME, job)
    with pytest.raises(JobNotFound):
        q.get(job)
    assert q.get(parent).status == JOB.ready and q.dedupe_holder("k1") is None
    # every state a job can be deleted from (not leased): ready, delayed, held, failed, completed
    ids = [q.enqueue("t").id, q.enqueue("u", delay=3600).id]
    failed = q.enqueue("t").id
    q.fail(failed, "boom", token=str(q.transition(failed, "processing").token))
    done = q.enqueue("t", dedupe_key="k2").id
    q.complete(done, {"r": 1}, token=str(q.transition(done, "processing").token))
    for jid in [*ids, failed, done]:
        assert q.delete(jid) == 1
        assert_gone(redis_sync, NAME, jid)


def test_the_cached_result_goes_only_while_the_key_is_the_jobs(url: str, redis_sync: redis.Redis) -> None:
    from rjobs import QueueConfig

    with SyncQueue("cache", url, config=QueueConfig(cache_ttl=600)) as q:
        a = q.enqueue("t", dedupe_key="k").id
        q.complete(a, {"r": 1}, token=str(q.transition(a, "processing").token))
        assert q.cached_result("k") == {"r": 1}
        b = q.enqueue("t", dedupe_key="k").id  # takes the key of the finished a
        q.complete(b, {"r": 2}, token=str(q.transition(b, "processing").token))
        q.delete(a)
        assert q.cached_result("k") == {"r": 2}, "the key is b's now: a's delete leaves b's cache"
        q.delete(b)
        assert q.cached_result("k") is None and q.dedupe_holder("k") is None
        c = q.enqueue("t", dedupe_key="j").id
        q.complete(c, {"r": 2}, token=str(q.transition(c, "processing").token))
        q.delete(c)
        assert q.cached_result("j") is None, "the holder's delete drops its cached result"
        assert_indexes_consistent(redis_sync, "cache", JOB)


def test_refusals_raise_a_typed_error_and_write_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    running = q.enqueue("t", user_id="u1").id
    claim(q)
    parent = q.enqueue("t", user_id="u1").id
    q.enqueue("t", user_id="u1", depends_on=[parent])
    other = q.enqueue("t", user_id="u2").id
    before = keyspace_fingerprint(redis_sync)
    cases: list[tuple[type[Exception], Callable[[], Any]]] = [
        (JobNotFound, lambda: q.delete("nope")),
        (JobRunning, lambda: q.delete(running)),
        (HasDependents, lambda: q.delete(parent)),
        (Unauthorized, lambda: q.delete(other, user_id="u1")),
        (Unauthorized, lambda: q.delete(parent, user_id="u2", dependents="delete")),
        (ValidationError, lambda: q.delete(parent, dependents="orphan")),
        (ValidationError, lambda: q.delete(parent, force=1)),  # type: ignore[arg-type]
        (ValidationError, lambda: q.delete("bad id")),
        (ValidationError, lambda: q.bulk_delete("abc")),
    ]
    for kind, call in cases:
        with pytest.raises(kind):
            call()
        assert keyspace_fingerprint(redis_sync) == before, f"{kind.__name__} wrote"
    outcomes = q.bulk_delete([running, parent, other, "nope"], user_id="u1")
    assert outcomes == {running: "running", parent: "has_dependents", other: "unauthorized", "nope": "not_found"}
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["ops", "", "0", "refuse", "1", "nope"],  # unknown id: an outcome, nothing written
        ["ops", "", "0", "refuse", "1", "RUNNING"],
        ["ops", "", "0", "refuse", "1", "PARENT"],
        ["ops", "u2", "1", "delete", "1", "PARENT"],
        ["ops", "", "2", "refuse", "1", "PARENT"],
        ["ops", "", "0", "orphan", "1", "PARENT"],
        ["ops", "", "0", "refuse", "2", "PARENT", "PARENT"],
        ["ops", "", "0", "refuse", "2", "PARENT"],
        ["ops", "", "0", "refuse", "0"],
        ["bad actor", "", "0", "refuse", "1", "PARENT"],
        ["ops", "a:b", "0", "refuse", "1", "PARENT"],
        ["ops", "", "0", "refuse", "nan", "PARENT"],
    ],
)
def test_a_raw_delete_that_is_refused_writes_nothing(q: SyncQueue, redis_sync: redis.Redis, argv: list[str]) -> None:
    running = q.enqueue("t").id
    claim(q)
    parent = q.enqueue("t", user_id="u1").id
    q.enqueue("t", depends_on=[parent])
    argv = [running if a == "RUNNING" else parent if a == "PARENT" else a for a in argv]
    before = keyspace_fingerprint(redis_sync)
    k = q.backend.keys
    source, sha = script_for(redis_sync, load_script("delete"))
    redis_sync.script_load(source)
    try:
        reply = redis_sync.evalsha(sha, 2, k.machine, k.events, k.prefix, *argv)
    except redis.ResponseError as exc:
        assert str(exc).startswith("RJ_INVALID")
    else:
        assert reply[:2] == [0, 0] and reply[2].decode().startswith(("RJ_NOT_FOUND", "RJ_RUNNING", "RJ_DEPENDENTS",
                                                                       "RJ_UNAUTHORIZED"))  # fmt: skip
    assert keyspace_fingerprint(redis_sync) == before


def chain(q: SyncQueue) -> tuple[str, str, str]:
    a = q.enqueue("t").id
    b = q.enqueue("t", depends_on=[a]).id
    c = q.enqueue("t", depends_on=[b], on_dependency_failure="cancel").id
    return a, b, c


@pytest.mark.parametrize("policy", ["fail", "cancel", "delete"])
def test_the_dependents_policies(q: SyncQueue, redis_sync: redis.Redis, policy: str) -> None:
    a, b, c = chain(q)
    assert q.delete(a, dependents=policy) == (3 if policy == "delete" else 1)
    assert_gone(redis_sync, NAME, a)
    if policy == "delete":
        assert_gone(redis_sync, NAME, b)
        assert_gone(redis_sync, NAME, c)
        return
    jb, jc = q.get(b), q.get(c)
    assert jb.status == (JOB.failure if policy == "fail" else JOB.cancelled)
    assert jb.error is not None and jb.error.code == "dependency_deleted" and a in jb.error.message
    assert any(e.event == jb.status and "was deleted" in (e.message or "") for e in q.events(b))
    assert jc.status == JOB.cancelled, "the chain follows, by each job's own on_dependency_failure"
    assert_indexes_consistent(redis_sync, NAME, JOB)


def test_a_job_and_its_dependents_deleted_together_need_no_policy(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a, b, c = chain(q)
    assert q.bulk_delete([c, a, b, a, c]) == {c: "done", a: "done", b: "done"}, "duplicates count once"
    for jid in (a, b, c):
        assert_gone(redis_sync, NAME, jid)
    assert q.bulk_delete([a, b, c]) == dict.fromkeys([a, b, c], "not_found"), "the same call twice"
    x, y, _ = chain(q)
    assert q.bulk_delete([x, y]) == {x: "has_dependents", y: "has_dependents"}, "y's dependent stays: both refused"
    assert_indexes_consistent(redis_sync, NAME, JOB)


def test_a_bulk_delete_of_many_ids_spans_several_calls(q: SyncQueue, redis_sync: redis.Redis) -> None:
    from rjobs import JobRequest

    ids = [o.id for o in q.enqueue_many([JobRequest(type="t", user_id="u1") for _ in range(1200)])]
    outcomes = q.bulk_delete(ids + ids[:10], user_id="u1")
    assert len(outcomes) == 1200 and set(outcomes.values()) == {"done"}
    assert q.counts() == dict.fromkeys(JOB.states, 0)
    assert not redis_sync.exists(q.backend.keys.owner("u1"))
    assert_indexes_consistent(redis_sync, NAME, JOB)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_force_deleting_a_job_a_worker_holds(url: str, redis_sync: redis.Redis) -> None:
    started, stopped = anyio.Event(), anyio.Event()

    async def slow(ctx: JobContext, params: Any) -> None:
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            stopped.set()

    async with Queue("held", url=url) as queue:
        worker = Worker(queue, [slow], lease=1.5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            job = (await queue.enqueue("slow", user_id="u1")).id
            with anyio.fail_after(10):
                await started.wait()
            k = queue.backend.keys

            def seen() -> Any:  # what a refused delete would change (the heartbeats move the deadline)
                return redis_sync.hmget(k.job(job), "status", "token"), redis_sync.lrange(k.job_history(job), 0, -1)

            before = seen()
            with pytest.raises(JobRunning):
                await queue.delete(job)
            assert seen() == before and redis_sync.zscore(k.leases, job) is not None
            assert await queue.delete(job, force=True, user_id="u1") == 1
            with anyio.fail_after(10):
                await stopped.wait()  # the next heartbeat answered 'lost': the worker stopped it
            assert worker.stats.lease_lost >= 1
            worker.stop()
        assert_gone(redis_sync, "held", job)


@pytest.mark.anyio
@pytest.mark.timeout(90)
async def test_deletes_racing_a_worker_finishing_the_jobs(url: str, redis_sync: redis.Redis) -> None:
    """Whichever comes first, the job is gone in the end and every invariant holds: a finish
    after the delete finds no job (and writes nothing), a delete after the finish removes the
    finished job."""

    async def quick(ctx: JobContext, params: Any) -> int:
        await anyio.sleep(0.001 * (params["i"] % 5))
        return 1

    async with Queue("race", url=url) as queue:
        worker = Worker(queue, [quick], concurrency=8, lease=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            ids = [(await queue.enqueue("quick", {"i": i})).id for i in range(60)]
            left = set(ids)
            deadline = time.monotonic() + 30
            while left and time.monotonic() < deadline:
                for jid, outcome in (await queue.bulk_delete(sorted(left), force=True)).items():
                    if outcome in ("done", "not_found"):
                        left.discard(jid)
            worker.stop()
        assert not left
        for jid in ids:
            assert not redis_sync.exists(queue.backend.keys.job(jid))
        assert_indexes_consistent(redis_sync, "race", JOB)
