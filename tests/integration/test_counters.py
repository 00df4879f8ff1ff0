"""The queue's counters (docs/design.md, "Counters"): the scripts that create, claim and finish
jobs add to a per-minute bucket (kept a day, then expired by Redis) and to totals kept for good,
in the same atomic write as the move. Against the real servers, with the keyspace checked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rjobs import JobRequest, MetricsBucket, QueueTotals, SyncQueue, ValidationError, machines
from rjobs.store.layout import METRICS_BUCKET_MS, METRICS_TTL_S
from rjobs.store.messages import MoveRequest
from tests.helpers import keyspace_fingerprint
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("counted", url, actor="ops") as queue:
        yield queue


def claim(q: SyncQueue, n: int, types: list[str] | None = None) -> Any:
    return q.backend.run(q.backend.scripts.claim("w1", n, 30_000, types)).jobs


def summed(buckets: list[MetricsBucket]) -> dict[str, Any]:
    """The buckets added up (a test may cross a minute's end)."""
    out: dict[str, Any] = {"enqueued": {}, "claimed": {}, "wait_ms": {}, "runs": {}, "run_ms": {}, "finished": {}}
    for b in buckets:
        for name in ("enqueued", "claimed", "wait_ms", "runs", "run_ms"):
            for t, n in getattr(b, name).items():
                out[name][t] = out[name].get(t, 0) + n
        for state, per in b.finished.items():
            for t, n in per.items():
                out["finished"].setdefault(state, {})[t] = out["finished"].get(state, {}).get(t, 0) + n
    return out


def counter_keys(client: redis.Redis) -> list[str]:
    return sorted(k.decode() for k in client.keys("rjobs:{counted}:metrics:*"))


def test_every_move_is_counted_once_by_type_and_state(q: SyncQueue, redis_sync: redis.Redis) -> None:
    a = [q.enqueue("a").id for _ in range(3)]
    b = [q.enqueue("b").id for _ in range(2)]
    leased = claim(q, 2, ["a"])
    assert [j.id for j in leased] == a[:2]
    q.complete(leased[0].id, {"ok": 1}, token=leased[0].token)
    q.fail(leased[1].id, "boom", token=leased[1].token)
    q.cancel(b[0], "not needed")  # a final move that ends no lease: no run time
    q.complete(leased[0].id, {"ok": 1}, token=leased[0].token)  # the same finish again: 'already', counted once

    got = summed(q.metrics(minutes=3))
    assert got["enqueued"] == {"a": 3, "b": 2}
    assert got["claimed"] == {"a": 2}
    assert got["finished"] == {JOB.success: {"a": 1}, JOB.failure: {"a": 1}, JOB.cancelled: {"b": 1}}
    assert got["runs"] == {"a": 2}
    assert 0 <= got["run_ms"]["a"] < 60_000 and 0 <= got["wait_ms"]["a"] < 60_000
    totals = q.totals()
    assert totals == QueueTotals(
        enqueued={"a": 3, "b": 2},
        claimed={"a": 2},
        finished={JOB.success: {"a": 1}, JOB.failure: {"a": 1}, JOB.cancelled: {"b": 1}},
    )
    # keyspace: a bucket per minute written, each expiring within a day and a margin; totals kept
    keys = counter_keys(redis_sync)
    assert 1 <= len(keys) <= 2
    for key in keys:
        assert 0 < redis_sync.ttl(key) <= METRICS_TTL_S
    assert redis_sync.ttl("rjobs:{counted}:totals") == -1
    assert_indexes_consistent(redis_sync, "counted", JOB)


def test_the_buckets_are_minutes_of_server_time_oldest_first(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("a")
    buckets = q.metrics(minutes=5)
    assert len(buckets) == 5
    starts = [b.start_ms for b in buckets]
    assert all(s % METRICS_BUCKET_MS == 0 for s in starts)
    assert starts == [starts[0] + i * METRICS_BUCKET_MS for i in range(5)]
    sec, usec = redis_sync.time()
    now_ms = sec * 1000 + usec // 1000
    assert starts[-1] <= now_ms < starts[-1] + METRICS_BUCKET_MS
    assert sum(b.enqueued.get("a", 0) for b in buckets) == 1
    assert q.metrics(minutes=1440)[-1].start_ms == starts[-1]


def test_a_retried_job_counts_each_attempt_and_one_finish(q: SyncQueue) -> None:
    jid = q.enqueue("r", max_attempts=3).id
    first = claim(q, 1)[0]
    q.release(jid, token=first.token)  # handed back: ready again, not final
    second = claim(q, 1)[0]
    q.complete(jid, "done", token=second.token)
    got = summed(q.metrics(minutes=3))
    assert got["claimed"] == {"r": 2} and got["runs"] == {"r": 1}
    assert got["finished"] == {JOB.success: {"r": 1}}


def test_a_batch_of_moves_adds_up_in_one_write(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue_many([JobRequest(type="bulk") for _ in range(150)])
    leased = claim(q, 150)
    assert len(leased) == 150
    moves = [MoveRequest(j.id, JOB.success, token=j.token) for j in leased]
    assert q.backend.run(q.backend.scripts.finish("w1", moves)) == ["ok"] * 150  # one script call
    totals = q.totals()
    assert totals.enqueued == {"bulk": 150} and totals.claimed == {"bulk": 150}
    assert totals.finished == {JOB.success: {"bulk": 150}}


def test_bad_minutes_are_refused_and_write_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("a")
    before = keyspace_fingerprint(redis_sync)
    for bad in (0, -1, 1441, 1.5, True, "60", float("nan"), None):
        with pytest.raises(ValidationError):
            q.metrics(minutes=bad)  # type: ignore[arg-type]
    assert keyspace_fingerprint(redis_sync) == before


def test_obliterate_removes_the_counters(q: SyncQueue, redis_sync: redis.Redis) -> None:
    jid = q.enqueue("a").id
    q.cancel(jid)
    assert counter_keys(redis_sync) and redis_sync.exists("rjobs:{counted}:totals")
    q.obliterate()
    assert redis_sync.keys("rjobs:{counted}:*") == []
