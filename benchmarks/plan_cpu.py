"""Client CPU of the enqueue plans alone, without I/O: build one enqueue call (and 100 in one
``enqueue_many``), decode a canned reply. The figure moves with what the client does per call, not
with the server or the machine's load as much as ``ab.py`` does (best of 15 repeats).

    RJOBS_SRC=/path/to/copy python3 benchmarks/plan_cpu.py [--absent]

``--absent`` blocks ``import opentelemetry`` as if the ``otel`` extra were not installed; without
it, an installed ``opentelemetry-api`` with no tracer provider is what is measured; ``--traced``
gives rjobs an SDK tracer provider without exporter (spans made and sampled, then dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import timeit

p = argparse.ArgumentParser()
p.add_argument("--absent", action="store_true", help="as if opentelemetry were not installed")
p.add_argument("--traced", action="store_true", help="with an SDK tracer provider (no exporter)")
p.add_argument("--n", type=int, default=20000)
args = p.parse_args()
if args.absent:
    sys.modules["opentelemetry"] = None  # type: ignore[assignment]
if os.environ.get("RJOBS_SRC"):
    sys.path.insert(0, os.environ["RJOBS_SRC"])

from rjobs.client.operations import QueuePlans  # noqa: E402
from rjobs.config import QueueConfig  # noqa: E402
from rjobs.machines import JOB  # noqa: E402
from rjobs.models import JobRequest  # noqa: E402

if args.traced:
    from opentelemetry.sdk.trace import TracerProvider

    from rjobs import tracing

    tracing.configure(TracerProvider())
plans = QueuePlans("bench", JOB, QueueConfig(), "me")
one_req = JobRequest(type="t", params={"a": 1})
reqs = [JobRequest(type="t", params={"a": i}) for i in range(100)]
reply = [b"id1", b"created", b"queued", b"", 0, 0]


def drive(plan: object, raw: list[object]) -> None:
    call = next(plan)  # type: ignore[call-overload]
    with contextlib.suppress(StopIteration):
        plan.send(call.decode(raw))  # type: ignore[attr-defined]


def one() -> None:
    drive(plans.enqueue(one_req), reply)


def many() -> None:
    drive(plans.enqueue_many(reqs), reply * 100)


single = min(timeit.repeat(one, number=args.n, repeat=15)) / args.n * 1e6
batch = min(timeit.repeat(many, number=args.n // 100, repeat=15)) / (args.n // 100) / 100 * 1e6
loaded = "opentelemetry" in sys.modules and sys.modules["opentelemetry"] is not None
print(f"{os.environ.get('RJOBS_SRC', '.')}: enqueue {single:.2f} µs/call, enqueue_many(100) {batch:.3f} µs/job "
      f"(opentelemetry imported: {loaded})")  # fmt: skip
