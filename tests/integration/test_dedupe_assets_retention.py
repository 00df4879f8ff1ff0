"""Dedupe/replace with cache invalidation, assets and ownership, and retention:
finished jobs expire with every key and index entry that points at them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rjobs import JobNotFound, JobRequest, QueueConfig, Retention, SyncQueue, Unauthorized, machines
from rjobs.store.keys import QueueKeys
from tests.invariants import assert_indexes_consistent


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("dd", url, config=QueueConfig(cache_ttl=60)) as queue:
        yield queue


def claim(q: SyncQueue, n: int = 1) -> list[Any]:
    return q.backend.run(q.backend.scripts.claim("w1", n, 30_000)).jobs


# -- dedupe ---------------------------------------------------------------------------------------------
def test_keep_returns_the_live_job(q: SyncQueue) -> None:
    first = q.enqueue("thumb", {"v": 1}, dedupe_key="thumb:u1")
    again = q.enqueue("thumb", {"v": 2}, dedupe_key="thumb:u1")
    assert first.created and not again.created
    assert (again.id, again.outcome, again.previous_id) == (first.id, "kept", first.id)
    assert q.counts()["queued"] == 1


def test_replace_cancels_the_stale_job_and_invalidates_its_cache(q: SyncQueue, redis_sync: redis.Redis) -> None:
    done = q.enqueue("thumb", dedupe_key="thumb:u1")
    job = claim(q)[0]
    q.complete(done.id, {"url": "v1"}, token=job.token)
    assert q.cached_result("thumb:u1") == {"url": "v1"}
    stale = q.enqueue("thumb", dedupe_key="thumb:u1", dedupe="replace")
    assert stale.created and stale.previous_id == done.id and stale.cache_invalidated
    assert not stale.stale_cancelled, "the previous job had already finished"
    assert q.cached_result("thumb:u1") is None
    fresh = q.enqueue("thumb", dedupe_key="thumb:u1", dedupe="replace")
    assert (fresh.previous_id, fresh.stale_cancelled, fresh.cache_invalidated) == (stale.id, True, False)
    cancelled = q.get(stale.id)
    assert cancelled.status == "cancelled" and cancelled.error is not None and cancelled.error.code == "replaced"
    assert fresh.id in cancelled.error.message
    assert q.dedupe_holder("thumb:u1") == fresh.id
    assert_indexes_consistent(redis_sync, "dd", machines.JOB)


def test_replace_leaves_a_running_job_unless_asked(q: SyncQueue) -> None:
    running = q.enqueue("t", dedupe_key="k")
    claim(q)
    kept = q.enqueue("t", dedupe_key="k", dedupe="replace")
    assert kept.created and not kept.stale_cancelled and q.get(running.id).status == "processing"
    claim(q)
    again = q.enqueue("t", dedupe_key="k", dedupe="replace", cancel_running=True)
    assert again.stale_cancelled and q.get(kept.id).status == "cancelled"


def test_cache_can_be_invalidated_and_expires(url: str) -> None:
    with SyncQueue("ttl", url, config=QueueConfig(cache_ttl=0.3)) as q:
        out = q.enqueue("t", dedupe_key="k")
        job = claim(q)[0]
        q.complete(out.id, 7, token=job.token)
        assert q.cached_result("k") == 7
        assert q.invalidate("k") is True and q.invalidate("k") is False
        out2 = q.enqueue("t", dedupe_key="k")
        q.complete(out2.id, 8, token=claim(q)[0].token)
        time.sleep(0.4)
        assert q.cached_result("k") is None


# -- assets -----------------------------------------------------------------------------------------------
def test_assets_from_worker_and_owner(q: SyncQueue) -> None:
    job_id = q.enqueue("render", user_id="alice").id
    job = claim(q)[0]
    a1 = q.add_asset(
        job_id, "image", "https://cdn/x.png", storage_path="renders/x.png", file_size=1234, token=job.token, actor="w1"
    )
    a2 = q.add_asset(job_id, "thumbnail", "https://cdn/x_t.png", user_id="alice")
    assets = q.assets(job_id, user_id="alice")
    assert [a.id for a in assets] == [a1.id, a2.id]
    assert assets[0].file_size == 1234 and assets[0].storage_path == "renders/x.png"
    with pytest.raises(Unauthorized):
        q.assets(job_id, user_id="bob")
    with pytest.raises(JobNotFound):
        q.assets("missing")
    assert [e.message for e in q.events(job_id) if e.event == "asset"] == ["image", "thumbnail"]


# -- retention ---------------------------------------------------------------------------------------------
def keys_of(client: redis.Redis, queue: str) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=QueueKeys(queue).prefix + "*", count=1000)}


def test_finished_jobs_expire_with_everything_that_points_at_them(url: str, redis_sync: redis.Redis) -> None:
    config = QueueConfig(retention=Retention(success=0.2, partial=0.2, failure=0.2, cancelled=0.2), cache_ttl=0)
    with SyncQueue("ret", url, config=config) as q:
        warm = q.enqueue("warmup").id
        q.complete(warm, None, token=claim(q)[0].token)  # the baseline includes the worker registry
        time.sleep(0.3)
        q.backend.run(q.backend.scripts.reap(100, 3, 1000, 60_000))
        baseline_keys = keys_of(redis_sync, "ret")
        baseline_mem = int(redis_sync.info("memory")["used_memory"])
        n = 600
        parent = q.enqueue("parent", user_id="u1").id
        q.enqueue_many(
            [
                JobRequest(
                    type="t",
                    params={"i": i, "pad": "x" * 200},
                    user_id=f"u{i % 7}",
                    dedupe_key=f"k{i}",
                    depends_on=(parent,) if i % 10 == 0 else (),
                )
                for i in range(n)
            ]
        )
        assert len(keys_of(redis_sync, "ret")) > n
        first = claim(q)[0]
        assert first.id == parent
        q.complete(parent, None, token=first.token)  # releases its 60 dependents
        todo = n
        while todo:
            jobs = claim(q, 100)
            for i, job in enumerate(jobs):
                if i % 3 == 0:
                    q.fail(job.id, "x", token=job.token)
                else:
                    q.add_asset(job.id, "file", "s3://b/k", token=job.token)
                    q.complete(job.id, {"ok": i}, token=job.token)
            todo -= len(jobs)
            assert jobs or todo == 0

        def finished() -> int:
            return sum(redis_sync.zcard(QueueKeys("ret").state(s)) for s in machines.JOB.final_states())

        assert finished() > 0
        time.sleep(0.3)
        purged = n + 1 - finished()  # finishing calls purge 2 per job they finish as they go
        while True:
            _, _, n_purged = q.backend.run(q.backend.scripts.reap(100, 3, 250, 60_000))
            purged += n_purged
            if not n_purged:
                break
        assert purged == n + 1
        assert keys_of(redis_sync, "ret") == baseline_keys, "no job, stream, asset, dedupe or index key left"
        for state in machines.JOB.states:
            assert redis_sync.zcard(QueueKeys("ret").state(state)) == 0
        assert_indexes_consistent(redis_sync, "ret", machines.JOB)
        queue_stream = redis_sync.xlen(QueueKeys("ret").events)
        assert queue_stream > 0, "the queue stream is capped, not purged"
        redis_sync.delete(QueueKeys("ret").events)
        mem = int(redis_sync.info("memory")["used_memory"])
        assert mem < baseline_mem + 512 * 1024, f"memory {mem} did not return near baseline {baseline_mem}"
