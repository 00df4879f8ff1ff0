"""Schedules ticked by workers (rjobs/worker/cron.py): several workers, in one process or as real
``rjobs worker`` processes, enqueue each tick of an ``every=1`` schedule exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import redis

from rjobs import Cron, PartitionedQueue, Queue, SyncQueue, Worker, machines
from rjobs.cli.server import LocalServer
from tests.invariants import assert_indexes_consistent

ROOT = Path(__file__).resolve().parents[2]
Q = "cronq"


def noop(ctx: object, params: object) -> None:
    """A function of another type: the tick jobs stay queued, to be counted."""


def assert_each_tick_once(q: SyncQueue, name: str) -> list[int]:
    """Every job is one tick of ``name`` (id cron-<name>-<ms>), one job per tick, no tick left out."""
    jobs = q.list(limit=1000)
    ticks = sorted(int(j.id.rsplit("-", 1)[1]) for j in jobs)
    assert all(j.id.startswith(f"cron-{name}-") and j.type == "tick" for j in jobs)
    assert all(t % 1000 == 0 for t in ticks)
    assert ticks == list(range(ticks[0], ticks[-1] + 1000, 1000)), "a tick was skipped or enqueued twice"
    (s,) = q.schedules()
    assert s.last_ms == ticks[-1] and s.next_ms > ticks[-1]
    return ticks


def wait_for_jobs(q: SyncQueue, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while q.counts()["queued"] < n:
        assert time.monotonic() < deadline, f"fewer than {n} ticks enqueued in {timeout} s"
        time.sleep(0.05)


def test_worker_instances_enqueue_each_tick_once(url: str, redis_sync: redis.Redis) -> None:
    spec = Cron("poll", "tick", every=1)

    async def main() -> None:
        workers = [Worker(Queue(Q, url), {"other": noop}, cron=[spec], worker_id=f"w{i}") for i in range(3)]
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.run)
            with SyncQueue(Q, url) as q:
                await anyio.to_thread.run_sync(wait_for_jobs, q, 4)
            for w in workers:
                w.stop()
        for w in workers:
            for q in w.queues:
                await q.close()

    anyio.run(main)
    with SyncQueue(Q, url) as q:
        assert len(assert_each_tick_once(q, "poll")) >= 4
        creators = {q.events(j.id)[0].actor for j in q.list(limit=1000)}
        assert creators <= {"w0", "w1", "w2"}
    assert_indexes_consistent(redis_sync, Q, machines.JOB)


APP = """
import rjobs

def other(ctx, params):
    pass

worker = rjobs.Worker("cronq", {"other": other}, cron=[rjobs.Cron("poll", "tick", every=1)])
"""


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
@pytest.mark.slow
def test_rjobs_worker_processes_enqueue_each_tick_once(tmp_path: Path, url: str, redis_sync: redis.Redis) -> None:
    (tmp_path / "cronapp.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    env["RJOBS_HOME"] = str(tmp_path / "home")
    args = [sys.executable, "-m", "rjobs", "worker", "cronapp:worker", "--url", url]
    procs = [subprocess.Popen(args, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        with SyncQueue(Q, url) as q:
            wait_for_jobs(q, 4)
            for p in procs:
                p.send_signal(signal.SIGTERM)
            errs = [p.communicate(timeout=30)[1] for p in procs]
            assert [p.returncode for p in procs] == [0, 0, 0], errs
            ticks = assert_each_tick_once(q, "poll")
            assert len(ticks) >= 4
            assert sum(e.count("schedule tick cron-poll-") for e in errs) == len(ticks)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert_indexes_consistent(redis_sync, Q, machines.JOB)


@pytest.mark.chaos
@pytest.mark.slow
def test_ticks_survive_a_server_crash_once_each(fresh_server: LocalServer) -> None:
    """The server is killed (its last writes may be lost with the AOF) and started again while
    workers tick: a tick and its job are lost or kept together, so every tick is still enqueued
    once, and the ticks that fell due meanwhile (within grace) are enqueued after the restart."""
    url = fresh_server.url

    async def main() -> None:
        workers = [Worker(Queue(Q, url), {"other": noop}, cron=[Cron("poll", "tick", every=1)]) for _ in range(2)]
        async with anyio.create_task_group() as tg:
            for w in workers:
                tg.start_soon(w.run)
            with SyncQueue(Q, url) as q:
                await anyio.to_thread.run_sync(wait_for_jobs, q, 2)
            fresh_server.kill()
            fresh_server.start()
            with SyncQueue(Q, url) as q:
                seen = q.counts()["queued"]
                await anyio.to_thread.run_sync(wait_for_jobs, q, seen + 3)
            for w in workers:
                w.stop()
        for w in workers:
            for q in w.queues:
                await q.close()

    anyio.run(main)
    with SyncQueue(Q, url) as q:
        assert len(assert_each_tick_once(q, "poll")) >= 5
    with redis.Redis.from_url(url) as r:
        assert_indexes_consistent(r, Q, machines.JOB)


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_a_schedule_of_a_partitioned_queue_lives_in_its_first_partition(url: str) -> None:
    async def main() -> None:
        pq = PartitionedQueue("pq", 2, url)
        w = Worker([Queue("other", url), pq], {"other": noop}, cron=[Cron("p", "tick", every=1, queue="pq")])
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            with SyncQueue("pq#0", url) as q:
                await anyio.to_thread.run_sync(wait_for_jobs, q, 1)
            w.stop()
        await pq.close()
        for q in w.queues:
            await q.close()

    anyio.run(main)
    with SyncQueue("pq#0", url) as q0, SyncQueue("pq#1", url) as q1, SyncQueue("other", url) as other:
        assert [s.name for s in q0.schedules()] == ["p"]
        assert q1.schedules() == [] and other.schedules() == []


def test_a_schedule_naming_a_queue_the_worker_does_not_serve_is_an_error() -> None:
    with pytest.raises(ValueError, match="does not serve"):
        Worker(Q, {"other": noop}, cron=[Cron("p", "tick", every=1, queue="elsewhere")])
    with pytest.raises(ValueError, match="same name"):
        Worker(Q, {"other": noop}, cron=[Cron("p", "t", every=1), Cron("p", "t", every=2)])
    with pytest.raises(TypeError):
        Worker(Q, {"other": noop}, cron=["0 3 * * *"])  # type: ignore[list-item]
