"""Schedules on a real local Redis Cluster: the scripts declare the schedules hash and the tick's
job and lane keys, and a tick is enqueued once there too."""

from __future__ import annotations

import json

import pytest

import rjobs
from rjobs.machines import JOB
from rjobs.store.keys import QueueKeys
from tests.clusterkit import LocalCluster
from tests.invariants import assert_indexes_consistent


@pytest.mark.anyio
async def test_a_tick_on_a_cluster_is_enqueued_once(clean_cluster: LocalCluster) -> None:
    name = clean_cluster.queue_name_on(clean_cluster.masters()[-1])
    q = rjobs.Queue(name, url=clean_cluster.url)
    try:
        assert await q.set_schedule(rjobs.Cron("poll", "poll", every=30)) == "created"
        key = QueueKeys(name).schedules
        with clean_cluster.client() as client:
            doc = json.loads(client.hget(key, "poll"))
            doc["next"] = doc["next"] - 30_000  # due now
            client.hset(key, "poll", json.dumps(doc))
        first = await q.cron_tick(actor="w1")
        assert first.jobs == {f"cron-poll-{doc['next']}": "fired"}
        assert (await q.cron_tick(actor="w2")).jobs == {}
        assert [s.last_job for s in await q.schedules()] == list(first.jobs)
        with clean_cluster.client() as client:
            assert assert_indexes_consistent(client, name, JOB)["queued"] == 1
    finally:
        await q.close()
