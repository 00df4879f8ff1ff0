"""What JSON cannot carry faithfully is refused before Redis is touched (NaN and infinity, lone
surrogates, nesting past rjobs.store.codec.MAX_DEPTH, out-of-range times, bad structured errors); and on
the worker's side, one job whose params cannot be decoded fails alone."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import redis

from rjobs import Fail, JobRequest, Queue, SyncQueue, ValidationError
from rjobs.models import Undecodable
from rjobs.store.codec import MAX_DEPTH
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_unfaithful_payloads_and_times_are_refused_and_write_nothing(url: str, redis_sync: redis.Redis) -> None:
    q = SyncQueue("p", url)
    job = q.enqueue("t").id
    before = keyspace_fingerprint(redis_sync, "*")
    bad: list[Callable[[], object]] = [
        lambda: q.enqueue("t", {"x": math.nan}),
        lambda: q.enqueue("t", [1.0, -math.inf]),
        lambda: q.enqueue("t", {"s": "\ud800"}),
        lambda: q.enqueue("t", _nested(MAX_DEPTH + 1)),
        lambda: q.enqueue("t", _nested(999)),
        lambda: q.enqueue("t", delay=math.nan),
        lambda: q.enqueue("t", run_at=math.inf),
        lambda: q.enqueue_many([JobRequest(type="t"), JobRequest(type="t", params=math.nan)]),
        lambda: q.complete(job, {"score": math.inf}),
        lambda: q.partial(job, {"done": 1}, {"code": "E", "message": "m", "retry_after_ms": -1}),
        lambda: q.fail(job, {"code": "E", "message": "m", "retry_after_ms": -1}),
        lambda: q.add_asset(job, "image", "https://x/y.png", meta={"ratio": math.nan}),
        lambda: q.cancel(job, "\udcff"),
        lambda: q.comment(job, "bad \ud800"),
        lambda: q.retry(job, {"x": math.nan}),
        lambda: q.transition(job, "scheduled", delay=math.inf),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(ValidationError):
            call()
        assert keyspace_fingerprint(redis_sync, "*") == before, f"call #{i} wrote something"
    q.close()


async def _ok(ctx: Any, params: Any) -> dict[str, Any]:
    return {"n": params["n"]}


@pytest.mark.anyio
async def test_params_that_cannot_be_decoded_fail_their_job_alone(queue: Queue, redis_sync: redis.Redis) -> None:
    ids = [(await queue.enqueue("ok", {"n": n})).id for n in range(10)]
    poisoned = ids[4]
    # Written around the client (which refuses it): ~2 KB of nesting, a RecursionError to decode.
    redis_sync.hset(queue.backend.keys.job(poisoned), "params", b"[" * 990 + b"]" * 990)
    worker = Worker(queue, functions={"ok": _ok}, concurrency=10, lease=5.0, burst=True)
    await worker.run()
    jobs = {i: await queue.get(i) for i in ids}
    assert [i for i, j in jobs.items() if j.status == "completed"] == [i for i in ids if i != poisoned]
    bad = jobs[poisoned]
    assert bad.status == "failed" and bad.error is not None and bad.error.code == "invalid_params"
    assert bad.attempt == 1 and "deeper" in bad.error.message and isinstance(bad.params, Undecodable)
    assert worker.stats.lease_lost == 0 and all(j.lease_losses == 0 for j in jobs.values())


async def _nan(ctx: Any, params: Any) -> dict[str, float]:
    return {"score": math.nan}


async def _review(ctx: Any, params: Any) -> None:
    await ctx.review("please check")


async def _surrogate(ctx: Any, params: Any) -> None:
    raise Fail("broken \ud800 text", code="broken")


@pytest.mark.anyio
async def test_worker_refuses_what_it_cannot_record_faithfully_at_once(queue: Queue) -> None:
    nan = (await queue.enqueue("nan")).id
    review = (await queue.enqueue("review")).id  # the JOB machine has no review state
    surrogate = (await queue.enqueue("surrogate")).id
    functions = {"nan": _nan, "review": _review, "surrogate": _surrogate}
    await Worker(queue, functions=functions, lease=5.0, burst=True).run()
    for job_id, code, words in (
        (nan, "invalid_result", "NaN"),
        (review, "invalid", "no review state"),
        (surrogate, "broken", "broken \\ud800 text"),
    ):
        job = await queue.get(job_id)
        assert job.status == "failed" and job.executions == 1, (code, job)  # not retried
        assert job.error is not None and job.error.code == code and words in job.error.message


def test_enqueue_many_refuses_what_is_not_a_job_request(url: str, redis_sync: redis.Redis) -> None:
    """A dict (or anything else) in enqueue_many is a typed error before anything is sent."""
    with SyncQueue("payloads", url) as q:
        q.enqueue("seen")
        before = keyspace_fingerprint(redis_sync)
        for bad in ({"type": "t"}, "t", None, 3):
            with pytest.raises(ValidationError, match="JobRequest"):
                q.enqueue_many([JobRequest(type="ok"), bad])  # type: ignore[list-item]
        assert keyspace_fingerprint(redis_sync) == before
