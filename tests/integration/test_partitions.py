"""Partitioned queues on one server (valkey and redis): where jobs go, routing by id, reads of
the logical queue, batches spread over partitions, a worker draining every partition in turn."""

from __future__ import annotations

from collections import Counter

import pytest
import redis

import rjobs
from rjobs.client.partitioned import partition_name
from rjobs.machines import JOB
from rjobs.store.keys import QueueKeys
from tests.invariants import assert_indexes_consistent

pytestmark = pytest.mark.anyio


async def double(ctx: rjobs.JobContext, params: dict[str, int]) -> int:
    """A job function."""
    return params["i"] * 2


def check_partitions(r: redis.Redis, name: str, n: int) -> list[dict[str, int]]:
    """The invariants of every partition, and its jobs per state."""
    return [assert_indexes_consistent(r, partition_name(name, i), JOB) for i in range(n)]


async def test_jobs_spread_over_partitions_and_ids_name_theirs(url: str, redis_sync: redis.Redis) -> None:
    async with rjobs.PartitionedQueue("img", 4, url=url) as q:
        created = [await q.enqueue("double", {"i": i}) for i in range(8)]
        # round-robin, and every id names its partition
        assert Counter(c.id.rsplit("-p", 1)[1] for c in created) == {"0": 2, "1": 2, "2": 2, "3": 2}
        for c in created:
            part = int(c.id.rsplit("-p", 1)[1])
            assert redis_sync.exists(QueueKeys(partition_name("img", part)).job(c.id)) == 1
            assert (await q.get(c.id)).status == "queued"
        # reads of the logical queue read every partition
        assert (await q.counts())["queued"] == 8
        listed = await q.list("queued", limit=5)
        assert len(listed) == 5 and [j.created_ms for j in listed] == sorted(
            (j.created_ms for j in listed), reverse=True
        )
        stats = await q.stats()
        assert stats["counts"]["queued"] == 8 and len(stats["partitions"]) == 4
        # a worker drains every partition; waits are routed by id
        await rjobs.Worker(q, functions={"double": double}, burst=True).run()
        outcome = await q.wait(created[5].id, timeout=5)
        assert (outcome.success, outcome.output) == (True, 10)
        assert (await q.counts())["completed"] == 8
    assert [c["completed"] for c in check_partitions(redis_sync, "img", 4)] == [2, 2, 2, 2]


async def test_dedupe_keys_dependencies_and_explicit_ids_choose_one_partition(
    url: str, redis_sync: redis.Redis
) -> None:
    async with rjobs.PartitionedQueue("dd", 3, url=url) as q:
        first = await q.enqueue("double", {"i": 1}, dedupe_key="user:7")
        kept = await q.enqueue("double", {"i": 1}, dedupe_key="user:7")
        assert (kept.outcome, kept.id) == ("kept", first.id)
        replaced = await q.enqueue("double", {"i": 2}, dedupe_key="user:7", dedupe="replace")
        assert replaced.previous_id == first.id and replaced.stale_cancelled  # atomic: one partition
        assert q.route(replaced.id) is q.for_key("user:7")
        # a dependent goes where its dependency is
        child = await q.enqueue("double", {"i": 3}, depends_on=[replaced.id])
        assert q.route(child.id) is q.route(replaced.id) and child.status == "waiting"
        # an explicit id goes where it names (or hashes); the same id twice is refused
        named = await q.enqueue("double", {"i": 4}, job_id="report-p2")
        assert q.route(named.id) is q.partitions[2]
        with pytest.raises(rjobs.JobExists):
            await q.enqueue("double", {"i": 4}, job_id="report-p2")
        free = await q.enqueue("double", {"i": 5}, job_id="report")
        assert (await q.get("report")).id == free.id
        # what cannot be atomic is refused before anything is written
        before = redis_sync.dbsize()
        other = next(i for i in range(3) if q.partitions[i] is not q.route(replaced.id))
        with pytest.raises(rjobs.ValidationError, match="one partition"):
            await q.enqueue("double", {"i": 6}, depends_on=[replaced.id, f"x-p{other}"])
        with pytest.raises(rjobs.ValidationError, match="partition 7 of 3"):
            await q.get("abc-p7")
        assert redis_sync.dbsize() == before
        await q.cancel(child.id)
        assert (await q.get(child.id)).status == "cancelled"
    check_partitions(redis_sync, "dd", 3)


async def test_enqueue_many_across_partitions_reports_per_request(url: str, redis_sync: redis.Redis) -> None:
    async with rjobs.PartitionedQueue("many", 2, url=url) as q:
        outcomes = await q.enqueue_many([rjobs.JobRequest(type="double", params={"i": i}) for i in range(1000)])
        assert len(outcomes) == 1000 and all(o.created for o in outcomes)
        assert (await q.counts())["queued"] == 1000
        taken = await q.enqueue("double", {"i": 0}, job_id="dup-p1")
        # partition 1 refuses its call (an explicit id that exists); partition 0's call was written
        reqs = [
            rjobs.JobRequest(type="double", job_id="new-p0"),
            rjobs.JobRequest(type="double", job_id="dup-p1"),
            rjobs.JobRequest(type="double", job_id="other-p1"),
        ]
        mixed = await q.enqueue_many(reqs)
        assert [o.outcome for o in mixed] == ["created", "refused", "refused"]
        assert "dup-p1" in (mixed[1].error or "") and taken.id == "dup-p1"
        assert (await q.get("new-p0")).status == "queued"
        with pytest.raises(rjobs.JobNotFound):
            await q.get("other-p1")  # refused: nothing of it was written
        # one partition involved: its refusal is raised, nothing written
        with pytest.raises(rjobs.JobExists):
            await q.enqueue_many([rjobs.JobRequest(type="double", job_id="dup-p1")])
        done = await q.bulk_cancel([o.id for o in outcomes[:10]] + ["nothere-p1"])
        assert Counter(done.values()) == {"done": 10, "not_found": 1}
    check_partitions(redis_sync, "many", 2)


def test_the_blocking_twin_routes_the_same_way(url: str, redis_sync: redis.Redis) -> None:
    with rjobs.SyncPartitionedQueue("sync", 3, url=url) as q:
        job = q.enqueue("double", {"i": 1}, dedupe_key="k")
        assert q.route(job.id) is q.for_key("k") and q.get(job.id).status == "queued"
        assert q.counts()["queued"] == 1
    with pytest.raises(rjobs.ValidationError):
        rjobs.SyncPartitionedQueue("bad", 0, url=url)
    with pytest.raises(rjobs.ValidationError):
        rjobs.SyncPartitionedQueue("bad#1", 2, url=url)


async def test_delete_drain_filters_and_obliterate_span_the_partitions(url: str, redis_sync: redis.Redis) -> None:
    async with rjobs.PartitionedQueue("gone", 3, url=url) as q:
        ids = [(await q.enqueue("t", {"i": i})).id for i in range(12)]
        assert len({i.rsplit("-p", 1)[1] for i in ids}) == 3, "spread over the partitions"
        assert await q.delete(ids[0]) == 1
        outcomes = await q.bulk_delete([ids[1], ids[2], ids[1], "nope-p1"])
        assert outcomes[ids[1]] == outcomes[ids[2]] == "done" and outcomes["nope-p1"] == "not_found"
        other = (await q.enqueue("u")).id
        assert [j.id for j in await q.list("queued", type="u")] == [other]
        first = q.route(ids[3])
        job = await first.transition(ids[3], "processing", lease=60)
        with pytest.raises(rjobs.JobRunning):
            await q.obliterate()
        assert (await q.get(ids[3])).status == "processing", "refused before any partition was touched"
        assert await q.drain() == 9 - 1 + 1, "every waiting job of every partition (not the running one)"
        await first.cancel(job.id)
        assert await q.obliterate() >= 1
        for i in range(3):
            assert redis_sync.keys(QueueKeys(partition_name("gone", i)).prefix + "*") == []
