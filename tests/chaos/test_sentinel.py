"""Sentinel URLs against real processes: a master, a replica and a Sentinel (the bundled Valkey
binary in its three roles). Queues and a worker connect through ``redis+sentinel://``; a forced
failover moves them to the new master with no job lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

from rjobs import JobContext, Queue, SyncQueue, Worker
from rjobs.cli.main import main as cli_main
from rjobs.cli.server import LocalServer, find_valkey_binary, free_port

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(60)]
SERVICE = "rjobs-main"


class Deployment:
    """A master, one replica of it and one Sentinel watching them, on free loopback ports."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.binary = tmp, find_valkey_binary()
        # no diskless-sync delay: the replica's first sync would wait 5 s for more replicas
        self.master = LocalServer(self.binary, data_dir=tmp / "master", extra_args=["--repl-diskless-sync-delay", "0"])
        self.replica = LocalServer(
            self.binary, data_dir=tmp / "replica", extra_args=["--replicaof", "127.0.0.1", str(self.master.port)]
        )
        self.port = free_port()
        self.admin = redis.Redis(port=self.port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}"

    def start(self) -> None:
        """Start all three and wait until the Sentinel knows the master (stop() cleans up after a failure)."""
        tmp, binary = self.tmp, self.binary
        self.master.start()
        self.replica.start()
        deadline = time.monotonic() + 10
        with redis.Redis(port=self.master.port) as master:  # the replica has done its first sync
            while master.info("replication").get("slave0", {}).get("state") != "online":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
        conf = tmp / "sentinel.conf"  # Sentinel rewrites its config file: it must be writable
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\nsentinel failover-timeout {SERVICE} 5000\n"
        )
        with open(tmp / "sentinel.log", "wb") as log:
            self.proc = subprocess.Popen([str(binary), str(conf), "--sentinel"], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.master_port() == self.master.port:
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp / "sentinel.log").read_text()
            time.sleep(0.05)

    def master_port(self) -> int:
        return int(self.admin.sentinel_get_master_addr_by_name(SERVICE)[1])

    def fail_over(self) -> None:
        """Force a failover to the replica and wait until the Sentinel names it master."""
        self.admin.execute_command("SENTINEL", "FAILOVER", SERVICE)
        deadline = time.monotonic() + 15
        while self.master_port() != self.replica.port:
            assert time.monotonic() < deadline, "the Sentinel did not promote the replica"
            time.sleep(0.05)
        # ...and until the old master serves as its replica: until then it still accepts writes that
        # the resync will drop (Redis' asynchronous replication; not something a client can see)
        for port, role in ((self.replica.port, b"master"), (self.master.port, b"slave")):
            with redis.Redis(port=port) as node:
                while node.role()[0] != role:
                    assert time.monotonic() < deadline, f"{port} did not become {role!r}"
                    time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.admin.close()
        self.replica.stop()
        self.master.stop()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path)
    try:
        d.start()
        yield d
    finally:
        d.stop()


async def echo(ctx: JobContext, params: dict[str, int]) -> int:
    return params["n"] * 2


def _sentinel_clients(d: Deployment) -> int:
    return sum(1 for c in d.admin.client_list() if c.get("cmd") not in ("client|list", "client"))


@pytest.mark.anyio
async def test_a_queue_and_a_worker_through_a_sentinel_url(deployment: Deployment) -> None:
    with SyncQueue("via-sentinel", deployment.url) as q:
        job = q.enqueue("echo", {"n": 21})
        assert redis.Redis(port=deployment.master.port).exists(q.backend.keys.job(job.id)), "written on the master"
    queue = Queue("via-sentinel", deployment.url)
    worker = Worker(queue, [echo], concurrency=2, lease=5)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        outcome = await queue.wait(job.id, timeout=10)
        worker.stop()
    assert outcome.success and outcome.output == 42
    await queue.close()
    assert _sentinel_clients(deployment) == 0, "close() also closes the connections to the Sentinel"


def test_the_cli_takes_a_sentinel_url(deployment: Deployment, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["enqueue", "cli-sentinel", "echo", "--params", '{"n": 1}', "--url", deployment.url]) == 0
    job_id = capsys.readouterr().out.strip()
    assert cli_main(["show", job_id, "-q", "cli-sentinel", "--json", "--url", deployment.url]) == 0
    assert json.loads(capsys.readouterr().out)["job"]["status"] == "queued"
    with redis.Redis(port=deployment.master.port) as master:
        assert master.exists(f"rjobs:{{cli-sentinel}}:job:{job_id}")


def test_after_a_failover_the_queue_writes_to_the_new_master_and_loses_nothing(deployment: Deployment) -> None:
    with SyncQueue("failover", deployment.url) as q:
        before = [q.enqueue("echo", {"n": i}).id for i in range(3)]
        assert q.client.execute_command("WAIT", 1, 2000) == 1  # replicated before the switch
        deployment.fail_over()
        after = None
        for _ in range(20):  # a call on a connection to the demoted master fails once, never re-sent
            try:
                after = q.enqueue("echo", {"n": 99}).id
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        assert after is not None
        new_master = redis.Redis(port=deployment.replica.port)
        assert new_master.exists(q.backend.keys.job(after)), "the new job is on the new master"
        assert q.counts()["queued"] == 4, "the 3 earlier jobs survived and no call ran twice"
        assert sorted(j.id for j in q.list("queued")) == sorted([*before, after])
        new_master.close()
    assert _sentinel_clients(deployment) == 0, "close() also closes the connections to the Sentinel"
