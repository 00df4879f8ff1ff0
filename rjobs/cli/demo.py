"""``rjobs demo``: a guided tour in one command. It declares a fresh queue, enqueues one job per
interesting ending, runs a real Worker in-process, shows live progress, then prints the outcomes
and the ``rjobs`` commands that show the same data again (and the raw keys, for a redis-cli).

The demo jobs and how they must end (the command exits 0 only if every one did):

- ``render_video``: named steps with progress and ETA, links two assets -> success;
- ``send_invoice``: its first attempt raises, the retry succeeds -> success after 2 attempts;
- ``import_contacts``: returns :class:`rjobs.worker.functions.Partial` -> partial;
- ``charge_card``: raises :class:`rjobs.worker.functions.Fail` -> failure at once, no retry;
- ``export_archive``: runs long; the demo cancels it once it has started -> cancelled.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import redis.asyncio as aredis
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from rjobs.cli.live import JobBars
from rjobs.cli.render import Output, age, event_line, state_style
from rjobs.client.queue import Queue
from rjobs.machines import JOB
from rjobs.models import Job
from rjobs.worker.functions import Fail, Partial, job
from rjobs.worker.retry import RetryPolicy

__all__ = ["DEMO_JOBS", "DemoJob", "inspect_commands", "redis_cli_commands", "run_demo"]

DEADLINE = 25.0  # seconds: the demo takes ~6 s; past this something is wrong, report and exit 1
CANCEL_AFTER = 1.0  # seconds after export_archive reports progress, so it is visibly running
LEASE = 3.0  # short lease: heartbeats every ~second, so the cancellation reaches the worker fast


async def _steps(ctx: Any, steps: Sequence[tuple[str, float, float]], pause: float) -> None:
    """Report progress through named steps: (name, from %, to %), a few updates per step."""
    for name, start, end in steps:
        for k in range(4):
            await ctx.progress(start + (end - start) * k / 4, step=name)
            await anyio.sleep(pause)
    await ctx.progress(100, step="done")


async def render_video(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Named steps with an ETA, then links the rendered files as the job's assets."""
    steps = [("download source", 0, 20), ("transcode 1080p", 20, 75), ("upload", 75, 100)]
    await _steps(ctx, steps, 0.3)
    name = params["video"]
    await ctx.add_asset("video", f"https://cdn.example.com/{name}.mp4", file_size=48_213_114)
    await ctx.add_asset("thumbnail", f"https://cdn.example.com/{name}.jpg", file_size=84_022)
    return {"video": f"{name}.mp4", "seconds": 93}


@job(retry=RetryPolicy(base=0.5, jitter="none"))  # a quick retry keeps the demo short
async def send_invoice(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Fails on its first attempt (a flaky dependency), succeeds on the retry."""
    await ctx.progress(30, step="connect to mail server")
    await anyio.sleep(0.4)
    if ctx.attempt == 1:
        raise ConnectionError("mail server timed out (the demo's first attempt always does)")
    await ctx.progress(80, step="send")
    await anyio.sleep(0.4)
    return {"sent_to": params["to"]}


async def import_contacts(ctx: Any, params: dict[str, Any]) -> Partial:
    """Imports most rows and reports the rest: ends partial, with both result and error."""
    await _steps(ctx, [("parse csv", 0, 40), ("import rows", 40, 100)], 0.2)
    rows, bad = params["rows"], params["bad_rows"]
    return Partial({"imported": rows - len(bad)}, f"{len(bad)} rows had no e-mail address: {bad}")


async def charge_card(ctx: Any, params: dict[str, Any]) -> None:
    """A business failure: raising Fail ends the job failed at once, without retries."""
    await ctx.progress(50, step="authorise payment")
    await anyio.sleep(0.5)
    raise Fail("card declined by issuer", code="card_declined")


async def export_archive(ctx: Any, params: dict[str, Any]) -> None:
    """Long-running; the demo cancels it while it runs, and the worker stops it."""
    for k in range(100):
        await ctx.progress(k, step="compress files")
        await anyio.sleep(0.2)


@dataclass(frozen=True)
class DemoJob:
    """One demo job: its type, function, params, attempts and the final role it must reach."""

    type: str
    fn: Callable[..., Awaitable[Any]]
    params: dict[str, Any]
    expect: str  # a final role of the JOB machine: success, partial, failure, cancelled
    max_attempts: int = 3
    attempts: int | None = None  # attempts it must have taken, when that is the point


DEMO_JOBS: tuple[DemoJob, ...] = (
    DemoJob("render_video", render_video, {"video": "intro"}, "success"),
    DemoJob("send_invoice", send_invoice, {"to": "ada@example.com"}, "success", attempts=2),
    DemoJob("import_contacts", import_contacts, {"rows": 100, "bad_rows": [17, 42, 88]}, "partial"),
    DemoJob("charge_card", charge_card, {"amount": 4200}, "failure"),
    DemoJob("export_archive", export_archive, {"files": 1200}, "cancelled"),
)


class _Row(msgspec.Struct, frozen=True):
    id: str
    type: str
    expected: str
    status: str
    attempts: int
    duration_ms: int | None
    ok: bool
    error: str | None = None


def _redis_cli(url: str) -> str:
    parts = urlsplit(url)
    cmd = f"redis-cli -p {parts.port or 6379}"
    if parts.hostname not in (None, "localhost", "127.0.0.1"):
        cmd += f" -h {parts.hostname}"
    db = parts.path.strip("/")
    if db not in ("", "0"):
        cmd += f" -n {db}"
    return cmd


def inspect_commands(queue: Queue, job_id: str, url: str | None = None) -> list[str]:
    """Copy-pasteable ``rjobs`` commands showing a job with its history, the queue's stream and its
    counts; ``url``: the ``--url`` they need (None when they find the server on their own)."""
    tail = f" --url {url}" if url else ""
    return [
        f"rjobs show {job_id} -q {queue.name}{tail}",
        f"rjobs events {queue.name}{tail}",
        f"rjobs stats {queue.name}{tail}",
    ]


def redis_cli_commands(url: str, queue: Queue, job_id: str) -> list[str]:
    """The same data as raw keys, for a redis-cli (the embedded server ships none)."""
    cli, k = _redis_cli(url), queue.backend.keys
    return [
        f"{cli} HGETALL '{k.job(job_id)}'",
        f"{cli} LRANGE '{k.job_history(job_id)}' 0 -1",
        f"{cli} XRANGE '{k.events}' - + COUNT 20",
        f"{cli} HGETALL '{k.machine}'",
    ]


class _Demo:
    def __init__(self, url: str, out: Output, url_flag: bool) -> None:
        self.url, self.out, self.url_flag = url, out, url_flag
        self.name = f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        self.queue = Queue(self.name, client=aredis.Redis.from_url(url), actor="rjobs-demo")
        self.ids: dict[str, DemoJob] = {}
        self.jobs: dict[str, Job] = {}
        self.live = out.out.is_terminal and not out.json
        self.bars = JobBars(out.out, JOB) if self.live else None
        self.cancel_sent = False
        self.steps: dict[str, str | None] = {}

    async def run(self) -> int:
        from rjobs.worker.loop import Worker

        q = self.queue
        functions = {d.type: d.fn for d in DEMO_JOBS}
        # A short grace: if a demo job hangs, the report must not wait the default 30 s for it.
        worker = Worker(q, functions=functions, concurrency=len(DEMO_JOBS), lease=LEASE, grace=2.0)
        if not self.out.json:
            self.out.out.print(f"[bold]rjobs demo[/] on queue [cyan]{self.name}[/] at {self.url}")
        for d in DEMO_JOBS:
            outcome = await q.enqueue(d.type, d.params, max_attempts=d.max_attempts)
            self.ids[outcome.id] = d
        started = time.monotonic()
        timed_out = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.run)
            if self.bars:
                self.bars.__enter__()
            try:
                with anyio.move_on_after(DEADLINE) as scope:
                    await self.follow(tg)
                timed_out = scope.cancelled_caught
            finally:
                if self.bars:
                    self.bars.__exit__(None, None, None)
                worker.stop(force=timed_out)
        return self.report(time.monotonic() - started, timed_out)

    async def follow(self, tg: anyio.abc.TaskGroup) -> None:
        """Tail the queue's stream (XREAD BLOCK) until every demo job is final, updating the view."""
        q = self.queue
        for jid in self.ids:
            await self.refresh(jid)
        after = "0-0"
        while not all(JOB.is_final(j.status) for j in self.jobs.values()):
            for ev in await q.queue_events(after, count=100, block_ms=500):
                after = ev.id
                if ev.job_id not in self.ids:
                    continue
                if not self.live and not self.out.json and self.new_step(ev.job_id, ev.event, ev.message):
                    self.out.out.print(event_line(JOB, ev))
                await self.refresh(ev.job_id)
                d = self.ids[ev.job_id]
                if d.expect == "cancelled" and ev.event == "progress" and not self.cancel_sent:
                    self.cancel_sent = True
                    tg.start_soon(self.cancel_later, ev.job_id)

    def new_step(self, job_id: str, event: str, step: str | None) -> bool:
        """Without a terminal, print every state change but only the first update of each step."""
        if event != "progress":
            return True
        seen = self.steps.get(job_id)
        self.steps[job_id] = step
        return seen != step

    async def cancel_later(self, job_id: str) -> None:
        """Cancel the long job once it has visibly run for a moment."""
        await anyio.sleep(CANCEL_AFTER)
        await self.queue.cancel(job_id, "demo: cancelled while running")

    async def refresh(self, job_id: str) -> None:
        job = await self.queue.get(job_id)
        self.jobs[job_id] = job
        if self.bars:
            self.bars.track(job, label=f"{self.ids[job_id].type:<16} {job_id}")

    def rows(self) -> list[_Row]:
        """One row per demo job, checked against what it had to end as."""
        out = []
        for jid, d in self.ids.items():
            job = self.jobs[jid]
            ok = job.status == JOB.role(d.expect) and (d.attempts is None or job.attempt == d.attempts)
            error = f"{job.error.code}: {job.error.message}" if job.error else None
            row = _Row(jid, d.type, JOB.role(d.expect) or "", job.status, job.attempt, job.duration_ms, ok, error)
            out.append(row)
        return out

    def report(self, took: float, timed_out: bool) -> int:
        rows = self.rows()
        ok = not timed_out and all(r.ok for r in rows)
        flaky = next(jid for jid, d in self.ids.items() if d.attempts is not None)
        commands = inspect_commands(self.queue, flaky, self.url if self.url_flag else None)
        raw = redis_cli_commands(self.url, self.queue, flaky)
        if self.out.json:
            self.out.json_doc(
                {
                    "queue": self.name,
                    "url": self.url,
                    "ok": ok,
                    "seconds": round(took, 2),
                    "jobs": rows,
                    "commands": commands,
                    "redis_cli": raw,
                }
            )
            return 0 if ok else 1
        table = Table(title=f"outcomes ({took:.1f} s)", header_style="bold", title_justify="left")
        for col in ("job id", "type", "final state", "expected", "attempts", "duration", ""):
            table.add_column(col, no_wrap=True)
        for r in rows:
            mark = Text("✓", style="green") if r.ok else Text(f"✗ unexpected: {r.error or ''}", style="bold red")
            status = Text(r.status, style=state_style(JOB, r.status))
            table.add_row(r.id, r.type, status, r.expected, str(r.attempts), age(r.duration_ms), mark)
        con = self.out.out
        con.print(table)
        if timed_out:
            self.out.error(f"the demo jobs did not all finish within {DEADLINE:.0f} s")
        con.print(
            "\nEverything above lives in Redis. Look at it again (send_invoice: a failed attempt, its retry, "
            "the success):",
            markup=False,
        )
        for cmd in commands:
            con.print(f"  {cmd}", markup=False, soft_wrap=True)
        con.print("The same data as raw keys, with a redis-cli if you have one:", markup=False)
        for cmd in raw:
            con.print(f"  {cmd}", markup=False, soft_wrap=True)
        con.print("[green]demo passed: every job ended as expected[/]" if ok else "[red]demo FAILED[/]")
        return 0 if ok else 1


def run_demo(url: str, out: Output, url_flag: bool = False) -> int:
    """Run the demo against ``url``; 0 when every demo job ended in its expected state, else 1.
    ``url_flag``: the URL was given with ``--url``, so the commands it suggests repeat it."""

    async def main() -> int:
        demo = _Demo(url, out, url_flag)
        try:
            return await demo.run()
        finally:
            await demo.queue.client.aclose()

    # The demo provokes failures on purpose; the worker's warnings about them would only scramble
    # the live bars. Real errors still show, through rich so they print above the bars.
    logger = logging.getLogger("rjobs")
    saved = logger.level, logger.propagate, list(logger.handlers)
    logger.handlers = [RichHandler(console=out.err, show_path=False, level=logging.ERROR)]
    logger.setLevel(logging.ERROR)
    logger.propagate = False
    try:
        code: int = anyio.run(main)
    finally:
        logger.setLevel(saved[0])
        logger.propagate, logger.handlers = saved[1], saved[2]
    return code
