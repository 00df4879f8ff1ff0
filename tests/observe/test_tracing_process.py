"""Traces across processes: a job enqueued inside a span here is run by a real worker process
(tests/observe/traceapp.py) whose run span continues the trace; without the extra installed
nothing is traced or stored; enqueue.lua refuses a malformed trace context from anyone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from rjobs.client.sync_queue import SyncQueue
from rjobs.store.messages import EnqueueSpec
from rjobs.store.scripts import load_script
from tests.helpers import keyspace_fingerprint, script_for
from tests.observe.conftest import Traces

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "traced"  # tests/observe/traceapp.py's (not imported: it sets the global provider)
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_worker_process_continues_the_trace_of_the_enqueuing_process(
    url: str, traces: Traces, redis_sync: redis.Redis, tmp_path: Path
) -> None:
    with SyncQueue(QUEUE, url) as q:
        with traces.tracer.start_as_current_span("web.request"):
            out = q.enqueue("work", {"n": 7})
        enqueue = traces.one("rjobs.enqueue")
        spans_file = tmp_path / "spans.jsonl"
        done = python(
            "-m", "rjobs", "worker", "tests.observe.traceapp:make_worker", "--url", url, "--burst",
            env={"RJOBS_TEST_SPANS": str(spans_file)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert q.get(out.id).result == "7"
    spans = {s["name"]: s for s in map(json.loads, spans_file.read_text().splitlines())}
    run, user, finish = spans["rjobs.run"], spans["user.work"], spans["rjobs.finish"]
    ctx = enqueue.get_span_context()
    assert run["trace_id"] == user["trace_id"] == finish["trace_id"] == f"{ctx.trace_id:032x}"
    assert run["parent_id"] == f"{ctx.span_id:016x}" and run["kind"] == "CONSUMER"
    assert user["parent_id"] == finish["parent_id"] == run["span_id"]
    assert run["attributes"]["rjobs.job.id"] == out.id and run["attributes"]["rjobs.outcome"] == "succeeded"
    assert redis_sync.hget(f"rjobs:{{{QUEUE}}}:job:{out.id}", "trace") == (
        f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}".encode()
    )


NO_EXTRA = """
import json, sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import anyio
from rjobs import Queue, Worker
from rjobs import tracing

async def main():
    ran = []
    async def work(ctx, params):
        ran.append(ctx.job.trace)
    async with Queue("traced", url=sys.argv[1]) as q:
        out = await q.enqueue("work")
        await Worker(q, [work], lease=5, burst=True).run()
        job = await q.get(out.id)
    print(json.dumps({"id": out.id, "status": job.status, "trace": job.trace, "ran": ran,
                      "enabled": tracing.enabled()}))

anyio.run(main)
"""


def test_without_the_extra_jobs_run_and_carry_no_trace(url: str, redis_sync: redis.Redis) -> None:
    done = python("-c", NO_EXTRA, url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "completed" and report["ran"] == [None]
    assert report["trace"] is None and report["enabled"] is False
    assert b"trace" not in redis_sync.hkeys(f"rjobs:{{{QUEUE}}}:job:{report['id']}")


@pytest.mark.parametrize(
    "trace",
    [
        TRACE.upper(),
        "ff" + TRACE[2:],
        TRACE[:-1],
        TRACE + "x",
        TRACE.replace("-", "_"),
        TRACE + ";" + "a" * (512 - len(TRACE)),
        TRACE + ";congo=\x01",
        TRACE + ";congo=é",
        "01" + TRACE[2:] + "-0x",
        ";" + TRACE,
    ],
)
def test_a_malformed_trace_context_is_refused_and_writes_nothing(url: str, redis_sync: redis.Redis, trace: str) -> None:
    with SyncQueue(QUEUE, url) as q:
        q.declare()
        q.enqueue("work")
        call = q.backend.scripts.enqueue("raw", [EnqueueSpec(type="work", params=b"{}", priority=5, trace=trace)])
    source, sha = script_for(redis_sync, load_script("enqueue"))
    redis_sync.script_load(source)
    before = keyspace_fingerprint(redis_sync)
    with pytest.raises(redis.ResponseError, match=r"^RJ_INVALID trace context \(request 1\)"):
        redis_sync.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)
    assert keyspace_fingerprint(redis_sync) == before


@pytest.mark.parametrize("trace", [TRACE, TRACE + ";" + "a" * (511 - len(TRACE)), "01" + TRACE[2:] + "-00ab"])
def test_a_well_formed_trace_context_is_stored(url: str, redis_sync: redis.Redis, trace: str) -> None:
    with SyncQueue(QUEUE, url) as q:
        q.declare()
        call = q.backend.scripts.enqueue("raw", [EnqueueSpec(type="work", params=b"{}", priority=5, trace=trace)])
        source, sha = script_for(redis_sync, load_script("enqueue"))
        redis_sync.script_load(source)
        reply = redis_sync.execute_command("EVALSHA", sha, len(call.keys), *call.keys, *call.args)
        job_id = reply[0].decode()
        assert q.get(job_id).trace == trace
    assert redis_sync.hget(f"rjobs:{{{QUEUE}}}:job:{job_id}", "trace") == trace.encode()


def test_rjobs_show_prints_the_stored_trace(url: str, traces: Traces, redis_sync: redis.Redis) -> None:
    with SyncQueue(QUEUE, url) as q, traces.tracer.start_as_current_span("web.request"):
        out = q.enqueue("work")
    stored = redis_sync.hget(f"rjobs:{{{QUEUE}}}:job:{out.id}", "trace")
    assert stored is not None
    shown = python("-m", "rjobs", "show", out.id, "-q", QUEUE, "--url", url)
    assert shown.returncode == 0, shown.stderr
    assert any(line.split() == ["trace", stored.decode()] for line in shown.stdout.splitlines()), shown.stdout
    doc = json.loads(python("-m", "rjobs", "show", out.id, "-q", QUEUE, "--url", url, "--json").stdout)
    assert doc["job"]["trace"] == stored.decode()
