"""The core engine against real servers: enqueue, get, progress, outcomes, cancel, retry, events,
counts and listing — and for every rejected call, an unchanged keyspace."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis

import rjobs
from rjobs import (
    InvalidTransition,
    JobError,
    JobNotFound,
    LeaseLost,
    MachineConflict,
    MachineNotDeclared,
    Queue,
    StateMachine,
    SyncQueue,
    Unauthorized,
    ValidationError,
    machines,
)
from rjobs.models import Undecodable
from rjobs.store.keys import QueueKeys
from rjobs.store.scripts import Call, compile_machine
from tests.helpers import job_history, keyspace_fingerprint, lease_number, script_for
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("engine", url, actor="tester") as queue:
        yield queue


def lease(q: SyncQueue, worker: str = "w1") -> Any:
    """Claim one job the way a worker does."""
    result = q.backend.run(q.backend.scripts.claim(worker, 1, 30_000))
    assert result.jobs, "nothing to claim"
    return result.jobs[0]


def test_enqueue_writes_a_readable_hash_and_history(q: SyncQueue, redis_sync: redis.Redis) -> None:
    out = q.enqueue("resize", {"w": 100}, priority="high", user_id="u1", max_attempts=5)
    assert out.created and out.status == "queued"
    raw = redis_sync.hgetall(f"rjobs:{{engine}}:job:{out.id}")
    assert raw[b"params"] == b'{"w":100}' and raw[b"status"] == b"queued" and raw[b"priority"] == b"7"
    assert raw[b"user_id"] == b"u1" and raw[b"max_attempts"] == b"5"
    job = q.get(out.id)
    assert (job.type, job.params, job.priority, job.attempt, job.retry_count) == ("resize", {"w": 100}, 7, 0, 0)
    assert job.created_ms > 1_700_000_000_000, "server epoch ms"
    history = job_history(redis_sync, "rjobs:{engine}:", out.id)
    assert history[0]["event"] == "created" and history[0]["actor"] == "tester" and history[0]["to"] == "queued"
    assert "params" not in history[0], "events never carry payloads"
    assert redis_sync.xlen("rjobs:{engine}:events") == 1
    assert_indexes_consistent(redis_sync, "engine", JOB)


def test_ids_are_time_sortable(q: SyncQueue) -> None:
    ids = [q.enqueue("t").id for _ in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50


def test_priority_then_fifo(q: SyncQueue) -> None:
    low = [q.enqueue("t", priority="low").id for _ in range(2)]
    normal = [q.enqueue("t").id for _ in range(2)]
    crit = [q.enqueue("t", priority="critical").id for _ in range(2)]
    seven = [q.enqueue("t", priority=7).id for _ in range(2)]
    claimed = q.backend.run(q.backend.scripts.claim("w", 100, 30_000)).jobs
    assert [j.id for j in claimed] == crit + seven + normal + low


def test_full_lifecycle_with_progress_and_eta(q: SyncQueue, redis_sync: redis.Redis) -> None:
    job_id = q.enqueue("t").id
    claimed = lease(q)
    assert claimed.id == job_id and claimed.attempt == 1
    p = q.progress(job_id, 25, "Loading data", token=claimed.token)
    assert p is not None and p.percent == 25 and p.step == "Loading data"
    q.progress(job_id, 50, "Processing", token=claimed.token)
    job = q.get(job_id)
    assert job.status == "processing" and job.progress.percent == 50 and job.progress.step == "Processing"
    assert job.progress.eta_ms is not None and job.progress.eta_ms >= 0
    done = q.complete(job_id, {"out": 1}, token=claimed.token)
    assert done.status == "completed" and done.result == {"out": 1} and done.progress.percent == 100
    assert done.duration_ms is not None and done.completed_ms is not None and done.started_ms is not None
    kinds = [(e.event, e.to_state) for e in q.events(job_id)]
    assert kinds == [
        ("created", "queued"),
        ("processing", "processing"),
        ("progress", None),
        ("progress", None),
        ("completed", "completed"),
    ]
    assert_indexes_consistent(redis_sync, "engine", JOB)


def test_late_progress_is_ignored_with_a_warning(q: SyncQueue, caplog: pytest.LogCaptureFixture) -> None:
    job_id = q.enqueue("t").id
    claimed = lease(q)
    q.complete(job_id, None, token=claimed.token)
    with caplog.at_level(logging.WARNING, logger="rjobs"):
        assert q.progress(job_id, 80) is None
    assert "ignoring progress update" in caplog.text
    assert q.get(job_id).progress.percent == 100


def test_fail_and_partial_store_structured_errors(q: SyncQueue) -> None:
    a, b = q.enqueue("t").id, q.enqueue("t").id
    ca, cb = lease(q), lease(q)
    failed = q.fail(
        a, {"code": "RATE_LIMIT", "message": "API rate limit exceeded", "retry_after_ms": 60000}, token=ca.token
    )
    assert failed.error == JobError(code="RATE_LIMIT", message="API rate limit exceeded", retry_after_ms=60000)
    part = q.partial(b, {"done": 3}, "2 of 5 failed", token=cb.token)
    assert part.status == "partial" and part.result == {"done": 3} and part.error is not None
    assert part.error.message == "2 of 5 failed"


def test_fenced_writes_with_a_stale_token_change_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    job_id = q.enqueue("t").id
    first = lease(q)
    q.transition(job_id, "queued", operator=True)  # the lease is lost (e.g. handed back)
    second = lease(q, "w2")
    assert int(second.token) > int(first.token) and lease_number(second.token) == lease_number(first.token) + 1
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(LeaseLost):
        q.complete(job_id, "stale", token=first.token)
    with pytest.raises(LeaseLost):
        q.progress(job_id, 10, token=first.token)
    with pytest.raises(LeaseLost):
        q.comment(job_id, "stale", token=first.token)
    with pytest.raises(LeaseLost):
        q.add_asset(job_id, "image", "s3://x", token=first.token)
    outcomes = q.backend.run(
        q.backend.scripts.finish("w1", [rjobs.store.scripts.MoveRequest(job_id, "completed", token=first.token)])
    )
    assert outcomes[0].startswith("RJ_LEASE_LOST")
    assert keyspace_fingerprint(redis_sync) == before
    q.complete(job_id, "fresh", token=second.token)
    again = q.backend.run(
        q.backend.scripts.finish("w2", [rjobs.store.scripts.MoveRequest(job_id, "completed", token=second.token)])
    )
    assert again == ["already"], "finishing twice with the same token is idempotent"


def test_cancel_and_retry_keep_the_id(q: SyncQueue, redis_sync: redis.Redis) -> None:
    job_id = q.enqueue("t", {"v": 1}).id
    cancelled = q.cancel(job_id, "No longer needed")
    assert cancelled.status == "cancelled" and cancelled.error is not None
    assert cancelled.error.message == "No longer needed"
    retried = q.retry(job_id, {"v": 2})
    assert (retried.id, retried.status, retried.retry_count, retried.params) == (job_id, "queued", 1, {"v": 2})
    assert retried.error is None and retried.completed_ms is None
    claimed = lease(q)
    q.fail(job_id, "boom", token=claimed.token)
    assert q.retry(job_id).retry_count == 2
    assert [e.event for e in q.events(job_id)][-1] == "retried"
    assert_indexes_consistent(redis_sync, "engine", JOB)


def test_retry_only_leaves_failed_or_cancelled(q: SyncQueue, redis_sync: redis.Redis) -> None:
    job_id = q.enqueue("t").id
    claimed = lease(q)
    q.complete(job_id, 1, token=claimed.token)
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(InvalidTransition) as info:
        q.retry(job_id)
    assert (info.value.current, info.value.target) == ("completed", "queued")
    assert keyspace_fingerprint(redis_sync) == before


def test_ownership(q: SyncQueue) -> None:
    job_id = q.enqueue("t", user_id="alice").id
    assert q.get(job_id, user_id="alice").user_id == "alice"
    with pytest.raises(Unauthorized):
        q.get(job_id, user_id="bob")
    with pytest.raises(JobNotFound):
        q.get("nope")


def test_counts_and_listing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a = [q.enqueue("t", user_id="alice").id for _ in range(3)]
    b = [q.enqueue("t", user_id="bob").id for _ in range(2)]
    claimed = lease(q)
    q.fail(claimed.id, "x", token=claimed.token)
    counts = q.counts()
    assert counts["queued"] == 4 and counts["failed"] == 1 and sum(counts.values()) == 5
    assert counts == assert_indexes_consistent(redis_sync, "engine", JOB)
    assert {j.id for j in q.list(state="queued")} == set(a[1:] + b)
    assert {j.id for j in q.list(user_id="alice")} == set(a)
    assert [j.id for j in q.list(state="failed", user_id="alice")] == [a[0]]
    assert q.list(state="failed", user_id="bob") == []
    assert len(q.list(limit=2)) == 2


def test_machine_conflict_is_a_clear_error(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("shared", url) as first:
        first.enqueue("t")
    other = StateMachine.define(
        "other",
        {"r": ("x",), "x": ("ok", "ko", "cx"), "ok": (), "ko": (), "cx": ()},
        initial="r",
        ready="r",
        leased=("x",),
        success="ok",
        failure="ko",
        cancelled="cx",
    )
    before = keyspace_fingerprint(redis_sync)
    with SyncQueue("shared", url, machine=other) as second, pytest.raises(MachineConflict, match="job"):
        second.enqueue("t")
    assert keyspace_fingerprint(redis_sync) == before
    assert redis_sync.hget("rjobs:{shared}:machine", "next:processing") is not None, "readable with redis-cli"


REJECTED: list[tuple[str, Callable[[SyncQueue, str], Any], type[Exception]]] = [
    ("unknown job", lambda q, j: q.transition("missing", "processing"), JobNotFound),
    ("bad edge", lambda q, j: q.transition(j, "completed"), InvalidTransition),
    ("unknown state", lambda q, j: q.transition(j, "nowhere"), ValidationError),
    ("delayed needs a time", lambda q, j: q.transition(j, "scheduled"), ValidationError),
    ("bad progress", lambda q, j: q.progress(j, 101), ValidationError),
    ("bad token", lambda q, j: q.progress(j, 10, token="abc"), ValidationError),
    ("retry queued", lambda q, j: q.retry(j), InvalidTransition),
    ("bad priority", lambda q, j: q.set_priority(j, 0), ValidationError),
    ("forged id", lambda q, j: q.get("a}b"), ValidationError),
    ("huge params", lambda q, j: q.enqueue("t", "x" * (1024 * 1024 + 1)), ValidationError),
    ("bad type", lambda q, j: q.enqueue("a:b"), ValidationError),
    ("missing dependency", lambda q, j: q.enqueue("t", depends_on=["missing"]), rjobs.DependencyError),
    ("duplicate id", lambda q, j: q.enqueue("t", job_id=j), rjobs.JobExists),
    ("empty comment", lambda q, j: q.comment(j, ""), ValidationError),
    ("asset of missing job", lambda q, j: q.add_asset("missing", "image", "s3://x"), JobNotFound),
    ("asset of another user", lambda q, j: q.add_asset(j, "image", "s3://x", user_id="mallory"), Unauthorized),
    (
        "partial batch",
        lambda q, j: q.enqueue_many([rjobs.JobRequest(type="ok"), rjobs.JobRequest(type="t", depends_on=("missing",))]),
        rjobs.DependencyError,
    ),
]


@pytest.mark.parametrize(("what", "call", "exc"), REJECTED, ids=[r[0] for r in REJECTED])
def test_rejected_calls_leave_the_keyspace_unchanged(
    q: SyncQueue, redis_sync: redis.Redis, what: str, call: Callable[[SyncQueue, str], Any], exc: type[Exception]
) -> None:
    job_id = q.enqueue("t", user_id="alice").id
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(exc):
        call(q, job_id)
    assert keyspace_fingerprint(redis_sync) == before, what


def test_raw_evalsha_cannot_forge_keys(q: SyncQueue, redis_sync: redis.Redis) -> None:
    """The scripts re-validate names, so even redis-cli callers cannot escape the queue's keys."""
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync, "*")
    call = q.backend.scripts.transition("x", [rjobs.store.scripts.MoveRequest("a}b:c", "processing")])
    assert q.backend.run(call)[0].startswith("RJ_INVALID")
    claim = q.backend.scripts.claim("w", 1, 30_000).script
    source, sha = script_for(redis_sync, claim)
    redis_sync.script_load(source)
    with pytest.raises(redis.ResponseError, match="RJ_INVALID"):
        redis_sync.evalsha(sha, 2, "rjobs:{other}:machine", "rjobs:{other}:events", "rjobs:{engine}:", "w", 1, 1000, 1)
    assert keyspace_fingerprint(redis_sync, "*") == before


@pytest.mark.anyio
async def test_async_and_sync_clients_share_one_truth(url: str) -> None:
    async with Queue("both", url) as aq:
        out = await aq.enqueue("t", {"a": 1}, priority=9)
        with SyncQueue("both", url) as sq:
            assert sq.get(out.id) == await aq.get(out.id)
            sq.cancel(out.id, "stop")
        job = await aq.get(out.id)
        assert job.status == "cancelled"
        assert [e.event for e in await aq.events(out.id)] == ["created", "cancelled"]
        assert msgspec.json.decode(msgspec.json.encode(job), type=rjobs.Job) == job


def test_task_machine_claim_walks_assigned_then_in_progress(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("tasks", url, machine=machines.TASK) as q:
        pending = q.enqueue("summarize", {"text": "..."}, hold=True)
        assert pending.status == "pending"
        q.transition(pending.id, "queued")
        claimed = q.backend.run(q.backend.scripts.claim("agent_1", 5, 30_000)).jobs[0]
        job = q.get(claimed.id)
        assert job.status == "in_progress" and job.worker == "agent_1"
        assert [e.to_state for e in q.events(job.id)] == ["pending", "queued", "assigned", "in_progress"]
        assert redis_sync.zscore(QueueKeys("tasks").leases, job.id) is not None
        assert_indexes_consistent(redis_sync, "tasks", machines.TASK)


def test_redeclare_without_config_keeps_stored_options(url: str, redis_sync: redis.Redis) -> None:
    keep = rjobs.Retention(success=5.0, partial=5.0, failure=5.0, cancelled=5.0)
    with SyncQueue("opts", url, config=rjobs.QueueConfig(retention=keep, max_payload=1000)) as first:
        assert first.declare() == "created"
    with SyncQueue("opts", url) as second:  # defaults: must adopt, not reset
        assert second.declare() == "same"
        assert second.config.retention == keep and second.config.max_payload == 1000
        with pytest.raises(ValidationError):
            second.enqueue("t", "x" * 2000)
    assert redis_sync.hget("rjobs:{opts}:machine", "opt:keep_success_ms") == b"5000"
    with SyncQueue("opts", url, config=rjobs.QueueConfig()) as third:  # explicit: updates
        assert third.declare() == "updated"
    assert redis_sync.hget("rjobs:{opts}:machine", "opt:keep_success_ms") == b"86400000"


def test_compiled_machine_matches_the_python_compiler_and_follows_the_options(
    url: str, redis_sync: redis.Redis
) -> None:
    keep = rjobs.Retention(success=5.0, partial=None, failure=5.0, cancelled=5.0)
    config = rjobs.QueueConfig(retention=keep, max_payload=1000, queue_events=False)
    with SyncQueue("compiled", url, machine=machines.TASK, config=config) as first:
        first.declare()
        stored = redis_sync.hgetall("rjobs:{compiled}:machine")
        expected = compile_machine(machines.TASK, config.redis_options())
        assert {k: stored[k.encode()].decode() for k in expected} == expected
        assert stored[b"next:assigned"] == ",".join(machines.TASK.edges["assigned"]).encode(), "readable fields stay"
    with SyncQueue("compiled", url, machine=machines.TASK) as second:  # keeps the stored options
        second.declare()
        assert redis_sync.hget("rjobs:{compiled}:machine", "compiled:head") == expected["compiled:head"].encode()


def test_a_machine_stored_by_an_older_version_is_recompiled_on_connect(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("old", url) as first:
        job_id = first.enqueue("t").id
    # what an older rjobs stored: the readable fields and a JSON copy, no compiled:head/edges
    redis_sync.hdel("rjobs:{old}:machine", "compiled:head", "compiled:edges")
    redis_sync.hset("rjobs:{old}:machine", "compiled", '{"r":{},"n":{},"l":"processing","o":{}}')
    with SyncQueue("old", url) as stale:
        stale._declared = True  # a client that connected before the upgrade: no declare
        with pytest.raises(MachineNotDeclared, match="declare the queue again"):
            stale.enqueue("t")
    redis_sync.hset("rjobs:{old}:machine", "compiled:head", "rj1|garbage")
    with SyncQueue("old", url) as stale:
        stale._declared = True
        with pytest.raises(MachineNotDeclared, match="compiled by another rjobs version"):
            stale.transition(job_id, "cancelled")
    with SyncQueue("old", url) as fresh:  # connecting declares, which recompiles
        assert fresh.declare() == "same"
        assert fresh.transition(job_id, "cancelled").status == "cancelled"
    with SyncQueue("never", url) as nothing:
        nothing._declared = True
        with pytest.raises(MachineNotDeclared, match="no state machine declared"):
            nothing.enqueue("t")


def test_fenced_progress_on_a_cancelled_job_is_lease_lost(q: SyncQueue) -> None:
    job_id = q.enqueue("t").id
    claimed = lease(q)
    q.cancel(job_id, "stop")
    with pytest.raises(LeaseLost):
        q.progress(job_id, 50, token=claimed.token)


def test_success_clears_an_earlier_attempts_error_and_events_carry_the_token(q: SyncQueue) -> None:
    job_id = q.enqueue("t").id
    first = lease(q)
    retry = rjobs.store.scripts.MoveRequest(
        job_id, "scheduled", token=first.token, error=b'{"code":"x","message":"y"}', run_at_ms=-1
    )
    assert q.backend.run(q.backend.scripts.finish("w1", [retry])) == ["ok"]
    scheduled = q.get(job_id)
    assert scheduled.error is not None and scheduled.scheduled_ms is not None
    assert scheduled.scheduled_ms - (scheduled.updated_ms or 0) <= 5, "relative run_at uses the server clock"
    time.sleep(0.01)
    second = lease(q)
    done = q.complete(job_id, "ok", token=second.token)
    assert done.error is None
    last = q.events(job_id)[-1]
    assert (last.event, last.token, last.attempt) == ("completed", int(second.token), 2)


def test_claim_survives_params_that_are_not_json(q: SyncQueue, redis_sync: redis.Redis) -> None:
    job_id = q.enqueue("t").id
    redis_sync.hset(f"rjobs:{{engine}}:job:{job_id}", "params", b"\xff not json")
    params = lease(q).params  # marked, so the worker fails this job alone (invalid_params)
    assert isinstance(params, Undecodable) and "not valid JSON" in params.reason


@pytest.mark.parametrize(
    ("field", "bad"),
    [("states", "queued|x"), ("next:queued", "processing>failed"), ("role:ready", "a,b"), ("role:leased", "p#q")],
)
def test_a_forged_machine_table_is_refused_and_changes_nothing(
    url: str, redis_sync: redis.Redis, field: str, bad: str
) -> None:
    """declare_machine.lua compiles the table it stores: names that would break the compiled
    strings are refused before anything is written, whether a raw EVALSHA sends them or they were
    put into the stored table by hand."""
    with SyncQueue("forged", url) as q:
        call = q.backend.scripts.declare_machine(q.machine, q.config.redis_options(), True)
        args = list(call.args)
        args[args.index(field) + 1] = bad
        before = keyspace_fingerprint(redis_sync)
        with pytest.raises(ValidationError, match="compiled machine"):
            q.backend.run(Call(call.script, call.keys, args, call.decode))
        assert keyspace_fingerprint(redis_sync) == before
        q.declare()
        redis_sync.hset(q.backend.keys.machine, field, bad)
        before = keyspace_fingerprint(redis_sync)
        with pytest.raises(ValidationError, match="compiled machine"):
            q.declare()
        assert keyspace_fingerprint(redis_sync) == before
