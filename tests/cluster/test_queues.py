"""rjobs on a real local Redis Cluster: queues on every master through ``redis+cluster://`` and a
passed-in client, the CLI across masters, a slot migrated under a draining worker (split halfway
too, so calls meet ASK and TRYAGAIN), a master killed under load, and TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import anyio
import msgspec
import pytest
import redis

import rjobs
from rjobs.cli.server import find_redis_server
from rjobs.machines import JOB
from rjobs.store.keys import QueueKeys
from rjobs.store.transport import AsyncRunner
from tests.clusterkit import LocalCluster, slot_of
from tests.helpers import CLUSTER_KINDS
from tests.invariants import assert_indexes_consistent


async def square(ctx: rjobs.JobContext, params: dict[str, int]) -> int:
    """A job that takes a little time, so a worker is still draining while the cluster changes."""
    await anyio.sleep(0.005)
    return params["i"] ** 2


def finished_once(cluster: LocalCluster, name: str) -> dict[str, int]:
    """Check the queue's keyspace on the cluster: the invariants hold, and no job finished twice
    (at most one move into a final state in each history). Returns the jobs per state."""
    with cluster.client() as client:
        counts = assert_indexes_consistent(client, name, JOB)
        keys = QueueKeys(name)
        for key in client.scan_iter(match=keys.prefix + "job:*:history", count=1000):
            entries = [msgspec.json.decode(e) for e in client.lrange(key, 0, -1)]
            finals = [e for e in entries if e.get("to") in ("completed", "failed", "partial", "cancelled")]
            assert len(finals) <= 1, f"{key!r} finished twice: {entries}"
    return counts


@pytest.mark.anyio
async def test_queues_on_every_master_run_exactly_once(clean_cluster: LocalCluster) -> None:
    names = [clean_cluster.queue_name_on(m) for m in clean_cluster.masters()]
    queues = [rjobs.Queue(name, url=clean_cluster.url) for name in names]
    try:
        ids: dict[str, list[str]] = {}
        for q in queues:
            outcomes = await q.enqueue_many([rjobs.JobRequest(type="square", params={"i": i}) for i in range(40)])
            single = await q.enqueue("square", {"i": 7}, dedupe_key="seven")
            again = await q.enqueue("square", {"i": 7}, dedupe_key="seven")
            assert again.id == single.id and again.outcome == "kept"
            ids[q.name] = [o.id for o in outcomes] + [single.id]
        await rjobs.Worker(queues, functions={"square": square}, concurrency=20, burst=True).run()
        for q in queues:
            outcome = await q.wait(ids[q.name][3], timeout=5)
            assert (outcome.success, outcome.output) == (True, 9)
            assert (await q.counts())["completed"] == 41
        for master, name in zip(clean_cluster.masters(), names, strict=True):
            assert slot_of(QueueKeys(name).machine) in clean_cluster.slots(master)
            assert master.admin.exists(QueueKeys(name).job(ids[name][0])) == 1  # the jobs live on that master
            assert finished_once(clean_cluster, name)["completed"] == 41
        for q in queues:  # the counters live in the queue's slot, written with the moves
            totals = await q.totals()
            assert totals.finished == {"completed": {"square": 41}} and totals.claimed == {"square": 41}
            assert sum(b.enqueued.get("square", 0) for b in await q.metrics(minutes=3)) == 41
    finally:
        for q in queues:
            await q.close()


def test_a_sync_queue_on_a_passed_cluster_client(clean_cluster: LocalCluster) -> None:
    name = clean_cluster.queue_name_on(clean_cluster.masters()[2])
    with clean_cluster.client() as client:
        q = rjobs.SyncQueue(name, client=client)
        job = q.enqueue("square", {"i": 3}, job_id="three")
        with pytest.raises(rjobs.JobExists):
            q.enqueue("square", {"i": 3}, job_id="three")
        assert q.get("three").status == "queued"
        held = q.hold(job.id, lease=30)
        with held as h:
            h.complete({"done": True})
        assert q.wait(job.id, timeout=5).output == {"done": True}
        assert q.totals().finished == {"completed": {"square": 1}}
        assert finished_once(clean_cluster, name)["completed"] == 1
        q.obliterate()  # removes the counters too, by name (no scan), on the slot's master
        assert q.totals().enqueued == {}
        q.close()


def test_the_cli_sees_queues_on_every_master(clean_cluster: LocalCluster, tmp_path: Any) -> None:
    names = sorted(clean_cluster.queue_name_on(m, prefix="cli") for m in clean_cluster.masters())
    env = {**os.environ, "REDIS_URL": clean_cluster.url, "RJOBS_HOME": str(tmp_path)}

    def rjobs_cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "rjobs", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    for name in names:
        rjobs_cli("enqueue", name, "square", "-p", '{"i": 2}')
    stats = json.loads(rjobs_cli("stats", "--json"))
    assert sorted(row["queue"] for row in stats) == names
    listed = json.loads(rjobs_cli("ls", names[1], "--json"))
    assert [j["status"] for j in listed] == ["queued"]
    events = rjobs_cli("events", names[2], "-n", "5")
    assert "created" in events or "queued" in events


async def until(check: Any, q: rjobs.Queue, seconds: float) -> None:
    """Return once ``check(q.counts())`` holds; fail after ``seconds``."""
    with anyio.fail_after(seconds):
        while True:
            if check(await q.counts()):
                return
            await anyio.sleep(0.02)


def test_the_worker_command_serves_queues_on_every_master(clean_cluster: LocalCluster, tmp_path: Any) -> None:
    names = [clean_cluster.queue_name_on(m, prefix="cmd") for m in clean_cluster.masters()]
    (tmp_path / "clusterjobs.py").write_text(
        "from rjobs.worker.loop import Worker\n"
        "def triple(ctx, params):\n    return params['n'] * 3\n"
        f"worker = Worker({names!r}, functions={{'triple': triple}}, lease=5.0)\n"
    )
    env = {
        **os.environ,
        "RJOBS_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    ids = {}
    for name in names:
        with rjobs.SyncQueue(name, url=clean_cluster.url) as q:
            ids[name] = q.enqueue("triple", {"n": 5}).id
    command = [sys.executable, "-m", "rjobs", "worker", "clusterjobs:worker", "--burst", "--url", clean_cluster.url]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in names:
        with rjobs.SyncQueue(name, url=clean_cluster.url) as q:
            assert q.get(ids[name]).result == 15


async def _drain_while(cluster: LocalCluster, name: str, change: Any, jobs: int = 3000) -> dict[str, int]:
    """Enqueue ``jobs`` jobs on ``name``, start a worker, call ``change()`` (in a thread) while it
    drains, then let it finish; returns the queue's jobs per state after the keyspace checks."""
    q = rjobs.Queue(name, url=cluster.url)
    try:
        await q.enqueue_many([rjobs.JobRequest(type="square", params={"i": i}) for i in range(jobs)])
        worker = rjobs.Worker(q, functions={"square": square}, concurrency=10, lease=5.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            await until(lambda c: c["completed"] >= jobs // 10, q, 60)
            await anyio.to_thread.run_sync(change)
            # the change happened while the worker drained (not before it started or after it ended)
            left = await q.counts()
            assert left["queued"] + left["processing"] > 0, f"drained before the change ended: {left}"
            # until every job that exists has ended
            await until(lambda c: c["completed"] > 0 and not c["queued"] + c["processing"] + c["scheduled"], q, 90)
            worker.stop()
        return finished_once(cluster, name)
    finally:
        await q.close()


@pytest.mark.slow
@pytest.mark.parametrize("fresh_cluster", CLUSTER_KINDS, indirect=True)
@pytest.mark.anyio
async def test_a_slot_migrated_under_a_draining_worker(fresh_cluster: LocalCluster) -> None:
    src, dst = fresh_cluster.masters()[:2]
    name = fresh_cluster.queue_name_on(src)
    slot = slot_of(QueueKeys(name).machine)

    def migrate() -> None:
        # key by key, with the worker's calls landing between the batches (ASK, TRYAGAIN)
        fresh_cluster.migrate_slot(slot, dst, pause_between_keys=lambda: time.sleep(0.005), batch=20)

    counts = await _drain_while(fresh_cluster, name, migrate)
    assert counts["completed"] == 3000 and fresh_cluster.owner(slot) is dst
    assert src.admin.dbsize() == 0


@pytest.mark.slow
@pytest.mark.anyio
async def test_calls_meet_a_half_migrated_slot(fresh_cluster: LocalCluster) -> None:
    src, dst = fresh_cluster.masters()[1:]
    name = fresh_cluster.queue_name_on(src)
    slot = slot_of(QueueKeys(name).machine)
    q = rjobs.Queue(name, url=fresh_cluster.url)
    try:
        job = await q.enqueue("square", {"i": 4})
        migration = fresh_cluster.begin_migration(slot, dst)
        fresh_cluster.move_some_keys(migration, count=3)

        async def finish_soon() -> None:
            await anyio.sleep(0.5)
            await anyio.to_thread.run_sync(fresh_cluster.finish_migration, migration)

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_soon)
            # keys split between the two nodes: TRYAGAIN until the migration ends, then MOVED
            started = time.monotonic()
            assert (await q.cancel(job.id)).status == "cancelled"
            assert time.monotonic() - started >= 0.4  # it waited for the migration, then ran once
        assert (await q.get(job.id)).status == "cancelled" and fresh_cluster.owner(slot) is dst
        second = await q.enqueue("square", {"i": 5})  # after MOVED, straight to the new owner
        assert dst.admin.exists(QueueKeys(name).job(second.id)) == 1
    finally:
        await q.close()
    finished_once(fresh_cluster, name)


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.anyio
async def test_a_master_killed_under_load(fresh_cluster: LocalCluster) -> None:
    master = fresh_cluster.masters()[0]
    name = fresh_cluster.queue_name_on(master)

    def kill() -> None:
        fresh_cluster.kill_master(master)
        fresh_cluster.wait_failover(master)

    counts = await _drain_while(fresh_cluster, name, kill)
    with fresh_cluster.client() as client:
        keys = QueueKeys(name)
        ran_again = sum(
            1
            for key in client.scan_iter(match=keys.prefix + "job:*:history", count=1000)
            if sum(b'"to":"processing"' in e for e in client.lrange(key, 0, -1)) > 1
        )
    print(f"killed master: {3000 - sum(counts.values())} jobs lost, {ran_again} ran again, {counts}")
    # Asynchronous replication may lose the last acknowledged writes of the killed master: jobs
    # may run again (a lost claim or finish) or be lost (a lost enqueue), but none finishes twice
    # and every job that exists ends.
    assert counts["completed"] + counts["failed"] == sum(counts.values())
    assert sum(counts.values()) >= 2900


@pytest.mark.anyio
async def test_a_partitioned_queue_spreads_over_every_master(clean_cluster: LocalCluster) -> None:
    q = rjobs.PartitionedQueue("spread", 12, url=clean_cluster.url)
    try:
        owners = {clean_cluster.owner(slot_of(QueueKeys(p.name).machine)).id for p in q.partitions}
        assert owners == {m.id for m in clean_cluster.masters()}  # 12 hash tags land on all 3 masters
        outcomes = await q.enqueue_many([rjobs.JobRequest(type="square", params={"i": i}) for i in range(600)])
        assert all(o.created for o in outcomes)
        first = await q.enqueue("square", {"i": 1}, dedupe_key="only-one")
        second = await q.enqueue("square", {"i": 2}, dedupe_key="only-one", dedupe="replace")
        assert second.previous_id == first.id and second.stale_cancelled
        await rjobs.Worker(q, functions={"square": square}, concurrency=50, burst=True).run()
        counts = await q.counts()
        assert (counts["completed"], counts["cancelled"]) == (601, 1)
        assert (await q.wait(second.id, timeout=5)).output == 4
        for master in clean_cluster.masters():
            assert master.admin.dbsize() > 0  # every master holds jobs of the queue
    finally:
        await q.close()
    for p in q.partitions:
        finished_once(clean_cluster, p.name)


@pytest.mark.slow
@pytest.mark.anyio
async def test_queues_over_tls(tmp_path: Any) -> None:
    pytest.importorskip("cryptography", reason="the test certificates are made with cryptography")
    binary = find_redis_server()
    if binary is None:
        pytest.skip("Debian's redis-server is not on PATH (the bundled valkey has no TLS)")
    tls = LocalCluster(binary, replicas=0, tls=True, data_dir=tmp_path)
    tls.start()
    try:
        assert tls.tls is not None
        url = f"{tls.url}?ssl_ca_certs={tls.tls.ca}"
        names = [tls.queue_name_on(m, prefix="tls") for m in tls.masters()]
        queues = [rjobs.Queue(name, url=url) for name in names]
        jobs = [await q.enqueue("square", {"i": 6}) for q in queues]
        await rjobs.Worker(queues, functions={"square": square}, burst=True).run()
        for q, job in zip(queues, jobs, strict=True):
            assert (await q.wait(job.id, timeout=5)).output == 36
            await q.close()
        sync = rjobs.SyncQueue(names[0], url=url)
        assert sync.get(jobs[0].id).status == "completed"
        sync.close()
        with pytest.raises(redis.ConnectionError, match="certificate"):  # no CA: not trusted
            await rjobs.Queue(names[0], url=tls.url).get(jobs[0].id)
    finally:
        tls.stop()


@pytest.mark.anyio
async def test_a_call_whose_reply_is_lost_is_not_sent_again(clean_cluster: LocalCluster) -> None:
    master = clean_cluster.masters()[1]
    name = clean_cluster.queue_name_on(master, prefix="lost")
    client = clean_cluster.async_client(socket_timeout=0.3)
    async with rjobs.Queue(name, client=client) as q:
        await q.declare()
        # the reply never comes: the master holds writes while the call waits, then the client
        # drops the connection; the script may have run, so it must not be sent again
        master.admin.execute_command("CLIENT", "PAUSE", 800, "WRITE")
        with pytest.raises(redis.TimeoutError):
            await q.enqueue("square", {"i": 1})
        # the connection is cut while the call is in flight
        master.admin.execute_command("CLIENT", "PAUSE", 800, "WRITE")

        async def cut() -> None:
            await anyio.sleep(0.1)
            master.admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

        async with anyio.create_task_group() as tg:
            tg.start_soon(cut)
            with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
                await q.enqueue("square", {"i": 2})
        await anyio.sleep(0.9)  # the pause ends
        await q.enqueue("square", {"i": 3})  # a new connection, to the slot's owner
        queued = await q.list("queued")
        ran = [j.params["i"] for j in queued]
        assert 3 in ran and sorted(set(ran)) == sorted(ran), f"each lost call ran at most once: {ran}"
    await client.aclose()
    finished_once(clean_cluster, name)


@pytest.mark.anyio
async def test_claims_of_partitions_on_one_master_share_a_round_trip(
    clean_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[list[str]] = []  # the scripts of each round trip over a node's connection
    plain = AsyncRunner.run_many

    async def spy(self: AsyncRunner, ops: Any) -> list[Any]:
        batches.append([getattr(getattr(op, "script", None), "name", "cmd") for op in ops])
        return await plain(self, ops)

    monkeypatch.setattr(AsyncRunner, "run_many", spy)
    q = rjobs.PartitionedQueue("pernode", 9, url=clean_cluster.url)
    try:
        await q.enqueue_many([rjobs.JobRequest(type="square", params={"i": i}) for i in range(900)])
        batches.clear()
        await rjobs.Worker(q, functions={"square": square}, concurrency=90, burst=True).run()
        assert (await q.counts())["completed"] == 900
    finally:
        await q.close()
    claims = [b.count("claim") for b in batches if "claim" in b]
    # 9 partitions on 3 masters: a claim round is at most 3 round trips, so some carry several claims
    assert max(claims) >= 2, claims
    for p in q.partitions:
        finished_once(clean_cluster, p.name)
