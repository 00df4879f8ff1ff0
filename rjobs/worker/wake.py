"""How an idle worker waits for work without polling: a blocking pop of the queues' wake lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import hiredis
import redis.asyncio as aredis
import redis.exceptions

from rjobs.errors import server_refusal
from rjobs.store.connection import LinkSettings, LoopLinks

if TYPE_CHECKING:
    from rjobs.client.queue import Queue


__all__ = ["Waker"]


class Waker:
    """How an idle worker waits for leases to take: BLPOP on the queues' wake lists (enqueue and
    claim push a token there), over one dedicated connection per Redis client so the blocking
    call never holds a pooled connection other calls need. Cancelling a wait drops (and later
    re-opens) that connection; a token it had already popped is lost, which costs another idle
    worker at most its 1 s cap."""

    def __init__(self, queues: Sequence[Queue]) -> None:
        groups: dict[int, tuple[aredis.Redis, list[str]]] = {}
        for q in queues:
            groups.setdefault(id(q.client), (q.client, []))[1].append(q.backend.keys.wake)
        self._groups = [_WakeLine(client, keys) for client, keys in groups.values()]

    async def wait(self, block: float) -> None:
        """Return when a wake token arrives or after ``block`` seconds."""
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

    def __init__(self, client: aredis.Redis, keys: list[str]) -> None:
        self.keys = keys
        settings = LinkSettings.of(client)
        self._client = client.client() if settings is None else None
        self._links = LoopLinks(settings)

    async def blpop(self, block: float) -> None:
        timeout = max(0.001, round(block, 3))
        if self._client is not None:
            try:
                await self._client.blpop(self.keys, timeout=timeout)
            except (redis.exceptions.ResponseError, redis.exceptions.BusyLoadingError) as exc:
                raise (server_refusal(exc) or exc) from None
            return
        link = self._links.here()
        assert link is not None
        try:
            command: tuple[Any, ...] = ("BLPOP", *self.keys, timeout)
            reply = (await link.exchange(hiredis.pack_command(command), 1))[0]
        except BaseException:
            # A cancelled BLPOP still blocks its connection: drop it rather than queue behind it.
            self._links.close()
            raise
        if isinstance(reply, redis.exceptions.ResponseError):
            raise server_refusal(reply) or reply

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._links.close()
