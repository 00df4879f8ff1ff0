"""OpenTelemetry traces in one process (rjobs.tracing): the enqueue span's context is
stored with the job, the worker's run span continues it, the job function's spans are children of
the run span and the finish span records the write; without a provider nothing is stored."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from rjobs import tracing
from rjobs.client.queue import Queue
from rjobs.errors import JobExists
from rjobs.machines import JOB
from rjobs.models import JobRequest
from rjobs.worker.context import JobContext
from rjobs.worker.functions import Fail
from rjobs.worker.loop import Worker
from rjobs.worker.retry import RetryPolicy
from tests.helpers import keyspace_fingerprint
from tests.observe.conftest import Traces

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
QUEUE = "traced"
MACHINE = f"rjobs:{{{QUEUE}}}:machine"


def job_key(job_id: str) -> str:
    return f"rjobs:{{{QUEUE}}}:job:{job_id}"


def traceparent(span: ReadableSpan) -> str:
    """The traceparent of ``span`` as rjobs stores it."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def run_burst(queue: Queue, *functions: Any) -> None:
    with anyio.fail_after(20):
        await Worker(queue, list(functions), lease=5, burst=True).run()


async def run_until_final(queue: Queue, job_ids: list[str], *functions: Any) -> None:
    """Run a worker until the jobs are final (retries included: burst mode does not wait for them)."""
    worker = Worker(queue, list(functions), lease=5, retry=RetryPolicy(base=0.01, jitter="none"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        with anyio.fail_after(20):
            for job_id in job_ids:
                await queue.wait(job_id)
        worker.stop()


async def test_the_run_span_continues_the_trace_that_enqueued_the_job(
    url: str, traces: Traces, redis_sync: redis.Redis
) -> None:
    async def work(ctx: JobContext, params: dict[str, int]) -> int:
        with traces.tracer.start_as_current_span("user.work"):
            return params["n"] * 2

    async with Queue(QUEUE, url=url) as q:
        with traces.tracer.start_as_current_span("web.request"):
            out = await q.enqueue("work", {"n": 21})
        enqueue, web = traces.one("rjobs.enqueue"), traces.one("web.request")
        stored = (await q.get(out.id)).trace
        assert stored == traceparent(enqueue)
        assert redis_sync.hget(job_key(out.id), "trace") == stored.encode()
        await run_burst(q, work)
        assert (await q.get(out.id)).status == JOB.success
    run, user, finish = traces.one("rjobs.run"), traces.one("user.work"), traces.one("rjobs.finish")
    trace_id = web.get_span_context().trace_id
    assert {s.get_span_context().trace_id for s in (enqueue, run, user, finish)} == {trace_id}
    assert parent_of(enqueue) == web.get_span_context().span_id
    assert parent_of(run) == enqueue.get_span_context().span_id
    assert parent_of(user) == run.get_span_context().span_id
    assert parent_of(finish) == run.get_span_context().span_id
    assert (enqueue.kind, run.kind, finish.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.CLIENT)
    assert dict(enqueue.attributes or {}) == {
        "messaging.system": "rjobs",
        "messaging.operation.type": "send",
        "messaging.operation.name": "enqueue",
        "messaging.destination.name": QUEUE,
        "messaging.message.id": out.id,
        "rjobs.job.id": out.id,
        "rjobs.job.type": "work",
        "rjobs.enqueue.outcome": "created",
    }
    attrs = dict(run.attributes or {})
    assert attrs["messaging.system"] == "rjobs" and attrs["messaging.destination.name"] == QUEUE
    assert (attrs["rjobs.job.id"], attrs["rjobs.job.type"], attrs["rjobs.job.attempt"]) == (out.id, "work", 1)
    assert attrs["rjobs.outcome"] == "succeeded" and run.status.status_code is StatusCode.UNSET
    assert dict(finish.attributes or {})["rjobs.finish.outcome"] == "ok"
    assert dict(finish.attributes or {})["rjobs.target"] == JOB.success
    # the job hash keeps the context it was enqueued in, and nothing else traced was written
    fields = {k.decode() for k in redis_sync.hkeys(job_key(out.id))}
    assert "trace" in fields and not any(
        k.startswith(f"rjobs:{{{QUEUE}}}:trace") for k in map(bytes.decode, redis_sync.keys())
    )


async def test_a_failed_attempt_is_an_error_span_with_its_exception(
    url: str, traces: Traces, redis_sync: redis.Redis
) -> None:
    def broken(ctx: JobContext, params: None) -> None:  # sync: runs in a thread, in the run span's context
        with traces.tracer.start_as_current_span("user.sync"):
            raise ValueError("no good")

    async def refuses(ctx: JobContext, params: None) -> None:
        raise Fail("refused by the function", code="bad_input")

    async with Queue(QUEUE, url=url) as q:
        first = await q.enqueue("broken", max_attempts=2)
        second = await q.enqueue("refuses")
        await run_until_final(q, [first.id, second.id], broken, refuses)
        assert (await q.get(first.id)).status == JOB.failure
        assert (await q.get(second.id)).status == JOB.failure
    runs = {(dict(s.attributes or {})["rjobs.job.id"], dict(s.attributes or {})["rjobs.job.attempt"]): s
            for s in traces.named("rjobs.run")}  # fmt: skip
    assert sorted(runs) == sorted([(first.id, 1), (first.id, 2), (second.id, 1)])
    retried, failed, refused = runs[(first.id, 1)], runs[(first.id, 2)], runs[(second.id, 1)]
    assert dict(retried.attributes or {})["rjobs.outcome"] == "retrying"
    assert dict(failed.attributes or {})["rjobs.outcome"] == "failed"
    for span in (retried, failed, refused):
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
    assert dict(failed.events[0].attributes or {})["exception.type"] == "ValueError"
    assert "no good" in (failed.status.description or "")
    assert dict(refused.attributes or {})["rjobs.error.code"] == "bad_input"
    users = traces.named("user.sync")
    assert sorted(parent_of(s) or 0 for s in users) == sorted(s.get_span_context().span_id for s in (retried, failed))
    # each enqueue began its own trace (no span around them): the runs of a job share it
    assert retried.get_span_context().trace_id == failed.get_span_context().trace_id
    assert retried.get_span_context().trace_id != refused.get_span_context().trace_id
    assert redis_sync.hget(job_key(first.id), "trace") == traceparent(traces.named("rjobs.enqueue")[0]).encode()


async def test_enqueue_many_is_one_span_and_every_job_carries_it(
    url: str, traces: Traces, redis_sync: redis.Redis
) -> None:
    async with Queue(QUEUE, url=url) as q:
        with traces.tracer.start_as_current_span("import"):
            outs = await q.enqueue_many(JobRequest(type=t, params=i) for i, t in enumerate(["a", "b", "a"]))
        kept = await q.enqueue_many([JobRequest(type="a", dedupe_key="k"), JobRequest(type="a", dedupe_key="k")])
    first, second = traces.named("rjobs.enqueue")
    attrs = dict(first.attributes or {})
    assert attrs["messaging.batch.message_count"] == 3 and attrs["rjobs.enqueue.created"] == 3
    assert list(attrs["rjobs.job.ids"]) == [o.id for o in outs]  # type: ignore[arg-type]
    assert list(attrs["rjobs.job.type"]) == ["a", "b"]  # type: ignore[arg-type]
    stored = {redis_sync.hget(job_key(o.id), "trace") for o in outs}
    assert stored == {traceparent(first).encode()}
    # the second call made one job and kept it for the repeat: one id, one job with its context
    assert [o.outcome for o in kept] == ["created", "kept"]
    assert dict(second.attributes or {})["rjobs.job.type"] == "a"
    assert redis_sync.hget(job_key(kept[0].id), "trace") == traceparent(second).encode()


async def test_tracestate_travels_with_the_job(url: str, traces: Traces, redis_sync: redis.Redis) -> None:
    state = TraceState([("congo", "t61rcWkgMzE"), ("rojo", "00f067aa0ba902b7")])
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1), state)
    seen: list[TraceState] = []

    async def work(ctx: JobContext, params: None) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_state)

    async with Queue(QUEUE, url=url) as q:
        with trace.use_span(NonRecordingSpan(remote)):
            out = await q.enqueue("work")
        stored = (await q.get(out.id)).trace or ""
        assert stored == traceparent(traces.one("rjobs.enqueue")) + ";congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
        await run_burst(q, work)
    assert seen == [state]
    assert traces.one("rjobs.run").get_span_context().trace_id == remote.trace_id
    assert redis_sync.hget(job_key(out.id), "trace") == stored.encode()


async def test_groups_and_traces_are_both_claimed(url: str, traces: Traces, redis_sync: redis.Redis) -> None:
    seen: dict[str, tuple[str | None, str | None]] = {}

    async def work(ctx: JobContext, params: None) -> None:
        seen[ctx.job.id] = (ctx.job.group, ctx.job.trace)

    async with Queue(QUEUE, url=url) as q:
        tracing.configure(trace.NoOpTracerProvider())  # tracing off: no span, nothing stored
        untraced = await q.enqueue("work", group="g1")
        assert redis_sync.hget(MACHINE, "traced") is None and redis_sync.hget(MACHINE, "flow") == b"1"
        tracing.configure(traces.provider)
        with traces.tracer.start_as_current_span("web.request"):
            grouped = await q.enqueue("work", group="g2")
        plain = await q.enqueue("work")  # a provider but no span: a trace of its own
        assert redis_sync.hget(MACHINE, "traced") == b"1"
        await run_burst(q, work)
    enqueues = {dict(s.attributes or {})["rjobs.job.id"]: s for s in traces.named("rjobs.enqueue")}
    assert set(enqueues) == {grouped.id, plain.id}
    assert seen == {
        untraced.id: ("g1", None),
        grouped.id: ("g2", traceparent(enqueues[grouped.id])),
        plain.id: (None, traceparent(enqueues[plain.id])),
    }
    runs = {dict(s.attributes or {})["rjobs.job.id"]: s for s in traces.named("rjobs.run")}
    assert dict(runs[grouped.id].attributes or {})["rjobs.job.group"] == "g2"
    assert "rjobs.job.group" not in dict(runs[plain.id].attributes or {})
    assert runs[untraced.id].parent is None  # a new trace
    for jid in (grouped.id, plain.id):
        assert parent_of(runs[jid]) == enqueues[jid].get_span_context().span_id
    assert b"trace" not in redis_sync.hkeys(job_key(untraced.id))


async def test_a_refused_enqueue_is_an_error_span_and_stores_nothing(
    url: str, traces: Traces, redis_sync: redis.Redis
) -> None:
    async with Queue(QUEUE, url=url) as q:
        await q.enqueue("work", job_id="j1")
        before = keyspace_fingerprint(redis_sync)
        with pytest.raises(JobExists):
            await q.enqueue("work", job_id="j1")
        assert keyspace_fingerprint(redis_sync) == before
    ok, refused = traces.named("rjobs.enqueue")
    assert ok.status.status_code is StatusCode.UNSET
    assert refused.status.status_code is StatusCode.ERROR and [e.name for e in refused.events] == ["exception"]


def test_the_sync_queue_is_traced_too(url: str, traces: Traces, redis_sync: redis.Redis) -> None:
    from rjobs.client.sync_queue import SyncQueue

    with SyncQueue(QUEUE, url) as q, traces.tracer.start_as_current_span("script"):
        out = q.enqueue("work")
    assert redis_sync.hget(job_key(out.id), "trace") == traceparent(traces.one("rjobs.enqueue")).encode()
    assert parent_of(traces.one("rjobs.enqueue")) == traces.one("script").get_span_context().span_id


async def test_without_a_tracer_provider_nothing_is_stored_or_traced(url: str, redis_sync: redis.Redis) -> None:
    tracing.configure(None)  # the global provider: none is set in the test process
    assert trace.get_tracer_provider().__class__.__name__ == "ProxyTracerProvider"
    assert not tracing.enabled()
    ran: list[bool] = []

    async def work(ctx: JobContext, params: None) -> None:
        ran.append(trace.get_current_span().get_span_context().is_valid)

    async with Queue(QUEUE, url=url) as q:
        outs = [await q.enqueue("work"), *await q.enqueue_many([JobRequest(type="work")])]
        for out in outs:
            assert (await q.get(out.id)).trace is None
        await run_burst(q, work)
    assert ran == [False, False]
    for out in outs:
        assert b"trace" not in redis_sync.hkeys(job_key(out.id))
    assert redis_sync.hget(MACHINE, "traced") is None


def test_a_long_tracestate_is_cut_to_fit_by_whole_entries(traces: Traces) -> None:
    members = [(f"k{i}", "v" * 60) for i in range(12)]
    remote = SpanContext(1, 2, True, TraceFlags(1), TraceState(members))
    span = NonRecordingSpan(remote)
    stored = tracing.trace_of(span)
    parent, _, state = stored.partition(";")
    assert parent == f"00-{1:032x}-{2:016x}-01" and len(stored) <= tracing.MAX_TRACE
    kept = state.split(",")
    assert kept == [f"{k}={v}" for k, v in members[: len(kept)]] and 5 <= len(kept) < 12
    assert tracing.trace_of(NonRecordingSpan(SpanContext(0, 0, False))) == ""


def test_an_abandoned_enqueue_ends_its_span_as_an_error(traces: Traces) -> None:
    """A plan the driver gives up on (a connection error) is closed: its span ends, as an error."""
    from rjobs.client.operations import QueuePlans
    from rjobs.config import QueueConfig

    plan = QueuePlans(QUEUE, JOB, QueueConfig(), "me").enqueue(JobRequest(type="work"))
    call = next(plan)
    assert traces.named("rjobs.enqueue") == []
    plan.close()
    span = traces.one("rjobs.enqueue")
    assert span.status.status_code is StatusCode.ERROR
    assert traceparent(span) in call.args  # the call that was sent carried the span's context
