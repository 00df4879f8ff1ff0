"""Weighted order across queues on a real Redis Cluster: the queues live on different masters, so
the worker claims them together, one round trip per node (Claimer._claim_by_node), and the weights
still decide who gets the free slots (counted in completions, not timed)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import rjobs
from tests.clusterkit import LocalCluster

RAN: list[str] = []


async def note(ctx: rjobs.JobContext, params: Any) -> None:
    RAN.append(ctx.queue.name)


@pytest.mark.anyio
async def test_weighted_order_on_a_cluster(clean_cluster: LocalCluster) -> None:
    high_name, low_name = (clean_cluster.queue_name_on(m) for m in clean_cluster.masters()[:2])
    queues = [rjobs.Queue(name, url=clean_cluster.url) for name in (high_name, low_name)]
    try:
        for q in reversed(queues):
            await q.enqueue_many([rjobs.JobRequest(type="note") for _ in range(12)])
        RAN.clear()
        worker = rjobs.Worker(queues, [note], concurrency=1, burst=True, weights={high_name: 2})
        await worker.run()
        assert Counter(RAN[:18]) == {high_name: 12, low_name: 6}
        assert RAN[:3] == [high_name, low_name, high_name]
        for q in reversed(queues):
            await q.enqueue_many([rjobs.JobRequest(type="note") for _ in range(30)])
        RAN.clear()
        await rjobs.Worker(queues, [note], concurrency=6, burst=True, weights={high_name: 2}).run()
        assert Counter(RAN) == {high_name: 30, low_name: 30}
        assert Counter(RAN[:6]) == {high_name: 4, low_name: 2}, "the first claim round asks each for its share"
    finally:
        for q in queues:
            await q.close()
