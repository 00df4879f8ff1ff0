"""Prometheus metrics of workers and queues (:mod:`rjobs.observe.prometheus`, the ``metrics`` extra,
docs/metrics.md). OpenTelemetry traces live in :mod:`rjobs.tracing` (the ``otel`` extra), at the
top level: the client's enqueue and the worker both use them.

Importing this package imports no third-party library: each module imports its own only when it
is installed and asked for, and a worker without metrics never does.
"""
