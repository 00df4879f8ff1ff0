"""Lean pipelined connections for script calls and plain reads: the performance machinery of the
transport, kept behind the runners (rjobs.store.transport).

redis-py's asyncio connection spends more client CPU per awaited call (stream reader, pool
checkout, Python-level parsing) than the server spends running an enqueue script (figures in
benchmarks/README.md). A :class:`Link` is one ``asyncio.Protocol`` connection per event loop,
shared by every caller of an :class:`~rjobs.store.transport.AsyncRunner`: requests are written
as soon as they are made, replies are parsed by hiredis and handed to the waiting futures in
order. :class:`SyncLink` is the blocking twin, one socket per thread; :class:`LoopLinks` and
:class:`ThreadLinks` hand each loop or thread its own.

Script calls stay exactly-once: nothing is ever re-sent here. A connection that breaks fails every
pending call with ``redis.ConnectionError``, and the next call opens a new connection. A NOSCRIPT
reply is returned like any other reply; the runner loads the script and re-sends only what did
not run. Only plain TCP and unix-socket connections with static credentials use a link; TLS, a
credential provider or a non-redis-py connection class (fakeredis) keep the pooled path.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import os
import select
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import hiredis
import redis
import redis.asyncio as aredis
from redis.exceptions import ResponseError

__all__ = ["Each", "Link", "LinkSettings", "LoopLinks", "SyncLink", "ThreadLinks"]

#: What a caller may apply to each reply as it arrives: (index in the exchange, raw reply) -> value.
Each = Callable[[int, Any], Any]

#: redis-py connection classes a link can stand in for (plain TCP and unix sockets).
_PLAIN = (aredis.Connection, aredis.UnixDomainSocketConnection, redis.Connection, redis.UnixDomainSocketConnection)


class LinkSettings:
    """Where and how to connect, read off a redis.asyncio client's pool."""

    __slots__ = ("client_name", "connect_timeout", "db", "host", "password", "path", "port", "timeout", "username")

    def __init__(self, conn: Any) -> None:
        self.host: str | None = getattr(conn, "host", None)
        self.port: int = int(getattr(conn, "port", 6379) or 6379)
        self.path: str | None = getattr(conn, "path", None)
        self.db = int(conn.db or 0)
        self.username: str | None = conn.username
        self.password: str | None = conn.password
        self.client_name: str | None = conn.client_name
        self.timeout: float | None = conn.socket_timeout
        self.connect_timeout: float | None = conn.socket_connect_timeout or conn.socket_timeout

    @classmethod
    def of(cls, client: aredis.Redis | redis.Redis) -> LinkSettings | None:
        """Settings for a link to this client's server, or None when the pooled path must be kept."""
        pool = getattr(client, "connection_pool", None)
        if pool is None or pool.connection_class not in _PLAIN:
            return None
        conn = pool.connection_class(**pool.connection_kwargs)
        if conn.credential_provider is not None:
            return None
        return cls(conn)

    def with_timeout(self, timeout: float | None) -> LinkSettings:
        """The same server with another reply timeout: a link that blocks on purpose (the wait
        reader's ``XREAD BLOCK``) must wait longer for a reply than the client's ``socket_timeout``."""
        other = copy.copy(self)
        other.timeout = timeout
        return other

    def handshake(self) -> tuple[bytes, int]:
        """The commands sent before the first request, packed, and how many (0: none)."""
        out: list[tuple[Any, ...]] = []
        if self.password is not None:
            out.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            out.append(("SELECT", self.db))
        if self.client_name:
            out.append(("CLIENT", "SETNAME", self.client_name))
        return b"".join(hiredis.pack_command(c) for c in out), len(out)


def _check_handshake(replies: list[Any]) -> None:
    """A refused AUTH/SELECT/SETNAME is an AuthenticationError, as redis-py reports it."""
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise redis.AuthenticationError(str(reply))


def _connection_error(exc: OSError) -> redis.ConnectionError:
    """A socket error as redis-py reports it (callers catch redis.ConnectionError)."""
    return redis.ConnectionError(f"connection to Redis failed: {exc}")


class _Protocol(asyncio.Protocol):
    """Feeds bytes to hiredis and resolves the oldest waiting future per reply."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.replies = 0  # replies handed out so far: the link's timeout watch reads progress here

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while (reply := self.reader.gets()) is not False:
            if not waiters:  # a reply nobody asked for: the stream cannot be trusted any more
                self.abort(redis.ConnectionError("unexpected reply from Redis"))
                return
            self.replies += 1
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled caller's reply is read and dropped
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(redis.ConnectionError(f"connection to Redis lost: {exc or 'closed by server'}"))

    def abort(self, exc: Exception) -> None:
        """Close now and fail every pending call with exc."""
        self.lost = True
        self._fail(exc)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: Exception) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


class Link:
    """One pipelined connection bound to the event loop that opened it."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self._proto: _Protocol | None = None
        self._connecting = asyncio.Lock()
        self._watch: asyncio.TimerHandle | None = None
        self._watched: tuple[_Protocol | None, int] = (None, 0)

    async def exchange(self, packed: bytes | Iterable[bytes], count: int, each: Each | None = None) -> list[Any]:
        """Write packed commands (count of them; or an iterable of ``count`` packed commands, each
        written as soon as it is produced) and return their raw replies, errors included, or
        ``each(index, reply)`` of every reply, called as it arrives (while later ones still run)."""
        proto = self._proto
        if proto is None or proto.lost or (not proto.waiters and self._stale(proto)):
            proto = await self._connect()
        loop = self.loop
        assert proto.transport is not None
        if isinstance(packed, bytes):
            futures = [loop.create_future() for _ in range(count)]
            proto.waiters.extend(futures)
            proto.transport.write(packed)
        else:
            # one waiter per command actually written: if producing the next one raises, the
            # replies still owed match the waiters queued
            futures = []
            for part in packed:
                futures.append(future := loop.create_future())
                proto.waiters.append(future)
                proto.transport.write(part)
            assert len(futures) == count, "count does not match the commands written"
        if self._watch is None and self.settings.timeout is not None:
            self._arm(proto)
        if each is None:
            return [await future for future in futures]
        return [each(i, await future) for i, future in enumerate(futures)]

    # socket_timeout: one watch per link instead of a timer per call (arming and cancelling an
    # asyncio timer per call costs more CPU than the call's own I/O). The watch fires every `timeout` seconds
    # while calls are pending; if no reply at all came in since the previous look, the oldest
    # pending call has waited at least `timeout`: the connection is aborted and every pending call
    # fails with TimeoutError, after timeout to 2 x timeout.
    def _arm(self, proto: _Protocol) -> None:
        assert self.settings.timeout is not None
        self._watched = (proto, proto.replies)
        self._watch = self.loop.call_later(self.settings.timeout, self._look)

    def _look(self) -> None:
        self._watch = None
        proto = self._proto
        if proto is None or proto.lost or not proto.waiters:
            return  # idle: the next call arms the watch again
        if self._watched == (proto, proto.replies):
            proto.abort(redis.TimeoutError("Timeout reading from Redis"))
            return
        self._arm(proto)

    @staticmethod
    def _stale(proto: _Protocol) -> bool:
        """An idle connection the server closed in a way the loop has not processed yet (see
        :func:`_readable`): checked before sending."""
        assert proto.transport is not None
        sock = proto.transport.get_extra_info("socket")
        stale = sock is None or _readable(sock)
        if stale:
            proto.abort(redis.ConnectionError("stale connection"))
        return stale

    async def _connect(self) -> _Protocol:
        async with self._connecting:
            if self._proto is not None and not self._proto.lost:
                return self._proto
            s = self.settings
            try:
                if s.path:
                    _, proto = await self.loop.create_unix_connection(_Protocol, s.path)
                else:
                    _, proto = await self.loop.create_connection(_Protocol, s.host or "localhost", s.port)
                    sock = proto.transport.get_extra_info("socket") if proto.transport else None
                    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError as exc:
                raise _connection_error(exc) from exc
            self._proto = proto
            packed, count = s.handshake()
            if count:
                try:
                    _check_handshake(await self.exchange(packed, count))
                except redis.AuthenticationError as exc:
                    proto.abort(redis.ConnectionError(f"handshake failed: {exc}"))
                    raise
            return proto

    def close(self) -> None:
        """Close the connection (calls still pending fail with ConnectionError)."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None


class SyncLink:
    """The blocking twin of :class:`Link`: one socket per thread, its replies parsed by hiredis
    (a fraction of redis-py's client CPU per call; see benchmarks/README.md)."""

    def __init__(self, settings: LinkSettings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader(replyError=ResponseError)

    def exchange(self, packed: bytes | Iterable[bytes], count: int, each: Each | None = None) -> list[Any]:
        """Send packed commands (count of them, or an iterable of ``count`` packed commands sent
        one by one as produced) and return their raw replies, errors included (or ``each(index,
        reply)`` of each, called as it is read)."""
        sock = self._sock
        if sock is None or self.pid != os.getpid() or _readable(sock):
            sock = self._connect()
        try:
            if isinstance(packed, bytes):
                sock.sendall(packed)
            else:
                for part in packed:
                    sock.sendall(part)
            return self._read(sock, count, each)
        except BaseException as exc:
            self.close()  # replies may be half read: this socket cannot be trusted
            if isinstance(exc, TimeoutError):
                raise redis.TimeoutError("Timeout reading from Redis") from exc
            if isinstance(exc, OSError):
                raise _connection_error(exc) from exc
            raise

    def _read(self, sock: socket.socket, count: int, each: Each | None) -> list[Any]:
        reader = self._reader
        out: list[Any] = []
        while len(out) < count:
            reply = reader.gets()
            if reply is False:
                data = sock.recv(65536)
                if not data:
                    raise redis.ConnectionError("connection to Redis lost: closed by server")
                reader.feed(data)
            else:
                out.append(reply if each is None else each(len(out), reply))
        return out

    def _connect(self) -> socket.socket:
        self.close()
        self.pid = os.getpid()
        s = self.settings
        try:
            if s.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(s.connect_timeout)
                sock.connect(s.path)
            else:
                sock = socket.create_connection((s.host or "localhost", s.port), timeout=s.connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise _connection_error(exc) from exc
        sock.settimeout(s.timeout)
        self._sock = sock
        self._reader = hiredis.Reader(replyError=ResponseError)
        packed, count = s.handshake()
        if count:
            try:
                _check_handshake(self.exchange(packed, count))
            except redis.AuthenticationError:
                self.close()
                raise
        return sock

    def close(self) -> None:
        """Close the socket (a forked child only forgets its parent's)."""
        if self._sock is not None and self.pid == os.getpid():
            self._sock.close()
        self._sock = None


def _readable(sock: socket.socket) -> bool:
    """An idle socket with something to read was closed by the server (restart, CLIENT KILL)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class LoopLinks:
    """The link of the running event loop, opened on first use (a runner used from another loop
    opens a new one there; the old one is left to its loop)."""

    def __init__(self, settings: LinkSettings | None) -> None:
        self.settings = settings
        self._link: Link | None = None

    def here(self) -> Link | None:
        """This loop's link, or None when the client's connections cannot be mirrored."""
        if self.settings is None:
            return None
        link = self._link
        if link is None or link.loop is not asyncio.get_running_loop():
            link = self._link = Link(self.settings)
        return link

    def close(self) -> None:
        """Close the link (the next call opens a new one)."""
        if self._link is not None:
            self._link.close()
            self._link = None


class ThreadLinks:
    """The blocking twin of :class:`LoopLinks`: one :class:`SyncLink` per thread, all closed by
    :meth:`close` (links of threads that ended are closed when the next thread opens one)."""

    def __init__(self, settings: LinkSettings | None) -> None:
        self.settings = settings
        self._local = threading.local()
        self._links: dict[int, SyncLink] = {}  # by thread id, to close them all
        self._lock = threading.Lock()

    def here(self) -> SyncLink | None:
        """This thread's link, or None when the client's connections cannot be mirrored."""
        if self.settings is None:
            return None
        link: SyncLink | None = getattr(self._local, "link", None)
        if link is None:
            link = self._local.link = SyncLink(self.settings)
            alive = {thread.ident for thread in threading.enumerate()}
            with self._lock:
                for ident in [i for i in self._links if i not in alive]:  # threads that ended
                    self._links.pop(ident).close()
                reused = self._links.get(threading.get_ident())  # an ended thread's id, reused
                if reused is not None:
                    reused.close()
                self._links[threading.get_ident()] = link
        return link

    def close(self) -> None:
        """Close every thread's link."""
        with self._lock:
            links, self._links = self._links, {}
        for link in links.values():
            link.close()
