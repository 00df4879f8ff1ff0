"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright),
against a real server and a real dashboard: a job enqueued after the page loaded appears without
a reload, its cancel button cancels it (checked in Redis), params holding ``<script>`` render as
text with no dialog, and a running job's progress bar moves live.

Without /usr/bin/chromium these tests FAIL, unless RJOBS_TEST_NO_BROWSER=1 says to skip them.
With RJOBS_DASHBOARD_SCREENSHOTS=1 they also write docs/img/dashboard-*.png (the screenshots of
docs/dashboard.md): ``RJOBS_DASHBOARD_SCREENSHOTS=1 python3 -m pytest tests/dashboard/test_browser.py``.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis

from rjobs import Fail, JobContext, JobRequest, MetricsBucket, SyncQueue, Worker, machines
from rjobs.cli.server import LocalServer
from tests.dashboard.conftest import Running
from tests.helpers import job_history

pytestmark = pytest.mark.slow

JOB = machines.JOB
CHROMIUM = Path("/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
XSS = "<script>alert(1)</script>"


@pytest.fixture
def url(servers: dict[str, LocalServer]) -> str:
    """The browser tests run on the suite's Valkey only (the dashboard's reads are covered on every
    server kind by the other dashboard tests)."""
    shared = servers["valkey"]
    if shared.pid is None:
        shared.start()
    with redis.Redis.from_url(shared.url) as client:
        client.execute_command("FLUSHALL", "SYNC")
    return shared.url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("RJOBS_TEST_NO_BROWSER") == "1":
            pytest.skip("no /usr/bin/chromium and RJOBS_TEST_NO_BROWSER=1")
        pytest.fail("the browser tests need /usr/bin/chromium (apt-get install chromium), or RJOBS_TEST_NO_BROWSER=1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1200, "height": 820})
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    tab.dialogs = []  # every dialog the page opened: (type, message)

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    tab.on("dialog", on_dialog)
    try:
        yield tab
    finally:
        context.close()


def shot(page: Any, name: str, tmp_path: Path) -> Path:
    """A screenshot: into docs/img when RJOBS_DASHBOARD_SCREENSHOTS=1, else into the test's tmp dir."""
    folder = DOCS_IMG if os.environ.get("RJOBS_DASHBOARD_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dashboard-{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size < 200_000, f"{path.name} is {path.stat().st_size} bytes"
    return path


def live(page: Any) -> None:
    page.wait_for_selector("#live.on")  # the page's event stream is connected


def test_a_new_job_appears_live_and_its_cancel_button_cancels_it(
    url: str, dashboard: Callable[..., Running], page: Any, redis_sync: redis.Redis
) -> None:
    q = SyncQueue("work", url, actor="app")
    q.enqueue_many([JobRequest(type=t, params={"n": n}, user_id="ann") for n, t in enumerate(["resize", "mail"] * 3)])
    running = dashboard()
    page.goto(running.base + "/")
    live(page)
    q.enqueue("resize", {"n": 99})
    page.wait_for_function("() => document.querySelector(\".n[data-state='queued']\").textContent === '7'")
    page.goto(running.base + "/q/work")
    live(page)
    page.evaluate("window.loadedOnce = true")
    later = q.enqueue("thumbnail", {"size": 64}, user_id="bob").id
    row = page.locator(f'tr[data-job-id="{later}"]')
    row.wait_for()
    assert row.locator('[data-field="status"]').inner_text() == JOB.ready
    assert page.evaluate("window.loadedOnce") is True, "no reload"
    page.wait_for_function("() => document.querySelector(\".n[data-state='queued']\").textContent === '8'")
    row.locator("button.cancel").click()
    page.wait_for_function(
        f"() => document.querySelector('tr[data-job-id=\"{later}\"] [data-field=status]').textContent === 'cancelled'"
    )
    assert q.get(later).status == JOB.cancelled
    assert row.locator("button.cancel").count() == 0, "a finished job has no cancel button"
    assert job_history(redis_sync, "rjobs:{work}:", later)[-1]["actor"] == "human:dashboard"
    assert [kind for kind, _ in page.dialogs] == ["confirm"], "the cancel asked first"
    page.wait_for_function("() => document.querySelector(\".n[data-state='cancelled']\").textContent === '1'")
    q.close()


def test_params_holding_a_script_render_as_text(url: str, dashboard: Callable[..., Running], page: Any) -> None:
    q = SyncQueue("work", url)
    jid = q.enqueue("render", {"title": XSS}).id
    q.comment(jid, XSS, actor="bob")
    running = dashboard()
    page.goto(f"{running.base}/q/work/job/{jid}")
    assert XSS in page.locator("#params").inner_text()
    assert XSS in page.locator("blockquote").inner_text()
    page.goto(f"{running.base}/q/work/jobs?state=queued")
    page.wait_for_timeout(300)
    assert page.dialogs == [], "no script of the job ran"
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    q.close()


def test_the_progress_bar_moves_live(url: str, dashboard: Callable[..., Running], page: Any) -> None:
    q = SyncQueue("work", url)
    jid = q.enqueue("transcode", {"file": "talk.mp4"}).id
    token = str(q.transition(jid, "processing").token)
    q.progress(jid, 10, "download", token=token)
    running = dashboard()
    page.goto(f"{running.base}/q/work/job/{jid}")
    live(page)
    assert page.locator("#progress").evaluate("el => el.value") == 10
    q.progress(jid, 45, "encode", token=token)
    page.wait_for_function("() => document.getElementById('progress').value === 45")
    page.wait_for_function("() => document.getElementById('progress-step').textContent === 'encode'")
    q.progress(jid, 70, "encode", token=token)
    page.wait_for_function("() => document.getElementById('progress').value === 70")
    page.wait_for_function("() => document.getElementById('progress-text').textContent === '70%'")
    assert page.locator("#history tr").count() >= 3, "the history grows live"
    q.comment(jid, "half way there", actor="ops")
    page.wait_for_selector("#history tr:last-child >> text=half way there")
    q.complete(jid, {"url": "https://example.com/talk.webm"}, token=token)
    page.wait_for_function("() => document.getElementById('status').textContent === 'completed'")
    page.wait_for_selector("text=https://example.com/talk.webm")  # reloaded once finished: the result shows
    assert page.locator("#cancel").count() == 0
    q.close()


async def demo_metrics(minutes: int = 60) -> list[MetricsBucket]:
    """A plausible hour of a busy queue (a deterministic wave with a burst of failures), for the
    screenshots: the test's own jobs fill only its current minute."""
    now = int(time.time() // 60 * 60_000)
    out = []
    for i in range(minutes):
        load = 40 + int(25 * math.sin(i / 7)) + (30 if 38 <= i <= 44 else 0)
        failed = 2 + (9 if 40 <= i <= 43 else 0)
        out.append(
            MetricsBucket(
                start_ms=now - (minutes - 1 - i) * 60_000,
                enqueued={"resize": load, "mail": load // 3},
                claimed={"resize": load - 2, "mail": load // 3},
                wait_ms={"resize": (load - 2) * (300 + 40 * (i % 5)), "mail": load // 3 * 150},
                finished={"completed": {"resize": load - 4, "mail": load // 3 - failed}, "failed": {"mail": failed}},
                runs={"resize": load - 4, "mail": load // 3},
                run_ms={"resize": (load - 4) * 1200, "mail": load // 3 * 450},
            )
        )
    return out


async def resize(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    await ctx.progress(50, step="scale")
    await anyio.sleep(0.02)
    return {"url": f"https://img.example.com/{params['n']}.webp"}


async def mail(ctx: JobContext, params: dict[str, Any]) -> None:
    if params["n"] % 4 == 0:
        raise Fail("SMTP server did not answer in 10 s", code="smtp_timeout")
    await anyio.sleep(0.01)


def test_screenshots_of_a_busy_queue(url: str, dashboard: Callable[..., Running], page: Any, tmp_path: Path) -> None:
    """The docs' screenshots (docs/dashboard.md) from a real worker's work: done, failed, waiting
    and running jobs, the workers table, the job page of a running job."""
    q = SyncQueue("media", url, actor="app")
    q.enqueue_many([JobRequest(type="resize", params={"n": n}, user_id="ann") for n in range(12)])
    q.enqueue_many([JobRequest(type="mail", params={"n": n, "to": f"user{n}@example.com"}) for n in range(8)])
    worker = Worker("media", [resize, mail], url=url, concurrency=4, burst=True)
    burst = threading.Thread(target=lambda: anyio.run(worker.run))  # Playwright's loop owns this thread
    burst.start()
    burst.join(60)
    q.pause("deploy of the new encoder", actor="alice")  # so the worker below leaves these queued
    q.enqueue_many([JobRequest(type="resize", params={"n": n}, user_id="bob") for n in range(12, 17)])
    running_job = q.enqueue("transcode", {"file": "keynote.mp4", "to": "webm"}, user_id="ann").id
    token = str(q.transition(running_job, "processing").token)
    q.progress(running_job, 62, "encode video", token=token)
    q.comment(running_job, "re-run with the new preset", actor="alice")
    listed = Worker("media", [resize, mail], url=url, concurrency=4, worker_id="render-1")
    thread = threading.Thread(target=lambda: anyio.run(listed.run), daemon=True)
    thread.start()  # a live worker in the workers table; it claims nothing while the queue is paused
    try:
        running = dashboard(queues=("media", "reports"))
        page.goto(running.base + "/q/media")
        queue = running.app.state.registry.opened["media"]
        queue.metrics = demo_metrics  # an hour of traffic: the test's own jobs fill a minute
        page.goto(running.base + "/")
        shot(page, "overview", tmp_path)
        page.goto(running.base + "/q/media")
        page.wait_for_selector("text=render-1")
        live(page)
        shot(page, "queue", tmp_path)
        page.goto(running.base + "/q/media/jobs?state=failed&code=smtp_timeout")
        page.wait_for_selector("tr[data-job-id]")
        shot(page, "failed", tmp_path)
        page.goto(f"{running.base}/q/media/job/{running_job}")
        live(page)
        q.progress(running_job, 74, "encode video", token=token)
        page.wait_for_function("() => document.getElementById('progress').value === 74")
        shot(page, "job", tmp_path)
    finally:
        listed.stop(force=True)
        thread.join(10)
        q.close()
