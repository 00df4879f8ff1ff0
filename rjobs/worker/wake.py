"""How an idle worker waits for work without polling: a blocking pop of the queues' wake lists.

On Redis Cluster a BLPOP over keys of several slots is refused (CROSSSLOT) even when one node
serves them all, so there each queue has its own line, to the node that owns its slot; when the
slot moves, the line reconnects to the new owner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import hiredis
import redis.asyncio as aredis
import redis.exceptions

from rjobs.errors import server_refusal
from rjobs.store.clients import is_cluster
from rjobs.store.cluster import redirect_of
from rjobs.store.connection import LinkSettings, LoopLinks

if TYPE_CHECKING:
    from rjobs.client.queue import Queue


__all__ = ["Waker"]


class Waker:
    """How an idle worker waits for leases to take: BLPOP on the wake lists of the lanes it serves
    (one per queue and job type it runs: a job entering a lane pushes a token on that lane's list,
    so only a worker that can run it wakes), over one dedicated connection per Redis client so the blocking
    call never holds a pooled connection other calls need. Cancelling a wait drops (and later
    re-opens) that connection; a token it had already popped is lost, which costs another idle
    worker at most its 1 s cap."""

    def __init__(self, queues: Sequence[Queue], types: Sequence[str]) -> None:
        groups: dict[tuple[int, str], tuple[Callable[[], aredis.Redis], list[str]]] = {}
        for q in queues:
            runner = q.backend.runner
            group = (id(q.client), q.name if is_cluster(q.client) else "")
            lines = [q.backend.keys.wake(t) for t in sorted(set(types))]
            groups.setdefault(group, (lambda r=runner: r.client, []))[1].extend(lines)  # type: ignore[misc]
        self._groups = [_WakeLine(source, keys) for source, keys in groups.values() if keys]
        if not self._groups:
            self._groups = [_WakeLine(lambda: queues[0].client, [])]

    async def wait(self, block: float) -> None:
        """Return when a wake token arrives or after ``block`` seconds."""
        if not self._groups[0].keys and len(self._groups) == 1:  # a worker with no job function
            await anyio.sleep(block)
            return
        if len(self._groups) == 1:
            await self._groups[0].blpop(block)
            return
        async with anyio.create_task_group() as tg:
            for line in self._groups:
                tg.start_soon(self._first, tg.cancel_scope, line, block)

    @staticmethod
    async def _first(scope: anyio.CancelScope, line: _WakeLine, block: float) -> None:
        await line.blpop(block)
        scope.cancel()

    async def aclose(self) -> None:
        """Release the dedicated connections."""
        for line in self._groups:
            await line.aclose()


class _WakeLine:
    """The dedicated connection of one Redis client's wake lists: a lean :class:`Link` where the
    client allows one (the token then reaches the worker ~0.1 ms sooner), else a redis-py client."""

    def __init__(self, source: Callable[[], aredis.Redis], keys: list[str]) -> None:
        self.keys = keys
        self._source = source  # the client of the server that holds the keys (now)
        self._client: aredis.Redis | None = None
        self._links: LoopLinks | None = None

    async def blpop(self, block: float) -> None:
        timeout = max(0.001, round(block, 3))
        if self._links is None:
            client = self._source()
            settings = LinkSettings.of(client)
            self._client = client.client() if settings is None else None
            self._links = LoopLinks(settings)
        if self._client is not None:
            try:
                await self._client.blpop(self.keys, timeout=timeout)
            except (redis.exceptions.ResponseError, redis.exceptions.BusyLoadingError) as exc:
                await self._moved(exc)
            except redis.exceptions.ConnectionError:
                await self.aclose()  # the next wait connects again, to the slot's owner as then known
                raise
            return
        link = self._links.here()
        assert link is not None
        try:
            command: tuple[Any, ...] = ("BLPOP", *self.keys, timeout)
            reply = (await link.exchange(hiredis.pack_command(command), 1))[0]
        except BaseException:
            # A cancelled BLPOP still blocks its connection: drop it rather than queue behind it
            # (and after a failure, connect again to the slot's owner as then known).
            await self.aclose()
            raise
        if isinstance(reply, redis.exceptions.ResponseError):
            await self._moved(reply)

    async def _moved(self, exc: BaseException) -> None:
        """A redirect ends the wait (the claim that follows finds the slot's new owner, and the
        next wait connects there); any other refusal is raised."""
        if redirect_of(exc) is None:
            raise server_refusal(exc) or exc
        await self.aclose()

    async def aclose(self) -> None:
        client, links, self._client, self._links = self._client, self._links, None, None
        if client is not None:
            await client.aclose()
        if links is not None:
            links.close()
