"""Live updates: one reader per queue per dashboard process feeds every connected browser through
Server-Sent Events, each with a bounded buffer (a slow one is dropped, not the reader)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from rjobs import SyncQueue
from rjobs.dashboard.feeds import BUFFER, Feed
from tests.dashboard.conftest import Running


async def next_data(lines: Any) -> dict[str, str]:
    """The next ``data:`` line of an SSE response, decoded."""
    with anyio.fail_after(10):
        async for line in lines:
            if line.startswith("data: "):
                doc: dict[str, str] = msgspec.json.decode(line[6:])
                return doc
    raise AssertionError("the stream ended")


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.anyio
async def test_two_browsers_share_one_reader(url: str, dashboard: Callable[..., Running]) -> None:
    q = SyncQueue("work", url)
    first = q.enqueue("t").id
    running = dashboard()
    feed = running.app.state.feeds.feed("work")
    async with (
        httpx.AsyncClient(base_url=running.base, timeout=10) as a,
        httpx.AsyncClient(base_url=running.base, timeout=10) as b,
        a.stream("GET", "/q/work/events") as ra,
        b.stream("GET", f"/q/work/events?job={first}") as rb,
    ):
        assert ra.headers["content-type"].startswith("text/event-stream")
        await anyio.to_thread.run_sync(lambda: wait_for(lambda: len(feed.subscribers) == 2))
        assert feed.readers_started == 1
        later = q.enqueue("t", {"n": 1}).id
        q.cancel(first, "done with it")
        la, lb = ra.aiter_lines(), rb.aiter_lines()
        got = await next_data(la)
        assert (got["job"], got["event"], got["to"]) == (later, "created", "queued")
        assert (await next_data(la))["job"] == first
        only = await next_data(lb)
        assert (only["job"], only["to"], only["actor"]) == (first, "cancelled", q.actor), "?job= filters"
        assert feed.readers_started == 1, "one reader for both"
    await anyio.to_thread.run_sync(lambda: wait_for(lambda: not feed.subscribers and feed.task is None))
    q.close()


class FakeStream:
    """An async client whose XREAD hands out one prepared batch of entries each time the test
    opens the gate, and otherwise blocks as a real XREAD BLOCK would."""

    def __init__(self, batches: list[list[tuple[bytes, dict[bytes, bytes]]]]) -> None:
        self.batches = batches
        self.gate = asyncio.Event()

    async def xread(self, streams: dict[str, Any], count: int, block: int) -> Any:
        try:
            await asyncio.wait_for(self.gate.wait(), block / 1000)
        except asyncio.TimeoutError:
            return []
        self.gate.clear()
        return [[next(iter(streams)).encode(), self.batches.pop(0)]]


@pytest.mark.anyio
async def test_a_slow_subscriber_is_dropped_not_the_reader() -> None:
    entries = [
        (f"{i}-0".encode(), {b"job": b"j", b"event": b"progress", b"data": str(i).encode()}) for i in range(BUFFER + 10)
    ]
    client = FakeStream([entries[:BUFFER], entries[BUFFER:]])
    feed = Feed(client, "work")  # type: ignore[arg-type]
    fast, slow = feed.subscribe(), feed.subscribe()
    received: list[str] = []
    stream = fast.entries()
    for batch in (1, 2):  # a batch; the fast one reads it all, the slow one reads nothing
        client.gate.set()
        with anyio.fail_after(5):
            while len(received) < min(len(entries), BUFFER * batch):
                received.append((await stream.__anext__())["data"])
    assert received == [str(i) for i in range(len(entries))]
    assert slow.dropped and slow not in feed.subscribers and fast in feed.subscribers
    assert [d async for d in slow.entries()] == [], "a dropped subscriber's stream ends"
    assert feed.readers_started == 1 and feed.task is not None and not feed.task.done()
    await feed.close()
    assert feed.task is None
