"""Docs that run: every fenced code block of README.md and docs/*.md is executed here.

Every fence names its language, one of :data:`LANGUAGES` (``test_fences`` fails on any other and on
an untagged fence). ``text`` is for output samples and illustrations that are not code; the
languages of :data:`NOT_EXECUTED` (a systemd unit, a Dockerfile, Kubernetes YAML) are code this
module cannot run: each such block is a listed skip here, with the reason and the test that checks
it instead. Every other block runs. One test per block, with ids like ``README.md:3`` (the third
fence of README.md, counting every fence, ``text`` ones too).

How blocks run, on the suite's Valkey (``REDIS_URL`` names it; the docs' examples read the server
from there, as ``rjobs.Queue(name)`` and the CLI do):

- The server is flushed before a file's first block; the blocks of one file then run **in order and
  build on each other**: their server data, and for ``python`` blocks one namespace and one event
  loop per file. Selecting one block runs the file's earlier blocks first; a block after a failed
  one fails too.
- ``python``: compiled with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``; a block with a top-level ``await``
  runs on the file's event loop, others run as plain code. After a block ran, every ``test_*``
  function it defined is called as pytest would (async ones on the loop), with ``rjobs.testing``'s
  fixtures (``rjobs_server``, ``rjobs_queue``, ``rjobs_sync_queue``) for parameters of those names.
- A ``python`` block whose first line is a comment naming a module path (``# myapp/jobs.py``) is
  also that file: every such block of every doc is written into the docs' working directory, the
  current directory of the ``bash`` blocks, so ``rjobs worker myapp.jobs:worker`` finds it.
- ``bash``: a block runs as one ``bash`` script (``set -euo pipefail``, so every command must exit
  0) in the working directory, with ``rjobs`` meaning ``python -m rjobs`` from this checkout,
  ``REDIS_URL`` set and a private ``RJOBS_HOME`` (the embedded server is never started). A line whose
  comment says ``exit code N`` must exit with N instead. ``redis-cli`` talks to the test server; its
  lines are skipped when it is not installed. Lines starting with a command in :data:`NOT_RUN` are
  not run, for the reason given there.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import linecache
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from rjobs.cli.server import LocalServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Fence languages of code this module cannot run, and why (each block is a listed skip).
NOT_EXECUTED = {
    "ini": "a systemd unit: needs systemd; checked by tests/integration/test_deploy.py",
    "dockerfile": "a Dockerfile: needs Docker; checked by tests/integration/test_deploy.py",
    "yaml": "a Kubernetes manifest: needs a cluster; checked by tests/integration/test_deploy.py",
}
#: Fence languages the docs may use; all but ``text`` and those of NOT_EXECUTED run.
LANGUAGES = {"python", "bash", "text", *NOT_EXECUTED}
#: Commands shown in the docs that this module does not run, and why.
NOT_RUN = {
    "python3 -m pip install": "installs packages: the environment running these tests already has them",
    "pip install": "installs packages: the environment running these tests already has them",
    "python3 -m pytest": "the whole test suite, which contains this module",
    "rjobs demo": "run end to end by tests/integration/test_demo.py",
}
BLOCK_TIMEOUT = 60.0
FENCE = re.compile(r"^```(.*)$")
FILE_HEADER = re.compile(r"^#\s*([\w/]+\.py)\s*$")
EXIT_CODE = re.compile(r"\s+#.*\bexit code (\d+)\b.*$")


@dataclass(frozen=True)
class Block:
    doc: Path
    number: int  # 1-based, among all fences of the doc
    line: int  # 1-based line of the opening fence
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.number}"


def blocks_of(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order (an unclosed fence is an error)."""
    found: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for i, line in enumerate(lines, 1):
        m = FENCE.match(line)
        if m is None:
            if opened is not None:
                body.append(line)
            continue
        if opened is None:
            opened, body = (i, m.group(1).strip()), []
        else:
            found.append(Block(doc, len(found) + 1, opened[0], opened[1], "\n".join(body) + "\n"))
            opened = None
    if opened is not None:
        raise AssertionError(f"{doc.name}:{opened[0]}: unclosed code fence")
    return found


ALL_BLOCKS = [b for doc in DOCS for b in blocks_of(doc)]
RUNNABLE = [b for b in ALL_BLOCKS if b.language in LANGUAGES - {"text", *NOT_EXECUTED}]
NOT_RUNNABLE = [b for b in ALL_BLOCKS if b.language in NOT_EXECUTED]


def test_fences() -> None:
    """Every fence names a language the docs may use: an untagged block would silently not run."""
    wrong = [
        f"{b.id} (line {b.line}): {b.language or 'no language'}" for b in ALL_BLOCKS if b.language not in LANGUAGES
    ]
    assert not wrong, f"code fences must name one of {sorted(LANGUAGES)}: {wrong}"
    assert RUNNABLE, "no runnable blocks found"


@pytest.mark.parametrize("block", NOT_RUNNABLE, ids=lambda b: b.id)
def test_block_not_executed(block: Block) -> None:
    """A block of code this module cannot run: listed and counted as a skip, with the reason."""
    pytest.skip(f"{block.id} ({block.language}) not executed: {NOT_EXECUTED[block.language]}")


# -- running --------------------------------------------------------------------------------------
@dataclass
class DocRun:
    """The state one doc's blocks share: done blocks, namespace, event loop."""

    doc: Path
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    namespace: dict[str, Any] = field(default_factory=lambda: {"__name__": "__docs__"})
    done: int = 0  # blocks run so far (by position in RUNNABLE of this doc)
    failed: str | None = None

    def cancel_tasks(self) -> None:
        """Cancel what a block left running on the loop (e.g. a fakeredis client's blocking read)."""
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    def close(self) -> None:
        from rjobs import Queue, SyncQueue

        for value in list(self.namespace.values()):
            try:
                if isinstance(value, Queue):
                    self.loop.run_until_complete(value.close())
                elif isinstance(value, SyncQueue):
                    value.close()
            except Exception:  # a queue on a closed connection: nothing left to free
                pass
        self.cancel_tasks()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture(scope="module")
def docs_server(servers: dict[str, LocalServer]) -> LocalServer:
    """The suite's Valkey (the docs are not server-specific)."""
    shared = servers["valkey"]
    if shared.pid is None:  # another test stopped it
        shared.start()
    return shared


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs' working directory, holding every file block (``# myapp/jobs.py``) of every doc."""
    path = tmp_path_factory.mktemp("docs")
    for block in RUNNABLE:
        m = FILE_HEADER.match(block.code.splitlines()[0]) if block.language == "python" else None
        if m:
            target = path / m.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            for package in target.relative_to(path).parents:
                if package != Path("."):
                    (path / package / "__init__.py").touch()
            target.write_text(block.code, encoding="utf-8")
    (path / "home").mkdir()
    return path


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[Path, DocRun]]:
    started: dict[Path, DocRun] = {}
    yield started
    for run in started.values():
        run.close()


def call_tests(run: DocRun, names: list[str]) -> None:
    """Call the ``test_*`` functions a block defined, with rjobs.testing's fixtures by name."""
    from rjobs.testing import InMemoryQueue, memory_server

    for name in names:
        fn = run.namespace[name]
        wanted = list(inspect.signature(fn).parameters)
        server = memory_server()
        queue = InMemoryQueue("test", server=server)
        sync = queue.sync()
        fixtures = {"rjobs_server": server, "rjobs_queue": queue, "rjobs_sync_queue": sync}
        unknown = [p for p in wanted if p not in fixtures]
        assert not unknown, f"{name} asks for fixtures this runner does not have: {unknown}"
        try:
            result = fn(**{p: fixtures[p] for p in wanted})
            if inspect.isawaitable(result):
                run.loop.run_until_complete(asyncio.wait_for(result, BLOCK_TIMEOUT))
        finally:
            sync.close()
            run.loop.run_until_complete(queue.close())
            run.cancel_tasks()  # the test's in-memory server is gone with it


def run_python(block: Block, run: DocRun) -> None:
    # Tracebacks name the block and show its lines (line 1 = the line after the opening fence).
    linecache.cache[block.id] = (len(block.code), None, block.code.splitlines(True), block.id)
    code = compile(block.code, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    before = set(run.namespace)
    result = eval(code, run.namespace)  # exec, but it returns the coroutine of a top-level await
    if inspect.iscoroutine(result):
        run.loop.run_until_complete(asyncio.wait_for(result, BLOCK_TIMEOUT))
    new_tests = [n for n in run.namespace if n not in before and n.startswith("test_") and callable(run.namespace[n])]
    call_tests(run, new_tests)


def bash_script(block: Block, port: int) -> str:
    """The block as a script: skipped lines commented out, ``exit code N`` lines checked."""
    have_cli = shutil.which("redis-cli") is not None
    out = [
        "set -euo pipefail",
        'rjobs() { "$RJOBS_PYTHON" -m rjobs "$@"; }',
        f'redis-cli() {{ command redis-cli -p {port} "$@"; }}',
        "set -x",
    ]
    for line in block.code.splitlines():
        command = line.strip()
        skip = next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)
        if skip is None and command.startswith("redis-cli") and not have_cli:
            skip = "redis-cli is not installed"
        if skip is not None:
            out.append(f": not run: {skip}")
            continue
        m = EXIT_CODE.search(line)
        if m is None:
            out.append(line)
            continue
        expected, bare = int(m.group(1)), line[: m.start()]
        out.append(
            f'set +e; {bare}; rc=$?; set -e; [ "$rc" -eq {expected} ] '
            f'|| {{ echo "exit $rc, expected {expected}" >&2; exit 99; }}'
        )
    return "\n".join(out) + "\n"


def run_bash(block: Block, url: str, port: int, workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RJOBS_HOME"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(REDIS_URL=url, RJOBS_HOME=str(workdir / "home"), RJOBS_PYTHON=sys.executable)
    done = subprocess.run(
        ["bash", "-c", bash_script(block, port)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert done.returncode == 0, f"{block.id} exited {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_block(
    block: Block,
    runs: dict[Path, DocRun],
    docs_server: LocalServer,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", docs_server.url)
    monkeypatch.chdir(workdir)
    run = runs.get(block.doc)
    if run is None:
        with redis.Redis.from_url(docs_server.url) as client:
            client.execute_command("FLUSHALL", "SYNC")
        run = runs[block.doc] = DocRun(block.doc)
    mine = [b for b in RUNNABLE if b.doc == block.doc]
    for earlier in mine[run.done : mine.index(block) + 1]:
        if run.failed is not None:
            pytest.fail(f"{run.failed} failed, and the blocks after it build on it")
        try:
            if earlier.language == "python":
                run_python(earlier, run)
            else:
                run_bash(earlier, docs_server.url, docs_server.port, workdir)
        except BaseException:
            run.failed = earlier.id
            raise
        finally:
            run.done += 1
