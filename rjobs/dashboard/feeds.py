"""Live updates: ONE reader per queue per dashboard process blocks on the queue's event stream
(``XREAD BLOCK`` on the key :class:`rjobs.store.keys.QueueKeys` builds) and hands every entry to each
connected browser (docs/design.md, decision 4: a thousand viewers cost one connection).

Each subscriber has a bounded buffer: a browser that does not keep up is dropped (its stream ends,
its page reconnects and reloads what it shows), never the reader, so one slow tab cannot delay the
others or grow the process's memory. The reader starts with the first subscriber and stops with
the last; a read that fails (Redis restarting) is retried after a pause, the entries in between
are not replayed (the page's counts are re-read on the next event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import RedisError

from rjobs.client.queries import stream_entries
from rjobs.store.keys import QueueKeys
from rjobs.store.messages import decode_text

__all__ = ["BUFFER", "Feed", "Feeds", "Subscriber"]

log = logging.getLogger("rjobs.dashboard")
#: Entries a subscriber may have waiting before it is dropped.
BUFFER = 256
#: How long one XREAD blocks (ms): the reader notices it should stop within this.
BLOCK_MS = 1000
#: Entries read per XREAD.
COUNT = 500


def entry_doc(entry_id: Any, fields: Any) -> dict[str, str]:
    """One stream entry as the JSON object a browser gets (``id`` plus the entry's fields: job,
    event, from, to, actor, msg, attempt, data)."""
    doc = {decode_text(k): decode_text(v) for k, v in dict(fields).items()}
    doc["id"] = decode_text(entry_id)
    return doc


class Subscriber:
    """One browser's buffer of entries; ``dropped`` once it fell :data:`BUFFER` entries behind."""

    def __init__(self, job: str | None = None) -> None:
        self.job = job
        self.queue: asyncio.Queue[dict[str, str] | None] = asyncio.Queue(BUFFER)
        self.dropped = False

    def offer(self, doc: dict[str, str]) -> bool:
        """Hand one entry over; False (and the subscriber is dropped) when its buffer is full."""
        if self.job is not None and doc.get("job") != self.job:
            return True
        try:
            self.queue.put_nowait(doc)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True

    async def entries(self) -> AsyncIterator[dict[str, str]]:
        """The entries as they come, until the feed closes or drops this subscriber."""
        while not self.dropped:
            doc = await self.queue.get()
            if doc is None:
                return
            yield doc


class Feed:
    """The one reader of one queue's stream and its subscribers."""

    def __init__(self, client: aredis.Redis, queue: str) -> None:
        self.client = client
        self.key = QueueKeys(queue).events
        self.subscribers: set[Subscriber] = set()
        self.task: asyncio.Task[None] | None = None
        self.readers_started = 0  # how many reader tasks this feed ever started (tests, /healthz)

    def subscribe(self, job: str | None = None) -> Subscriber:
        """A new subscriber (of one job's entries only, with ``job``); starts the reader if needed."""
        sub = Subscriber(job)
        self.subscribers.add(sub)
        if self.task is None or self.task.done():
            self.readers_started += 1
            self.task = asyncio.create_task(self._read(), name=f"rjobs-dashboard-feed:{self.key}")
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber; the reader stops when none is left."""
        self.subscribers.discard(sub)
        if not self.subscribers and self.task is not None:
            self.task.cancel()
            self.task = None

    def _fan_out(self, docs: list[dict[str, str]]) -> None:
        for sub in list(self.subscribers):
            if not all(sub.offer(d) for d in docs):
                log.info("dashboard: a live view fell %d entries behind on %s: dropped", BUFFER, self.key)
                self.subscribers.discard(sub)
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(None)

    async def _read(self) -> None:
        after: Any = "$"
        while True:
            try:
                reply: Any = await self.client.xread({self.key: after}, count=COUNT, block=BLOCK_MS)
            except RedisError as exc:
                log.warning("dashboard: reading %s failed (%s); retrying", self.key, exc)
                await asyncio.sleep(1.0)
                continue
            entries = stream_entries(reply)
            if entries:
                after = entries[-1][0]
                self._fan_out([entry_doc(eid, fields) for eid, fields in entries])

    async def close(self) -> None:
        """Stop the reader and end every subscriber's stream."""
        for sub in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                sub.queue.put_nowait(None)
        self.subscribers.clear()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None


class Feeds:
    """The feeds of a dashboard process, one per queue, made on first use."""

    def __init__(self, client: aredis.Redis) -> None:
        self.client = client
        self.feeds: dict[str, Feed] = {}

    def feed(self, queue: str) -> Feed:
        """The queue's feed."""
        if queue not in self.feeds:
            self.feeds[queue] = Feed(self.client, queue)
        return self.feeds[queue]

    async def close(self) -> None:
        """Close every feed."""
        for feed in self.feeds.values():
            await feed.close()
