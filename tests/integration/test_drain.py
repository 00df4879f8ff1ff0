"""Removing jobs at scale: count-based retention (the purge's rank range), drain, obliterate, failed
jobs filtered by type and error code and retried or deleted in bulk, from the API and the CLI.
Against the real servers, with the keyspace checked."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rjobs import JobRequest, JobRunning, QueueConfig, Retention, SyncQueue, ValidationError, machines
from rjobs.errors import MachineNotDeclared
from rjobs.store.layout import HEAD_VERSION
from tests.helpers import keyspace_fingerprint
from tests.integration.test_cli import cli_env
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("bulk", url, actor="ops") as queue:
        yield queue


def finish(q: SyncQueue, job_id: str, role: str = "success", code: str = "boom") -> None:
    token = str(q.transition(job_id, "processing").token)
    if role == "success":
        q.complete(job_id, 1, token=token)
    else:
        q.fail(job_id, {"code": code, "message": "it broke"}, token=token)


def reap(q: SyncQueue, purge: int = 100) -> int:
    return int(q.backend.run(q.backend.scripts.reap(10, 3, purge, 60_000))[2])


def test_count_retention_keeps_the_newest_n_per_outcome(url: str, redis_sync: redis.Redis) -> None:
    cfg = QueueConfig(retention=Retention(success=None, success_count=2, failure=3600, failure_count=0))
    with SyncQueue("kept", url, config=cfg) as q:
        assert q.config.retention.success_count == 2
        done = [q.enqueue("t").id for _ in range(6)]
        for jid in done:
            finish(q, jid)
        failed = q.enqueue("t").id
        finish(q, failed, "failure")
        reap(q)
        assert [j.id for j in q.list(JOB.success)] == done[:-3:-1], "the newest two, newest first"
        assert q.list(JOB.failure) == [], "a cap of 0 keeps none"
        assert_indexes_consistent(redis_sync, "kept", JOB)
        # bounded per call: a reaper pass purges at most its budget
        more = [q.enqueue("t").id for _ in range(5)]
        for jid in more:
            token = str(q.transition(jid, "processing").token)
            q.backend.run(q.backend.scripts.finish("w", [_success(jid, token)]))
        assert reap(q, purge=1) <= 1
        while reap(q):
            pass
        assert [j.id for j in q.list(JOB.success)] == more[:-3:-1]
    with SyncQueue("kept", url) as other:  # a client without a config adopts the stored caps
        other.declare()
        assert other.config.retention.success_count == 2 and other.config.retention.failure_count == 0


def _success(job_id: str, token: str) -> object:
    from rjobs.store.scripts import MoveRequest

    return MoveRequest(job_id, JOB.success, token=token)


def test_bad_counts_are_refused() -> None:
    for bad in (-1, 1.5, True, 10**10):
        with pytest.raises(ValidationError):
            QueueConfig(retention=Retention(success_count=bad)).validate()  # type: ignore[arg-type]


def test_a_queue_compiled_by_the_older_layout_is_recompiled_on_declare(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("old", url) as q:
        job = q.enqueue("t").id
        key = q.backend.keys.machine
        head = redis_sync.hget(key, "compiled:head").decode()
        assert head.startswith(HEAD_VERSION + "|")
        parts = head.split("|")
        old = "|".join(["rj3", parts[1], ",".join(parts[2].split(",")[:6]), *parts[3:]])
        redis_sync.hset(key, "compiled:head", old)  # as the layout before count retention left it
        with pytest.raises(MachineNotDeclared):
            q.delete(job)
    with SyncQueue("old", url) as again:  # connecting declares: the head is compiled anew
        assert again.delete(job) == 1
        assert redis_sync.hget(key, "compiled:head").decode() == head


def test_drain_removes_the_waiting_jobs_and_leaves_running_and_finished_ones(
    q: SyncQueue, redis_sync: redis.Redis
) -> None:
    running = q.enqueue("t").id
    q.transition(running, "processing")
    done = q.enqueue("t").id
    finish(q, done)
    q.enqueue_many([JobRequest(type=t, user_id="u1") for t in ("a", "b", "c") for _ in range(400)])
    q.enqueue("a", delay=3600, dedupe_key="later")
    after = q.enqueue("a", depends_on=[running]).id  # waits for the running job
    ready = q.enqueue("b").id
    q.enqueue("c", depends_on=[ready])  # drained with the ready job it waits for
    assert redis_sync.sismember(q.backend.keys.job_dependents(running), after)
    assert q.drain() == 1204
    counts = q.counts()
    assert counts["processing"] == 1 and counts[JOB.success] == 1 and sum(counts.values()) == 2
    assert not redis_sync.exists(q.backend.keys.job_dependents(running)), "its dependents set is cleaned up"
    assert q.dedupe_holder("later") is None and not redis_sync.exists(q.backend.keys.owner("u1"))
    assert_indexes_consistent(redis_sync, "bulk", JOB)
    assert q.drain() == 0


def test_obliterate_refuses_running_jobs_unless_forced_then_leaves_nothing(
    q: SyncQueue, redis_sync: redis.Redis
) -> None:
    q.enqueue_many([JobRequest(type="t", user_id="u1", dedupe_key=f"k{i}") for i in range(700)])
    q.transition(q.enqueue("t").id, "processing")
    finish(q, q.enqueue("t").id, "failure")
    q.pause("x")
    q.resume()
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(JobRunning):
        q.obliterate()
    assert keyspace_fingerprint(redis_sync) == before
    assert q.obliterate(force=True) == 702
    assert redis_sync.keys("rjobs:{bulk}:*") == []
    assert q.enqueue("t").id and q.counts()[JOB.ready] == 1, "the queue is declared anew on its next use"


def failed_mix(q: SyncQueue) -> dict[tuple[str, str], list[str]]:
    made: dict[tuple[str, str], list[str]] = {}
    for t in ("resize", "email"):
        for code in ("timeout", "bad_input"):
            for _ in range(3):
                jid = q.enqueue(t).id
                finish(q, jid, "failure", code)
                made.setdefault((t, code), []).append(jid)
    return made


def test_failed_jobs_filtered_by_type_and_code(q: SyncQueue, redis_sync: redis.Redis) -> None:
    made = failed_mix(q)
    q.enqueue("resize")  # not failed
    got = q.list(JOB.failure, type="resize", error_code="timeout")
    assert [j.id for j in got] == made[("resize", "timeout")][::-1]
    assert {j.id for j in q.list(JOB.failure, error_code="bad_input", limit=100)} == {
        *made[("resize", "bad_input")],
        *made[("email", "bad_input")],
    }
    assert len(q.list(JOB.failure, type="email", limit=2)) == 2
    assert q.list(JOB.failure, type="nope") == []
    with pytest.raises(ValidationError):
        q.list(type="resize")  # a filter needs a state (or a user)
    retried = q.bulk_retry(made[("email", "timeout")] + ["nope"])
    assert retried == {**dict.fromkeys(made[("email", "timeout")], "done"), "nope": "not_found"}
    assert q.bulk_delete(made[("resize", "bad_input")]) == dict.fromkeys(made[("resize", "bad_input")], "done")
    assert q.counts()[JOB.failure] == 6
    assert_indexes_consistent(redis_sync, "bulk", JOB)


@pytest.fixture
def rjobs(url: str, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rjobs", *args, "--url", url],
            capture_output=True,
            text=True,
            env=cli_env(tmp_path),
            timeout=60,
        )

    return run


@pytest.mark.timeout(120)
def test_cli_filters_retries_and_deletes_failed_jobs(
    q: SyncQueue, redis_sync: redis.Redis, rjobs: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    made = failed_mix(q)
    out = rjobs("ls", "bulk", "-s", JOB.failure, "--type", "resize", "--code", "timeout", "--json")
    assert out.returncode == 0, out.stderr
    assert [j["id"] for j in json.loads(out.stdout)] == made[("resize", "timeout")][::-1]
    out = rjobs("retry", "-q", "bulk", "--state", JOB.failure, "--code", "bad_input", "--all")
    assert out.returncode == 0 and out.stdout.strip() == "6 of 6 retry done", out.stderr
    out = rjobs("delete", "-q", "bulk", "--state", JOB.failure, "--type", "email", "--code", "timeout", "--all")
    assert out.returncode == 0 and out.stdout.strip() == "3 of 3 delete done", out.stderr
    assert {j.id for j in q.list(JOB.failure)} == set(made[("resize", "timeout")])
    assert_indexes_consistent(redis_sync, "bulk", JOB)


@pytest.mark.timeout(120)
def test_cli_delete_drain_and_obliterate(
    q: SyncQueue, redis_sync: redis.Redis, rjobs: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    parent = q.enqueue("t").id
    child = q.enqueue("t", depends_on=[parent]).id
    running = q.enqueue("t").id
    q.transition(running, "processing")
    before = keyspace_fingerprint(redis_sync)
    for args, code, words in (
        (("delete", "nope", "-q", "bulk"), 3, "not found"),
        (("delete", parent, "-q", "bulk"), 2, "waits for it"),
        (("delete", running, "-q", "bulk"), 2, "cancel it first"),
        (("delete", "-q", "bulk"), 2, "give a job id"),
        (("delete", running, "-q", "bulk", "--force", "-u", "someone"), 2, "belongs to another user"),
        (("obliterate", "bulk"), 2, "add --yes"),
        (("obliterate", "bulk", "--yes"), 2, "leased"),
    ):
        out = rjobs(*args)
        assert out.returncode == code and words in out.stderr, (args, out.returncode, out.stderr)
        assert keyspace_fingerprint(redis_sync) == before, args
    out = rjobs("delete", parent, "-q", "bulk", "--dependents", "delete")
    assert out.returncode == 0 and out.stdout.strip() == f"deleted {parent} and 1 job(s) waiting for it"
    assert not redis_sync.exists(q.backend.keys.job(child))
    q.enqueue("t", delay=60)
    out = rjobs("drain", "bulk", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == {"queue": "bulk", "deleted": 1}
    out = rjobs("obliterate", "bulk", "--yes", "--force")
    assert out.returncode == 0 and "obliterated bulk: 1 job(s) deleted" in out.stdout, out.stderr
    assert redis_sync.keys("rjobs:{bulk}:*") == []
