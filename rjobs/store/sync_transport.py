# Generated from rjobs/store/transport.py by scripts/unasync.py: edit the source, then run the script.
"""Sending operations to Redis: the runner (script calls sent exactly once, pipelined batches,
NOSCRIPT reloads) and the driver that runs a plan (rjobs.client.operations) over it.

Why the runners talk to connections directly instead of calling ``client.evalsha`` or
``client.pipeline()``: redis-py re-sends a command after a connection error (up to 10 times by
default). A script may have run before the connection broke, so re-sending an enqueue would create
a second job and re-sending a transition would report InvalidTransition for a move that happened.
Script calls are therefore sent exactly once; a connection error reaches the caller. Plain reads
are idempotent: over a link an exchange of reads only is sent once more after a connection error;
on the pooled path a plain command alone goes through redis-py and keeps its retries.

This module is the blocking twin of :mod:`rjobs.store.transport`, generated from it by
``scripts/unasync.py``: edit that file, then run the script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, cast

import hiredis
import redis
from redis.exceptions import NoScriptError, ResponseError

from rjobs.errors import RjobsError, server_refusal
from rjobs.store.connection import LinkSettings, SyncLink, ThreadLinks
from rjobs.store.exchange import (
    REPLY_ERRORS,
    Dialect,
    Plan,
    decode_one,
    is_noscript,
    linkable,
    over_link,
    parse_callback,
    reads_only,
    refused_read,
    rerun,
)
from rjobs.store.scripts import Call, Cmd, Op
from rjobs.store.wire import SyncPoolGate, blocks, fresh_sync, legacy_lua, pack, parse_reply, settled_sync, wire

__all__ = ["Plan", "Runner", "SyncRunner", "drive_sync"]

T = TypeVar("T")


class Runner(Protocol):
    """What sends a queue's operations: :class:`SyncRunner` for one server, or
    :class:`rjobs.store.sync_cluster.SyncClusterRunner` for the master that owns the queue's slot."""

    @property
    def client(self) -> Any:
        """The redis client of the server the operations go to (blocking reads use it)."""

    def run(self, op: Call[T]) -> T:
        """Send one script call exactly once; a Lua error code raises its exception."""

    def command(self, cmd: Cmd) -> Any:
        """Send one plain (idempotent) command; its reply parsed as redis-py parses it."""

    def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is the decoded reply or the exception."""

    def close(self) -> None:
        """Close the connections the runner made itself."""


class SyncRunner:
    """Sends operations to Redis: script calls and plain reads over a lean pipelined link
    (:mod:`rjobs.store.connection`, one per event loop or thread); blocking commands, and everything
    where no link can be used, over the redis client's pool, waiting for a free connection."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._dialect = Dialect(legacy_lua(client))
        self._links = ThreadLinks(LinkSettings.of(client))
        self._gate = SyncPoolGate(client.connection_pool)

    def run(self, op: Call[T]) -> T:
        """Send one script call exactly once; a Lua error code raises its exception."""
        link = self._links.here()
        if link is None:
            result = (self._gate.run(lambda: self._pooled([op])))[0]
        else:
            raw = (link.exchange(hiredis.pack_command(wire(op, self._dialect.legacy)), 1))[0]  # type: ignore[arg-type]
            if not isinstance(raw, ResponseError):
                return op.decode(raw)
            result = decode_one(op, raw) if not is_noscript(raw) else (self._linked(link, [op]))[0]
        if isinstance(result, BaseException):
            raise result
        return cast(T, result)

    def command(self, cmd: Cmd) -> Any:
        """Send one plain (idempotent) command; its reply parsed as redis-py parses it, a refusal by
        the server's state raised as its typed error. Over the link it is sent once more after a
        connection error; through redis-py (blocking commands, no link) it keeps redis-py's retries."""
        link = None if blocks(cmd) else self._links.here()
        if link is None:
            try:
                return self._gate.run(lambda: self.client.execute_command(*cmd.args))  # type: ignore[no-untyped-call]
            except REPLY_ERRORS as exc:
                raise (server_refusal(exc) or exc) from None
        packed = hiredis.pack_command(cmd.args)  # type: ignore[arg-type]
        try:
            raw = (link.exchange(packed, 1))[0]
        except redis.ConnectionError:
            raw = (link.exchange(packed, 1))[0]  # a read: safe to send again, on a new connection
        if isinstance(raw, ResponseError):
            raise server_refusal(raw) or raw
        return parse_reply(cmd, raw)

    def run_many(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one round trip; each result is the decoded reply or the exception (not raised)."""
        link = self._links.here() if linkable(ops) else None
        if link is None:
            return self._gate.run(lambda: self._pooled(ops))
        if reads_only(ops):
            try:
                return self._linked(link, ops)
            except redis.ConnectionError:
                pass  # reads only: safe to send again, on a new connection
        return self._linked(link, ops)

    def _linked(self, link: SyncLink, ops: Sequence[Op]) -> list[Any]:
        exchange = over_link(ops, self._dialect)
        try:
            request = next(exchange)
            while True:
                request = exchange.send(link.exchange(*request))
        except StopIteration as done:
            results: list[Any] = done.value
            return results

    def _pooled(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops over one pooled redis-py connection, loading scripts the server lacks. The
        connection is checked out once, first: a refused checkout (MaxConnectionsError) means that
        nothing was sent, so the gate may try again."""
        pool: Any = self.client.connection_pool
        conn: Any = pool.get_connection()
        results: list[Any] = [None] * len(ops)
        todo = list(range(len(ops)))
        try:
            fresh_sync(conn)
            for _ in range(3):
                legacy = self._dialect.legacy
                conn.send_packed_command([pack([wire(ops[i], legacy) for i in todo])], check_health=False)
                missing = []
                for i in todo:
                    op = ops[i]
                    try:
                        raw = conn.read_response(disconnect_on_error=False)
                        if isinstance(op, Cmd):
                            raw = settled_sync(parse_callback(self.client, op, raw))
                    except REPLY_ERRORS as exc:
                        raw = exc
                    results[i] = decode_one(op, raw)
                    if isinstance(raw, NoScriptError):
                        missing.append(i)
                if not missing:
                    return results
                for script in {op.script for i in missing if isinstance(op := ops[i], Call)}:
                    for _ in range(2):
                        legacy = self._dialect.legacy  # another call may turn it meanwhile
                        conn.send_command("SCRIPT", "LOAD", script.for_server(legacy)[0])
                        try:
                            conn.read_response(disconnect_on_error=False)
                            break
                        except REPLY_ERRORS as exc:
                            self._dialect.turn(legacy, exc)
                todo = rerun(ops, missing)
        except BaseException:
            conn.disconnect()  # replies may be half read: this connection cannot be trusted
            raise
        finally:
            pool.release(conn)
        raise RjobsError("scripts could not be loaded")

    def close(self) -> None:
        """Close the lean connections (the client's pool is its owner's to close)."""
        self._links.close()


def drive_sync(runner: Runner, plan: Plan[T]) -> T:
    """Run a plan: each op it yields is sent (a list of ops in one round trip) and its result sent
    back into the plan; the error of a single op (an rjobs error, or a redis-py error reply of a
    plain command) and a refused read of a round trip are thrown into the plan."""
    try:
        op = next(plan)
        while True:
            try:
                if isinstance(op, list):
                    result: Any = runner.run_many(op)
                    refused_read(op, result)
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
