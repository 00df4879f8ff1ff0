"""The server's own states reach callers as typed errors, write nothing, and the worker waits them
out: LOADING (a restart reloading its data), OOM (maxmemory with noeviction), NOPERM (an ACL).
Each test starts its own server, since it changes the server's settings."""

from __future__ import annotations

import json
import logging
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import hiredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rjobs import JobRequest, OutOfMemory, PermissionDenied, Queue, ReadOnly, ServerBusy, SyncQueue
from rjobs.cli.server import LocalServer
from rjobs.worker.loop import Worker
from tests.helpers import LEGACY_KINDS, SERVER_KINDS, keyspace_fingerprint, legacy_server, server_binary
from tests.integration.test_cli import cli_env


@pytest.fixture(params=SERVER_KINDS)
def own(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalServer]:
    """A server of each kind for this test alone (DEBUG on, for DEBUG RELOAD: 6.2 always has it)."""
    debug = [] if request.param in LEGACY_KINDS else ["--enable-debug-command", "yes"]
    server = LocalServer(server_binary(request.param), data_dir=tmp_path, extra_args=debug)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def admin(own: LocalServer) -> Iterator[redis.Redis]:
    """A plain client of the test's server, for settings and fingerprints."""
    with redis.Redis(port=own.port) as client:
        yield client


class PooledConnection(redis.Connection):
    """A connection class the lean links do not stand in for: the client stays on redis-py's pool."""


def sync_client(server: LocalServer, path: str) -> redis.Redis:
    """A client over the lean link or over redis-py's pool, with no retries of its own."""
    if path == "link":
        return redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
    pool = redis.ConnectionPool(connection_class=PooledConnection, port=server.port, retry=Retry(NoBackoff(), 0))
    return redis.Redis(connection_pool=pool)


def fill_until_oom(admin: redis.Redis, q: SyncQueue, headroom: int = 200_000) -> int:
    """Lower maxmemory to a little above what is used and enqueue until the server refuses; then
    keep it out of memory (used memory varies a little with client buffers)."""
    q.enqueue("t")  # the queue declared and its script loaded first: they take memory too
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + headroom)
    for n in range(100_000):
        try:
            q.enqueue("t", {"pad": "x" * 200})
        except OutOfMemory as exc:
            assert exc.retryable and "OOM" in exc.reply
            admin.config_set("maxmemory", 1)
            return n
    raise AssertionError("the server never ran out of memory")


@pytest.mark.parametrize("path", ["link", "pool"])
def test_out_of_memory_refuses_writes_whole_and_reads_still_work(
    own: LocalServer, admin: redis.Redis, path: str
) -> None:
    q = SyncQueue("mem", client=sync_client(own, path))
    running = q.enqueue("t").id
    fill_until_oom(admin, q)
    before = keyspace_fingerprint(admin, "*")
    refused: list[Callable[[], object]] = [
        lambda: q.enqueue("t"),
        lambda: q.enqueue_many([JobRequest(type="t") for _ in range(600)]),  # two scripts in one trip
        lambda: q.cancel(running, "no room"),
        lambda: q.comment(running, "hello"),
        lambda: q.set_priority(running, "high"),
    ]
    for call in refused:
        with pytest.raises(OutOfMemory):
            call()
    assert keyspace_fingerprint(admin, "*") == before, "a refused write left something behind"
    fresh = SyncQueue("mem", client=sync_client(own, path))  # declares on first use: refused, reads go on
    assert fresh.get(running).status == "queued"
    assert fresh.counts()["queued"] >= 1 and fresh.list(limit=1)
    assert isinstance(fresh.stats()["warnings"], list)
    admin.config_set("maxmemory", 0)
    assert q.enqueue("t").created  # memory freed: the same queue writes again, nothing to reset


@pytest.fixture
def replica(own: LocalServer, admin: redis.Redis, tmp_path: Path) -> Iterator[LocalServer]:
    """A replica of the test's server, in sync with it."""
    follow = ["--replicaof", "127.0.0.1", str(own.port)]
    server = LocalServer(own.binary, data_dir=tmp_path / "replica", extra_args=follow)
    server.start()
    try:
        with redis.Redis(port=server.port) as client:
            deadline = time.monotonic() + 10
            while client.info("replication")["master_link_status"] != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                time.sleep(0.05)
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["link", "pool"])
def test_a_replica_refuses_writes_typed_and_writes_nothing(
    own: LocalServer, admin: redis.Redis, replica: LocalServer, path: str
) -> None:
    """Redis 7 and Valkey refuse a script that may write up front (its shebang has no no-writes
    flag); 6.2 runs it until its first write is refused, after its reads: ReadOnly all the same."""
    with SyncQueue("ro", own.url) as q:
        job = q.enqueue("t").id
    admin.wait(1, 5000)
    with redis.Redis(port=replica.port) as reader, SyncQueue("ro", client=sync_client(replica, path)) as on_replica:
        before = keyspace_fingerprint(reader, "*")
        refused: list[Callable[[], object]] = [
            lambda: on_replica.enqueue("t"),
            lambda: on_replica.enqueue_many([JobRequest(type="t") for _ in range(600)]),
            lambda: on_replica.cancel(job, "no"),
            lambda: on_replica.set_priority(job, "high"),
        ]
        for call in refused:
            with pytest.raises(ReadOnly) as caught:
                call()
            assert caught.value.retryable and "READONLY" in caught.value.reply
        assert keyspace_fingerprint(reader, "*") == before
        assert on_replica.get(job).status == "queued"  # reads still work


def test_permission_denied_is_typed_and_writes_nothing(own: LocalServer, admin: redis.Redis) -> None:
    SyncQueue("acl", own.url).enqueue("t")
    admin.execute_command("ACL", "SETUSER", "limited", "on", ">pw", "~other:*", "+@all")
    before = keyspace_fingerprint(admin, "*")
    limited = SyncQueue("acl", f"redis://limited:pw@127.0.0.1:{own.port}/0")
    with pytest.raises(PermissionDenied) as refused:
        limited.enqueue("t")
    assert not refused.value.retryable and "NOPERM" in str(refused.value)
    with pytest.raises(PermissionDenied):
        limited.get("0")  # a plain read through redis-py: typed the same way

    async def async_side() -> None:
        async with Queue("acl", f"redis://limited:pw@127.0.0.1:{own.port}/0") as q:
            with pytest.raises(PermissionDenied):
                await q.enqueue("t")

    anyio.run(async_side)
    assert keyspace_fingerprint(admin, "*") == before


def _loading(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(hiredis.pack_command(("GET", "probe")))
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            reader.feed(sock.recv(4096))
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith("LOADING")


@contextmanager
def reloading(port: int) -> Iterator[threading.Thread]:
    """Make the server reload its data slowly (DEBUG RELOAD, a second or two): inside, it answers LOADING."""
    with redis.Redis(port=port, db=1) as pad:  # padding keys make the load take a while (db 1: apart)
        # Clients are answered while loading every 2 MB read on 6.2 (not settable before 7): there
        # the padding is ~9 MB that the RDB cannot compress, answered a few times a second.
        fixed_interval, noise = legacy_server(pad), random.Random(0)
        pipe = pad.pipeline(transaction=False)
        for i in range(8_000):
            pipe.set(f"pad:{i}", noise.randbytes(1100) if fixed_interval else "x")
        pipe.execute()
        pad.config_set("key-load-delay", 200)  # µs per key: 1.6 s at least
        if not fixed_interval:
            pad.config_set("loading-process-events-interval-bytes", 1024)  # answer clients while loading
    # No timeout and no retries: redis-py would send the reload again after its 5 s socket timeout.
    once = redis.Redis(port=port, socket_timeout=None, retry=Retry(NoBackoff(), 0))
    thread = threading.Thread(target=once.execute_command, args=("DEBUG", "RELOAD"))
    thread.start()
    deadline = time.monotonic() + 10
    while not _loading(port):
        assert time.monotonic() < deadline and thread.is_alive(), "the server never reported LOADING"
    try:
        yield thread
    finally:
        thread.join(30)
        once.close()


@pytest.mark.slow
def test_loading_is_server_busy(own: LocalServer, admin: redis.Redis) -> None:
    q = SyncQueue("load", client=sync_client(own, "link"))
    job = q.enqueue("t").id
    pooled = SyncQueue("load", client=sync_client(own, "pool"))
    pooled.get(job)
    with reloading(own.port):
        with pytest.raises(ServerBusy) as busy:
            q.enqueue("t")
        assert busy.value.retryable and "LOADING" in busy.value.reply
        with pytest.raises(ServerBusy):
            q.get(job)  # a plain read: redis-py raises BusyLoadingError, a ConnectionError
        with pytest.raises(ServerBusy):
            pooled.counts()  # a round trip of plain reads over the pool
    assert q.get(job).status == "queued"


async def _finish_waits_out(own: LocalServer, admin: redis.Redis, state: str, caplog: Any) -> None:
    ctl: dict[str, Any] = {}

    def refuse() -> None:  # in a thread: the job returns while the server refuses, for ~1.5 s
        if state == "loading":
            ctl["reload"] = reloading(own.port)
            ctl["reload"].__enter__()
        else:
            admin.config_set("maxmemory", 1)
            threading.Timer(1.5, admin.config_set, ("maxmemory", 0)).start()

    async def job(ctx: Any, params: Any) -> dict[str, int]:
        await anyio.to_thread.run_sync(refuse)
        return {"ok": 1}

    async with Queue("fin", own.url) as q:
        job_id = (await q.enqueue("job")).id
        worker = Worker(q, functions={"job": job}, lease=10.0, burst=True)
        with caplog.at_level(logging.WARNING, logger="rjobs"), anyio.fail_after(60):
            await worker.run()
        if "reload" in ctl:
            ctl["reload"].__exit__(None, None, None)
        done = await q.get(job_id)
    assert done.status == "completed" and done.result == {"ok": 1}
    assert done.executions == 1 and worker.stats.lease_lost == 0, "the outcome was dropped and the job re-run"
    retries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finish of 1 job(s) failed")]
    assert all("Traceback" not in m for m in retries)
    if state == "oom" and legacy_server(admin):
        # 6.2 refuses a script for memory only at its first write when that one may grow memory:
        # finish.lua's is an HDEL, so the whole outcome is written (no refusal to wait out).
        return
    assert retries and ("LOADING" if state == "loading" else "OOM") in retries[0]


@pytest.mark.slow
@pytest.mark.parametrize("state", ["loading", "oom"])
def test_worker_finish_waits_out_a_refusing_server(
    own: LocalServer, admin: redis.Redis, state: str, caplog: Any
) -> None:
    anyio.run(_finish_waits_out, own, admin, state, caplog)


@pytest.mark.slow
def test_worker_started_at_maxmemory_drains_once_memory_frees(
    own: LocalServer, admin: redis.Redis, caplog: Any
) -> None:
    sq = SyncQueue("full", own.url)
    fill_until_oom(admin, sq, headroom=400_000)
    before = keyspace_fingerprint(admin, "*")
    with pytest.raises(OutOfMemory):
        sq.enqueue("t")
    assert keyspace_fingerprint(admin, "*") == before
    waiting = sq.counts()["queued"]
    assert waiting > 10

    async def main() -> Worker:
        async with Queue("full", own.url) as q:
            worker = Worker(q, functions={"t": lambda ctx, params: None}, lease=5.0, burst=True)
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(worker.run)
                    await anyio.sleep(1.0)  # the worker cannot even declare: it waits and says so
                    admin.config_set("maxmemory", 0)
            return worker

    with caplog.at_level(logging.WARNING, logger="rjobs"):
        worker = anyio.run(main)
    assert sq.counts()["completed"] == waiting and sq.counts()["queued"] == 0
    assert worker.stats.lease_lost == 0
    # Redis 7 refuses the declare (a script that may write) up front; 6.2 runs it (a declared
    # machine is only read) and refuses the claim's first write: the worker waits either out.
    waited = "claim failed" if legacy_server(admin) else "cannot start yet"
    starts = [r for r in caplog.records if waited in r.getMessage()]
    assert starts and "out of memory" in starts[0].getMessage() and not any(r.exc_info for r in caplog.records)


async def _declare_warns(url: str) -> list[str]:
    async with Queue("lru", url) as q:
        await q.declare()
        return (await q.stats())["warnings"]


def test_an_evicting_maxmemory_policy_is_warned_about(own: LocalServer, admin: redis.Redis, caplog: Any) -> None:
    assert anyio.run(_declare_warns, own.url) == []
    admin.config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, logger="rjobs"):
        warnings = anyio.run(_declare_warns, own.url)
    assert len(warnings) == 1 and "allkeys-lru" in warnings[0] and "noeviction" in warnings[0]
    assert any("allkeys-lru" in r.getMessage() and r.name == "rjobs" for r in caplog.records)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rjobs ARGS...`` as a user runs it, in ``home`` (so a worker module there is importable)."""
    return subprocess.run(
        [sys.executable, "-m", "rjobs", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(home),
        cwd=home,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("rjobs: error: ")
    return lines[0]


@pytest.mark.slow
def test_cli_says_what_the_server_refused_in_one_line(own: LocalServer, admin: redis.Redis, tmp_path: Path) -> None:
    q = SyncQueue("c", own.url)
    job = q.enqueue("t").id
    fill_until_oom(admin, q)
    full = cli(tmp_path, "enqueue", "c", "t", "--url", own.url)
    if legacy_server(admin):  # 6.2 runs the declare (reads only) and its warning comes first
        warned, _, rest = full.stderr.partition("\n")
        assert warned.startswith("queue c: Redis is out of memory")
        full = subprocess.CompletedProcess(full.args, full.returncode, full.stdout, rest)
    assert full.returncode == 6 and "out of memory" in one_error_line(full)
    assert cli(tmp_path, "show", job, "-q", "c", "--url", own.url).returncode == 0  # reads still work
    admin.config_set("maxmemory", 0)

    admin.execute_command("ACL", "SETUSER", "limited", "on", ">pw", "~other:*", "+@all")
    limited = f"redis://limited:pw@127.0.0.1:{own.port}/0"
    before = keyspace_fingerprint(admin, "*")
    for args in (("enqueue", "c", "t"), ("enqueue", "new", "t"), ("show", job, "-q", "c"), ("stats",)):
        denied = cli(tmp_path, *args, "--url", limited)
        assert denied.returncode == 4 and "NOPERM" in one_error_line(denied), args
    (tmp_path / "aclworker.py").write_text("import rjobs\nworker = rjobs.Worker('c', functions={'t': print})\n")
    worker = cli(tmp_path, "worker", "aclworker:worker", "--burst", "--url", limited)
    assert worker.returncode == 1 and "PermissionDenied" in worker.stderr and "Traceback" not in worker.stderr
    assert keyspace_fingerprint(admin, "*") == before

    admin.config_set("maxmemory-policy", "allkeys-lru")
    shown = cli(tmp_path, "stats", "c", "--url", own.url)
    assert shown.returncode == 0 and "warning: maxmemory-policy is allkeys-lru" in shown.stdout
    doc = json.loads(cli(tmp_path, "stats", "c", "--json", "--url", own.url).stdout)
    server = [w for w in doc["warnings"] if "no live worker runs" not in w]  # the other: job type 't' unserved
    assert len(server) == 1 and "allkeys-lru" in server[0]
