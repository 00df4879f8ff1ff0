"""Sending operations to Redis: the runners (script calls sent exactly once, pipelined batches,
NOSCRIPT reloads) and the drivers that run a plan (rjobs.plans) on asyncio or a blocking client."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Generator, Iterator, Sequence
from typing import Any, TypeVar, cast

import hiredis
import redis
import redis.asyncio as aredis
from redis.exceptions import BusyLoadingError, NoScriptError, ResponseError

from rjobs.errors import RjobsError, ServerRefused, error_from_reply, server_refusal
from rjobs.link import Each, Link, LinkSettings, SyncLink
from rjobs.scripts import Arg, Call, Cmd, Op

__all__ = ["AsyncRunner", "Plan", "SyncRunner", "drive_async", "drive_sync"]

T = TypeVar("T")
#: A plan yields an op (or a list of ops for one round trip), receives its result, returns a value.
Plan = Generator[Op | list[Op], Any, T]


#: Error replies, read as one op's result (redis-py raises LOADING as BusyLoadingError, a
#: ConnectionError; read with disconnect_on_error=False the connection stays usable).
_REPLY_ERRORS = (ResponseError, BusyLoadingError)


def _decode_one(op: Op, raw: Any) -> Any:
    if isinstance(raw, NoScriptError):
        return raw
    if isinstance(raw, _REPLY_ERRORS):
        if isinstance(op, Call):
            return error_from_reply(raw)
        return server_refusal(raw) or raw  # a read refused by the server's state: typed
    return op.decode(raw) if isinstance(op, Call) else raw


def _load_failed(reply: BaseException) -> RjobsError:
    return server_refusal(reply) or RjobsError(f"script could not be loaded: {reply}")


def _callback(client: Any, op: Cmd, raw: Any) -> Any:
    """What ``client.parse_response`` makes of a plain command's reply (its response callback)."""
    callback = client.response_callbacks.get(str(op.args[0]))
    return raw if callback is None else callback(raw)


def _is_noscript(reply: ResponseError) -> bool:
    return str(reply).startswith("NOSCRIPT")


def _wire(op: Op, legacy: bool = False) -> tuple[Arg, ...]:
    if isinstance(op, Call):
        return ("EVALSHA", op.script.legacy_sha if legacy else op.script.sha, 2, *op.keys, *op.args)
    return op.args


def _legacy_lua(client: Any) -> bool:
    """fakeredis (rjobs.testing) cannot read a script's shebang: it gets the scripts without one."""
    pool = getattr(client, "connection_pool", None)
    return type(client).__module__.startswith("fakeredis") or (
        pool is not None and pool.connection_class.__module__.startswith("fakeredis")
    )


def _pack(commands: list[tuple[Arg, ...]]) -> bytes:
    """RESP-encode commands with hiredis' C packer: redis-py's asyncio connections use a Python
    packer that cost ~100 µs for one enqueue's arguments (measured)."""
    return b"".join(hiredis.pack_command(command) for command in commands)  # type: ignore[arg-type]


def _rerun(ops: Sequence[Op], missing: list[int]) -> list[int]:
    """After NOSCRIPT: the scripts that did not run, plus every plain read queued after the first
    of them (it ran before the script it was meant to observe). Scripts that ran are never re-sent."""
    first = missing[0]
    reads = [i for i in range(first + 1, len(ops)) if isinstance(ops[i], Cmd)]
    return sorted(set(missing) | set(reads))


#: One exchange over a link: packed commands, how many, what to apply to each reply as it arrives.
Exchange = tuple[bytes | Iterator[bytes], int, Each | None]
_NOT_RUN = object()  # a NOSCRIPT reply: the call did not run


def _packed_each(ops: Sequence[Op], todo: list[int]) -> Iterator[bytes]:
    """Each call packed only when the link is ready to write it: the server runs the first script
    of a batch while the next one is being packed (enqueue_many: ~2 µs of client CPU per job)."""
    for i in todo:
        yield hiredis.pack_command(_wire(ops[i]))  # type: ignore[arg-type]


def _decoder(ops: Sequence[Op], sent: list[int]) -> Each:
    """Decode the j-th reply of an exchange that sent ops[sent[j]] (NOSCRIPT -> _NOT_RUN)."""

    def decode(j: int, raw: Any) -> Any:
        if isinstance(raw, ResponseError) and _is_noscript(raw):
            return _NOT_RUN
        return _decode_one(ops[sent[j]], raw)

    return decode


def _over_link(ops: Sequence[Op]) -> Generator[Exchange, list[Any], list[Any]]:
    """Script calls over a link, as a plan of (packed commands, count, per-reply decoder) exchanges:
    calls the server had no script for (NOSCRIPT: they did not run) are sent again after their
    scripts are loaded; calls that ran are never re-sent. Each reply is decoded as it arrives, so a
    batch's first replies are decoded while the server still runs the later calls."""
    results: list[Any] = [None] * len(ops)
    todo = list(range(len(ops)))
    for _ in range(2):
        outs = yield _packed_each(ops, todo), len(todo), _decoder(ops, todo)
        missing = []
        for i, out in zip(todo, outs):
            if out is _NOT_RUN:
                missing.append(i)
            else:
                results[i] = out
        if not missing:
            return results
        scripts = list({op.script for i in missing if isinstance(op := ops[i], Call)})
        loaded = yield _pack([("SCRIPT", "LOAD", script.source) for script in scripts]), len(scripts), None
        for reply in loaded:
            if isinstance(reply, ResponseError):
                raise _load_failed(reply)
        todo = missing
    raise RjobsError("scripts could not be loaded")


# Why the runners talk to pooled connections directly instead of calling client.evalsha or
# client.pipeline(): redis-py (8.x) re-sends a command after a connection error, up to 10 times by
# default. A script may have run before the connection broke, so re-sending an enqueue would create
# a second job and re-sending a transition would report InvalidTransition for a move that happened.
# Script calls are therefore sent exactly once; a connection error reaches the caller. Plain reads
# (Cmd alone) still go through redis-py and keep its retries: they are idempotent.


def _fresh_sync(conn: Any) -> None:
    """Reconnect a connection the server closed (restart, CLIENT KILL, timeout) before anything is
    sent on it. redis-py 8 skips this check on checkout when maintenance notifications are on."""
    try:
        stale = conn.can_read()
    except (ConnectionError, OSError, redis.ConnectionError):
        stale = True
    if stale:
        conn.disconnect()


async def _fresh_async(conn: Any) -> None:
    """The asyncio twin of :func:`_fresh_sync`."""
    try:
        stale = await conn.can_read()
    except (ConnectionError, OSError, redis.ConnectionError):
        stale = True
    if stale:
        await conn.disconnect()


class AsyncRunner:
    """Sends operations to Redis from asyncio: script calls over a lean pipelined :class:`Link`
    (one per event loop), plain commands and NOSCRIPT reloads over the redis.asyncio client's pool."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self._settings = LinkSettings.of(client)
        self._legacy = _legacy_lua(client)
        self._link: Link | None = None

    def _link_here(self) -> Link | None:
        if self._settings is None:
            return None
        self._link = Link.current(self._link, self._settings)
        return self._link

    async def run(self, op: Call[T]) -> T:
        """Send one script call exactly once; a Lua error code raises its exception."""
        link = self._link_here()
        if link is None:
            result = (await self._pooled([op], [None], [0]))[0]
        else:
            raw = (await link.exchange(hiredis.pack_command(_wire(op)), 1))[0]  # type: ignore[arg-type]
            if not isinstance(raw, ResponseError):
                return op.decode(raw)
            result = _decode_one(op, raw) if not _is_noscript(raw) else (await self._linked(link, [op]))[0]
        if isinstance(result, BaseException):
            raise result
        return cast(T, result)

    async def command(self, cmd: Cmd) -> Any:
        """Send one plain (idempotent) command through redis-py; a refusal raises its typed error."""
        try:
            return await self.client.execute_command(*cmd.args)  # type: ignore[no-untyped-call]
        except _REPLY_ERRORS as exc:
            raise (server_refusal(exc) or exc) from None

    async def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is the decoded reply or the exception (not raised)."""
        link = self._link_here() if all(isinstance(op, Call) for op in ops) else None
        if link is None:
            return await self._pooled(ops, [None] * len(ops), list(range(len(ops))))
        return await self._linked(link, ops)

    async def _linked(self, link: Link, ops: Sequence[Op]) -> list[Any]:
        exchange = _over_link(ops)
        try:
            request = next(exchange)
            while True:
                request = exchange.send(await link.exchange(*request))
        except StopIteration as done:
            results: list[Any] = done.value
            return results

    async def _pooled(self, ops: Sequence[Op], results: list[Any], todo: list[int]) -> list[Any]:
        """Send ops[todo] over a pooled redis-py connection, loading scripts the server lacks."""
        pool = self.client.connection_pool
        for _ in range(2):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            await _fresh_async(conn)
            try:
                await conn.send_packed_command([_pack([_wire(ops[i], self._legacy) for i in todo])], check_health=False)
                missing = []
                for i in todo:
                    op = ops[i]
                    try:
                        raw = await conn.read_response(disconnect_on_error=False)
                        if isinstance(op, Cmd):
                            raw = _callback(self.client, op, raw)
                            raw = await raw if inspect.isawaitable(raw) else raw
                    except _REPLY_ERRORS as exc:
                        raw = exc
                    results[i] = _decode_one(op, raw)
                    if isinstance(raw, NoScriptError):
                        missing.append(i)
                if missing:
                    for script in {op.script for i in missing if isinstance(op := ops[i], Call)}:
                        await conn.send_command("SCRIPT", "LOAD", script.for_server(self._legacy)[0])
                        try:
                            await conn.read_response(disconnect_on_error=False)
                        except _REPLY_ERRORS as exc:
                            raise _load_failed(exc) from exc
            except BaseException:
                await conn.disconnect()  # replies may be half read: this connection cannot be trusted
                raise
            finally:
                await pool.release(conn)
            if not missing:
                return results
            todo = _rerun(ops, missing)
        raise RjobsError("scripts could not be loaded")

    def close(self) -> None:
        """Close the lean connection (the client's pool is its owner's to close)."""
        if self._link is not None:
            self._link.close()
            self._link = None


class SyncRunner:
    """Sends operations to Redis from blocking code (the same scripts as AsyncRunner): script calls
    over a :class:`SyncLink` this thread keeps, plain commands over the redis client's pool."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._settings = LinkSettings.of(client)
        self._legacy = _legacy_lua(client)
        self._local = threading.local()
        self._links: dict[int, SyncLink] = {}  # by thread id, to close them all
        self._links_lock = threading.Lock()

    def _link_here(self) -> SyncLink | None:
        if self._settings is None:
            return None
        link: SyncLink | None = getattr(self._local, "link", None)
        if link is None:
            link = self._local.link = SyncLink(self._settings)
            alive = {thread.ident for thread in threading.enumerate()}
            with self._links_lock:
                for ident in [i for i in self._links if i not in alive]:  # threads that ended
                    self._links.pop(ident).close()
                reused = self._links.get(threading.get_ident())  # an ended thread's id, reused
                if reused is not None:
                    reused.close()
                self._links[threading.get_ident()] = link
        return link

    def run(self, op: Call[T]) -> T:
        """Send one script call exactly once; a Lua error code raises its exception."""
        link = self._link_here()
        if link is None:
            result = self.run_many([op])[0]
        else:
            raw = link.exchange(hiredis.pack_command(_wire(op)), 1)[0]  # type: ignore[arg-type]
            if not isinstance(raw, ResponseError):
                return op.decode(raw)
            result = _decode_one(op, raw) if not _is_noscript(raw) else self._linked(link, [op])[0]
        if isinstance(result, BaseException):
            raise result
        return cast(T, result)

    def _linked(self, link: SyncLink, ops: Sequence[Op]) -> list[Any]:
        exchange = _over_link(ops)
        try:
            request = next(exchange)
            while True:
                request = exchange.send(link.exchange(*request))
        except StopIteration as done:
            results: list[Any] = done.value
            return results

    def close(self) -> None:
        """Close every thread's script socket (the client's pool is its owner's to close)."""
        with self._links_lock:
            links, self._links = self._links, {}
        for link in links.values():
            link.close()

    def command(self, cmd: Cmd) -> Any:
        """Send one plain (idempotent) command through redis-py; a refusal raises its typed error."""
        try:
            return self.client.execute_command(*cmd.args)  # type: ignore[no-untyped-call]
        except _REPLY_ERRORS as exc:
            raise (server_refusal(exc) or exc) from None

    def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is the decoded reply or the exception (not raised)."""
        link = self._link_here() if all(isinstance(op, Call) for op in ops) else None
        if link is not None:
            return self._linked(link, ops)
        pool = self.client.connection_pool
        conn = pool.get_connection()
        _fresh_sync(conn)
        try:
            return self._pooled(conn, ops, list(range(len(ops))), [None] * len(ops))
        finally:
            pool.release(conn)

    def _pooled(self, conn: Any, ops: Sequence[Op], todo: list[int], results: list[Any]) -> list[Any]:
        for _ in range(2):
            try:
                conn.send_packed_command([_pack([_wire(ops[i], self._legacy) for i in todo])], check_health=False)
                missing = []
                for i in todo:
                    op = ops[i]
                    try:
                        raw = conn.read_response(disconnect_on_error=False)
                        if isinstance(op, Cmd):
                            raw = _callback(self.client, op, raw)
                    except _REPLY_ERRORS as exc:
                        raw = exc
                    results[i] = _decode_one(op, raw)
                    if isinstance(raw, NoScriptError):
                        missing.append(i)
                for script in {op.script for i in missing if isinstance(op := ops[i], Call)}:
                    conn.send_command("SCRIPT", "LOAD", script.for_server(self._legacy)[0])
                    try:
                        conn.read_response(disconnect_on_error=False)
                    except _REPLY_ERRORS as exc:
                        raise _load_failed(exc) from exc
            except BaseException:
                conn.disconnect()  # replies may be half read: this connection cannot be trusted
                raise
            if not missing:
                return results
            todo = _rerun(ops, missing)
        raise RjobsError("scripts could not be loaded")


def _refused_read(ops: Sequence[Op], results: list[Any]) -> None:
    """Raise a plain read's refusal (a script call's error is a result: plans check it)."""
    for op, result in zip(ops, results):
        if isinstance(result, ServerRefused) and isinstance(op, Cmd):
            raise result


async def drive_async(runner: AsyncRunner, plan: Plan[T]) -> T:
    """Run a plan on asyncio; the error of a single op (an rjobs error, or a redis-py error reply
    of a plain command) and a refused read of a round trip are thrown into the plan."""
    try:
        op = next(plan)
        while True:
            try:
                if isinstance(op, list):
                    result: Any = await runner.run_many(op)
                    _refused_read(op, result)
                elif isinstance(op, Call):
                    result = await runner.run(op)
                else:
                    result = await runner.command(op)
            except (RjobsError, ResponseError) as exc:
                op = plan.throw(exc)
            else:
                op = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


def drive_sync(runner: SyncRunner, plan: Plan[T]) -> T:
    """Run a plan on a blocking client; same semantics as :func:`drive_async`."""
    try:
        op = next(plan)
        while True:
            try:
                if isinstance(op, list):
                    result: Any = runner.run_many(op)
                    _refused_read(op, result)
                elif isinstance(op, Call):
                    result = runner.run(op)
                else:
                    result = runner.command(op)
            except (RjobsError, ResponseError) as exc:
                op = plan.throw(exc)
            else:
                op = plan.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value
