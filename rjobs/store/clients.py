"""Redis clients from URLs: what redis-py's ``from_url`` reads (``redis://``, ``rediss://``,
``unix://``), plus Sentinel URLs, which it does not::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db][?option=value...]

The hosts are Sentinels (port 26379 when left out); ``service`` is the monitored master's name;
username, password and ``db`` are the master's. Options: ``sentinel_username`` and
``sentinel_password`` (when the Sentinels require AUTH), ``socket_timeout`` and
``socket_connect_timeout`` (seconds, for every connection). ``rediss+sentinel://`` speaks TLS to
the master.

Cluster URLs name one or more nodes of a Redis Cluster (port 6379 when left out); the client
learns the others from them. The database is 0 (a cluster has no other); options as for Sentinel
URLs, plus, for ``rediss+cluster://``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and
``ssl_cert_reqs``::

    redis+cluster://[[username]:password@]host[:port][,host[:port]...][/0][?option=value...]

Each queue's calls then go to the master that owns its slot (rjobs.store.cluster).

The client asks the Sentinels for the current master whenever it connects, so after a failover
the next connection goes to the new master. A script call in flight when the master goes away
fails with ``redis.ConnectionError`` and is not sent again (docs/transport.md): it ran on the old
master or not at all.

Clients made here from ``redis://``, ``rediss://`` and ``unix://`` URLs have a
``BlockingConnectionPool`` (at most :data:`MAX_CONNECTIONS` connections; a call waits up to
:data:`rjobs.store.wire.POOL_WAIT` s for a free one instead of failing with ``MaxConnectionsError``).
Sentinel clients keep redis-py's Sentinel pool; rjobs' runners wait for its connections instead.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from rjobs.errors import ValidationError
from rjobs.store.wire import POOL_WAIT

__all__ = [
    "CLUSTER_SCHEMES",
    "DEFAULT_URL",
    "MAX_CONNECTIONS",
    "SENTINEL_SCHEMES",
    "async_client",
    "close_async",
    "close_sync",
    "cluster_addresses",
    "is_cluster",
    "is_cluster_url",
    "node_client_async",
    "node_client_sync",
    "resolve_url",
    "server_label",
    "sync_client",
]

#: The library's default server, when neither ``url=`` nor ``REDIS_URL`` names one.
DEFAULT_URL = "redis://localhost:6379/0"

#: URL schemes this module reads itself (everything else goes to redis-py's from_url).
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SENTINEL_PORT = 26379
_FLOAT_OPTIONS = ("socket_timeout", "socket_connect_timeout")
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
#: What a node client made for a cluster keeps of the cluster client's connection settings.
_NODE_SETTINGS = (
    "username", "password", "credential_provider", "client_name", "encoding", "encoding_errors",
    "decode_responses", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "socket_keepalive_options", "health_check_interval", "ssl_ca_certs", "ssl_ca_data", "ssl_cert_reqs",
    "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
)  # fmt: skip
#: Size of the pools made here (redis-py's default pool size). Most calls do not use them: script
#: calls and plain reads go over rjobs' links (docs/transport.md).
MAX_CONNECTIONS = 100


class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in SENTINEL_SCHEMES:
            raise ValidationError(f"not a Sentinel URL: {url!r}")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        self.username = unquote(user) or None
        self.password = unquote(password) or None
        self.hosts = [_host_port(item, url) for item in hostlist.split(",")]
        path = [p for p in parts.path.split("/") if p]
        if not path or len(path) > 2:
            raise ValidationError(f"Sentinel URL {url!r} needs /<service name>[/<db>] after the hosts")
        self.service = unquote(path[0])
        try:
            self.db = int(path[1]) if len(path) == 2 else 0
        except ValueError:
            raise ValidationError(f"Sentinel URL {url!r}: the database must be a number") from None
        self.ssl = parts.scheme.startswith("rediss")
        self.sentinel_kwargs: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        for key, value in parse_qsl(parts.query):
            if key in ("sentinel_username", "sentinel_password"):
                self.sentinel_kwargs[key.removeprefix("sentinel_")] = value
            elif key in _FLOAT_OPTIONS:
                try:
                    self.options[key] = float(value)
                except ValueError:
                    raise ValidationError(f"Sentinel URL {url!r}: {key} must be a number") from None
            else:
                raise ValidationError(f"Sentinel URL {url!r}: unknown option {key!r}")

    def master_kwargs(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Connection settings for the master (the URL's, then the caller's)."""
        out: dict[str, Any] = {"db": self.db, **self.options}
        if self.username is not None:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password
        if self.ssl:
            out["ssl"] = True
        return {**out, **extra}

    def sentinel_connection_kwargs(self) -> dict[str, Any]:
        """Settings for the connections to the Sentinels themselves."""
        return {**self.options, **self.sentinel_kwargs}


class ClusterURL:
    """A parsed ``redis+cluster://`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in CLUSTER_SCHEMES:
            raise ValidationError(f"not a cluster URL: {url!r}")
        userinfo, _, hostlist = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        self.hosts = [_host_port(item, url, 6379, "Cluster") for item in hostlist.split(",")]
        path = [p for p in parts.path.split("/") if p]
        if path not in ([], ["0"]):
            raise ValidationError(f"Cluster URL {url!r}: a cluster has database 0 only")
        self.ssl = parts.scheme.startswith("rediss")
        self.options: dict[str, Any] = {}
        if user:
            self.options["username"] = unquote(user)
        if password:
            self.options["password"] = unquote(password)
        for key, value in parse_qsl(parts.query):
            if key in _FLOAT_OPTIONS:
                try:
                    self.options[key] = float(value)
                except ValueError:
                    raise ValidationError(f"Cluster URL {url!r}: {key} must be a number") from None
            elif key in _TLS_OPTIONS and self.ssl:
                self.options[key] = value
            else:
                raise ValidationError(f"Cluster URL {url!r}: unknown option {key!r}")
        if self.ssl:
            self.options["ssl"] = True


def _host_port(item: str, url: str, default: int = _SENTINEL_PORT, kind: str = "Sentinel") -> tuple[str, int]:
    host, sep, port = item.rpartition(":") if item.rfind(":") > item.rfind("]") else (item, "", "")
    host = host.strip("[]")
    if not host:
        raise ValidationError(f"{kind} URL {url!r}: empty host in {item!r}")
    try:
        return host, int(port) if sep else default
    except ValueError:
        raise ValidationError(f"{kind} URL {url!r}: bad port in {item!r}") from None


def resolve_url(url: str | None) -> str:
    """The server a queue uses, in the one order rjobs follows everywhere: the explicit ``url``
    (``url=`` in code, ``--url`` on the command line), else ``REDIS_URL``, else :data:`DEFAULT_URL`
    (the CLI's inspection commands default to their embedded server instead; docs/cli.md)."""
    return url or os.environ.get("REDIS_URL") or DEFAULT_URL


def server_label(client: Any) -> str:
    """Where a client connects, for logs: a URL without credentials (``redis://host:port/db``,
    ``unix:///path?db=N``, ``redis+sentinel://s1:26379,s2:26379/service/db``)."""
    if is_cluster(client):
        hosts = ",".join(f"{h}:{p}" for h, p in cluster_addresses(client))
        return f"{'rediss' if _node_settings(client).get('ssl') else 'redis'}+cluster://{hosts}/0"
    pool = getattr(client, "connection_pool", None)
    kw: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
    db = kw.get("db") or 0
    service = getattr(pool, "service_name", None)
    if service is not None:
        sentinels = getattr(getattr(pool, "sentinel_manager", None), "sentinels", [])
        hosts = ",".join(_host_of(s.connection_pool.connection_kwargs) for s in sentinels)
        return f"{'rediss' if kw.get('ssl') else 'redis'}+sentinel://{hosts}/{service}/{db}"
    if kw.get("path"):
        return f"unix://{kw['path']}?db={db}"
    if "host" in kw or "port" in kw:
        tls = "SSL" in getattr(getattr(pool, "connection_class", None), "__name__", "")
        return f"{'rediss' if tls else 'redis'}://{_host_of(kw)}/{db}"
    return type(client).__module__.split(".")[0]  # fakeredis, or a client rjobs does not know


def _host_of(kw: dict[str, Any]) -> str:
    host = str(kw.get("host") or "localhost")
    return f"[{host}]:{kw.get('port') or 6379}" if ":" in host else f"{host}:{kw.get('port') or 6379}"


def is_sentinel_url(url: str) -> bool:
    """True for ``redis+sentinel://`` and ``rediss+sentinel://`` URLs."""
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def _pool_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"max_connections": MAX_CONNECTIONS, "timeout": POOL_WAIT, **kwargs}


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def is_cluster(client: Any) -> bool:
    """True for a redis-py cluster client (sync or asyncio)."""
    return isinstance(client, (RedisCluster, AsyncRedisCluster))


def cluster_addresses(client: Any) -> list[tuple[str, int]]:
    """The nodes a cluster client knows, its startup nodes first."""
    found: list[tuple[str, int]] = []
    manager = getattr(client, "nodes_manager", None)
    start = getattr(manager, "startup_nodes", None) or getattr(client, "startup_nodes", None) or []
    known = getattr(manager, "nodes_cache", None) or {}
    for node in [*(start.values() if isinstance(start, dict) else start), *known.values()]:
        address = (str(node.host), int(node.port))
        if address not in found:
            found.append(address)
    return found


def _node_settings(client: Any) -> dict[str, Any]:
    manager = getattr(client, "nodes_manager", None)
    kw: dict[str, Any] = getattr(client, "connection_kwargs", None) or getattr(manager, "connection_kwargs", {})
    out = {k: kw[k] for k in _NODE_SETTINGS if k in kw}
    if "SSL" in getattr(kw.get("connection_class"), "__name__", "") or kw.get("ssl"):
        out["ssl"] = True
    return out


def _nodes(cluster: Any) -> dict[tuple[str, int], Any]:
    # Node clients live as long as the cluster client: every queue on it shares them, and
    # close_async / close_sync close them with it.
    nodes: dict[tuple[str, int], Any] = cluster.__dict__.setdefault("_rjobs_node_clients", {})
    return nodes


def node_client_async(cluster: Any, host: str, port: int) -> aredis.Redis:
    """The ``redis.asyncio`` client of one node of ``cluster`` (made on first use, with the
    cluster client's connection settings, and closed with it by :func:`close_async`)."""
    nodes = _nodes(cluster)
    client: aredis.Redis | None = nodes.get((host, port))
    if client is None:
        settings = _node_settings(cluster)
        if settings.pop("ssl", False):
            settings["connection_class"] = aredis.SSLConnection
        pool = aredis.BlockingConnectionPool(host=host, port=port, **_pool_options(settings))
        client = nodes[host, port] = aredis.Redis.from_pool(pool)
    return client


def node_client_sync(cluster: Any, host: str, port: int) -> redis.Redis:
    """The blocking twin of :func:`node_client_async`."""
    nodes = _nodes(cluster)
    client: redis.Redis | None = nodes.get((host, port))
    if client is None:
        settings = _node_settings(cluster)
        if settings.pop("ssl", False):
            settings["connection_class"] = redis.SSLConnection
        pool = redis.BlockingConnectionPool(host=host, port=port, **_pool_options(settings))  # type: ignore[no-untyped-call]
        client = nodes[host, port] = redis.Redis.from_pool(pool)
    return client


def async_client(url: str, **kwargs: Any) -> aredis.Redis:
    """A ``redis.asyncio`` client for ``url`` (keyword arguments go to the client's connections,
    or ``max_connections`` / ``timeout`` to its blocking pool); a cluster client for a cluster URL."""
    if is_cluster_url(url):
        parsed_cluster = ClusterURL(url)
        nodes = [AsyncClusterNode(h, p) for h, p in parsed_cluster.hosts]
        cluster: Any = AsyncRedisCluster(startup_nodes=nodes, **{**parsed_cluster.options, **kwargs})
        return cluster  # type: ignore[no-any-return]
    if not is_sentinel_url(url):
        return aredis.Redis.from_pool(aredis.BlockingConnectionPool.from_url(url, **_pool_options(kwargs)))
    parsed = SentinelURL(url)
    sentinel = AsyncSentinel(parsed.hosts, sentinel_kwargs=parsed.sentinel_connection_kwargs())  # type: ignore[no-untyped-call]
    client: aredis.Redis = sentinel.master_for(parsed.service, redis_class=aredis.Redis,
                                               **parsed.master_kwargs(kwargs))  # fmt: skip
    return client


def sync_client(url: str, **kwargs: Any) -> redis.Redis:
    """A blocking ``redis`` client for ``url`` (keyword arguments as for :func:`async_client`)."""
    if is_cluster_url(url):
        parsed_cluster = ClusterURL(url)
        nodes = [ClusterNode(h, p) for h, p in parsed_cluster.hosts]  # type: ignore[no-untyped-call]
        cluster: Any = RedisCluster(startup_nodes=nodes, **{**parsed_cluster.options, **kwargs})
        return cluster  # type: ignore[no-any-return]
    if not is_sentinel_url(url):
        return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(url, **_pool_options(kwargs)))
    parsed = SentinelURL(url)
    sentinel = Sentinel(parsed.hosts, sentinel_kwargs=parsed.sentinel_connection_kwargs())  # type: ignore[no-untyped-call]
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        parsed.service, redis_class=redis.Redis, **parsed.master_kwargs(kwargs)
    )
    return client


def _sentinels(client: Any) -> list[Any]:
    manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
    return list(getattr(manager, "sentinels", []))


async def close_async(client: aredis.Redis) -> None:
    """Close a client made here, with its connections to the Sentinels or its node clients."""
    await client.aclose()
    for sentinel in _sentinels(client):
        await sentinel.aclose()
    for runner in client.__dict__.pop("_rjobs_node_runners", {}).values():
        runner.close()  # the lean connections of the node runners (rjobs.store.cluster)
    for node in list(_nodes(client).values()):
        await node.aclose()
    _nodes(client).clear()


def close_sync(client: redis.Redis) -> None:
    """Close a client made here, with its connections to the Sentinels or its node clients."""
    client.close()
    for sentinel in _sentinels(client):
        sentinel.close()
    for runner in client.__dict__.pop("_rjobs_node_runners", {}).values():
        runner.close()
    for node in list(_nodes(client).values()):
        node.close()
    _nodes(client).clear()
