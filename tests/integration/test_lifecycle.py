"""Lifecycle features against real servers: scheduling, priority changes, dependencies,
review, comments and provenance, metadata, wait, bulk operations."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis

from rjobs import (
    DependencyError,
    JobExists,
    JobNotFound,
    JobRequest,
    Queue,
    StateConflict,
    SyncQueue,
    WaitTimeout,
    machines,
)
from rjobs.store.scripts import MoveRequest
from tests.helpers import keyspace_fingerprint
from tests.invariants import assert_indexes_consistent

JOB, TASK = machines.JOB, machines.TASK


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("life", url, actor="client") as queue:
        yield queue


def claim(q: SyncQueue, n: int = 1, worker: str = "w1") -> list[Any]:
    return q.backend.run(q.backend.scripts.claim(worker, n, 30_000)).jobs


def finish(q: SyncQueue, job: Any, result: Any = None) -> None:
    q.complete(job.id, result, token=job.token)


# -- scheduling -----------------------------------------------------------------------------------
def test_delay_then_automatic_promotion(q: SyncQueue, redis_sync: redis.Redis) -> None:
    out = q.enqueue("t", delay=0.3)
    assert out.status == "scheduled"
    job = q.get(out.id)
    assert job.scheduled_ms is not None and job.scheduled_ms >= job.created_ms + 250
    assert claim(q) == [], "not due yet"
    result = q.backend.run(q.backend.scripts.claim("w1", 1, 30_000))
    assert result.next_due_ms == job.scheduled_ms, "claim tells an idle worker when to wake"
    time.sleep(0.35)
    got = claim(q)
    assert [j.id for j in got] == [out.id]
    assert [e.to_state for e in q.events(out.id)] == ["scheduled", "queued", "processing"]
    assert_indexes_consistent(redis_sync, "life", JOB)


def test_run_at_absolute_time(q: SyncQueue) -> None:
    out = q.enqueue("t", run_at=time.time() + 3600)
    assert out.status == "scheduled"
    assert q.enqueue("t", run_at=time.time() - 10).status == "queued", "a past time runs now"


def test_task_pending_then_queue_or_schedule(url: str) -> None:
    with SyncQueue("tasks", url, machine=TASK) as q:
        a = q.enqueue("t", hold=True)
        b = q.enqueue("t", hold=True)
        assert (a.status, b.status) == ("pending", "pending")
        assert q.transition(a.id, "queued").status == "queued"
        scheduled = q.transition(b.id, "scheduled", delay=3600)
        assert scheduled.status == "scheduled" and scheduled.scheduled_ms is not None


def test_change_priority_of_a_waiting_job(q: SyncQueue, redis_sync: redis.Redis) -> None:
    first = q.enqueue("t").id
    second = q.enqueue("t").id
    assert q.set_priority(second, "critical") == 5
    assert q.get(second).priority == 10
    assert [j.id for j in claim(q, 2)] == [second, first]
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(StateConflict, match="processing"):
        q.set_priority(second, "low")
    assert keyspace_fingerprint(redis_sync) == before
    assert [e.event for e in q.events(second)][1] == "priority"


# -- dependencies -----------------------------------------------------------------------------------
def test_dependents_wait_then_run_when_all_succeed(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a, b = q.enqueue("a").id, q.enqueue("b").id
    c = q.enqueue("c", depends_on=[a, b])
    assert c.status == "waiting" and q.get(c.id).deps_pending == 2
    ja, jb = claim(q, 2)
    finish(q, ja)
    assert q.get(c.id).status == "waiting"
    finish(q, jb)
    job = q.get(c.id)
    assert job.status == "queued" and job.deps_pending == 0, "released by the script that finished b"
    last = q.events(c.id)[-1]
    assert (last.to_state, last.actor, last.message) == ("queued", "rjobs", "dependencies done")
    assert_indexes_consistent(redis_sync, "life", JOB)


def test_dependency_already_done_or_failed(q: SyncQueue) -> None:
    done = q.enqueue("t").id
    finish(q, claim(q)[0])
    assert q.enqueue("t", depends_on=[done]).status == "queued"
    bad = q.enqueue("t").id
    q.cancel(bad, "no")
    with pytest.raises(DependencyError, match="cancelled"):
        q.enqueue("t", depends_on=[bad])


@pytest.mark.parametrize(("policy", "expected"), [("fail", "failed"), ("cancel", "cancelled")])
def test_failure_cascades_down_a_chain(q: SyncQueue, redis_sync: redis.Redis, policy: str, expected: str) -> None:
    root = q.enqueue("root").id
    mid = q.enqueue("mid", depends_on=[root], on_dependency_failure=policy).id
    leaf = q.enqueue("leaf", depends_on=[mid], on_dependency_failure=policy).id
    job = claim(q)[0]
    q.fail(root, "broken", token=job.token)
    for dep_id, cause in ((mid, root), (leaf, mid)):
        dep = q.get(dep_id)
        assert dep.status == expected
        assert dep.error is not None and dep.error.code == "dependency_failed" and cause in dep.error.message
    assert_indexes_consistent(redis_sync, "life", JOB)


def test_task_dependencies_use_blocked(url: str) -> None:
    with SyncQueue("tasks", url, machine=TASK) as q:
        a = q.enqueue("t").id
        b = q.enqueue("t", depends_on=[a])
        assert b.status == "blocked"
        q.cancel(a, "sprint cancelled")
        blocked = q.get(b.id)
        assert blocked.status == "cancelled", "TASK has no blocked -> failed edge, so dependents are cancelled"


# -- review, comments, provenance, metadata -----------------------------------------------------------
def test_review_then_approve_or_send_back(url: str) -> None:
    with SyncQueue("tasks", url, machine=TASK, actor="lead") as q:
        ids = [q.enqueue("t").id for _ in range(2)]
        held = {j.id: j for j in claim(q, 2, "agent_1")}  # type: ignore[arg-type]
        for job_id in ids:
            q.backend.run(
                q.backend.scripts.finish(
                    "agent_1", [MoveRequest(job_id, "review", token=held[job_id].token, msg="please check")]
                )
            )
            assert q.get(job_id).status == "review"
        approved = q.complete(ids[0], {"summary": "ok"})
        assert approved.status == "completed" and approved.result == {"summary": "ok"}
        back = q.transition(ids[1], "in_progress", reason="needs another pass")
        assert back.status == "in_progress" and back.worker == "lead"
        assert q.events(ids[1])[-1].message == "needs another pass"


def test_comments_and_provenance(q: SyncQueue) -> None:
    job_id = q.enqueue("t", actor="web-frontend").id
    q.comment(job_id, "Found an edge case, handling it", actor="agent_1")
    job = claim(q, 1, "worker-7")[0]
    q.comment(job_id, "from the lease holder", actor="worker-7", token=job.token)
    events = q.events(job_id)
    comments = [(e.actor, e.message) for e in events if e.event == "comment"]
    assert comments == [("agent_1", "Found an edge case, handling it"), ("worker-7", "from the lease holder")]
    assert events[0].actor == "web-frontend" and events[-1].actor == "worker-7"
    assert all(e.ts_ms > 0 for e in events)


def test_metadata_counts_executions_and_retries(q: SyncQueue) -> None:
    job_id = q.enqueue("t", max_attempts=3).id
    first = claim(q)[0]
    q.transition(job_id, "queued", token=first.token)  # lease lost
    second = claim(q)[0]
    q.fail(job_id, "x", token=second.token)
    q.retry(job_id)
    third = claim(q)[0]
    finish(q, third)
    job = q.get(job_id)
    assert (job.executions, job.attempt, job.retry_count) == (3, 1, 1)
    assert job.started_ms is not None and job.completed_ms is not None and job.duration_ms is not None
    assert job.duration_ms == job.completed_ms - job.started_ms


# -- wait -----------------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_wait_blocks_on_the_stream(url: str) -> None:
    async with Queue("waits", url) as q:
        ok = (await q.enqueue("t")).id
        bad = (await q.enqueue("t")).id

        async def work() -> None:
            await anyio.sleep(0.2)
            jobs = (await q.backend.run(q.backend.scripts.claim("w", 2, 30_000))).jobs
            await q.complete(ok, {"answer": 42}, token=jobs[0].token)
            await q.fail(bad, {"code": "RATE_LIMIT", "message": "slow down"}, token=jobs[1].token)

        async with anyio.create_task_group() as tg:
            tg.start_soon(work)
            started = time.monotonic()
            outcome = await q.wait(ok, timeout=5)
            assert 0.15 < time.monotonic() - started < 2
        assert outcome.success and outcome.output == {"answer": 42} and outcome.status == "completed"
        failed = await q.wait(bad, timeout=1)
        assert not failed.success and failed.error is not None and failed.error.code == "RATE_LIMIT"
        pending = (await q.enqueue("t")).id
        with pytest.raises(WaitTimeout):
            await q.wait(pending, timeout=0.2)


@pytest.mark.anyio
async def test_wait_on_a_job_deleted_meanwhile_raises_not_found_within_a_second(url: str) -> None:
    async with Queue("gone", url) as q:
        job_id = (await q.enqueue("t")).id

        async def delete() -> None:
            await anyio.sleep(0.1)
            await q.client.delete(q.backend.keys.job(job_id), q.backend.keys.job_history(job_id))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            tg.start_soon(delete)
            with pytest.raises(JobNotFound):
                await q.wait(job_id, timeout=10)
        assert time.monotonic() - started < 2.5, "noticed at the next re-check, not at the timeout"


def test_sync_wait(q: SyncQueue) -> None:
    job_id = q.enqueue("t").id
    job = claim(q)[0]
    other = SyncQueue("life", client=q.client)
    threading.Timer(0.2, lambda: other.complete(job_id, "done", token=job.token)).start()
    outcome = q.wait(job_id, timeout=5)
    assert outcome.success and outcome.output == "done"


# -- bulk -------------------------------------------------------------------------------------------------
def test_enqueue_many_and_bulk_operations(q: SyncQueue, redis_sync: redis.Redis) -> None:
    outs = q.enqueue_many([JobRequest(type="t", params={"i": i}) for i in range(1200)])
    assert len({o.id for o in outs}) == 1200 and q.counts()["queued"] == 1200
    ids = [o.id for o in outs]
    running = claim(q)[0]
    q.complete(running.id, None, token=running.token)
    result = q.bulk_cancel([*ids[:600], "missing"], "Sprint cancelled")
    assert result[running.id] == "invalid_transition" and result["missing"] == "not_found"
    assert sum(v == "done" for v in result.values()) == 599
    moved = q.bulk_transition(ids[600:], "scheduled")
    assert set(moved.values()) == {"invalid"}, "a delayed target needs a time: rejected per id"
    assert q.get(ids[700]).status == "queued"
    assert q.bulk_transition(ids[600:610], "cancelled") == {i: "done" for i in ids[600:610]}
    assert_indexes_consistent(redis_sync, "life", JOB)


def test_enqueue_many_one_call_mixes_states_dependencies_and_dedupe(q: SyncQueue, redis_sync: redis.Redis) -> None:
    """One script call creates ready, delayed, waiting and replaced jobs together: the ready set and
    state indexes it writes in one go at the end must match what per-job writes would give."""
    q.enqueue("t", job_id="parent", priority="low")
    outs = q.enqueue_many(
        [
            JobRequest(type="t", job_id="low", priority="low"),
            JobRequest(type="t", job_id="first", dedupe_key="k", dedupe="replace"),
            JobRequest(type="t", job_id="urgent", priority="urgent"),
            JobRequest(type="t", job_id="later", delay=60),
            JobRequest(type="t", job_id="child", depends_on=("parent",)),
            JobRequest(type="t", job_id="second", dedupe_key="k", dedupe="replace"),
            JobRequest(type="t", job_id="kept", dedupe_key="k"),
            JobRequest(type="t", job_id="normal"),
        ]
    )
    assert [(o.id, o.outcome, o.status) for o in outs] == [
        ("low", "created", "queued"),
        ("first", "created", "queued"),
        ("urgent", "created", "queued"),
        ("later", "created", "scheduled"),
        ("child", "created", "waiting"),
        ("second", "created", "queued"),
        ("second", "kept", "queued"),
        ("normal", "created", "queued"),
    ]
    assert outs[5].previous_id == "first" and outs[5].stale_cancelled
    assert q.get("first").status == "cancelled"
    assert q.counts() == {**{s: 0 for s in JOB.states}, "queued": 5, "scheduled": 1, "waiting": 1, "cancelled": 1}
    assert_indexes_consistent(redis_sync, "life", JOB)
    claimed = claim(q, 10)
    assert [j.id for j in claimed] == ["urgent", "second", "normal", "parent", "low"], "priority, then enqueue order"
    finish(q, claimed[3])
    assert q.get("child").status == "queued", "the dependent made in the batch is released"
    assert_indexes_consistent(redis_sync, "life", JOB)


def test_enqueue_many_rejects_the_same_job_id_twice_and_writes_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("t", job_id="before")
    keyspace = keyspace_fingerprint(redis_sync)
    with pytest.raises(JobExists):
        q.enqueue_many([JobRequest(type="t", job_id="twice"), JobRequest(type="t", job_id="other"),
                        JobRequest(type="t", job_id="twice")])  # fmt: skip
    assert keyspace_fingerprint(redis_sync) == keyspace
