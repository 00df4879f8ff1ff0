"""Sending operations to Redis: the runners (script calls sent exactly once, pipelined batches,
NOSCRIPT reloads) and the drivers that run a plan (rjobs.client.operations) on asyncio or a blocking client."""

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
from rjobs.store.connection import Each, Link, LinkSettings, SyncLink
from rjobs.store.scripts import Call, Cmd, Op
from rjobs.store.wire import PoolGate, blocks, fresh_async, fresh_sync, gate_sync, legacy_lua, pack, parse_reply, wire

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
        yield hiredis.pack_command(wire(ops[i]))  # type: ignore[arg-type]


def _decoder(ops: Sequence[Op], sent: list[int]) -> Each:
    """Decode the j-th raw reply of an exchange that sent ops[sent[j]]: a script's NOSCRIPT is
    _NOT_RUN, a plain command's reply is parsed as redis-py would, errors are values."""

    def decode(j: int, raw: Any) -> Any:
        op = ops[sent[j]]
        if isinstance(op, Cmd):
            return (server_refusal(raw) or raw) if isinstance(raw, ResponseError) else parse_reply(op, raw)
        if isinstance(raw, ResponseError):
            return _NOT_RUN if _is_noscript(raw) else error_from_reply(raw)
        return op.decode(raw)

    return decode


def _over_link(ops: Sequence[Op]) -> Generator[Exchange, list[Any], list[Any]]:
    """Ops over a link, as a plan of (packed commands, count, per-reply decoder) exchanges: calls
    the server had no script for (NOSCRIPT: they did not run) are sent again after their scripts
    are loaded, with every plain read queued after the first of them (:func:`_rerun`); calls that
    ran are never re-sent. Each reply is decoded as it arrives, so a batch's first replies are
    decoded while the server still runs the later calls."""
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
        loaded = yield pack([("SCRIPT", "LOAD", script.source) for script in scripts]), len(scripts), None
        for reply in loaded:
            if isinstance(reply, ResponseError):
                raise _load_failed(reply)
        todo = _rerun(ops, missing)
    raise RjobsError("scripts could not be loaded")


def _reads_only(ops: Sequence[Op]) -> bool:
    return all(isinstance(op, Cmd) for op in ops)


def _linkable(ops: Sequence[Op]) -> bool:
    """No blocking command: it would hold up every call queued behind it on a shared link."""
    return not any(isinstance(op, Cmd) and blocks(op) for op in ops)


# Why the runners talk to pooled connections directly instead of calling client.evalsha or
# client.pipeline(): redis-py (8.x) re-sends a command after a connection error, up to 10 times by
# default. A script may have run before the connection broke, so re-sending an enqueue would create
# a second job and re-sending a transition would report InvalidTransition for a move that happened.
# Script calls are therefore sent exactly once; a connection error reaches the caller. Plain reads
# are idempotent: over a link an exchange of reads only is sent once more after a connection error;
# on the pooled path a Cmd alone goes through redis-py and keeps its retries.


class AsyncRunner:
    """Sends operations to Redis from asyncio: script calls and plain reads over a lean pipelined
    :class:`Link` (one per event loop); blocking commands, and everything where no link can be
    used, over the redis.asyncio client's pool, waiting for a free connection (:class:`PoolGate`)."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self._settings = LinkSettings.of(client)
        self._legacy = legacy_lua(client)
        self._link: Link | None = None
        self._gate = PoolGate(client.connection_pool)

    def _link_here(self) -> Link | None:
        if self._settings is None:
            return None
        self._link = Link.current(self._link, self._settings)
        return self._link

    async def run(self, op: Call[T]) -> T:
        """Send one script call exactly once; a Lua error code raises its exception."""
        link = self._link_here()
        if link is None:
            result = (await self._gate.run(lambda: self._pooled([op])))[0]
        else:
            raw = (await link.exchange(hiredis.pack_command(wire(op)), 1))[0]  # type: ignore[arg-type]
            if not isinstance(raw, ResponseError):
                return op.decode(raw)
            result = _decode_one(op, raw) if not _is_noscript(raw) else (await self._linked(link, [op]))[0]
        if isinstance(result, BaseException):
            raise result
        return cast(T, result)

    async def command(self, cmd: Cmd) -> Any:
        """Send one plain (idempotent) command; its reply parsed as redis-py parses it, a refusal by
        the server's state raised as its typed error. Over the link it is sent once more after a
        connection error; through redis-py (blocking commands, no link) it keeps redis-py's retries."""
        link = None if blocks(cmd) else self._link_here()
        if link is None:
            try:
                return await self._gate.run(lambda: self.client.execute_command(*cmd.args))  # type: ignore[no-untyped-call]
            except _REPLY_ERRORS as exc:
                raise (server_refusal(exc) or exc) from None
        packed = hiredis.pack_command(cmd.args)  # type: ignore[arg-type]
        try:
            raw = (await link.exchange(packed, 1))[0]
        except redis.ConnectionError:
            raw = (await link.exchange(packed, 1))[0]  # a read: safe to send again, on a new connection
        if isinstance(raw, ResponseError):
            raise server_refusal(raw) or raw
        return parse_reply(cmd, raw)

    async def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is the decoded reply or the exception (not raised)."""
        link = self._link_here() if _linkable(ops) else None
        if link is None:
            return await self._gate.run(lambda: self._pooled(ops))
        if _reads_only(ops):
            try:
                return await self._linked(link, ops)
            except redis.ConnectionError:
                pass  # reads only: safe to send again, on a new connection
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

    async def _pooled(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops over one pooled redis-py connection, loading scripts the server lacks. The
        connection is checked out once, first: a refused checkout (MaxConnectionsError) means that
        nothing was sent, so PoolGate may try again."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        results: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        try:
            await fresh_async(conn)
            for _ in range(2):
                await conn.send_packed_command([pack([wire(ops[i], self._legacy) for i in todo])], check_health=False)
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
                if not missing:
                    return results
                for script in {op.script for i in missing if isinstance(op := ops[i], Call)}:
                    await conn.send_command("SCRIPT", "LOAD", script.for_server(self._legacy)[0])
                    try:
                        await conn.read_response(disconnect_on_error=False)
                    except _REPLY_ERRORS as exc:
                        raise _load_failed(exc) from exc
                todo = _rerun(ops, missing)
        except BaseException:
            await conn.disconnect()  # replies may be half read: this connection cannot be trusted
            raise
        finally:
            await pool.release(conn)
        raise RjobsError("scripts could not be loaded")

    def close(self) -> None:
        """Close the lean connection (the client's pool is its owner's to close)."""
        if self._link is not None:
            self._link.close()
            self._link = None


class SyncRunner:
    """Sends operations to Redis from blocking code (the same scripts as AsyncRunner): script calls
    and plain reads over a :class:`SyncLink` this thread keeps, blocking commands and everything
    where no link can be used over the redis client's pool."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._settings = LinkSettings.of(client)
        self._legacy = legacy_lua(client)
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
            raw = link.exchange(hiredis.pack_command(wire(op)), 1)[0]  # type: ignore[arg-type]
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
        """Send one plain (idempotent) command; the same rules as :meth:`AsyncRunner.command`."""
        link = None if blocks(cmd) else self._link_here()
        if link is None:
            try:
                return gate_sync(lambda: self.client.execute_command(*cmd.args))  # type: ignore[no-untyped-call]
            except _REPLY_ERRORS as exc:
                raise (server_refusal(exc) or exc) from None
        packed = hiredis.pack_command(cmd.args)  # type: ignore[arg-type]
        try:
            raw = link.exchange(packed, 1)[0]
        except redis.ConnectionError:
            raw = link.exchange(packed, 1)[0]  # a read: safe to send again, on a new connection
        if isinstance(raw, ResponseError):
            raise server_refusal(raw) or raw
        return parse_reply(cmd, raw)

    def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is the decoded reply or the exception (not raised)."""
        link = self._link_here() if _linkable(ops) else None
        if link is None:
            return gate_sync(lambda: self._pooled(ops))
        if _reads_only(ops):
            try:
                return self._linked(link, ops)
            except redis.ConnectionError:
                pass  # reads only: safe to send again, on a new connection
        return self._linked(link, ops)

    def _pooled(self, ops: Sequence[Op]) -> list[Any]:
        """The blocking twin of :meth:`AsyncRunner._pooled` (one checkout, first)."""
        pool = self.client.connection_pool
        conn: Any = pool.get_connection()
        results: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        try:
            fresh_sync(conn)
            for _ in range(2):
                conn.send_packed_command([pack([wire(ops[i], self._legacy) for i in todo])], check_health=False)
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
                if not missing:
                    return results
                for script in {op.script for i in missing if isinstance(op := ops[i], Call)}:
                    conn.send_command("SCRIPT", "LOAD", script.for_server(self._legacy)[0])
                    try:
                        conn.read_response(disconnect_on_error=False)
                    except _REPLY_ERRORS as exc:
                        raise _load_failed(exc) from exc
                todo = _rerun(ops, missing)
        except BaseException:
            conn.disconnect()  # replies may be half read: this connection cannot be trusted
            raise
        finally:
            pool.release(conn)
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
