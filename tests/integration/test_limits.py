"""Concurrency groups and rate limits: decided inside the claim script with Redis time, so they hold
across worker processes; a job over a limit stays ready (no attempt spent, never failed) and other
types and groups go on; claims are fair across groups. Real servers, real worker processes, the
keyspace checked after each promise."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rjobs import Actor, Cron, JobRequest, Retry, SyncQueue, ValidationError, machines
from rjobs.client.queue import Queue
from rjobs.store.scripts import load_script
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint, script_for
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("lim", url, actor="ops") as queue:
        yield queue


def claim(q: SyncQueue, n: int = 10, worker: str = "w1", types: list[str] | None = None) -> list[Any]:
    return q.backend.run(q.backend.scripts.claim(worker, n, 30_000, types or ["t"])).jobs


def test_a_group_at_its_cap_waits_and_a_finished_job_frees_its_slot(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.set_limit(group="A", concurrency=2)
    a = [q.enqueue("t", group="A").id for _ in range(4)]
    got = claim(q)
    assert [j.id for j in got] == a[:2], "two of A at most"
    assert claim(q) == [], "A is at its cap: nothing more"
    waiting = q.get(a[2])
    assert waiting.status == JOB.ready and waiting.attempt == 0 and waiting.group == "A"
    assert q.limits()["limits"]["g:A"]["running"] == 2
    assert_indexes_consistent(redis_sync, "lim", JOB)
    q.complete(got[0].id, "ok", token=got[0].token)
    assert [j.id for j in claim(q)] == [a[2]], "the finished job gave its slot back"
    q.cancel(got[1].id)  # an operator's cancel of a running job gives it back too
    assert [j.id for j in claim(q)] == [a[3]]
    assert_indexes_consistent(redis_sync, "lim", JOB)


def test_a_lease_that_expires_gives_its_slot_back(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.set_limit(type="t", concurrency=1)
    first, second = q.enqueue("t").id, q.enqueue("t").id
    assert [j.id for j in claim(q)] == [first]
    assert claim(q) == []
    redis_sync.zadd(q.backend.keys.leases, {first: 1})  # its holder died long ago
    q.backend.run(q.backend.scripts.reap(100, 3, 0, 60_000))
    assert q.get(first).status == JOB.ready
    assert len(claim(q, 2)) == 1, "one slot again, whichever job takes it"
    assert_indexes_consistent(redis_sync, "lim", JOB)
    assert q.get(second).attempt + q.get(first).attempt == 2


def test_claims_take_groups_in_turn(q: SyncQueue) -> None:
    burst = [JobRequest(type="t", group="A", params={"i": i}) for i in range(50)]
    q.enqueue_many(burst)
    b = q.enqueue("t", group="B").id
    c = q.enqueue("t", group="C").id
    ids = [j.id for j in claim(q, 3)]
    assert b in ids and c in ids, "B and C do not wait behind A's burst"
    got = claim(q, 6)
    assert len(got) == 6 and all(j.group == "A" for j in got)


def test_a_rate_holds_across_claims_and_opens_with_the_window(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.set_limit(group="api", rate=3, per=0.5)
    for _ in range(7):
        q.enqueue("t", group="api")
    other = q.enqueue("u").id
    assert len(claim(q, 10)) == 3
    result = q.backend.run(q.backend.scripts.claim("w1", 10, 30_000, ["t", "u"]))
    assert [j.id for j in result.jobs] == [other], "another type goes on"
    assert result.next_due_ms is not None, "an idle worker is told when the window opens"
    time.sleep(0.55)
    assert len(claim(q, 10)) == 3
    assert_indexes_consistent(redis_sync, "lim", JOB)


def test_backoff_holds_a_group_and_needs_a_limit(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.set_limit(group="api", rate=100, per=1)
    q.enqueue("t", group="api")
    until = q.backoff(0.3, group="api")
    assert until > 0 and claim(q) == []
    time.sleep(0.35)
    assert len(claim(q)) == 1
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError, match="has no limits"):
        q.backoff(1, group="unknown")
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"group": "A", "concurrency": 0},
        {"group": "A", "concurrency": -1},
        {"group": "A", "rate": 0, "per": 1},
        {"group": "A", "rate": 5},
        {"group": "A", "rate": 5, "per": float("nan")},
        {"group": "A", "rate": 5, "per": float("inf")},
        {"group": "A", "rate": 5, "per": 0},
        {"group": "A", "concurrency": 1.5},
        {"group": "A"},
        {"concurrency": 1},
        {"group": "A", "type": "t", "concurrency": 1},
        {"group": "no spaces", "concurrency": 1},
    ],
)
def test_bad_limits_are_refused_and_write_nothing(
    q: SyncQueue, redis_sync: redis.Redis, kwargs: dict[str, Any]
) -> None:
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError):
        q.set_limit(**kwargs)
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("set_limit", ["g:A", "0", "5", "0"]),
        ("set_limit", ["g:A", "-1", "0", "0"]),
        ("set_limit", ["g:A", "1", "0", "1000"]),
        ("set_limit", ["x:A", "1", "0", "0"]),
        ("set_limit", ["g:", "1", "0", "0"]),
        ("set_limit", ["g:A", "nan", "0", "0"]),
        ("set_limit", ["g:A", "1", "0"]),
        ("backoff", ["g:A", "0"]),
        ("backoff", ["g:A", "inf"]),
        ("backoff", ["g:none", "1000"]),
    ],
)
def test_raw_limit_scripts_with_bad_arguments_write_nothing(
    q: SyncQueue, redis_sync: redis.Redis, script: str, argv: list[str]
) -> None:
    q.set_limit(group="A", concurrency=1)
    before = keyspace_fingerprint(redis_sync)
    source, _ = script_for(redis_sync, load_script(script))
    k = q.backend.keys
    with pytest.raises(redis.ResponseError, match="RJ_INVALID"):
        redis_sync.eval(source, 2, k.machine, k.events, k.prefix, *argv)
    assert keyspace_fingerprint(redis_sync) == before


def test_a_bad_group_at_enqueue_writes_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError):
        q.enqueue("t", group="a b")
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_429_pushes_the_whole_group_back(url: str, redis_sync: redis.Redis) -> None:
    calls: list[tuple[str, float]] = []

    async def api(ctx: JobContext, params: Any) -> str:
        calls.append((ctx.job.id, time.monotonic()))
        if params["fail"] and ctx.attempt == 1:
            raise Retry(after=0.6, group=True)
        return "ok"

    async with Queue("api429", url=url) as queue:
        await queue.set_limit(group="svc", rate=1000, per=1)
        first = (await queue.enqueue("api", {"fail": True}, group="svc")).id
        worker = Worker(queue, [api], concurrency=1, lease=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await queue.wait(first, timeout=20)
            worker.stop()
    ((_, t1), (_, t2)) = calls
    assert t2 - t1 >= 0.55
    assert (await _job(url, "api429", first)).attempt == 2


async def _job(url: str, name: str, job_id: str) -> Any:
    async with Queue(name, url=url) as queue:
        return await queue.get(job_id)


def _overlap(jobs: list[Any]) -> int:
    """The most jobs running at once, from their recorded start and end (server ms)."""
    points = sorted([(j.started_ms, 1) for j in jobs] + [(j.completed_ms, -1) for j in jobs])
    now = most = 0
    for _, d in points:
        now += d
        most = max(most, now)
    return most


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_limits_and_fairness_hold_across_worker_processes(url: str, tmp_path: Path, redis_sync: redis.Redis) -> None:
    """Three real worker processes: a group capped at 2 never runs more than 2 at once, a rated
    group never starts more than its rate in any window, and a job of another group enqueued after
    a burst starts within a claim cycle."""
    q = SyncQueue("chaos", url)
    q.set_limit(group="capped", concurrency=2)
    q.set_limit(group="rated", rate=4, per=1.0)
    capped = [o.id for o in q.enqueue_many([JobRequest(type="quick", group="capped", params={"seconds": 0.1})] * 12)]
    rated = [o.id for o in q.enqueue_many([JobRequest(type="quick", group="rated", params={"seconds": 0.01})] * 10)]
    burst = [o.id for o in q.enqueue_many([JobRequest(type="quick", group="burst", params={"seconds": 0.01})] * 1000)]
    late = q.enqueue("quick", {"seconds": 0.01}, group="late").id
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RJOBS_TEST_QUEUE": "chaos", "RJOBS_TEST_CONCURRENCY": "4"}
    command = [sys.executable, "-m", "rjobs", "worker", "tests.workerapp:make_worker", "--url", url]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen(command, env=env, **quiet) for _ in range(3)]
    try:
        deadline = time.monotonic() + 90
        while q.counts()[JOB.success] < len(capped) + len(rated) + len(burst) + 1:
            assert time.monotonic() < deadline, q.counts()
            time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    jobs = {j: q.get(j) for j in [*capped, *rated, *burst, late]}
    assert _overlap([jobs[j] for j in capped]) <= 2
    starts = sorted(jobs[j].started_ms for j in rated)
    assert all(b - a >= 1000 for a, b in zip(starts, starts[4:])), "at most 4 starts in any 1 s window"
    assert all(jobs[j].attempt == 1 for j in jobs), "no attempt spent waiting for a limit"
    late_start = jobs[late].started_ms
    before = [j for j in burst if jobs[j].started_ms < late_start]
    assert len(before) <= 3 * 4 * 2, f"{len(before)} burst jobs started before the late group's job"
    assert_indexes_consistent(redis_sync, "chaos", JOB)
    q.close()


def test_deleting_a_running_capped_job_gives_its_slot_back(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.set_limit(group="A", concurrency=1)
    a, b = q.enqueue("t", group="A").id, q.enqueue("t", group="A").id
    assert [j.id for j in claim(q)] == [a]
    q.delete(a, force=True)
    assert [j.id for j in claim(q)] == [b], "the deleted job's slot is free again"
    assert_indexes_consistent(redis_sync, "lim", JOB)


def test_grouped_jobs_drain_and_an_obliterated_queue_leaves_no_key(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.set_limit(group="A", rate=5, per=1)
    for _ in range(3):
        q.enqueue("t", group="A")
    assert len(claim(q, 1)) == 1  # a mark in the rate window
    assert q.drain() == 2
    assert_indexes_consistent(redis_sync, "lim", JOB)
    q.name_actors(Actor("human", "x", "X"))
    q.set_schedule(Cron("every-minute", "t", every=60))
    q.obliterate(force=True)
    assert redis_sync.keys(q.backend.keys.prefix + "*") == [], "limits, windows, actors, schedules: all gone"
