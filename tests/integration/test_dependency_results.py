"""Results between jobs: a dependent reads what its dependencies returned (ctx.dependency_results,
Queue.dependency_results), with a real worker on the real servers: a fan-in job sums its
dependencies' results, a dependency purged by retention is reported as missing (not an error), and
the reads honour ownership and write nothing."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis

from rjobs import (
    DependencyResults,
    JobNotFound,
    PartitionedQueue,
    QueueConfig,
    Retention,
    SyncQueue,
    Unauthorized,
    ValidationError,
)
from rjobs.client.queue import Queue
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint

SEEN: list[DependencyResults] = []


async def number(ctx: JobContext, params: dict[str, Any]) -> int:
    return int(params["n"])


async def total(ctx: JobContext, params: Any) -> int:
    results = await ctx.dependency_results()
    SEEN.append(results)
    return sum(results.values())


def total_sync(ctx: JobContext, params: Any) -> dict[str, Any]:
    results = ctx.dependency_results_sync()
    return {"sum": sum(results.values()), "missing": list(results.missing)}


def drain(name: str, url: str, config: QueueConfig | None = None) -> None:
    async def go() -> None:
        async with Queue(name, url, config=config) as q:
            await Worker(q, [number, total, total_sync], burst=True, concurrency=4).run()

    anyio.run(go)


def test_a_fan_in_job_sums_its_dependencies_results(url: str, redis_sync: redis.Redis) -> None:
    SEEN.clear()
    with SyncQueue("fanin", url) as q:
        deps = [q.enqueue("number", {"n": n}).id for n in (1, 2, 39)]
        fan = q.enqueue("total", depends_on=deps).id
        fan_sync = q.enqueue("total_sync", depends_on=deps[:2]).id
        drain("fanin", url)
        assert q.get(fan).result == 42
        assert q.get(fan_sync).result == {"sum": 3, "missing": []}
        assert list(SEEN[0]) == deps, "in the order the job lists them"
        assert SEEN[0].missing == () and SEEN[0].unfinished == {}
        before = keyspace_fingerprint(redis_sync)
        read = q.dependency_results(fan)
        assert read == {deps[0]: 1, deps[1]: 2, deps[2]: 39}
        assert q.dependency_results(deps[0]) == {}, "no dependencies: nothing"
        assert keyspace_fingerprint(redis_sync) == before, "a read writes nothing"


def test_a_purged_dependency_is_reported_missing_not_an_error(url: str) -> None:
    config = QueueConfig(retention=Retention(success=0))
    with SyncQueue("fanin-purged", url, config=config) as q:
        deps = [q.enqueue("number", {"n": n}).id for n in (1, 2)]
        fan = q.enqueue("total_sync", depends_on=deps).id
        for _ in deps:  # the dependencies succeed, and retention purges them before the dependent runs
            job = q.backend.run(q.backend.scripts.claim("w1", 1, 30_000, ["number"])).jobs[0]
            q.complete(job.id, 1, token=job.token)
        q.backend.run(q.backend.scripts.reap(100, 3, 1000, 60_000))
        assert q.get(fan).status == "queued"
        with pytest.raises(JobNotFound):
            q.get(deps[0])
        drain("fanin-purged", url, config)
        outcome = q.wait(fan, timeout=10)
        assert outcome.success and outcome.output == {"sum": 0, "missing": deps}


def test_unfinished_dependencies_and_ownership(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("fanin-owners", url) as q:
        mine = q.enqueue("number", {"n": 1}, user_id="alice").id
        shared = q.enqueue("number", {"n": 2}).id
        theirs = q.enqueue("number", {"n": 3}, user_id="bob").id
        fan = q.enqueue("total", depends_on=[mine, shared], user_id="alice").id
        nosy = q.enqueue("total", depends_on=[mine, theirs], user_id="alice").id
        before = keyspace_fingerprint(redis_sync)
        waiting = q.dependency_results(fan, user_id="alice")
        assert (dict(waiting), waiting.missing, waiting.unfinished) == ({}, (), {mine: "queued", shared: "queued"})
        with pytest.raises(Unauthorized):
            q.dependency_results(fan, user_id="bob")
        with pytest.raises(Unauthorized, match="dependency"):
            q.dependency_results(nosy, user_id="alice")
        assert set(q.dependency_results(nosy).unfinished) == {mine, theirs}, "no user_id: no ownership check"
        with pytest.raises(JobNotFound):
            q.dependency_results("no-such-job")
        for bad in ("bad id!", ""):
            with pytest.raises(ValidationError):
                q.dependency_results(bad)
        with pytest.raises(ValidationError):
            q.dependency_results(fan, user_id="not a user")
        assert keyspace_fingerprint(redis_sync) == before


def test_a_job_of_one_user_cannot_read_another_users_results(url: str) -> None:
    with SyncQueue("fanin-fenced", url) as q:
        theirs = q.enqueue("number", {"n": 3}, user_id="bob").id
        nosy = q.enqueue("total", depends_on=[theirs], user_id="alice").id
        drain("fanin-fenced", url)
        outcome = q.wait(nosy, timeout=10)
        assert not outcome.success and outcome.error is not None and outcome.error.code == "unauthorized"


def test_a_partitioned_queue_reads_on_the_jobs_partition(url: str) -> None:
    async def go() -> None:
        async with PartitionedQueue("fanin-parts", 3, url=url) as pq:
            dep = (await pq.enqueue("number", {"n": 5})).id
            fan = (await pq.enqueue("total", depends_on=[dep])).id
            results = await pq.dependency_results(fan)
            assert results.unfinished == {dep: "queued"}

    anyio.run(go)


def test_a_job_lists_its_dependents(url: str, redis_sync: redis.Redis) -> None:
    """Queue.dependents: the jobs that listed a job in depends_on, sorted, bounded by ``limit``;
    bad input and an unknown job are typed errors that write nothing."""
    with SyncQueue("dependents", url) as q:
        parent = q.enqueue("p").id
        kids = sorted(q.enqueue("k", depends_on=[parent]).id for _ in range(5))
        assert q.dependents(parent) == kids
        assert q.dependents(kids[0]) == []
        two = q.dependents(parent, limit=2)
        assert len(two) == 2 and set(two) <= set(kids) and two == sorted(two)
        before = keyspace_fingerprint(redis_sync)
        for bad in (0, -1, 10_001, True, 1.5, "3"):
            with pytest.raises(ValidationError):
                q.dependents(parent, limit=bad)  # type: ignore[arg-type]
        with pytest.raises(JobNotFound):
            q.dependents("nope")
        with pytest.raises(ValidationError):
            q.dependents("bad id!")
        assert keyspace_fingerprint(redis_sync) == before
