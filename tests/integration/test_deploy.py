"""docs/deploy.md's systemd unit, Dockerfile and Kubernetes Deployment, checked as far as this
machine can: systemd, Docker and a cluster are not here to run them (test_docs.py lists those blocks
as skipped). What is checked: the unit passes ``systemd-analyze verify`` (when installed), every
stop timeout is above the worker's grace, the liveness probes tolerate a worker that is shutting
down, and every flag given to ``rjobs worker`` exists in its ``--help``."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_docs import Block, blocks_of

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = blocks_of(ROOT / "docs" / "deploy.md")


def block(language: str) -> Block:
    (found,) = [b for b in BLOCKS if b.language == language]
    return found


def worker_settings() -> tuple[float, float]:
    """The grace and the heartbeat interval (lease / 3) of the doc's worker module."""
    code = block("python").code
    grace, lease = re.search(r"grace=(\d+)", code), re.search(r"lease=(\d+)", code)
    assert grace and lease, "the worker module states its grace and lease"
    return float(grace.group(1)), float(lease.group(1)) / 3


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(block("ini").code)
    return parser


def worker_flags() -> set[str]:
    done = subprocess.run(
        [sys.executable, "-m", "rjobs", "worker", "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return set(re.findall(r"(--[a-z][a-z-]*)", done.stdout))


def used_flags(argv: list[str]) -> list[str]:
    """The options passed to ``rjobs worker`` in a command line."""
    at = next(i for i, a in enumerate(argv) if Path(a).name == "rjobs")
    assert argv[at + 1] == "worker", argv
    return [a.split("=")[0] for a in argv if a.startswith("--")]


def test_systemd_unit_stops_with_sigterm_after_the_grace() -> None:
    grace, _ = worker_settings()
    service = unit()["Service"]
    assert service["Type"] in ("simple", "exec")
    assert service["KillSignal"] == "SIGTERM" and service["Restart"] == "on-failure"
    assert float(service["TimeoutStopSec"]) > grace, "systemd would SIGKILL the worker within its grace"
    assert set(used_flags(shlex.split(service["ExecStart"]))) <= worker_flags()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify needs ExecStart's binary to exist: the unit's is pointed at this Python."""
    text = block("ini").code
    real = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable} -m rjobs", text, count=1, flags=re.M)
    assert real != text
    path = tmp_path / "rjobs-worker.service"
    path.write_text(real, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    # verify exits 0 on unknown keys and bad values, only warning about them: no output is the bar
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def test_dockerfile_runs_the_worker_as_pid_1_with_existing_flags() -> None:
    _, heartbeat = worker_settings()
    lines = [line for line in block("dockerfile").code.splitlines() if line.strip()]
    assert "STOPSIGNAL SIGTERM" in lines
    (cmd,) = [line[len("CMD ") :] for line in lines if line.startswith("CMD ")]
    assert cmd.startswith("["), "the exec form: the worker is PID 1 and gets the signal"
    argv = json.loads(cmd)
    assert set(used_flags(argv)) <= worker_flags()
    (check,) = [line for line in lines if line.startswith("HEALTHCHECK ")]
    stale = re.search(r"> (\d+)\)", check)
    health_file = argv[argv.index("--health-file") + 1]
    assert stale and float(stale.group(1)) >= 2 * heartbeat and health_file in check


def test_kubernetes_deployment_outlasts_the_grace_and_probes_the_endpoint() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    grace, heartbeat = worker_settings()
    doc = yaml.safe_load(block("yaml").code)
    assert doc["kind"] == "Deployment"
    pod = doc["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > grace
    (container,) = pod["containers"]
    argv = container["args"]
    assert set(used_flags(argv)) <= worker_flags()
    assert "lifecycle" not in container, "no preStop hook: SIGTERM is the whole protocol"
    port = int(argv[argv.index("--health-port") + 1])
    assert argv[argv.index("--health-host") + 1] == "0.0.0.0", "the kubelet probes the pod's address"
    probe = container["livenessProbe"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe["httpGet"]["path"] == "/health" and named[probe["httpGet"]["port"]] == port
    assert probe["periodSeconds"] * probe["failureThreshold"] >= pod["terminationGracePeriodSeconds"], (
        "the 503 of a worker that is shutting down would get it restarted"
    )
    assert probe["periodSeconds"] >= heartbeat / 2
