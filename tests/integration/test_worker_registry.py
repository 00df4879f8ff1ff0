"""A running worker lists itself with its details (``workers`` zset + ``workers:info`` hash), keeps
them fresh with its heartbeats, and is unlisted by a clean shutdown or, once it falls silent, by the
reaper; its liveness signals (health file, HTTP endpoint) follow its heartbeats. Real servers, real
workers (in process here; subprocesses in tests/integration/test_cli_workers.py)."""

from __future__ import annotations

import inspect
import io
import json
import os
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import anyio
import pytest
import redis
from rich.console import Console

from rjobs.about import VERSION
from rjobs.cli.roster import read_workers, workers_table
from rjobs.client.queue import Queue
from rjobs.errors import ValidationError
from rjobs.worker.context import JobContext
from rjobs.worker.leases import REFRESH_ROUNDS, LeaseKeeper
from rjobs.worker.loop import Worker
from rjobs.worker.presence import MAX_INFO, Presence
from tests.helpers import keyspace_fingerprint, script_for
from tests.invariants import assert_indexes_consistent

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def nap(ctx: JobContext, params: dict[str, Any]) -> str:
    """Sleep ``seconds``."""
    await anyio.sleep(float(params.get("seconds", 0.05)))
    return "ok"


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """Run the worker in the background; stop it and wait until run() returned."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield
        finally:
            worker.stop()


async def until(check: Callable[[], Any], what: str) -> Any:
    """Wait (polling every 20 ms) until ``check()`` (awaited when it returns an awaitable) is
    truthy, for at most 10 s; its value."""
    with anyio.fail_after(10):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await anyio.sleep(0.02)
    raise AssertionError(what)


def details(r: redis.Redis, q: Queue, worker_id: str) -> dict[str, Any]:
    raw = r.hget(q.backend.keys.workers_info, worker_id)
    return json.loads(raw) if raw else {}


async def health(port: int, path: str = "/health", method: str = "GET") -> tuple[int, dict[str, Any]]:
    """The endpoint's answer, asked from a thread (the endpoint runs on this event loop)."""
    return await anyio.to_thread.run_sync(get_health, port, path, method)


def get_health(port: int, path: str = "/health", method: str = "GET") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def test_a_worker_publishes_its_details_and_a_clean_stop_unlists_it(
    queue: Queue, redis_sync: redis.Redis
) -> None:
    w = Worker(queue, [nap], lease=1.5, concurrency=3, worker_id="w-details")
    k = queue.backend.keys
    async with running(w):
        info = await until(lambda: details(redis_sync, queue, "w-details"), "details published at start")
        assert info["id"] == "w-details" and info["pid"] == os.getpid() and info["host"]
        assert info["queues"] == ["work"] and info["functions"] == ["nap"] and info["concurrency"] == 3
        assert info["version"] == VERSION and info["in_flight"] == 0 and info["heartbeat_s"] == 0.5
        assert redis_sync.zscore(k.workers, "w-details") is not None
        await queue.enqueue("nap", {"seconds": 3})
        await until(lambda: details(redis_sync, queue, "w-details")["in_flight"] == 1, "in flight seen by a heartbeat")
        first = redis_sync.zscore(k.workers, "w-details")
        await until(lambda: (redis_sync.zscore(k.workers, "w-details") or 0) > (first or 0), "heartbeat time moves")
        w.stop(force=True)  # the job is handed back; the worker unlists itself on the way out
    assert redis_sync.zscore(k.workers, "w-details") is None
    assert not redis_sync.exists(k.workers_info), "the details outlive a clean shutdown"
    assert_indexes_consistent(redis_sync, "work", queue.machine)


async def test_the_reaper_drops_the_details_of_a_silent_worker(queue: Queue, redis_sync: redis.Redis) -> None:
    await queue.declare()
    b = queue.backend
    await b.heartbeat("ghost", 30_000, [], info=b'{"id":"ghost"}')
    await b.heartbeat("alive", 30_000, [], info=b'{"id":"alive"}')
    assert await b.run(b.scripts.reap(10, 3, 0, 60_000)) == (0, 0, 0)
    assert redis_sync.hlen(b.keys.workers_info) == 2, "nobody silent yet"
    redis_sync.zadd(b.keys.workers, {"ghost": 1_000})  # silent since 1970: what a killed worker leaves
    await b.run(b.scripts.reap(10, 3, 0, 60_000))
    assert [f.decode() for f in redis_sync.hkeys(b.keys.workers_info)] == ["alive"]
    assert [m.decode() for m in redis_sync.zrange(b.keys.workers, 0, -1)] == ["alive"]
    assert_indexes_consistent(redis_sync, "work", queue.machine)


async def test_a_worker_without_details_is_listed_all_the_same(queue: Queue, redis_sync: redis.Redis) -> None:
    """A worker of an older rjobs (its claims list it, it publishes no details) shows with what is
    known: its id, the queues listing it and its heartbeat."""
    await queue.declare()
    await queue.backend.claim("old-worker", 1, 30_000, ["t"])
    workers, alive = read_workers(redis_sync, ["work"])
    assert alive == {"work": 1}
    (w,) = workers
    assert w["id"] == "old-worker" and w["queues"] == w["seen_in"] == ["work"] and w["alive"] and "host" not in w
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(workers_table(workers))
    row = next(line for line in console.export_text().splitlines() if "old-worker" in line)
    assert row.split("│")[2].strip() == "-", "an unknown host shows as -"


@pytest.mark.parametrize(
    "tail",
    [
        ["not json"],
        ["[1, 2]"],
        ['"a string"'],
        ["{"],
        ['{"pad": "' + "x" * MAX_INFO + '"}'],
        ["{}", "extra"],
    ],
    ids=["not-json", "array", "string", "truncated", "too-big", "extra-arg"],
)
async def test_raw_heartbeat_with_bad_details_writes_nothing(
    queue: Queue, redis_sync: redis.Redis, tail: list[str]
) -> None:
    await queue.declare()
    k = queue.backend.keys
    await queue.backend.heartbeat("w1", 30_000, [], info=b'{"id":"w1"}')
    sha = redis_sync.script_load(script_for(redis_sync, queue.backend.scripts.heartbeat("w1", 1000, []).script)[0])
    before = keyspace_fingerprint(redis_sync)
    for register in ("1", "0", "2"):
        with pytest.raises(redis.ResponseError, match=r"^RJ_INVALID"):
            redis_sync.execute_command("EVALSHA", sha, 2, k.machine, k.events, k.prefix, "w1", "30000", register, "0",
                                       *tail)  # fmt: skip
    assert keyspace_fingerprint(redis_sync) == before


async def test_typed_refusals_of_the_heartbeat_details(queue: Queue, redis_sync: redis.Redis) -> None:
    """Details on a manual holder's heartbeat, or a leaving worker that renews leases: refused."""
    await queue.declare()
    b = queue.backend
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(ValidationError, match="info is for a registering worker"):
        await b.heartbeat("w1", 30_000, [], register=False, info=b"{}")
    with pytest.raises(ValidationError, match="leaving worker"):
        await b.run(b.scripts.heartbeat("w1", 30_000, [("j", "1")], 2))
    assert keyspace_fingerprint(redis_sync) == before


def test_details_stay_within_the_cap() -> None:
    """A worker with a great many functions lists the first ones and counts the rest."""

    def make(i: int) -> Any:
        def fn(ctx: JobContext, params: Any) -> None:
            return None

        fn.__name__ = fn.__qualname__ = f"function_with_a_long_name_{i:04d}"
        return fn

    w = Worker("work", [make(i) for i in range(400)], url="redis://127.0.0.1:1")
    book: Any = type("Book", (), {"__len__": lambda self: 0})()
    clock: Any = type("Clock", (), {"now_ms": lambda self: 1})()
    raw = Presence(w, book, clock).info()
    doc = json.loads(raw)
    assert len(raw) <= MAX_INFO
    assert doc["functions_more"] == 400 - len(doc["functions"]) > 0 and doc["functions"][0].endswith("0000")


# -- liveness -------------------------------------------------------------------------------------
async def stale_now(port: int) -> bool:
    return (await health(port))[0] == 503


async def healthy_now(port: int) -> bool:
    return (await health(port))[0] == 200


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
async def test_health_file_and_endpoint_follow_the_heartbeats(
    queue: Queue, redis_sync: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "alive"
    w = Worker(queue, [nap], lease=0.6, health_file=path, health_port=0, worker_id="w-health")
    with pytest.raises(ValueError, match="health_port"):
        Worker(queue, [nap], health_port=70_000)
    async with running(w):
        await until(lambda: path.exists() and w.health.bound_port, "health file and endpoint up")
        port = w.health.bound_port
        assert port is not None
        code, body = await health(port)
        assert code == 200 and body["status"] == "ok" and body["worker"] == "w-health"
        assert (await health(port, "/nope"))[0] == 404
        assert (await health(port, "/health", "POST"))[0] == 405
        touched = path.stat().st_mtime_ns
        await until(lambda: path.stat().st_mtime_ns > touched, "the file is touched again by the next heartbeat")

        async def unreachable(self: LeaseKeeper, slot: int, pairs: list[tuple[str, str]]) -> list[str]:
            raise redis.ConnectionError("no route to Redis")

        monkeypatch.setattr(LeaseKeeper, "renew", unreachable)
        await until(lambda: stale_now(port), "503 once the last good heartbeat is two intervals old")
        code, body = await health(port)
        assert body["status"] == "stale" and body["last_heartbeat_age_s"] >= 0.4
        stale = path.stat().st_mtime_ns
        monkeypatch.undo()
        await until(lambda: healthy_now(port), "healthy again once heartbeats succeed")
        assert path.stat().st_mtime_ns > stale
        await queue.enqueue("nap", {"seconds": 1.5})
        await until(lambda: details(redis_sync, queue, "w-health").get("in_flight") == 1, "the job running")
        w.stop()  # the job may finish within the grace; meanwhile the worker is not healthy
        assert (await health(port)) == (503, {**body, "status": "stopping", "last_heartbeat_age_s": ANY})
    with pytest.raises(OSError):
        get_health(port)  # the endpoint closed with the worker


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
async def test_a_taken_health_port_stops_the_worker_with_a_clear_error(queue: Queue, redis_sync: redis.Redis) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        w = Worker(queue, [nap], lease=1.5, health_port=port, worker_id="w-taken")
        with pytest.raises(Exception) as caught, anyio.fail_after(20):  # checked below
            await w.run()
    errors = getattr(caught.value, "exceptions", (caught.value,))  # an ExceptionGroup of the task group
    assert any(f"health endpoint cannot listen on 127.0.0.1:{port}" in str(e) for e in errors), errors
    assert redis_sync.zscore(queue.backend.keys.workers, "w-taken") is None, "unlisted on the way out"
    assert not redis_sync.exists(queue.backend.keys.workers_info)


async def test_unchanged_details_are_sent_now_and_then_and_come_back_when_lost(
    queue: Queue, redis_sync: redis.Redis
) -> None:
    """Heartbeats carry the details when they changed, and unchanged ones every REFRESH_ROUNDS
    rounds: an idle worker does not rewrite them each beat, and a server that lost them has them
    back within that many beats."""
    sent: list[bytes] = []
    beat = queue.backend.heartbeat

    async def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs.get("info", b""))
        return await beat(*args, **kwargs)

    queue.backend.heartbeat = counting  # type: ignore[method-assign]
    w = Worker(queue, [nap], heartbeat=0.05, lease=1.0, worker_id="w-refresh")
    async with running(w):
        await until(lambda: details(redis_sync, queue, "w-refresh"), "details published at start")
        await until(lambda: len(sent) >= 3 * REFRESH_ROUNDS, "beats")
        with_info = [s for s in sent[: 3 * REFRESH_ROUNDS] if s]
        assert 1 <= len(with_info) <= 4, "an idle worker's unchanged details are not sent every beat"
        redis_sync.hdel(queue.backend.keys.workers_info, "w-refresh")  # as if the server lost them
        lost_at = len(sent)
        info = await until(lambda: details(redis_sync, queue, "w-refresh"), "details back")
        assert info["id"] == "w-refresh" and len(sent) - lost_at <= REFRESH_ROUNDS + 1
