"""Optional views of rjobs for observability tools: :mod:`rjobs.observe.tracing` (OpenTelemetry
traces, the ``otel`` extra). Nothing here is imported unless used, and each module imports its
third-party library only when it is installed and asked for."""
