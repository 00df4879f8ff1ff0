"""A worker app that traces (tests/observe/test_tracing_process.py): it sets the global tracer
provider at import, as an application would, and writes every span it ends as one JSON line to
the file named by RJOBS_TEST_SPANS."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from rjobs.worker.context import JobContext
from rjobs.worker.loop import Worker

QUEUE = "traced"


class JsonLines(SpanExporter):
    """Appends each ended span to a file, one JSON object a line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a") as out:
            for span in spans:
                out.write(json.dumps(as_dict(span)) + "\n")
        return SpanExportResult.SUCCESS


def as_dict(span: ReadableSpan) -> dict[str, Any]:
    """The parts of a span the test reads, ids in hex."""
    ctx = span.get_span_context()
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLines(os.environ["RJOBS_TEST_SPANS"])))
trace.set_tracer_provider(provider)


async def work(ctx: JobContext, params: dict[str, Any]) -> str:
    """Opens a span of its own: a child of the worker's run span."""
    with trace.get_tracer("traceapp").start_as_current_span("user.work"):
        return str(params["n"])


def make_worker() -> Worker:
    """The worker of the test: its queue, the one function."""
    return Worker(QUEUE, [work], lease=5)
