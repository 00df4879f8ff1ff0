"""Optional views of rjobs for observability tools: Prometheus metrics of workers and queues
(:mod:`rjobs.observe.prometheus`, the ``metrics`` extra, docs/metrics.md) and OpenTelemetry traces
(:mod:`rjobs.observe.tracing`, the ``otel`` extra, docs/tracing.md).

Importing this package imports neither library: each module imports its own only when it is
installed and asked for, and a worker without metrics or a tracer provider never does.
"""
