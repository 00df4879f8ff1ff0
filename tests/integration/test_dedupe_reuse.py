"""Dedupe policy ``reuse``: a fresh cached result of the key answers the request and nothing is
created; without one, reuse acts as keep (the live holder, else a new job). Against the real
servers, with the keyspace checked."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from rjobs import JobRequest, QueueConfig, Retention, SyncQueue, ValidationError, machines
from rjobs.store.scripts import load_script
from tests.helpers import keyspace_fingerprint, script_for
from tests.integration.test_cli import cli_env
from tests.invariants import assert_indexes_consistent


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("reuse", url, config=QueueConfig(cache_ttl=60)) as queue:
        yield queue


def run_one(q: SyncQueue, result: Any) -> str:
    """Claim the one ready job and complete it with ``result``; its id."""
    job = q.backend.run(q.backend.scripts.claim("w1", 1, 30_000)).jobs[0]
    q.complete(job.id, result, token=job.token)
    return job.id


def test_a_fresh_cached_result_is_reused_and_nothing_is_created(q: SyncQueue, redis_sync: redis.Redis) -> None:
    first = q.enqueue("thumb", {"w": 1}, dedupe_key="thumb:1", dedupe="reuse")
    assert first.created and first.cached_result is None, "no cache yet: a job is made"
    run_one(q, {"url": "v1"})
    before = keyspace_fingerprint(redis_sync)
    again = q.enqueue("thumb", {"w": 2}, dedupe_key="thumb:1", dedupe="reuse")
    assert (again.outcome, again.id, again.previous_id, again.status) == ("cached", first.id, first.id, "completed")
    assert again.cached_result == {"url": "v1"} and not again.created and not again.cache_invalidated
    assert keyspace_fingerprint(redis_sync) == before, "no job, no history, no stream entry, no seq"
    many = q.enqueue_many(
        [
            JobRequest(type="thumb", dedupe_key="thumb:1", dedupe="reuse"),
            JobRequest(type="thumb", dedupe_key="thumb:2", dedupe="reuse"),
        ]
    )
    assert [o.outcome for o in many] == ["cached", "created"]
    assert many[0].cached_result == {"url": "v1"} and many[1].cached_result is None
    assert_indexes_consistent(redis_sync, "reuse", machines.JOB)


def test_reuse_keeps_a_live_holder_and_keep_never_reads_the_cache(q: SyncQueue) -> None:
    live = q.enqueue("t", dedupe_key="k", dedupe="reuse")
    kept = q.enqueue("t", dedupe_key="k", dedupe="reuse")
    assert (kept.outcome, kept.id, kept.cached_result) == ("kept", live.id, None)
    run_one(q, 42)
    assert q.enqueue("t", dedupe_key="k", dedupe="reuse").cached_result == 42
    fresh = q.enqueue("t", dedupe_key="k")  # keep: a finished holder, so a new job takes the key
    assert fresh.created and fresh.cache_invalidated
    reused = q.enqueue("t", dedupe_key="k", dedupe="reuse")
    assert (reused.outcome, reused.id) == ("kept", fresh.id), "the cache was invalidated: keep the new holder"


def test_one_call_decides_in_order_a_replace_then_a_reuse(q: SyncQueue) -> None:
    q.enqueue("t", dedupe_key="k")
    run_one(q, "old")
    out = q.enqueue_many(
        [
            JobRequest(type="t", dedupe_key="k", dedupe="reuse"),
            JobRequest(type="t", dedupe_key="k", dedupe="replace"),
            JobRequest(type="t", dedupe_key="k", dedupe="reuse"),
        ]
    )
    assert [o.outcome for o in out] == ["cached", "created", "kept"]
    assert out[0].cached_result == "old" and out[1].cache_invalidated and out[2].id == out[1].id


def test_an_expired_cache_enqueues(url: str, redis_sync: redis.Redis) -> None:
    with SyncQueue("reuse-ttl", url, config=QueueConfig(cache_ttl=0.05)) as q:
        q.enqueue("t", dedupe_key="k", dedupe="reuse")
        done = run_one(q, 1)
        cache = q.backend.keys.dedupe_result("k")
        deadline = time.monotonic() + 10
        while redis_sync.exists(cache) and time.monotonic() < deadline:  # the TTL runs out
            time.sleep(0.01)
        assert not redis_sync.exists(cache)
        out = q.enqueue("t", dedupe_key="k", dedupe="reuse")
        assert out.created and out.previous_id == done and out.cached_result is None


def test_an_invalidated_cache_enqueues(q: SyncQueue) -> None:
    q.enqueue("t", dedupe_key="k")
    done = run_one(q, 1)
    assert q.invalidate("k") is True
    out = q.enqueue("t", dedupe_key="k", dedupe="reuse")
    assert out.created and out.previous_id == done


def test_a_cache_that_outlived_its_job_is_reused(url: str, redis_sync: redis.Redis) -> None:
    config = QueueConfig(cache_ttl=60, retention=Retention(success=0))
    with SyncQueue("reuse-purged", url, config=config) as q:
        q.enqueue("t", dedupe_key="k")
        done = run_one(q, {"n": 1})
        q.backend.run(q.backend.scripts.reap(100, 3, 1000, 60_000))  # retention purges the job
        assert not redis_sync.exists(q.backend.keys.job(done)) and q.dedupe_holder("k") is None
        out = q.enqueue("t", dedupe_key="k", dedupe="reuse")
        assert (out.outcome, out.id, out.status, out.cached_result) == ("cached", "", "", {"n": 1})
        assert_indexes_consistent(redis_sync, "reuse-purged", machines.JOB)


def test_concurrent_enqueuers_with_reuse_make_one_job_then_share_its_result(url: str) -> None:
    def enqueue(_: int) -> Any:
        with SyncQueue("reuse-race", url) as mine:
            return mine.enqueue("t", dedupe_key="hot", dedupe="reuse")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        first = list(pool.map(enqueue, range(16)))
    assert sum(o.created for o in first) == 1 and len({o.id for o in first}) == 1
    with SyncQueue("reuse-race", url) as q:
        assert q.counts()["queued"] == 1
        run_one(q, "shared")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            second = list(pool.map(enqueue, range(16)))
        assert {(o.outcome, o.cached_result) for o in second} == {("cached", "shared")}
        assert sum(q.counts().values()) == 1


def test_a_bad_policy_is_refused_by_the_client_and_the_script(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("t", dedupe_key="k")
    before = keyspace_fingerprint(redis_sync)
    for bad in ("REUSE", "", "reuse ", None, 1):
        with pytest.raises(ValidationError, match="dedupe policy"):
            q.enqueue("t", dedupe_key="k", dedupe=bad)  # type: ignore[arg-type]
    k = q.backend.keys
    source, sha = script_for(redis_sync, load_script("enqueue"))
    redis_sync.script_load(source)
    # group '', trace '', no deps
    record = ["", "t", "{}", "5", "", "0", "0", "3", "k", "Reuse", "0", "fail", "0", "", "", "0"]
    with pytest.raises(redis.ResponseError, match="RJ_INVALID dedupe policy"):
        redis_sync.evalsha(sha, 2, k.machine, k.events, k.prefix, "tester", "1", *record)
    assert keyspace_fingerprint(redis_sync) == before


def test_cli_enqueue_reuse_prints_the_cached_result(q: SyncQueue, url: str, tmp_path: Path) -> None:
    q.enqueue("t", dedupe_key="k")
    run_one(q, {"answer": 42})

    def rjobs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rjobs", "--url", url, *args], env=cli_env(tmp_path), capture_output=True, text=True
        )

    done = rjobs("enqueue", "reuse", "t", "--dedupe-key", "k", "--dedupe", "reuse")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"answer":42}' and "reused the cached result" in done.stderr
    bad = rjobs("enqueue", "reuse", "t", "--dedupe-key", "k", "--dedupe", "nope")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
