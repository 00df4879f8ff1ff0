"""In-memory test mode: real rjobs queues on fakeredis, so your tests need no server.

The queues are the real :class:`rjobs.Queue` / :class:`rjobs.SyncQueue`; only the client is a
fakeredis one (with Lua through ``lupa``), so the very same Lua scripts run against the very same
state machine tables. :func:`drain` runs the queued jobs to completion with the real
:class:`rjobs.Worker` in burst mode, inside the test (like Celery's eager mode or Dramatiq's
StubBroker, but through the real code path).

::

    from rjobs.testing import drain, memory_queue

    async def test_resize():
        q = memory_queue("images")
        job = await q.enqueue("resize", {"w": 100})
        await drain(q, {"resize": resize})
        assert (await q.get(job.id)).status == "completed"

Pytest fixtures: put ``pytest_plugins = ["rjobs.testing"]`` in your top-level ``conftest.py`` (or
import ``rjobs_server``, ``rjobs_queue`` and ``rjobs_sync_queue`` from here into it). See
docs/testing.md, which also lists where fakeredis behaves differently from a real server.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import anyio

from rjobs.client.queue import Queue
from rjobs.client.sync_queue import SyncQueue
from rjobs.config import QueueConfig
from rjobs.machines import JOB
from rjobs.statemachine import StateMachine

try:
    import fakeredis
except ImportError as exc:  # a dev/test dependency, not a runtime one
    raise ImportError("rjobs.testing needs fakeredis with Lua: pip install 'fakeredis[lua]'") from exc

__all__ = [
    "InMemoryQueue",
    "drain",
    "memory_queue",
    "memory_server",
    "memory_sync_queue",
    "rjobs_queue",
    "rjobs_server",
    "rjobs_sync_queue",
    "run_until_empty",
]

JobFunctions = Mapping[str, Callable[..., Any]]


def memory_server() -> fakeredis.FakeServer:
    """A new, empty in-memory Redis. Queues built on the same one share all their data."""
    if importlib.util.find_spec("lupa") is None:
        # Without lupa fakeredis rejects EVALSHA, and every rjobs operation is a script.
        raise ImportError("rjobs.testing needs Lua support in fakeredis: pip install 'fakeredis[lua]'")
    return fakeredis.FakeServer()


class InMemoryQueue(Queue):
    """A real :class:`rjobs.Queue` whose client is fakeredis (a fresh in-memory server unless
    ``server`` is given). :meth:`sync` gives its blocking twin on the same data."""

    def __init__(
        self,
        name: str = "test",
        *,
        machine: StateMachine = JOB,
        config: QueueConfig | None = None,
        server: fakeredis.FakeServer | None = None,
        actor: str | None = None,
    ) -> None:
        self.server = server if server is not None else memory_server()
        client = fakeredis.FakeAsyncRedis(server=self.server)
        super().__init__(name, machine=machine, config=config, client=client, actor=actor)

    def sync(self) -> SyncQueue:
        """A :class:`rjobs.SyncQueue` for the same queue on the same in-memory server."""
        return memory_sync_queue(self.name, machine=self.machine, config=self.config, server=self.server)

    def sibling(self, name: str, *, machine: StateMachine = JOB, config: QueueConfig | None = None) -> InMemoryQueue:
        """Another queue on the same in-memory server (e.g. a second queue of your app)."""
        return InMemoryQueue(name, machine=machine, config=config, server=self.server)

    async def close(self) -> None:
        """Stop the wait reader and close the fake client (the in-memory data stays with the server)."""
        await super().close()
        await self.client.aclose()


def memory_queue(
    name: str = "test",
    *,
    machine: StateMachine = JOB,
    config: QueueConfig | None = None,
    server: fakeredis.FakeServer | None = None,
) -> InMemoryQueue:
    """An async queue on an in-memory server (a fresh one unless ``server`` is given)."""
    return InMemoryQueue(name, machine=machine, config=config, server=server)


def memory_sync_queue(
    name: str = "test",
    *,
    machine: StateMachine = JOB,
    config: QueueConfig | None = None,
    server: fakeredis.FakeServer | None = None,
) -> SyncQueue:
    """A blocking queue on an in-memory server (a fresh one unless ``server`` is given)."""
    client = fakeredis.FakeRedis(server=server if server is not None else memory_server())
    return SyncQueue(name, machine=machine, config=config, client=client)


def _server_of(queue: Queue | SyncQueue) -> fakeredis.FakeServer:
    if isinstance(queue, InMemoryQueue):
        return queue.server
    server = queue.client.connection_pool.connection_kwargs.get("server")
    if not isinstance(server, fakeredis.FakeServer):
        raise TypeError("run_until_empty needs an in-memory queue; for a real server use `await drain(queue, ...)`")
    return server


async def drain(
    queue: Queue,
    functions: JobFunctions,
    *,
    skip_delays: bool = True,
    concurrency: int = 10,
    timeout: float = 30.0,  # noqa: ASYNC109 - bounds the whole drain, several awaits
    max_rounds: int = 1000,
    **worker_options: Any,
) -> dict[str, int]:
    """Run the queue's jobs until none is left to run, with the real Worker in burst mode; returns
    the job counts per state.

    ``skip_delays`` (default on, like an eager mode): jobs in the delayed state — retry backoff,
    ``delay=``/``run_at=`` — are moved to the ready state at once instead of waited for, so retries
    happen inside the test. Jobs waiting on dependencies run when those succeed. ``timeout``
    bounds the whole drain (a job that hangs fails the test instead of hanging it);
    ``worker_options`` go to :class:`rjobs.Worker` (e.g. ``lease=``)."""
    from rjobs.worker.loop import Worker

    delayed = queue.machine.delayed
    with anyio.fail_after(timeout if timeout > 0 else None):
        for _ in range(max_rounds):
            worker = Worker(queue, functions=dict(functions), concurrency=concurrency, burst=True, **worker_options)
            await worker.run()
            if not skip_delays or delayed is None:
                break
            due = [job.id for job in await queue.list(state=delayed, limit=10_000)]
            if not due:
                break
            await queue.bulk_transition(due, queue.machine.ready, reason="rjobs.testing: delay skipped")
    return await queue.counts()


def run_until_empty(
    queue: Queue | SyncQueue,
    functions: JobFunctions,
    **options: Any,
) -> dict[str, int]:
    """Blocking :func:`drain` for synchronous tests, on an in-memory queue (async or sync); the
    options are drain's. Inside async code, ``await drain(...)`` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("run_until_empty() blocks: inside async code use `await rjobs.testing.drain(queue, ...)`")
    server = _server_of(queue)
    name, machine, config = queue.name, queue.machine, queue.config

    async def run() -> dict[str, int]:
        # A fresh client for this event loop: an async client may be bound to another test's loop.
        q = InMemoryQueue(name, machine=machine, config=config, server=server)
        try:
            return await drain(q, functions, **options)
        finally:
            await q.close()

    counts: dict[str, int] = anyio.run(run)
    return counts


# -- pytest fixtures --------------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # rjobs.testing also works without pytest; only the fixtures need it
    pass
else:

    @pytest.fixture
    def rjobs_server() -> fakeredis.FakeServer:
        """A fresh in-memory server per test."""
        return memory_server()

    @pytest.fixture
    def rjobs_queue(rjobs_server: fakeredis.FakeServer) -> Iterator[InMemoryQueue]:
        """An :class:`InMemoryQueue` named ``test`` (JOB machine) on the test's server."""
        yield InMemoryQueue("test", server=rjobs_server)

    @pytest.fixture
    def rjobs_sync_queue(rjobs_queue: InMemoryQueue) -> Iterator[SyncQueue]:
        """The blocking twin of ``rjobs_queue`` (same data)."""
        sync = rjobs_queue.sync()
        try:
            yield sync
        finally:
            sync.close()
