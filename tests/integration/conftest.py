"""Fixtures shared by the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rjobs.client.queue import Queue


@pytest.fixture
async def queue(url: str) -> AsyncIterator[Queue]:
    """An async Queue on the (flushed) shared server, closed after the test."""
    q = Queue("work", url=url)
    try:
        yield q
    finally:
        await q.close()
