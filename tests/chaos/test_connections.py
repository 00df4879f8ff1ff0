"""Restarts and cut connections: clients recover, and a script is never sent twice."""

from __future__ import annotations

import anyio
import pytest
import redis

from rjobs import Queue, SyncQueue
from rjobs.cli.server import LocalServer

pytestmark = pytest.mark.chaos


def test_sync_client_survives_a_server_restart(fresh_server: LocalServer) -> None:
    with SyncQueue("restart", fresh_server.url) as q:
        first = q.enqueue("t").id
        q.client.execute_command("WAITAOF", 1, 0, 2000)
        fresh_server.restart()  # AOF on: the job survives
        second = q.enqueue("t").id
        assert q.get(first).status == "queued" and q.get(second).status == "queued"
        assert q.counts()["queued"] == 2, "each enqueue ran exactly once"


def test_killed_client_connection_is_reconnected_before_sending(fresh_server: LocalServer) -> None:
    with SyncQueue("killed", fresh_server.url) as q, redis.Redis.from_url(fresh_server.url) as admin:
        q.enqueue("t")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        q.enqueue("t")
        assert q.counts()["queued"] == 2


@pytest.mark.anyio
async def test_async_client_survives_a_server_restart(fresh_server: LocalServer) -> None:
    async with Queue("restart-async", fresh_server.url) as q:
        await q.enqueue("t")
        await q.client.execute_command("WAITAOF", 1, 0, 2000)
        fresh_server.restart()
        await anyio.sleep(0.05)  # the restart above blocked the loop; let it see the closed socket
        await q.enqueue("t")
        assert (await q.counts())["queued"] == 2
