"""Routing by job type: ready jobs wait in one lane per type; a claim takes only the types its
worker runs, merged across lanes by priority then FIFO; a type no live worker runs waits (never
failed, no attempt spent, never in the way of other types) and shows in stats. Checked against
the real servers, with the keyspace after each promise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rjobs import SyncQueue, machines
from rjobs.client.queue import Queue
from rjobs.errors import ValidationError
from rjobs.store.scripts import load_script
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker
from tests.helpers import job_history, keyspace_fingerprint, script_for
from tests.integration.test_cli import cli_env
from tests.integration.test_worker import running
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("lanes", url, actor="client") as queue:
        yield queue


def claim(q: SyncQueue, types: list[str] | None, n: int = 10, worker: str = "w1") -> list[Any]:
    return q.backend.run(q.backend.scripts.claim(worker, n, 30_000, types)).jobs


def test_a_claim_takes_only_the_types_it_runs(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a, b = q.enqueue("a").id, q.enqueue("b").id
    assert [j.id for j in claim(q, ["b"])] == [b]
    assert claim(q, ["b", "c"]) == []
    job = q.get(a)
    assert job.status == JOB.ready and job.attempt == 0 and [e.event for e in q.events(a)] == ["created"]
    assert redis_sync.zrange(q.backend.keys.lane("a"), 0, -1) == [a.encode()]
    assert not redis_sync.exists(q.backend.keys.lane("b")), "an emptied lane leaves no key"
    assert_indexes_consistent(redis_sync, "lanes", JOB)


def test_lanes_merge_by_priority_then_fifo(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a1 = q.enqueue("a").id
    b1 = q.enqueue("b", priority=7).id
    a2 = q.enqueue("a", priority=7).id
    c1 = q.enqueue("c", priority=10).id
    b2 = q.enqueue("b").id
    assert [j.id for j in claim(q, ["a", "b"], n=3)] == [b1, a2, a1]
    assert [j.id for j in claim(q, ["a", "b", "b"], n=3)] == [b2], "a type listed twice counts once"
    assert [j.id for j in claim(q, None)] == [c1], "'*' takes every type"
    assert_indexes_consistent(redis_sync, "lanes", JOB)


def test_a_priority_change_reranks_within_the_lane(q: SyncQueue) -> None:
    first, second = q.enqueue("a").id, q.enqueue("a").id
    q.set_priority(second, 9)
    assert [j.id for j in claim(q, ["a"], n=1)] == [second]
    assert [j.id for j in claim(q, ["a"], n=1)] == [first]


def test_due_delayed_jobs_are_promoted_into_their_lane_by_any_claim(q: SyncQueue, redis_sync: redis.Redis) -> None:
    other = q.enqueue("other", delay=0.05).id
    mine = q.enqueue("mine", delay=0.05).id
    anyio.run(anyio.sleep, 0.1)
    assert [j.id for j in claim(q, ["mine"])] == [mine]
    assert q.get(other).status == JOB.ready, "promoted, not claimed by a worker that does not run it"
    assert redis_sync.zrange(q.backend.keys.lane("other"), 0, -1) == [other.encode()]
    assert redis_sync.llen(q.backend.keys.wake("other")) == 1, "its lane's line was woken"
    assert_indexes_consistent(redis_sync, "lanes", JOB)


def test_an_enqueue_wakes_only_its_own_lane(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("a")
    q.enqueue("a")
    k = q.backend.keys
    assert redis_sync.llen(k.wake("a")) == 1, "at most one token per line"
    assert not redis_sync.exists(k.wake("b"))
    assert [t for t, _ in redis_sync.zrange(k.lanes, 0, -1, withscores=True)] == [b"a"]


def test_stale_lanes_leave_the_index(q: SyncQueue, redis_sync: redis.Redis) -> None:
    k = q.backend.keys
    q.enqueue("kept")
    redis_sync.zadd(k.lanes, {"gone": 0, "kept": 0})  # long unserved; "gone" has no job left
    redis_sync.lpush(k.wake("gone"), "1")
    q.backend.run(q.backend.scripts.reap(10, 3, 0, 60_000))
    assert redis_sync.zrange(k.lanes, 0, -1) == [b"kept"], "an empty stale lane is dropped, a waiting one kept"
    assert not redis_sync.exists(k.wake("gone")) and redis_sync.exists(k.wake("kept")), "with its wake line"


def test_ready_jobs_of_the_layout_before_lanes_move_into_their_lanes(q: SyncQueue, redis_sync: redis.Redis) -> None:
    k = q.backend.keys
    low, high = q.enqueue("a").id, q.enqueue("b", priority=9).id
    for jid, t in ((low, "a"), (high, "b")):  # as an older rjobs left them: one ready set for all
        score = redis_sync.zscore(k.lane(t), jid)
        redis_sync.zrem(k.lane(t), jid)
        redis_sync.zadd(k.prefix + "ready", {jid: score})
    q.backend.run(q.backend.scripts.reap(10, 3, 0, 60_000))
    assert not redis_sync.exists(k.prefix + "ready")
    assert [j.id for j in claim(q, ["a", "b"])] == [high, low]
    assert_indexes_consistent(redis_sync, "lanes", JOB)


@pytest.mark.parametrize(
    "types",
    [
        ["1", "bad type"],
        ["2", "a"],
        ["1001", *["a"] * 1001],
        ["nan"],
        ["-1"],
        ["*", "a"],
        ["1", "x" * 129],
        [],
    ],
)
def test_a_raw_claim_with_bad_types_is_refused_and_writes_nothing(
    q: SyncQueue, redis_sync: redis.Redis, types: list[str]
) -> None:
    q.enqueue("a")
    before = keyspace_fingerprint(redis_sync)
    script = load_script("claim")
    k = q.backend.keys
    with pytest.raises(redis.ResponseError, match="RJ_INVALID"):
        source = script_for(redis_sync, script)[0]
        redis_sync.eval(source, 2, k.machine, k.events, k.prefix, "w1", "5", "30000", "100", "1", *types)
    assert keyspace_fingerprint(redis_sync) == before


def test_the_api_refuses_a_bad_type_for_a_claim(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("a")
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError):
        claim(q, ["no spaces"])
    assert keyspace_fingerprint(redis_sync) == before


def test_stats_name_the_types_no_live_worker_runs(q: SyncQueue) -> None:
    q.enqueue("orphan")
    q.enqueue("orphan")
    q.enqueue("served")
    claim(q, ["served"], n=0)  # a worker that runs "served" came by (and took nothing)
    stats = q.stats()
    assert stats["lanes"] == {"orphan": {"ready": 2, "served": False}, "served": {"ready": 1, "served": True}}
    assert "queue lanes: 2 ready job(s) of type 'orphan', which no live worker runs" in stats["warnings"]
    assert not any("'served'" in w for w in stats["warnings"])


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_workers_with_different_functions_share_a_queue(url: str, redis_sync: redis.Redis) -> None:
    async def resize(ctx: JobContext, params: Any) -> str:
        return "resized"

    async def mail(ctx: JobContext, params: Any) -> str:
        return "mailed"

    async with Queue("shared", url=url) as queue:
        # a job no worker runs yet, at the highest priority and first in line: nobody is held up by it
        orphan = (await queue.enqueue("report", priority=10)).id
        ids = [(await queue.enqueue("resize" if i % 2 else "mail")).id for i in range(20)]
        async with running(
            Worker(queue, [resize], worker_id="images", lease=5), Worker(queue, [mail], worker_id="mailer", lease=5)
        ):
            outcomes = [await queue.wait(j, timeout=20) for j in ids]
            assert all(o.status == JOB.success for o in outcomes)
            for jid, o in zip(ids, outcomes):
                expected = ("resized", "images") if (await queue.get(jid)).type == "resize" else ("mailed", "mailer")
                assert (o.output, job_history(redis_sync, queue.backend.keys.prefix, jid)[1]["actor"]) == expected
            stuck = await queue.get(orphan)
            assert stuck.status == JOB.ready and stuck.attempt == 0, "never claimed, never failed"
            assert (await queue.stats())["lanes"]["report"] == {"ready": 1, "served": False}

            async def report(ctx: JobContext, params: Any) -> str:
                return "reported"

            # a worker that runs it arrives: woken by nothing but its own start, it takes the job
            async with running(Worker(queue, [report], worker_id="reporter", lease=5)):
                done = await queue.wait(orphan, timeout=20)
        assert done.status == JOB.success and done.output == "reported"
        assert (await queue.get(orphan)).attempt == 1
    assert_indexes_consistent(redis_sync, "shared", JOB)


@pytest.mark.timeout(60)
def test_cli_stats_warns_about_a_type_no_worker_runs(q: SyncQueue, url: str, tmp_path: Path) -> None:
    q.enqueue("orphan")
    out = subprocess.run(
        [sys.executable, "-m", "rjobs", "stats", "lanes", "--url", url],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "ready by job type: orphan 1 (no live worker runs it)" in out.stdout
    assert "1 ready job(s) of type 'orphan', which no live worker runs" in out.stdout
