"""How operations travel: their wire form, the parsing redis-py would apply to a plain command's
reply read off a link, which commands block the connection they are sent on, and waiting for a
free pooled connection where redis-py would refuse one.

Links speak RESP2 and hand back raw replies; a plain command (:class:`~rjobs.store.scripts.Cmd`) sent
over a link gets redis-py's RESP2 response callback for its command name, so plans receive the
forms they get through redis-py (HGETALL a dict, XRANGE/XREAD ``(id, {field: value})`` entries,
TIME a tuple of ints, ZRANGE ... WITHSCORES ``(member, score)`` pairs).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import hiredis
import redis
import redis.asyncio as aredis
from redis._parsers import helpers
from redis.exceptions import MaxConnectionsError

from rjobs.store.messages import Arg
from rjobs.store.scripts import Call, Cmd, Op

T = TypeVar("T")

__all__ = [
    "POOL_WAIT",
    "PoolGate",
    "SyncPoolGate",
    "blocks",
    "fresh_async",
    "fresh_sync",
    "legacy_lua",
    "pack",
    "parse_reply",
    "settled_async",
    "settled_sync",
    "wire",
]

#: How long a call waits for a free pooled connection before the pool's error reaches the caller
#: (redis-py's BlockingConnectionPool waits 20 s by default; rjobs' own pools wait as long).
POOL_WAIT = 20.0
#: Connections rjobs itself may hold outside the gate on the same pool: a queue's wait reader and
#: a worker's wake line each keep one while they block.
_RESERVED = 2

# redis-py's own tables (what a RESP2 client applies), not a copy of them: private names, present
# since redis-py 5 and re-exported by this module in 8.x.
_CALLBACKS: dict[str, Callable[..., Any]] = {
    **vars(helpers)["_RedisCallbacks"],
    **vars(helpers)["_RedisCallbacksRESP2"],
}
#: Commands that may block the connection they are sent on: never over a shared link.
_BLOCKING = frozenset(
    {"BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP", "WAIT", "WAITAOF"}
)


def wire(op: Op, legacy: bool = False) -> tuple[Arg, ...]:
    """The command an op sends (a script call by SHA1; ``legacy``: the shebang-less script)."""
    if isinstance(op, Call):
        return ("EVALSHA", op.script.legacy_sha if legacy else op.script.sha, len(op.keys), *op.keys, *op.args)
    return op.args


def pack(commands: list[tuple[Arg, ...]]) -> bytes:
    """RESP-encode commands with hiredis' C packer (redis-py's asyncio connections pack in
    Python, which costs more than the script's own run for an enqueue's arguments)."""
    return b"".join(hiredis.pack_command(command) for command in commands)  # type: ignore[arg-type]


def legacy_lua(client: Any) -> bool:
    """fakeredis (rjobs.testing) cannot read a script's shebang: it gets the scripts without one."""
    pool = getattr(client, "connection_pool", None)
    return type(client).__module__.startswith("fakeredis") or (
        pool is not None and pool.connection_class.__module__.startswith("fakeredis")
    )


def _name(arg: Arg) -> str:
    return arg.decode() if isinstance(arg, bytes) else str(arg)


def blocks(cmd: Cmd) -> bool:
    """True for a command that can keep its connection busy for a while (BLPOP, XREAD BLOCK, ...):
    on a shared link it would hold up every call queued behind it."""
    name = _name(cmd.args[0]).upper()
    if name in ("XREAD", "XREADGROUP"):
        return any(isinstance(a, (str, bytes)) and _name(a).upper() == "BLOCK" for a in cmd.args[1:])
    return name in _BLOCKING


def parse_reply(cmd: Cmd, raw: Any) -> Any:
    """A raw RESP2 reply to ``cmd`` as redis-py's ``execute_command(*cmd.args)`` returns it
    (errors are left to the caller). WITHSCORES is passed on as redis-py's command methods do,
    so score pairs come back as pairs."""
    callback = _CALLBACKS.get(_name(cmd.args[0]).upper())
    if callback is None:
        return raw
    if any(isinstance(a, (str, bytes)) and _name(a).upper() == "WITHSCORES" for a in cmd.args[1:]):
        return callback(raw, withscores=True)
    return callback(raw)


def fresh_sync(conn: Any) -> None:
    """Reconnect a connection the server closed (restart, CLIENT KILL, timeout) before anything is
    sent on it. redis-py 8 skips this check on checkout when maintenance notifications are on."""
    try:
        stale = conn.can_read()
    except (ConnectionError, OSError, redis.ConnectionError):
        stale = True
    if stale:
        conn.disconnect()


async def fresh_async(conn: Any) -> None:
    """The asyncio twin of :func:`fresh_sync`."""
    try:
        stale = await conn.can_read()
    except (ConnectionError, OSError, redis.ConnectionError):
        stale = True
    if stale:
        await conn.disconnect()


async def nap_async(seconds: float) -> None:
    """Sleep without blocking the event loop (a back-off between two tries)."""
    await asyncio.sleep(seconds)


def nap_sync(seconds: float) -> None:
    """The blocking twin of :func:`nap_async`."""
    time.sleep(seconds)


async def settled_async(value: Any) -> Any:
    """A response callback's value (redis.asyncio has callbacks that return awaitables)."""
    return await value if inspect.isawaitable(value) else value


def settled_sync(value: Any) -> Any:
    """The blocking twin of :func:`settled_async`: a blocking callback's value as it is."""
    return value


class PoolGate:
    """Makes rjobs' calls on a redis-py pool wait for a free connection instead of failing at once
    (redis-py's default pool raises MaxConnectionsError when all its connections are out).

    A :class:`redis.asyncio.BlockingConnectionPool` waits by itself. For any other pool, calls
    queue on a semaphore sized to the pool (less the connections rjobs keeps outside it), and a
    checkout the pool still refuses (other code holds its connections) is retried with a short
    back-off for up to :data:`POOL_WAIT` s: nothing was sent, so any call may be retried."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        size = int(getattr(pool, "max_connections", 0) or 0)
        blocking = isinstance(pool, aredis.BlockingConnectionPool)
        self.size = None if blocking or size <= 0 else max(1, size - _RESERVED)
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def _semaphore(self) -> asyncio.Semaphore | None:
        if self.size is None:
            return None
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, asyncio.Semaphore(self.size))
        return self._slots[1]

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` (which checks a connection out of the pool) once a slot is free."""
        slots = self._semaphore()
        if slots is None:
            return await _retry_checkout(call)
        async with slots:
            return await _retry_checkout(call)


async def _retry_checkout(call: Callable[[], Awaitable[T]]) -> T:
    delay, deadline = 0.001, None
    while True:
        try:
            return await call()
        except MaxConnectionsError:
            now = time.monotonic()
            deadline = deadline or now + POOL_WAIT
            if now >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)


class SyncPoolGate:
    """The blocking twin of :class:`PoolGate`: ``run(call)`` retries a checkout a non-blocking pool
    refuses (other threads hold all its connections) with a short back-off for up to
    :data:`POOL_WAIT` s (a BlockingConnectionPool waits by itself)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def run(self, call: Callable[[], T]) -> T:
        """``call()`` (which checks a connection out of the pool), retried while refused."""
        delay, deadline = 0.001, time.monotonic() + POOL_WAIT
        while True:
            try:
                return call()
            except MaxConnectionsError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
