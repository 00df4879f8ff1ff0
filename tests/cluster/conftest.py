"""Fixtures for tests against a real local Redis Cluster (tests/clusterkit.py).

``cluster`` is one valkey cluster for the whole session; ``clean_cluster`` is that cluster emptied for
one test; ``fresh_cluster`` is a brand-new cluster for tests that kill nodes or move slots.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rjobs.cli.server import ServerUnavailable
from tests.clusterkit import ClusterUnavailable, LocalCluster
from tests.helpers import server_binary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/cluster with ``cluster``."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


def _started(cluster: LocalCluster) -> LocalCluster:
    try:
        cluster.start()
    except (ServerUnavailable, ClusterUnavailable) as exc:
        pytest.skip(f"no local Redis Cluster: {exc}")
    return cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    """A 3-master, 1-replica-each valkey cluster shared by the session (do not kill or migrate on it)."""
    shared = _started(LocalCluster())
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def clean_cluster(cluster: LocalCluster) -> LocalCluster:
    """The session cluster, stable and emptied (keys and Lua script caches) before the test."""
    cluster.wait_stable()
    cluster.flush()
    return cluster


@pytest.fixture
def fresh_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """A new 3+3 cluster with a 1 s node timeout, for tests that kill nodes or move slots.

    valkey unless parametrized indirectly with a kind from CLUSTER_KINDS (not 6.2):
    ``@pytest.mark.parametrize("fresh_cluster", CLUSTER_KINDS, indirect=True)``."""
    kind = getattr(request, "param", "valkey")
    binary = server_binary(kind)
    fresh = _started(LocalCluster(binary, node_timeout_ms=1000, data_dir=tmp_path / "cluster"))
    try:
        yield fresh
    finally:
        fresh.stop()
