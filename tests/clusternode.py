"""Nodes of a local test cluster (see tests/clusterkit.py): the node handle, CLUSTER NODES parsing,
key slots and the polling helper the kit waits with."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from rjobs.cli.server import LocalServer

SLOTS = 16384
"""Hash slots of a Redis Cluster."""

WAIT = 30.0  # seconds any convergence wait (formation, migration, failover) may take before it fails
HOST = "127.0.0.1"


def slot_of(key: str | bytes) -> int:
    """Hash slot of ``key`` (CRC16 of the ``{hash tag}`` when there is one, as Redis computes it)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def wait_until(what: str, check: Callable[[], object], timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns a truthy value (returned) or raise TimeoutError naming ``what``.

    Redis errors while polling count as "not yet" (a node may be down or still loading)."""
    deadline, last = time.monotonic() + timeout, "never checked"
    while True:
        try:
            if result := check():
                return result
            last = "condition false"
        except (redis.RedisError, OSError) as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise TimeoutError(f"cluster: {what} not reached within {timeout:.0f} s (last: {last})")
        time.sleep(0.05)


@dataclass(frozen=True)
class NodeLine:
    """One line of CLUSTER NODES as some node sees the cluster."""

    id: str
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: frozenset[int]  # stable slots (a migrating slot stays its source's until SETSLOT NODE)
    moving: frozenset[int]  # slots this node is importing or migrating (shown on its own line only)

    @property
    def is_master(self) -> bool:
        """Flagged master (a failed master keeps the flag: check ``failed`` too)."""
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged ``fail`` or ``fail?`` (suspected) by the node that reported this line."""
        return bool(self.flags & {"fail", "fail?"})


def parse_nodes(text: str) -> dict[str, NodeLine]:
    """Parse a CLUSTER NODES reply into NodeLines keyed by node id."""
    lines: dict[str, NodeLine] = {}
    for row in text.splitlines():
        fields = row.split()
        if len(fields) < 8:
            continue
        slots, moving = set[int](), set[int]()
        for item in fields[8:]:
            if item.startswith("["):  # [slot->-dst-id] or [slot-<-src-id]
                moving.add(int(item[1:].split("-", 1)[0]))
                continue
            first, _, last = item.partition("-")
            slots.update(range(int(first), int(last or first) + 1))
        master = None if fields[3] == "-" else fields[3]
        flags = frozenset(fields[2].split(","))
        connected = fields[7] == "connected"
        lines[fields[0]] = NodeLine(fields[0], flags, master, connected, frozenset(slots), frozenset(moving))
    return lines


class Node:
    """One cluster node: its LocalServer (``server``), cluster ``id`` (set once started) and ports."""

    def __init__(self, server: LocalServer, bus_port: int, tls_port: int | None) -> None:
        """Wrap a not-yet-started server; ``tls_port`` set means clients and peers talk TLS."""
        self.server, self.bus_port, self.tls_port = server, bus_port, tls_port
        self.host, self.id = HOST, ""
        self._admin: redis.Redis | None = None

    @property
    def port(self) -> int:
        """The port clients use: the TLS port in a TLS cluster, else the plain one."""
        return self.tls_port if self.tls_port is not None else self.server.port

    @property
    def alive(self) -> bool:
        """The process runs."""
        return self.server.pid is not None

    @property
    def admin(self) -> redis.Redis:
        """Bytes-returning plain-TCP client for this node alone (no retries; cached)."""
        if self._admin is None:
            self._admin = redis.Redis(host=HOST, port=self.server.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))
        return self._admin

    def command(self, *args: object) -> Any:
        """Run one command on this node (admin connection), reply as redis-py returns it."""
        return self.admin.execute_command(*args)  # type: ignore[no-untyped-call]

    def cluster(self, *args: object) -> Any:
        """Run ``CLUSTER <args>`` on this node; bytes replies are decoded."""
        reply = self.command("CLUSTER", *args)
        return reply.decode() if isinstance(reply, bytes) else reply

    def view(self) -> dict[str, NodeLine]:
        """This node's CLUSTER NODES, keyed by node id."""
        return parse_nodes(self.cluster("NODES"))

    def state_ok(self) -> bool:
        """CLUSTER INFO says ``cluster_state:ok``."""
        return "cluster_state:ok" in self.cluster("INFO")

    def close(self) -> None:
        """Close the cached admin client."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def __repr__(self) -> str:
        return f"<Node {self.id[:8]} :{self.port} {'up' if self.alive else 'down'}>"
