"""Sentinel and cluster URLs (rjobs.store.clients): parsing, and bad URLs as typed errors; the
cluster's redirect answers as rjobs.store.cluster reads them. No server needed."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio as aredis
from redis.exceptions import MovedError

from rjobs import ValidationError
from rjobs.errors import ScriptError, ServerBusy
from rjobs.store.clients import (
    ClusterURL,
    SentinelURL,
    async_client,
    cluster_addresses,
    is_cluster,
    is_cluster_url,
    is_sentinel_url,
    server_label,
    sync_client,
)
from rjobs.store.cluster import redirect_of


def test_hosts_service_db_and_credentials() -> None:
    u = SentinelURL("redis+sentinel://bob:s%40cret@10.0.0.1:26380,[::1],sentinel-b/mymaster/3")
    assert u.hosts == [("10.0.0.1", 26380), ("::1", 26379), ("sentinel-b", 26379)]
    assert (u.service, u.db, u.username, u.password, u.ssl) == ("mymaster", 3, "bob", "s@cret", False)
    assert u.master_kwargs({"socket_connect_timeout": 5}) == {
        "db": 3, "username": "bob", "password": "s@cret", "socket_connect_timeout": 5,
    }  # fmt: skip


def test_options_and_tls() -> None:
    u = SentinelURL("rediss+sentinel://:pw@h/svc?sentinel_password=spw&socket_timeout=2.5")
    assert (u.ssl, u.password, u.username, u.db) == (True, "pw", None, 0)
    assert u.sentinel_connection_kwargs() == {"socket_timeout": 2.5, "password": "spw"}
    assert u.master_kwargs({}) == {"db": 0, "socket_timeout": 2.5, "password": "pw", "ssl": True}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://h:26379", "service name"),
        ("redis+sentinel://h/svc/0/extra", "service name"),
        ("redis+sentinel://h:port/svc", "bad port"),
        ("redis+sentinel://h/svc/zero", "database must be a number"),
        ("redis+sentinel://h/svc?socket_timeout=soon", "must be a number"),
        ("redis+sentinel://h/svc?retries=3", "unknown option"),
        ("redis+sentinel://h,,k/svc", "empty host"),
    ],
)
def test_bad_sentinel_urls_are_validation_errors(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        sync_client(url)
    with pytest.raises(ValidationError, match=why):
        async_client(url)


def test_other_urls_go_to_redis_py() -> None:
    assert not is_sentinel_url("redis://localhost:6379/0") and is_sentinel_url("redis+sentinel://h/s")
    sync = sync_client("redis://127.0.0.1:1/2")
    assert isinstance(sync, redis.Redis) and sync.connection_pool.connection_kwargs["db"] == 2
    assert isinstance(async_client("unix:///tmp/none.sock"), aredis.Redis)


def test_a_sentinel_client_is_made_without_connecting() -> None:
    client = sync_client("redis+sentinel://127.0.0.1:1/svc/1")  # nothing listens on port 1
    pool = client.connection_pool
    assert pool.service_name == "svc" and pool.connection_kwargs["db"] == 1
    assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
            for s in pool.sentinel_manager.sentinels] == [("127.0.0.1", 1)]  # fmt: skip


def test_the_cli_reports_a_bad_sentinel_url_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from rjobs.cli.main import EXIT, main

    assert main(["stats", "--url", "redis+sentinel://h:port/svc"]) == EXIT["usage"]
    assert "bad port in 'h:port'" in capsys.readouterr().err


def test_one_resolution_order_explicit_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from rjobs.client.queue import Queue
    from rjobs.store.clients import DEFAULT_URL, resolve_url

    monkeypatch.delenv("REDIS_URL", raising=False)
    assert resolve_url(None) == DEFAULT_URL == "redis://localhost:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://env:6380/1")
    assert resolve_url(None) == "redis://env:6380/1"
    assert resolve_url("redis://code:6381/2") == "redis://code:6381/2"  # explicit in code wins
    q = Queue("q")
    assert q.client.connection_pool.connection_kwargs["host"] == "env"


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("redis://alice:s3cret@10.0.0.5:6380/2", "redis://10.0.0.5:6380/2"),
        ("redis://:s3cret@localhost", "redis://localhost:6379/0"),
        ("rediss://u:s3cret@cache.example:6390/1", "rediss://cache.example:6390/1"),
        ("unix://:s3cret@/run/redis.sock?db=3", "unix:///run/redis.sock?db=3"),
        (
            "redis+sentinel://u:s3cret@s1:26379,s2/mymaster/4?sentinel_password=s3cret",
            "redis+sentinel://s1:26379,s2:26379/mymaster/4",
        ),
    ],
)
def test_server_labels_name_the_server_without_credentials(url: str, label: str) -> None:
    from rjobs.store.clients import server_label

    for client in (sync_client(url), async_client(url)):
        assert server_label(client) == label and "s3cret" not in server_label(client)


def test_cluster_urls_name_nodes_credentials_and_tls_options() -> None:
    u = ClusterURL("rediss+cluster://bob:s%40cret@10.0.0.1:7000,[::1],node-c/0?ssl_ca_certs=/ca.pem&socket_timeout=2")
    assert u.hosts == [("10.0.0.1", 7000), ("::1", 6379), ("node-c", 6379)]
    assert u.options == {"username": "bob", "password": "s@cret", "ssl_ca_certs": "/ca.pem", "socket_timeout": 2.0,
                         "ssl": True}  # fmt: skip
    assert ClusterURL("redis+cluster://h").options == {} and is_cluster_url("redis+cluster://h")
    client = async_client("redis+cluster://127.0.0.1:1,127.0.0.1:2")  # connects on first use only
    assert is_cluster(client) and cluster_addresses(client) == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert server_label(client) == "redis+cluster://127.0.0.1:1,127.0.0.1:2/0"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://h/1", "database 0 only"),
        ("redis+cluster://h:port", "bad port"),
        ("redis+cluster://h,,k", "empty host"),
        ("redis+cluster://h?socket_timeout=soon", "must be a number"),
        ("redis+cluster://h?ssl_ca_certs=/ca.pem", "unknown option"),  # TLS options need rediss+cluster
        ("redis+cluster://h?retries=3", "unknown option"),
    ],
)
def test_bad_cluster_urls_are_validation_errors(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        sync_client(url)
    with pytest.raises(ValidationError, match=why):
        async_client(url)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (redis.ResponseError("MOVED 3999 127.0.0.1:6381"), ("moved", ("127.0.0.1", 6381))),
        (MovedError("3999 10.0.0.2:7001", status_code="MOVED"), ("moved", ("10.0.0.2", 7001))),
        (ScriptError("ASK 12 [::1]:7002"), ("ask", ("::1", 7002))),
        (ServerBusy("TRYAGAIN Multiple keys request during rehashing of slot"), ("wait", None)),
        (ServerBusy("CLUSTERDOWN The cluster is down"), ("wait", None)),
        (ScriptError("ERR Script attempted to access a non local key in a cluster node script"), ("wait", None)),
        (ScriptError("ERR something else"), None),
        (redis.ResponseError("CROSSSLOT Keys in request don't hash to the same slot"), None),
        ("MOVED 1 h:1", None),  # a value, not an error reply
    ],
)
def test_cluster_answers_are_read_from_the_error_reply(reply: object, expected: object) -> None:
    assert redirect_of(reply) == expected
