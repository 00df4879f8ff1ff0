"""Lost writes: the server crashes and comes back without its last writes (an RDB snapshot, or an
AOF with ``appendfsync everysec``, or an asynchronous failover all lose acknowledged writes the
same way). The claims of the lost window are issued again, so those jobs may run twice; but no
(job, token) pair is ever issued twice, so the first holder can never write (docs/design.md,
decision 2). Before, tokens were a per-job counter, and 90 jobs ran under the same token twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from rjobs import JobRequest, LeaseLost, SyncQueue, machines
from rjobs.cli.server import LocalServer
from tests.helpers import SERVER_KINDS, keyspace_fingerprint, lease_number, server_binary
from tests.invariants import assert_indexes_consistent

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(120)]
JOB = machines.JOB
N = 200


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_tokens_never_repeat_after_lost_writes(tmp_path: Path, kind: str) -> None:
    server = LocalServer(server_binary(kind), data_dir=tmp_path / "data", appendonly=False)
    server.start()
    try:
        with SyncQueue("lost", server.url) as q:
            q.enqueue_many([JobRequest(type="t", params={"i": i}) for i in range(N)])
            with redis.Redis.from_url(server.url) as r:
                r.save()  # what survives the crash
            first = q.backend.run(q.backend.scripts.claim("worker-a", N, 60_000)).jobs
            assert len(first) == N
        server.kill()  # the claims were acknowledged, then lost
        server.start()
        with SyncQueue("lost", server.url) as q, redis.Redis.from_url(server.url) as r:
            assert q.counts()[JOB.ready] == N, "the claims are gone: every job is ready again"
            second = {j.id: j.token for j in q.backend.run(q.backend.scripts.claim("worker-b", N, 60_000)).jobs}
            assert len(second) == N
            for job in first:
                assert lease_number(second[job.id]) == lease_number(job.token), "the job's lease count rolled back"
                assert second[job.id] != job.token, f"token {job.token} of {job.id} was issued twice"
            # worker A still runs its jobs (a job may run twice after lost writes) but writes nothing
            before = keyspace_fingerprint(r)
            beats = q.backend.run(q.backend.scripts.heartbeat("worker-a", 60_000, [(j.id, j.token) for j in first]))
            assert set(beats) == {"lost"}
            for job in first[:20]:
                with pytest.raises(LeaseLost):
                    q.complete(job.id, "stale", token=job.token)
                with pytest.raises(LeaseLost):
                    q.progress(job.id, 50, token=job.token)
            after = keyspace_fingerprint(r)
            # the heartbeat lists worker-a as seen; nothing else changed
            after.pop(q.backend.keys.workers, None)
            before.pop(q.backend.keys.workers, None)
            assert after == before
            for job_id, token in list(second.items())[:20]:
                assert q.complete(job_id, "fresh", token=token).status == JOB.success
            assert_indexes_consistent(r, "lost", JOB)
    finally:
        server.stop()
