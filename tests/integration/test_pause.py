"""Pausing a queue: no worker claims (in any process: the flag is in Redis and read by the claim
script), running jobs finish, due delayed jobs still become ready, the pause is visible with its
actor, time and reason, and resuming wakes the idle workers. Against the real servers, with the
keyspace checked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rjobs import PartitionedQueue, SyncQueue, ValidationError, machines
from rjobs.client.queue import Queue
from rjobs.store.scripts import load_script
from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker
from tests.helpers import keyspace_fingerprint, script_for
from tests.integration.test_cli import cli_env
from tests.invariants import assert_indexes_consistent

JOB = machines.JOB


@pytest.fixture
def q(url: str) -> Iterator[SyncQueue]:
    with SyncQueue("paused", url, actor="ops") as queue:
        yield queue


def claim(q: SyncQueue, types: list[str] | None = None) -> Any:
    return q.backend.run(q.backend.scripts.claim("w1", 10, 30_000, types))


def test_a_paused_queue_leases_nothing_and_resuming_wakes_the_lanes(q: SyncQueue, redis_sync: redis.Redis) -> None:
    running = q.enqueue("t").id
    token = claim(q).jobs[0].token
    waiting = q.enqueue("t").id
    assert q.pause("deploy") is True
    redis_sync.delete(q.backend.keys.wake("t"))  # as if an idle worker had taken the token
    result = claim(q, ["t"])
    assert (result.jobs, result.paused, result.ready_left) == ([], True, 0), "no job, and no claim again at once"
    assert q.get(waiting).status == JOB.ready and q.get(waiting).attempt == 0
    q.complete(running, "done", token=token)  # a running job still finishes
    info = q.paused()
    assert info is not None and info["by"] == "ops" and info["msg"] == "deploy" and info["t"] > 0
    assert q.stats()["paused"] == info
    assert q.resume() is True and q.paused() is None
    assert redis_sync.llen(q.backend.keys.wake("t")) == 1, "an idle worker of the lane is woken"
    result = claim(q, ["t"])
    assert [j.id for j in result.jobs] == [waiting] and not result.paused
    assert_indexes_consistent(redis_sync, "paused", JOB)


def test_pausing_twice_keeps_the_first_pause_and_resuming_twice_is_a_no_op(q: SyncQueue) -> None:
    q.enqueue("t")
    assert q.pause("first") is True
    assert q.pause("second", actor="other") is False
    info = q.paused()
    assert info is not None and (info["by"], info["msg"]) == ("ops", "first")
    assert q.resume() is True
    assert q.resume() is False


def test_due_delayed_jobs_become_ready_while_paused(q: SyncQueue) -> None:
    later = q.enqueue("t", delay=0.05).id
    q.pause()
    anyio.run(anyio.sleep, 0.1)
    assert claim(q, ["t"]).jobs == []
    assert q.get(later).status == JOB.ready


@pytest.mark.parametrize(
    "argv",
    [["ops", "2", ""], ["ops", "true", ""], ["bad actor", "1", ""], ["ops", "1", "x" * 1001], ["ops", "1"], []],
)
def test_a_raw_pause_with_bad_arguments_writes_nothing(q: SyncQueue, redis_sync: redis.Redis, argv: list[str]) -> None:
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync)
    k = q.backend.keys
    with pytest.raises(redis.ResponseError, match="RJ_INVALID"):
        redis_sync.eval(script_for(redis_sync, load_script("pause"))[0], 2, k.machine, k.events, k.prefix, *argv)
    assert keyspace_fingerprint(redis_sync) == before


def test_the_api_refuses_a_bad_reason_and_writes_nothing(q: SyncQueue, redis_sync: redis.Redis) -> None:
    q.enqueue("t")
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError):
        q.pause("x" * 1001)
    with pytest.raises(ValidationError):
        q.pause("ok", actor="not an actor")
    assert keyspace_fingerprint(redis_sync) == before


def test_a_partitioned_queue_pauses_every_partition(url: str) -> None:
    async def main() -> None:
        async with PartitionedQueue("parts", 3, url=url) as pq:
            await pq.enqueue("t")
            assert await pq.pause("all") is True
            assert all([await p.paused() is not None for p in pq.partitions])
            assert (await pq.stats())["paused"]["msg"] == "all"
            assert await pq.resume() is True
            assert (await pq.stats())["paused"] is None

    anyio.run(main)


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_running_worker_stops_claiming_and_goes_on_after_resume(
    url: str, redis_sync: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def t(ctx: JobContext, params: Any) -> None:
        ran.append(ctx.job.id)

    caplog.set_level(logging.INFO, logger="rjobs.worker")
    async with Queue("live", url=url) as queue:
        worker = Worker(queue, [t], lease=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            first = (await queue.enqueue("t")).id
            await queue.wait(first, timeout=10)
            await queue.pause("maintenance")
            held = (await queue.enqueue("t")).id
            with anyio.move_on_after(1.5):  # a second past the worker's idle cap: it claims again
                await queue.wait(held, timeout=None)
            assert (await queue.get(held)).status == JOB.ready and ran == [first]
            await queue.resume()
            done = await queue.wait(held, timeout=10)
            worker.stop()
        assert done.status == JOB.success and ran == [first, held]
    messages = [r.getMessage() for r in caplog.records]
    assert "queue live is paused: no job is claimed" in messages and "queue live resumed" in messages


@pytest.mark.timeout(60)
def test_cli_pause_stats_and_resume(q: SyncQueue, url: str, tmp_path: Path, redis_sync: redis.Redis) -> None:
    q.enqueue("t")

    def rjobs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rjobs", *args, "--url", url],
            capture_output=True,
            text=True,
            env=cli_env(tmp_path),
            timeout=30,
        )

    out = rjobs("pause", "paused", "--reason", "db migration")
    assert out.returncode == 0 and "paused paused: workers claim no job" in out.stdout, out.stderr
    again = rjobs("pause", "paused", "--json")
    assert json.loads(again.stdout)["changed"] is False and json.loads(again.stdout)["reason"] == "db migration"
    stats = rjobs("stats", "paused")
    assert "PAUSED by " in stats.stdout and "db migration" in stats.stdout
    assert "paused (paused)" in rjobs("stats").stdout
    assert rjobs("resume", "paused").stdout.strip() == "resumed paused"
    assert rjobs("resume", "paused").stdout.strip() == "paused was not paused"
    missing = rjobs("pause", "nope")
    assert missing.returncode != 0 and not redis_sync.exists("rjobs:{nope}:machine")


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_pause_holds_in_every_worker_process(url: str, redis_sync: redis.Redis) -> None:
    """Two real ``rjobs worker`` processes: while the queue is paused neither claims (each claims
    at least once a second when idle), and after resume they run every job."""
    import os
    import time

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "RJOBS_TEST_QUEUE": "paused2"}
    command = [sys.executable, "-m", "rjobs", "worker", "tests.workerapp:make_worker", "--url", url]
    with SyncQueue("paused2", url) as q:
        q.enqueue("quick", {"seconds": 0.01})  # declares the queue
        q.pause("two processes")
        ids = [q.enqueue("quick", {"seconds": 0.01}).id for _ in range(6)]
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        procs = [subprocess.Popen(command, env=env, **quiet) for _ in range(2)]
        try:
            deadline = time.monotonic() + 20
            while len(q.stats()["workers"]) < 2:  # both claimed at least once: both saw the pause
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.1)
            time.sleep(1.5)
            assert q.counts()[JOB.success] == 0 and all(q.get(i).attempt == 0 for i in ids)
            q.resume()
            while q.counts()[JOB.success] < 7:
                assert time.monotonic() < deadline + 30, q.counts()
                time.sleep(0.1)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(timeout=30)
        assert_indexes_consistent(redis_sync, "paused2", JOB)
