"""The list of live workers on a real local Redis Cluster: a worker serving a queue on every master
publishes its details in each queue's slot, ``rjobs workers`` reads them across masters, and a clean
stop unlists it from every queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

import rjobs
from rjobs.store.keys import QueueKeys
from tests.clusterkit import LocalCluster


async def nothing(ctx: rjobs.JobContext, params: object) -> None:
    """A job type the worker registers (none is enqueued)."""


@pytest.mark.anyio
async def test_rjobs_workers_sees_a_worker_on_every_master(clean_cluster: LocalCluster, tmp_path: Path) -> None:
    names = sorted(clean_cluster.queue_name_on(m, prefix="wl") for m in clean_cluster.masters())
    env = {**os.environ, "REDIS_URL": clean_cluster.url, "RJOBS_HOME": str(tmp_path)}

    def rjobs_cli(*args: str) -> dict[str, object]:
        done = subprocess.run([sys.executable, "-m", "rjobs", *args, "--json"], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    worker = rjobs.Worker(names, [nothing], url=clean_cluster.url, lease=3.0, worker_id="w-cluster")
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(30), clean_cluster.client() as client:
            while not all(client.hexists(QueueKeys(n).workers_info, "w-cluster") for n in names):  # noqa: ASYNC110
                await anyio.sleep(0.05)  # another process's writes: nothing here to wait on
        listed = await anyio.to_thread.run_sync(rjobs_cli, "workers")
        worker.stop()
    (w,) = listed["workers"]  # type: ignore[misc]
    assert w["id"] == "w-cluster" and sorted(w["seen_in"]) == names and sorted(w["queues"]) == names
    assert listed["alive"] == dict.fromkeys(names, 1)
    with clean_cluster.client() as client:
        assert not any(client.exists(QueueKeys(n).workers_info, QueueKeys(n).workers) for n in names)
