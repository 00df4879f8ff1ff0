"""Tracing fixtures: an SDK tracer provider with an in-memory exporter, given to rjobs with
``tracing.configure`` (the global provider can be set once per process, and the tests of
"no provider" share this one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from rjobs import tracing


class Traces:
    """The spans ended so far, and a tracer of the same provider for the test's own spans."""

    def __init__(self, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
        self.provider = provider
        self.exporter = exporter
        self.tracer: Tracer = provider.get_tracer("tests")

    def named(self, name: str) -> list[ReadableSpan]:
        """The ended spans called ``name``, oldest first."""
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        """The one ended span called ``name``."""
        spans = self.named(name)
        assert len(spans) == 1, (
            f"{len(spans)} spans named {name}: {[s.name for s in self.exporter.get_finished_spans()]}"
        )
        return spans[0]


@pytest.fixture
def traces() -> Iterator[Traces]:
    """rjobs traces into an in-memory exporter for the test, and stops after it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        yield Traces(provider, exporter)
    finally:
        tracing.configure(None)
        provider.shutdown()
