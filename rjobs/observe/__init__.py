"""Observability: Prometheus metrics of workers and queues (docs/metrics.md).

``rjobs.observe.prometheus`` holds the entry points: :func:`~rjobs.observe.prometheus.serve_worker_metrics`
(a worker's own /metrics, what ``rjobs worker --metrics-port`` runs) and
:func:`~rjobs.observe.prometheus.render_queue_metrics` (the queues' metrics, for a dashboard's
/metrics). They need the optional ``prometheus_client`` (``pip install 'rjobs[metrics]'``); importing
this package does not import it, and a worker without metrics never does.
"""
