"""Every promise that broke at the edges, one regression test each, against the real servers:
a rejected call writes nothing, no job is lost or finished twice, a stale holder never writes,
every job reaches a final state. Each test checks the keyspace (fingerprint or invariants)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rjobs import (
    DedupeConflict,
    DependencyError,
    JobExists,
    JobRequest,
    LeaseLost,
    LeaseRequired,
    QueueConfig,
    Retention,
    SyncQueue,
    Unauthorized,
    machines,
)
from rjobs.store.scripts import MoveRequest
from tests.helpers import job_history, keyspace_fingerprint, lease_number
from tests.invariants import assert_indexes_consistent

JOB, TASK = machines.JOB, machines.TASK


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("edges", url, actor="client") as queue:
        yield queue


def claim(q: SyncQueue, n: int = 1, worker: str = "w1", lease_ms: int = 30_000) -> list[Any]:
    return q.backend.run(q.backend.scripts.claim(worker, n, lease_ms)).jobs


def reap(q: SyncQueue) -> tuple[int, int, int]:
    return q.backend.run(q.backend.scripts.reap(1000, 3, 1000, 60_000))


def expire_lease(r: redis.Redis, q: SyncQueue, job_id: str) -> None:
    """Make the job's lease due now (as if its holder stopped renewing it long ago)."""
    r.zadd(q.backend.keys.leases, {job_id: 1})


# -- (2) enqueue_many never hides a partial commit ---------------------------------------------------
def test_a_batch_of_one_chunk_is_all_or_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    taken = q.enqueue("t", job_id="taken").id
    before = keyspace_fingerprint(redis_sync)
    reqs = [JobRequest(type="t", params={"i": i}) for i in range(300)]
    reqs[150] = JobRequest(type="t", job_id=taken)
    with pytest.raises(JobExists, match=r"taken \(request 151\)"):
        q.enqueue_many(reqs)
    assert keyspace_fingerprint(redis_sync) == before


def test_a_batch_across_chunks_reports_each_request_and_never_raises_after_writing(
    q: SyncQueue, redis_sync: redis.Redis
) -> None:
    q.enqueue("t", job_id="taken")
    reqs = [JobRequest(type="t", params={"i": i}) for i in range(1200)]
    reqs[700] = JobRequest(type="t", job_id="taken")  # chunk 2 (500-999) is refused as a whole
    reqs[1100] = JobRequest(type="t", depends_on=("nobody",))  # and so is chunk 3 (1000-1199)
    out = q.enqueue_many(reqs)
    assert len(out) == 1200
    assert [o.outcome for o in out[:500]] == ["created"] * 500
    assert {o.outcome for o in out[500:]} == {"refused"}
    assert out[700].error is not None and out[700].error.startswith("exists: taken")
    assert out[500].error is not None and "request 700" in out[500].error
    assert out[1100].error is not None and out[1100].error.startswith("dependency:")
    assert out[1000].error is not None and "request 1100" in out[1000].error
    assert q.counts()["queued"] == 501  # the 500 of chunk 1 and "taken": nothing of chunks 2 and 3
    assert_indexes_consistent(redis_sync, "edges", JOB)
    # a retry of exactly the refused requests, fixed, creates each job once
    fixed = [r if i not in (700, 1100) else JobRequest(type="t") for i, r in enumerate(reqs)]
    again = q.enqueue_many([fixed[i] for i, o in enumerate(out) if o.outcome == "refused"])
    assert {o.outcome for o in again} == {"created"} and q.counts()["queued"] == 1201


def test_the_same_explicit_id_twice_across_chunks_is_refused_before_anything_is_sent(
    q: SyncQueue, redis_sync: redis.Redis
) -> None:
    q.declare()
    before = keyspace_fingerprint(redis_sync)
    reqs = [JobRequest(type="t", job_id=f"j{i}") for i in range(600)]
    reqs[550] = JobRequest(type="t", job_id="j3")
    with pytest.raises(JobExists, match="j3"):
        q.enqueue_many(reqs)
    assert keyspace_fingerprint(redis_sync) == before


# -- (4) no job waits forever ------------------------------------------------------------------------
def test_a_dependency_listed_twice_counts_once(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a = q.enqueue("a").id
    b = q.enqueue("b", depends_on=[a, a])
    assert q.get(b.id).deps_pending == 1 and q.get(b.id).depends_on == (a,)
    q.complete(a, 1, token=claim(q)[0].token)
    assert q.get(b.id).status == JOB.ready
    assert_indexes_consistent(redis_sync, "edges", JOB)


def test_replace_cannot_depend_on_the_job_it_replaces(q: SyncQueue, redis_sync: redis.Redis) -> None:
    holder = q.enqueue("t", dedupe_key="k").id
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(DependencyError, match="replaces"):
        q.enqueue("t", dedupe_key="k", dedupe="replace", depends_on=[holder])
    # nor a later request of the same call on the job an earlier one replaced
    with pytest.raises(DependencyError, match="already ended cancelled"):
        q.enqueue_many(
            [
                JobRequest(type="t", dedupe_key="k", dedupe="replace"),
                JobRequest(type="t", depends_on=(holder,)),
            ]
        )
    assert keyspace_fingerprint(redis_sync) == before


def test_a_job_replaced_later_in_the_same_call_settles_its_new_dependents(
    q: SyncQueue, redis_sync: redis.Redis
) -> None:
    out = q.enqueue_many(
        [
            JobRequest(type="t", job_id="a", dedupe_key="k"),
            JobRequest(type="t", job_id="b", depends_on=("a",)),
            JobRequest(type="t", job_id="c", dedupe_key="k", dedupe="replace"),
        ]
    )
    assert [o.outcome for o in out] == ["created"] * 3 and out[2].stale_cancelled
    assert q.get("a").status == JOB.cancelled
    b = q.get("b")
    assert b.status == JOB.failure and b.error is not None and b.error.code == "dependency_failed"
    assert q.dedupe_holder("k") == "c"
    assert_indexes_consistent(redis_sync, "edges", JOB)


def test_a_cancelled_then_retried_dependent_waits_again(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a = q.enqueue("a").id
    b = q.enqueue("b", depends_on=[a]).id
    q.cancel(b)
    assert q.retry(b).status == JOB.waiting and q.get(b).deps_pending == 1
    assert claim(q)[0].id == a, "b does not run before its dependency"
    assert_indexes_consistent(redis_sync, "edges", JOB)
    q.bulk_cancel([a])
    assert q.get(b).status == JOB.failure  # a's cancellation reached b through the links retry restored
    with pytest.raises(DependencyError, match=f"{a} ended cancelled"):
        q.retry(b)  # a dependency that ended badly must be retried first
    q.retry(a)
    assert q.retry(b).status == JOB.waiting
    assert_indexes_consistent(redis_sync, "edges", JOB)


# -- (5, 18) every leased job has a lease, and tokens never repeat ---------------------------------------
def test_a_manual_move_into_a_leased_state_takes_a_new_lease_and_token(q: SyncQueue, redis_sync: redis.Redis) -> None:
    j = q.enqueue("t").id
    first = claim(q, lease_ms=200)[0]
    expire_lease(redis_sync, q, j)
    assert reap(q)[0] == 1  # back to queued
    held = q.transition(j, "processing", lease=60)
    assert str(held.token) != first.token and lease_number(held.token) == lease_number(first.token) + 1
    assert held.lease_deadline_ms is not None and held.worker == "client"
    # the stale worker's heartbeat and finish are refused
    assert q.backend.run(q.backend.scripts.heartbeat("w1", 30_000, [(j, first.token)])) == ["lost"]
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(LeaseLost):
        q.complete(j, "stale", token=first.token)
    assert keyspace_fingerprint(redis_sync) == before
    assert q.complete(j, "fresh", token=str(held.token)).status == JOB.success
    assert_indexes_consistent(redis_sync, "edges", JOB)


def test_a_manual_hold_left_to_expire_is_reaped(q: SyncQueue, redis_sync: redis.Redis) -> None:
    j = q.enqueue("t", max_attempts=2).id
    q.transition(j, "processing", lease=0.2)  # a service took it, then died
    time.sleep(0.3)
    assert reap(q)[:2] == (1, 0) and q.get(j).status == JOB.ready
    q.transition(j, "processing", lease=0.2)
    time.sleep(0.3)
    assert reap(q)[:2] == (0, 1)  # attempts spent: failed, not stuck
    job = q.get(j)
    assert job.status == JOB.failure and job.error is not None and job.error.code == "lease_expired"
    assert_indexes_consistent(redis_sync, "edges", JOB)


def test_an_expired_manual_lease_in_task_in_progress_fails_the_task(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("tasks", url, machine=TASK) as tq:
        j = tq.enqueue("t", max_attempts=5).id
        assert tq.transition(j, "assigned", lease=0.2).status == "assigned"
        time.sleep(0.3)
        assert reap(tq)[:2] == (1, 0)  # assigned -> queued exists
        token = str(tq.transition(j, "assigned", lease=0.2).token)
        tq.transition(j, "in_progress", token=token)
        time.sleep(0.3)
        assert reap(tq)[:2] == (0, 1)  # in_progress has no way back to queued
        assert tq.get(j).status == "failed"
        assert_indexes_consistent(redis_sync, "tasks", TASK)


def test_hold_heartbeats_fences_and_releases(q: SyncQueue, redis_sync: redis.Redis) -> None:
    j = q.enqueue("t").id
    with q.hold(j, lease=0.6, actor="alice") as held:
        time.sleep(1.0)  # longer than the lease: the heartbeat keeps it
        assert reap(q)[:2] == (0, 0)
        held.progress(40, "reviewing")
        assert q.get(j).status == JOB.leased[-1]
    assert q.get(j).status == JOB.ready and q.get(j).attempt == 0  # released without an outcome
    with q.hold(j, lease=60, actor="alice") as held:
        held.complete({"ok": True})
    done = q.get(j)
    assert done.status == JOB.success and done.worker == "alice"
    k = q.enqueue("t").id
    with pytest.raises(RuntimeError), q.hold(k, lease=60):
        raise RuntimeError("the service crashed")
    assert q.get(k).status == JOB.failure
    assert_indexes_consistent(redis_sync, "edges", JOB)


# -- (6) fencing is the default ---------------------------------------------------------------------------
def test_writes_to_a_leased_job_need_its_token_or_an_operator(q: SyncQueue, redis_sync: redis.Redis) -> None:
    j = q.enqueue("t", user_id="alice").id
    lease = claim(q)[0]
    before = keyspace_fingerprint(redis_sync)
    for write in (
        lambda: q.complete(j, "x"),
        lambda: q.fail(j, "x"),
        lambda: q.partial(j, "x", "y"),
        lambda: q.progress(j, 10),
        lambda: q.transition(j, "queued"),
    ):
        with pytest.raises(LeaseRequired):
            write()
    for asset in (lambda: q.add_asset(j, "image", "s3://x"), lambda: q.add_asset(j, "image", "s3://x", user_id="bob")):
        with pytest.raises(Unauthorized):
            asset()
    assert keyspace_fingerprint(redis_sync) == before
    q.add_asset(j, "image", "s3://owner", user_id="alice")  # the owner may
    q.progress(j, 20, "fixing", operator=True, actor="ops-1")
    q.complete(j, "by hand", operator=True, actor="ops-1")
    entries = job_history(redis_sync, q.backend.keys.prefix, j)
    assert [e["op"] for e in entries if e["event"] in ("progress", "completed")] == ["1", "1"]
    assert entries[-1]["actor"] == "ops-1" and lease.token
    assert_indexes_consistent(redis_sync, "edges", JOB)


# -- (8) dedupe and cache ------------------------------------------------------------------------------------
def test_only_the_keys_holder_writes_its_cache(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("cache", url, config=QueueConfig(cache_ttl=60)) as cq:
        old = cq.enqueue("t", dedupe_key="k").id
        running = claim(cq)[0]
        new = cq.enqueue("t", dedupe_key="k", dedupe="replace")  # old keeps running (not cancel_running)
        assert not new.stale_cancelled and cq.dedupe_holder("k") == new.id
        cq.complete(old, "stale", token=running.token)
        assert cq.cached_result("k") is None, "a job that lost its key leaves no cache"
        cq.complete(new.id, "fresh", token=claim(cq)[0].token)
        assert cq.cached_result("k") == "fresh"
        assert_indexes_consistent(redis_sync, "cache", JOB)


def test_retry_takes_the_dedupe_key_back_by_its_policy(q: SyncQueue, redis_sync: redis.Redis) -> None:
    first = q.enqueue("t", dedupe_key="k").id
    q.cancel(first)
    live = q.enqueue("t", dedupe_key="k").id  # the key is free again: a new live job takes it
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(DedupeConflict) as info:
        q.retry(first)  # policy keep: two live jobs with one key is refused
    assert info.value.holder == live
    assert keyspace_fingerprint(redis_sync) == before
    q.cancel(live)
    assert q.retry(first).status == JOB.ready and q.dedupe_holder("k") == first  # a free key is taken back
    other = q.enqueue("t", dedupe_key="r", dedupe="replace").id
    q.cancel(other)
    holder = q.enqueue("t", dedupe_key="r").id
    assert q.retry(other).status == JOB.ready  # policy replace: the holder is cancelled
    assert q.get(holder).status == JOB.cancelled and q.dedupe_holder("r") == other
    assert_indexes_consistent(redis_sync, "edges", JOB)


# -- (9) review ----------------------------------------------------------------------------------------
def test_review_approve_keeps_the_draft_and_send_back_is_held_under_a_lease(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("review", url, machine=TASK) as tq:
        j = tq.enqueue("t").id
        got = claim(tq)[0]
        tq.backend.run(
            tq.backend.scripts.finish("w1", [MoveRequest(j, "review", token=got.token, result=b'{"draft":1}')])
        )
        # the reviewer sends it back to a named assignee, under a lease that assignee holds
        with tq.hold(j, state="in_progress", lease=60, actor="bob") as held:
            assert tq.get(j).worker == "bob" and held.token != got.token
            held.review("second pass done")
        approved = tq.complete(j)  # no result given: the draft stays
        assert approved.status == "completed" and approved.result == {"draft": 1}
        assert_indexes_consistent(redis_sync, "review", TASK)


# -- (11) no enqueue ever overwrites a job -------------------------------------------------------------
def test_a_generated_id_never_overwrites_an_explicit_one(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("warm")
    seq = int(redis_sync.get(q.backend.keys.seq) or 0)
    now = int(redis_sync.time()[0]) * 1000
    # explicit ids equal to what the server will generate next (the squatting call itself takes
    # 3,000 sequence numbers), for every millisecond around now
    n = 3000
    squatters = [f"{ms:011x}{(seq + n + 1) % 1048576:05x}" for ms in range(now - 1000, now - 1000 + n)]
    q.enqueue_many([JobRequest(type="squat", job_id=i, params=i) for i in squatters])
    fresh = q.enqueue("fresh")
    assert fresh.id.split(".")[0] in squatters, "the generated id was taken, so it got a suffix"
    assert q.get(fresh.id).type == "fresh"
    assert all(q.get(i).type == "squat" and q.get(i).params == i for i in squatters)
    assert_indexes_consistent(redis_sync, "edges", JOB)


# -- (15) retention 0: the move that finished the job still returns it ------------------------------------------
def test_a_finished_job_is_returned_even_with_retention_zero(url: str, redis_sync: redis.Redis) -> None:
    zero = QueueConfig(retention=Retention(success=0, partial=0, failure=0, cancelled=0))
    with SyncQueue("zero", url, config=zero) as zq:
        a, b = zq.enqueue("t").id, zq.enqueue("t").id
        assert zq.cancel(a).status == JOB.cancelled
        assert zq.complete(b, 1, token=claim(zq)[0].token).status == JOB.success
        reap(zq)
        assert zq.counts()[JOB.success] == zq.counts()[JOB.cancelled] == 0
        assert_indexes_consistent(redis_sync, "zero", JOB)


# -- (16) the history is complete --------------------------------------------------------------------------
def test_history_keeps_every_state_change_and_comment_and_caps_progress(q: SyncQueue, redis_sync: redis.Redis) -> None:
    j = q.enqueue("t").id
    token = claim(q)[0].token
    for i in range(1200):
        q.comment(j, f"note {i}")
    for i in range(300):
        q.progress(j, i / 3, step=f"step {i % 150}", token=token)  # 300 updates, no two in a row alike
    for _ in range(50):
        q.progress(j, 99, step="last", token=token)  # coalesced into one entry
    q.complete(j, "done", token=token)
    events = q.events(j)
    kinds = [e.event for e in events]
    assert kinds[0] == "created" and kinds[1] == JOB.leased[0] and kinds[-1] == JOB.success
    assert kinds.count("comment") == 1200 and kinds.count("progress") <= 100
    assert [e.message for e in events if e.event == "progress"][-1] == "last"
    assert q.get(j).progress.percent == 100
    page = q.events(j, after=events[9].id, count=5)
    assert [e.id for e in page] == [e.id for e in events[10:15]]


# -- (17) bulk outcomes are exact ----------------------------------------------------------------------------------
def test_bulk_outcomes_are_exact_and_documented(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a, b = q.enqueue("t").id, q.enqueue("t").id
    assert q.bulk_cancel([a, a, "nope"]) == {a: "done", "nope": "not_found"}
    assert q.bulk_cancel([a]) == {a: "invalid_transition"}
    assert q.bulk_transition([b], JOB.delayed) == {b: "invalid"}  # a delayed target needs a due time
    assert q.bulk_transition([b], JOB.delayed, delay=60) == {b: "done"}
    c = q.enqueue("t").id
    claim(q)
    assert q.bulk_transition([c], JOB.ready) == {c: "lease_required"}
    assert q.bulk_transition([c], JOB.ready, operator=True) == {c: "done"}
    assert_indexes_consistent(redis_sync, "edges", JOB)


@pytest.mark.anyio
async def test_async_hold_cancels_its_block_when_the_lease_is_lost(url: str, redis_sync: redis.Redis) -> None:
    import anyio

    from rjobs import Queue

    async with Queue("aholds", url, actor="svc") as aq:
        j = (await aq.enqueue("t")).id
        reached = False
        with pytest.raises(LeaseLost, match="cancelled"):
            async with aq.hold(j, lease=0.6, actor="svc"):
                await aq.cancel(j, "an operator stopped it")  # the next heartbeat learns it
                await anyio.sleep(5)
                reached = True
        assert not reached, "the block was cancelled at its next await"
        assert (await aq.get(j)).status == JOB.cancelled
        k = (await aq.enqueue("t")).id
        async with aq.hold(k, lease=0.6, actor="svc") as held:
            await anyio.sleep(1.0)  # the heartbeat keeps the lease
            await held.progress(50, "half")
            await held.complete({"ok": 1})
        done = await aq.get(k)
        assert (done.status, done.result, done.worker) == (JOB.success, {"ok": 1}, "svc")
        assert_indexes_consistent(redis_sync, "aholds", JOB)
