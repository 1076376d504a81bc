"""The redis-py client of the Redis store: made from ``SESSION_URL``, or handed over in ``SESSION_REDIS`` and checked.

Clients made here give up after ``SESSION_STORE_TIMEOUT`` (connecting and
waiting for an answer), so a Redis that hangs is an HTTP 503 within that
time, not a hung worker. They retry a command once on a fresh connection
when the server closed the old one, which is what a restarted server does;
a timeout is never retried, because that would double the wait.
"""

from __future__ import annotations

import logging
import threading
import typing as t
from urllib.parse import SplitResult, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from ...errors import ConfigError

if t.TYPE_CHECKING:
    from ...settings import StoreSettings

log = logging.getLogger("flask_satchel")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
_ACCEPTED = (
    "a redis.Redis (also as made by Sentinel(...).master_for(...)) or a redis.cluster.RedisCluster,"
    " created with decode_responses=False"
)
#: Idle connections are checked with a PING before use after this many seconds,
#: so one that died silently (a failover, a NAT timeout) is replaced, not used.
_HEALTH_CHECK_INTERVAL = 30


def _options(timeout: float) -> dict[str, t.Any]:
    """What every client this store creates gets: bounded waits, one quick retry."""
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        # Once, at once, on a fresh connection, and only when the connection
        # broke (a restarted server closed it): never after a timeout.
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


def _addresses(url: SplitResult) -> list[tuple[str, int]]:
    """The ``host:port`` list of a sentinel or cluster URL."""
    hosts = url.netloc.rpartition("@")[2]
    addresses = []
    for part in hosts.split(","):
        try:
            address = urlsplit(f"//{part.strip()}")
            host, port = address.hostname, address.port
        except ValueError:
            host = port = None
        if not host or not port:
            raise ConfigError("SESSION_URL", f"cannot read a host:port from {part!r} in {url.geturl()!r}")
        addresses.append((host, port))
    return addresses


def _credentials(url: SplitResult) -> dict[str, t.Any]:
    userinfo, at, _ = url.netloc.rpartition("@")
    if not at:
        return {}
    user, colon, password = userinfo.partition(":")
    return {"username": unquote(user) or None, "password": unquote(password) if colon else None}


def connect(url: SplitResult, timeout: float) -> tuple[t.Any, list[t.Any]]:
    """A client for ``url``, and whatever else must be closed with it."""
    scheme = url.scheme.lower()
    options = _options(timeout)
    if scheme in ("redis", "rediss"):
        client = redis.Redis.from_url(url.geturl(), **options)
        return client, []
    if scheme == "redis+sentinel":
        parts = [p for p in url.path.split("/") if p]
        if not 1 <= len(parts) <= 2 or (len(parts) == 2 and not parts[1].isdigit()) or url.query:
            raise ConfigError(
                "SESSION_URL",
                f"expected redis+sentinel://host:port[,host:port...]/service_name[/db], got {url.geturl()!r}",
            )
        timeouts = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        # redis-py before 8 leaves Sentinel and ClusterNode unannotated.
        sentinel = Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            _addresses(url), sentinel_kwargs=timeouts, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        db = int(parts[1]) if len(parts) == 2 else 0
        client = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
            unquote(parts[0]), db=db, connection_class=_SentinelConnection, **_credentials(url), **options
        )
        return client, list(sentinel.sentinels)
    if scheme == "redis+cluster":
        if url.path not in ("", "/") or url.query:
            raise ConfigError(
                "SESSION_URL",
                f"expected redis+cluster://host:port[,host:port...] and nothing else, got {url.geturl()!r}",
            )
        nodes = [ClusterNode(host, port) for host, port in _addresses(url)]  # type: ignore[no-untyped-call]
        return LazyCluster(nodes, **_credentials(url), **options), []
    raise ConfigError("SESSION_URL", f"not a Redis URL: {url.geturl()!r}")


class _SentinelConnection(SentinelManagedConnection):
    """A connection to Sentinel's master that is closed when a reply does not come in time.

    redis-py keeps such a connection open (``disconnect_on_error=False``), and
    its pool hands it out again without the check for unread data it makes
    on other connections: the late reply would be read as the next command's,
    another session's record.
    """

    def read_response(self, *args: t.Any, disconnect_on_error: bool | None = True, **kwargs: t.Any) -> t.Any:
        return super().read_response(*args, disconnect_on_error=disconnect_on_error, **kwargs)


def after_timeout(client: t.Any) -> t.Callable[[], object] | None:
    """What the store does when a command of ``client`` timed out; None for nothing.

    A Sentinel master's client handed over in ``SESSION_REDIS`` has
    redis-py's own connections (see ``_SentinelConnection``): its idle ones,
    the one that timed out among them, are closed. Every other connection
    redis-py closes itself when a reply does not come in time.
    """
    pool = getattr(client, "connection_pool", None)
    if isinstance(pool, SentinelConnectionPool) and pool.connection_class is not _SentinelConnection:
        return lambda: pool.disconnect(inuse_connections=False)
    return None


class LazyCluster:
    """Builds the ``RedisCluster`` on first use.

    A ``RedisCluster`` asks the nodes for the slot map as it is created; a
    cluster that is down when the app starts must be a 503 on requests until
    it is back, not an app that fails to start.
    """

    def __init__(self, nodes: list[ClusterNode], **options: t.Any) -> None:
        self.nodes = nodes
        self.options = options
        self.client: RedisCluster | None = None
        self._lock = threading.Lock()

    def get(self) -> RedisCluster:
        with self._lock:
            if self.client is None:
                self.client = RedisCluster(startup_nodes=self.nodes, **self.options)
            return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


def check_client(client: t.Any) -> None:
    """Refuse a ``SESSION_REDIS`` this store cannot use, rather than replace it with another."""
    if not isinstance(client, (redis.Redis, RedisCluster)):
        raise ConfigError(
            "SESSION_REDIS", f"expected {_ACCEPTED}; got {type(client).__module__}.{type(client).__qualname__}"
        )
    if client.get_encoder().decode_responses:
        raise ConfigError(
            "SESSION_REDIS",
            "the client has decode_responses=True; sessions are bytes, create it with decode_responses=False",
        )


def where(client: t.Any) -> str:
    """Where ``client`` connects, for messages: host, port and database, never the credentials."""
    if isinstance(client, LazyCluster):
        return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in client.nodes)
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()  # type: ignore[no-untyped-call]
        return "redis+cluster://" + ",".join(f"{node.host}:{node.port}" for node in nodes)
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db") or 0
    service = getattr(pool, "service_name", None)  # a Sentinel's master_for()
    if service is not None:
        return f"redis+sentinel://.../{service}/{db}"
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


class Opened(t.NamedTuple):
    """The client a store's settings describe, and what goes with it."""

    client: t.Any
    #: The configuration key that set the client up, for messages.
    key: str
    #: Whether the store made the client, and so closes it (with ``also_close``).
    owned: bool = False
    also_close: t.Sequence[t.Any] = ()


def from_settings(settings: StoreSettings) -> Opened:
    """The client of ``SESSION_REDIS``, or one made from ``SESSION_URL`` (default: the local Redis)."""
    client = settings.client("SESSION_REDIS")
    if client is None:
        url = settings.url if settings.url is not None else urlsplit(DEFAULT_URL)
        client, also_close = connect(url, settings.timeout)
        return Opened(client, "SESSION_URL", owned=True, also_close=also_close)
    check_client(client)
    timeout = client.get_connection_kwargs().get("socket_timeout")
    if timeout is None or timeout > settings.timeout:
        # Not refused: the app may have reasons; but the 503 promise is off.
        # Logged, not warned: -W error would turn advice into a crash.
        log.warning(
            "SESSION_REDIS: the client waits %s for an answer, longer than SESSION_STORE_TIMEOUT (%s s),"
            " so a Redis that hangs holds requests that long before they get a 503; create it with"
            " socket_timeout= and socket_connect_timeout=",
            "for ever" if timeout is None else f"{timeout} s",
            settings.timeout,
        )
    return Opened(client, "SESSION_REDIS")
