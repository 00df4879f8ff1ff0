"""The cluster kit itself (tests/clusterkit.py), checked with plain redis-py: the cluster serves keys on
every master, slots migrate with the redirections Redis documents (ASK, TRYAGAIN, MOVED), a killed
master's replica takes over, and a TLS cluster works where the server binary has TLS."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import AskError, MovedError, TryAgainError
from redis.retry import Retry

from rjobs.cli.server import find_redis_server, find_valkey_binary
from rjobs.store.keys import QueueKeys
from tests.clusterkit import SLOTS, ClusterUnavailable, LocalCluster, slot_of
from tests.helpers import CLUSTER_KINDS

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]


def test_slot_of_follows_hash_tags() -> None:
    assert slot_of("foo") == 12182  # the example in the Redis Cluster specification
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers") == slot_of("user1000")
    assert slot_of("a{}b") != slot_of("")  # an empty tag hashes the whole key
    assert slot_of(b"rjobs:{q}:ready") == slot_of("q")


def test_topology(clean_cluster: LocalCluster) -> None:
    masters = clean_cluster.masters()
    assert len(masters) == 3 and len(clean_cluster.replicas()) == 3
    assert sorted(s for m in masters for s in clean_cluster.slots(m)) == list(range(SLOTS))
    for master in masters:
        (replica,) = clean_cluster.replicas(master)
        assert clean_cluster.node(replica.id) is replica
        assert replica.admin.info("replication")["master_port"] == master.port
    assert clean_cluster.startup_nodes == [("127.0.0.1", m.port) for m in masters]
    assert clean_cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{m.port}" for m in masters) + "/0"
    assert clean_cluster.seed_url == f"redis://127.0.0.1:{masters[0].port}/0"


def test_keys_on_every_master(clean_cluster: LocalCluster) -> None:
    with clean_cluster.client(decode_responses=True) as client:
        for master in clean_cluster.masters():
            key = clean_cluster.key_on(master)
            client.set(key, f"on {master.id}")
            assert master.admin.get(key) == f"on {master.id}".encode()  # stored where the slot lives
            assert client.get(key) == f"on {master.id}"
    clean_cluster.flush()
    assert all(m.admin.dbsize() == 0 for m in clean_cluster.masters())


@pytest.mark.anyio
async def test_async_client(clean_cluster: LocalCluster) -> None:
    client = clean_cluster.async_client(decode_responses=True)
    try:
        keys = [clean_cluster.key_on(m) for m in clean_cluster.masters()]
        for key in keys:
            await client.set(key, key)
        assert [await client.get(k) for k in keys] == keys
    finally:
        await client.aclose()


def test_queue_names_land_on_each_master(clean_cluster: LocalCluster) -> None:
    names = [clean_cluster.queue_name_on(m) for m in clean_cluster.masters()]
    assert len(set(names)) == 3
    for master, name in zip(clean_cluster.masters(), names):
        keys = QueueKeys(name)
        assert {slot_of(keys.lane("t")), slot_of(keys.job("j1")), slot_of(keys.machine)} <= clean_cluster.slots(master)
    assert clean_cluster.queue_name_on(clean_cluster.masters()[1], prefix="jobs-").startswith("jobs-")


@pytest.mark.slow
@pytest.mark.parametrize("fresh_cluster", CLUSTER_KINDS, indirect=True)
def test_split_migration_redirects(fresh_cluster: LocalCluster) -> None:
    src, dst = fresh_cluster.masters()[:2]
    name = fresh_cluster.queue_name_on(src)
    keys = [f"rjobs:{{{name}}}:{k}" for k in ("a", "b", "c")]
    slot = slot_of(keys[0])
    with fresh_cluster.client(decode_responses=True) as client:
        for key in keys:
            client.set(key, key)
        migration = fresh_cluster.begin_migration(slot, dst)
        (moved,) = (k.decode() for k in fresh_cluster.move_some_keys(migration))
        kept = next(k for k in keys if k != moved)
        assert (migration.src, migration.dst, migration.moved) == (src, dst, 1)
        assert slot in src.view()[src.id].moving and slot in dst.view()[dst.id].moving
        assert not fresh_cluster.stable() and fresh_cluster.owner(slot) is src
        # the source still serves what it has and sends the client to the destination for the rest
        assert src.admin.get(kept) == kept.encode()
        with pytest.raises(AskError, match=rf"^{slot} 127\.0\.0\.1:{dst.port}$"):
            src.admin.get(moved)
        # a multi-key call over moved and unmoved keys of the slot cannot run anywhere for now
        with pytest.raises(TryAgainError):
            src.admin.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2, moved, kept)
        with pytest.raises(TryAgainError):
            src.admin.mget(moved, kept)
        # the destination answers for the slot only after ASKING
        with pytest.raises(MovedError, match=rf"^{slot} 127\.0\.0\.1:{src.port}$"):
            dst.admin.get(moved)
        pipe = dst.admin.pipeline(transaction=False)
        pipe.execute_command("ASKING").get(moved)  # type: ignore[no-untyped-call]
        assert pipe.execute() == [True, moved.encode()]
        assert [client.get(k) for k in keys] == keys  # redis-py follows the ASK redirections
        fresh_cluster.finish_migration(migration)
        assert migration.moved == 3 and fresh_cluster.owner(slot) is dst
        with pytest.raises(MovedError, match=rf"^{slot} 127\.0\.0\.1:{dst.port}$"):
            src.admin.get(moved)
        assert dst.admin.mget(keys) == [k.encode() for k in keys] and src.admin.dbsize() == 0
        assert [client.get(k) for k in keys] == keys  # after a MOVED, redis-py refreshes its slot table


@pytest.mark.slow
def test_migrate_slot_with_traffic_between_batches(fresh_cluster: LocalCluster) -> None:
    src, dst = fresh_cluster.masters()[1:]
    name = fresh_cluster.queue_name_on(src)
    keys = [f"rjobs:{{{name}}}:{n}" for n in range(7)]
    seen: list[list[str | None]] = []
    with fresh_cluster.client(decode_responses=True) as client:
        for key in keys:
            client.set(key, key)

        def traffic() -> None:
            seen.append([client.get(k) for k in keys])
            client.incr(f"rjobs:{{{name}}}:counter")  # a write to the slot mid-migration (lands on dst)

        migration = fresh_cluster.migrate_slot(slot_of(keys[0]), dst, pause_between_keys=traffic, batch=2)
        assert migration.moved == 7 + 0 and len(seen) == 4 and all(s == keys for s in seen)
        assert client.get(f"rjobs:{{{name}}}:counter") == "4"
    assert dst.admin.dbsize() == 8 and src.admin.dbsize() == 0


@pytest.mark.slow
@pytest.mark.parametrize("fresh_cluster", CLUSTER_KINDS, indirect=True)
def test_failover_promotes_the_replica(fresh_cluster: LocalCluster) -> None:
    old = fresh_cluster.masters()[0]
    (heir,) = fresh_cluster.replicas(old)
    key = fresh_cluster.key_on(old)
    with fresh_cluster.client(decode_responses=True) as client:
        client.set(key, "kept")
        assert old.command("WAIT", 1, 5000) == 1  # the replica has the write
        fresh_cluster.kill_master(old)
        new = fresh_cluster.wait_failover(old)
        assert new is heir and old not in fresh_cluster.masters() and len(fresh_cluster.masters()) == 3
        assert new.admin.get(key) == b"kept"
    with fresh_cluster.client(decode_responses=True) as client:  # a client started after the failover
        assert client.get(key) == "kept"
        client.set(key, "after")
    fresh_cluster.restart_node(old)  # the old master comes back as the new one's replica
    assert fresh_cluster.replicas(new) == [old]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["valkey", "redis"])
def test_tls_cluster(kind: str) -> None:
    pytest.importorskip("cryptography", reason="the test certificates are made with cryptography")
    binary = find_valkey_binary() if kind == "valkey" else find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not on PATH")
    tls = LocalCluster(binary, replicas=1, tls=True, node_timeout_ms=1000)
    try:
        tls.start()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc).splitlines()[0])
    try:
        tls_ports = {n.tls_port for n in tls.nodes}
        for master in tls.masters():  # replication runs over TLS too
            (replica,) = tls.replicas(master)
            assert replica.admin.info("replication")["master_port"] == master.tls_port
        assert tls.url.startswith("rediss+cluster://") and tls.seed_url.startswith("rediss://")
        with tls.client(decode_responses=True) as client:
            # the cluster hands a TLS client TLS ports (Redis 7 hands plain clients the plain ones)
            assert {m.port for m in tls.masters()} <= {n.port for n in client.get_nodes()} <= tls_ports
            for master in tls.masters():
                key = tls.key_on(master)
                client.set(key, key)
                assert client.get(key) == key and master.admin.get(key) == key.encode()
        with pytest.raises(redis.ConnectionError):  # the TLS port does not speak plain RESP
            redis.Redis(port=tls.masters()[0].port, socket_timeout=2, retry=Retry(NoBackoff(), 0)).ping()
    finally:
        tls.stop()
