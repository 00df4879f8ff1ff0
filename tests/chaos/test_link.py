"""The lean script connection (rjobs.store.connection): pipelining, cancellation, timeouts, cut connections,
credentials. Every test checks that a script ran exactly once."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.lowlevel
import hiredis
import pytest
import redis
import redis.asyncio as aredis

from rjobs import JobRequest, Queue, SyncQueue
from rjobs.cli.server import LocalServer
from rjobs.store.connection import Link, LinkSettings, SyncLink
from rjobs.store.scripts import load_script
from tests.helpers import script_for

pytestmark = pytest.mark.chaos


def _port(server: LocalServer) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.anyio
async def test_concurrent_calls_share_one_connection_and_get_their_own_replies(url: str) -> None:
    async with Queue("pipe", url) as q:
        await q.declare()
        ids: dict[int, str] = {}

        async def one(i: int) -> None:
            ids[i] = (await q.enqueue("t", {"i": i})).id

        async with anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(one, i)
        assert len(set(ids.values())) == 300
        for i in (0, 77, 299):
            assert (await q.get(ids[i])).params == {"i": i}, "each caller got the reply to its own call"
        assert (await q.counts())["queued"] == 300
        clients = await q.client.client_list()
        assert len(clients) <= 3, "300 concurrent calls, one script connection"


@pytest.mark.anyio
async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(url: str) -> None:
    async with Queue("cancel", url) as q:
        await q.declare()
        with anyio.move_on_after(0.0005):
            async with anyio.create_task_group() as tg:
                for i in range(200):
                    tg.start_soon(q.enqueue, "t", {"i": i})
        job = await q.enqueue("t", {"i": "after"})
        assert (await q.get(job.id)).params == {"i": "after"}
        listed = await q.client.zcard(q.backend.keys.state("queued"))
        assert 1 <= listed <= 201, "calls already written ran once; none was re-sent"


@pytest.mark.anyio
async def test_connections_killed_by_the_server_are_replaced_before_sending(url: str) -> None:
    async with Queue("killed", url) as q, aredis.Redis.from_url(url) as admin:
        await q.enqueue("t")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await q.enqueue("t")  # no error: the dead idle connection is noticed before the write
        assert (await q.counts())["queued"] == 2


@pytest.mark.anyio
async def test_a_reply_that_does_not_come_times_out_and_the_call_is_not_resent(url: str) -> None:
    client = aredis.Redis.from_url(url, socket_timeout=0.2)
    async with Queue("slow", client=client) as q, aredis.Redis.from_url(url) as admin:
        await q.declare()
        await admin.execute_command("CLIENT", "PAUSE", 600, "WRITE")
        with pytest.raises(redis.TimeoutError):
            await q.enqueue("t")
        await anyio.sleep(0.7)  # the pause ends (the timed-out call's connection was closed)
        await q.enqueue("t")  # a new connection
        assert (await q.counts())["queued"] in (1, 2), "the timed-out call ran at most once: never re-sent"
    await client.aclose()


@pytest.mark.anyio
async def test_a_link_busy_for_longer_than_the_timeout_does_not_time_out(url: str) -> None:
    """The timeout watches for replies that stop coming, not for the age of the connection: calls
    answered steadily over several timeout periods all succeed, and a stall after them still times out."""
    client = aredis.Redis.from_url(url, socket_timeout=0.1)
    async with Queue("steady", client=client) as q, aredis.Redis.from_url(url) as admin:
        await q.declare()
        n, deadline = 0, time.monotonic() + 0.5
        while time.monotonic() < deadline:
            await q.enqueue("t")
            n += 1
        assert (await q.counts())["queued"] == n
        await anyio.sleep(0.25)  # idle across a look of the watch: it disarms
        await admin.execute_command("CLIENT", "PAUSE", 500, "WRITE")
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await q.enqueue("t")
        assert time.monotonic() - started < 0.45, "timed out within 2 x socket_timeout"
    await client.aclose()


@pytest.mark.anyio
async def test_password_and_database_from_the_url_are_used(fresh_server: LocalServer) -> None:
    port = _port(fresh_server)
    with redis.Redis(port=port) as admin:
        admin.config_set("requirepass", "s3cret")
    url = f"redis://:s3cret@127.0.0.1:{port}/3"
    async with Queue("auth", url) as q:
        job = await q.enqueue("t")
        assert (await q.get(job.id)).status == "queued"
    with redis.Redis(port=port, password="s3cret", db=3) as db3, redis.Redis(port=port, password="s3cret") as db0:
        assert db3.exists(f"rjobs:{{auth}}:job:{job.id}") == 1
        assert db0.dbsize() == 0


@pytest.mark.anyio
async def test_a_wrong_password_is_an_authentication_error(fresh_server: LocalServer) -> None:
    port = _port(fresh_server)
    with redis.Redis(port=port) as admin:
        admin.config_set("requirepass", "s3cret")
    client = aredis.Redis(port=port, password="wrong")
    q = Queue("auth", client=client)
    with pytest.raises(redis.AuthenticationError):
        await q.enqueue("t")
    await q.close()
    await client.aclose()


def test_tls_and_fake_clients_keep_the_pooled_path() -> None:
    assert LinkSettings.of(aredis.Redis.from_url("rediss://127.0.0.1:1/0")) is None
    fakeredis = pytest.importorskip("fakeredis")
    assert LinkSettings.of(fakeredis.FakeAsyncRedis()) is None
    assert LinkSettings.of(aredis.Redis.from_url("unix:///tmp/x.sock?db=2")) is not None


# -- the blocking twin (SyncLink) --------------------------------------------------------------


def _script_clients(admin: redis.Redis) -> int:
    return sum(1 for c in admin.client_list() if c["cmd"] in ("evalsha", "script|load"))


def test_sync_threads_each_use_their_own_socket_and_close_closes_them(url: str) -> None:
    with redis.Redis.from_url(url) as admin:
        q = SyncQueue("threads", url)
        q.declare()
        ids: list[str] = []

        def work(t: int) -> None:
            for i in range(50):
                ids.append(q.enqueue("t", {"t": t, "i": i}).id)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(set(ids)) == 400 and q.counts()["queued"] == 400
        assert _script_clients(admin) >= 1
        q.close()
        time.sleep(0.05)
        assert _script_clients(admin) == 0, "close() closed every thread's script socket"


def test_sync_killed_socket_is_replaced_and_a_timeout_is_not_resent(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=0.2)
    with SyncQueue("sync-slow", client=client) as q, redis.Redis.from_url(url) as admin:
        q.enqueue("t")
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        q.enqueue("t")
        admin.execute_command("CLIENT", "PAUSE", 600, "WRITE")
        with pytest.raises(redis.TimeoutError):
            q.enqueue("t")
        time.sleep(0.7)
        q.enqueue("t")
        assert q.counts()["queued"] in (3, 4), "the timed-out call ran at most once"
    client.close()


def test_a_forked_child_opens_its_own_socket(url: str) -> None:
    with SyncQueue("fork", url) as q:
        q.enqueue("t")
        pid = os.fork()
        if pid == 0:  # the child: must not read the parent's socket
            try:
                q.enqueue("t")
                os._exit(0 if q.counts()["queued"] == 2 else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        q.enqueue("t")
        assert q.counts()["queued"] == 3


def test_sync_password_and_database(fresh_server: LocalServer) -> None:
    port = _port(fresh_server)
    with redis.Redis(port=port) as admin:
        admin.config_set("requirepass", "s3cret")
    with SyncQueue("auth", f"redis://:s3cret@127.0.0.1:{port}/2") as q:
        job = q.enqueue("t")
    with redis.Redis(port=port, password="s3cret", db=2) as db2:
        assert db2.exists(f"rjobs:{{auth}}:job:{job.id}") == 1
    with SyncQueue("auth", f"redis://:wrong@127.0.0.1:{port}/2") as bad, pytest.raises(redis.AuthenticationError):
        bad.enqueue("t")


@pytest.mark.anyio
async def test_wake_line_blocks_on_a_link_and_a_cancelled_wait_does_not_delay_the_next(url: str) -> None:
    from rjobs.worker.wake import Waker

    async with Queue("wake", url) as q, aredis.Redis.from_url(url) as admin:
        waker = Waker([q], ["t"])
        with anyio.move_on_after(0.05):
            await waker.wait(1.0)  # cancelled while BLPOP blocks on the server
        await admin.lpush(q.backend.keys.wake("t"), "1")
        with anyio.fail_after(0.5):  # not queued behind the cancelled 1 s BLPOP
            await waker.wait(1.0)
        assert await admin.llen(q.backend.keys.wake("t")) == 0, "the token was taken"
        with anyio.fail_after(0.5):
            await waker.wait(0.05)  # nothing to take: returns after its block time
        await waker.aclose()
        # the server sees the closed socket on its next event loop turn: wait for it, bounded
        for _ in range(200):
            clients = [c for c in await admin.client_list() if c["cmd"] == "blpop"]
            if not clients:
                break
            await anyio.sleep(0.01)
        assert clients == [], "aclose() closed the wake connection"


@pytest.mark.anyio
async def test_no_server_is_a_connection_error_as_with_redis_py() -> None:
    from rjobs.cli.server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    client = aredis.Redis.from_url(url)
    q = Queue("nobody", client=client)
    with pytest.raises(redis.ConnectionError):
        await q.backend.run(q.backend.scripts.enqueue("me", []))
    await q.close()
    await client.aclose()
    with SyncQueue("nobody", url) as sq, pytest.raises(redis.ConnectionError):
        sq.backend.run(sq.backend.scripts.enqueue("me", []))


def _parts_then_fail(n: int) -> Iterator[bytes]:
    """n packed INCRs, then the producer of the next command fails."""
    for _ in range(n):
        yield hiredis.pack_command(("INCR", "parts"))
    raise ValueError("cannot pack the next command")


@pytest.mark.anyio
async def test_commands_written_as_produced_and_a_failing_producer_leaves_replies_aligned(url: str) -> None:
    settings = LinkSettings.of(aredis.Redis.from_url(url))
    assert settings is not None
    link = Link(settings)
    try:
        packed = (hiredis.pack_command(("INCRBY", "parts", k)) for k in (1, 10))
        assert await link.exchange(packed, 2) == [1, 11]
        with pytest.raises(ValueError):
            await link.exchange(_parts_then_fail(2), 3)
        assert await link.exchange(hiredis.pack_command(("ECHO", "next")), 1) == [b"next"], "no stale reply"
        assert await link.exchange(hiredis.pack_command(("GET", "parts")), 1) == [b"13"], "the 2 written ran once"
    finally:
        link.close()


def test_sync_commands_written_as_produced_and_a_failing_producer_leaves_no_stale_reply(url: str) -> None:
    settings = LinkSettings.of(redis.Redis.from_url(url))
    assert settings is not None
    link = SyncLink(settings)
    try:
        assert link.exchange((hiredis.pack_command(("INCRBY", "parts", k)) for k in (1, 10)), 2) == [1, 11]
        with pytest.raises(ValueError):
            link.exchange(_parts_then_fail(2), 3)
        assert link.exchange(hiredis.pack_command(("ECHO", "next")), 1) == [b"next"], "no stale reply"
        deadline = time.monotonic() + 2
        while (value := link.exchange(hiredis.pack_command(("GET", "parts")), 1)[0]) != b"13":
            assert time.monotonic() < deadline, f"the 2 INCRs written before the failure ran once, got {value!r}"
            time.sleep(0.01)
    finally:
        link.close()


def _mixed_batch(q: SyncQueue | Queue) -> list[Any]:
    """enqueue (its script loaded), heartbeat (not loaded: NOSCRIPT), enqueue."""
    spec = q._plans.spec(JobRequest(type="t"))
    return [
        q.backend.scripts.enqueue("a", [spec]),
        q.backend.scripts.heartbeat("w", 1000, []),
        q.backend.scripts.enqueue("b", [spec]),
    ]


def _only_enqueue_loaded(url: str) -> None:
    with redis.Redis.from_url(url) as admin:
        admin.script_flush()
        admin.script_load(script_for(admin, load_script("enqueue"))[0])


def test_sync_batch_with_one_script_missing_resends_only_that_call(url: str) -> None:
    with SyncQueue("mixed", url) as q:
        q.declare()
        _only_enqueue_loaded(url)
        first, beat, second = q.backend.run_many(_mixed_batch(q))
        assert (first[0].status, beat, second[0].status) == ("queued", [], "queued")
        assert q.counts()["queued"] == 2, "the calls that ran were not sent again"


@pytest.mark.anyio
async def test_batch_with_one_script_missing_resends_only_that_call(url: str) -> None:
    async with Queue("mixed", url) as q:
        await q.declare()
        _only_enqueue_loaded(url)
        first, beat, second = await q.backend.run_many(_mixed_batch(q))
        assert (first[0].status, beat, second[0].status) == ("queued", [], "queued")
        assert (await q.counts())["queued"] == 2, "the calls that ran were not sent again"


@pytest.mark.anyio
async def test_a_move_after_a_script_flush_returns_the_job_after_the_move(url: str) -> None:
    """A move is [transition script, HGETALL] in one exchange over the link: after SCRIPT FLUSH
    the script gets NOSCRIPT and the read after it ran first, so both are sent again (the script
    once: it had not run) and the job returned is the one after the move."""
    async with Queue("flushed", url) as q, aredis.Redis.from_url(url) as admin:
        job = await q.enqueue("t")
        await admin.script_flush()
        moved = await q.cancel(job.id, "after a flush")
        assert moved.status == "cancelled" and moved.error is not None
        assert [e.event for e in await q.events(job.id)] == ["created", "cancelled"], "the move ran once"


@pytest.mark.anyio
async def test_plain_reads_share_the_link_and_a_cut_read_is_sent_again_a_cut_script_not(url: str) -> None:
    async with Queue("reads", url) as q, aredis.Redis.from_url(url) as admin:
        job = await q.enqueue("t")
        assert [(await q.get(job.id)).id for _ in range(3)] == [job.id] * 3
        clients = [c for c in await admin.client_list() if c["cmd"] in ("evalsha", "hgetall")]
        assert [c["cmd"] for c in clients] == ["hgetall"], "the reads went over the script link"
        got: list[Any] = []

        async def cut_while_in_flight(call: Any) -> None:
            link = q.backend.runner._links.here()
            assert link is not None and link._proto is not None
            proto = link._proto
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                while not proto.waiters:  # written, reply not read yet
                    await anyio.lowlevel.checkpoint()
                proto.abort(redis.ConnectionError("cut"))

        async def get() -> None:
            got.append(await q.get(job.id))

        await cut_while_in_flight(get)
        assert [j.id for j in got] == [job.id], "the read was sent again on a new connection"

        async def enqueue() -> None:
            with pytest.raises(redis.ConnectionError):
                await q.enqueue("t")

        await cut_while_in_flight(enqueue)
        assert (await q.counts())["queued"] in (1, 2), "the script was not sent again"
