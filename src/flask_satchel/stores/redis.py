"""Sessions in Redis, with redis-py: one server, Sentinel or Cluster.

Configure it with ``SESSION_TYPE = "redis"`` and a client of your own in
``SESSION_REDIS`` (``redis.Redis``, ``Sentinel(...).master_for(...)`` or
``redis.cluster.RedisCluster``, created with ``decode_responses=False``), or
with one ``SESSION_URL``:

- ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://…`` (TLS),
  with redis-py's own query options (``?ssl_cert_reqs=…``);
- ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service_name[/db]``:
  the Sentinels to ask, and the name of the master they watch; the
  credentials are the master's;
- ``redis+cluster://[[user]:password@]host:port[,host:port…]``: any nodes
  of the cluster, which tell the client about the others.

With neither, the store uses ``redis://127.0.0.1:6379/0``. Clients this store
creates give up after ``SESSION_STORE_TIMEOUT`` (connecting and waiting for
an answer), so a Redis that hangs is an HTTP 503 within that time, not a hung
worker. They retry a command once on a fresh connection when the server
closed the old one, which is what a restarted server does; a timeout is
never retried, because that would double the wait.

A Redis that cannot serve now is a 503 as well, not a 500: one that is out
of memory under ``noeviction`` (reads still work), a read-only replica, one
loading its data, busy with a script, without its master or its replicas,
unable to persist, or a cluster moving slots. Other error replies are bugs
and are raised as they are. At ``init_app`` the store sends the server one
``PING`` on a connection of its own, waiting at most the store timeout: a
database that does not exist or credentials the server refuses are then a
``ConfigError`` naming the key; a server that is down lets the app start, its
requests answer 503, and the 503's message says what is wrong once the
server answers.

Layout, and why:

- A session is one string, ``prefix + "{" + key + "}"``: the whole record
  (values, times, user, client details) as one msgpack map. The braces are
  a Redis Cluster hash tag, which keeps the session and its lock in one slot.
- A read is one ``GET``, the cheapest command Redis has, and one msgspec
  decode in C. A per-key hash read by a Lua script cost about 25 µs more per
  request in the script alone, and reading the hash's fields in Python more
  still.
- The record dies by itself: ``SET … PXAT`` at ``expires_at``. ``cleanup()``
  has nothing to do; listing and counting still honour ``now``.
- A change is computed in Python from the record as this request read it,
  and written by a compare-and-set script: it writes only if the session is
  still exactly the value that was read, and otherwise answers with what is
  there now, which the change is merged into again. Two overlapping requests
  that change different keys therefore both survive, and a write to a
  session that is gone (destroyed, revoked, expired) is refused: no late
  request brings it back. After the request's own load this is one round
  trip. Scripts are sent by SHA (``EVALSHA``) and loaded only when a server
  answers that it does not know them (first use, a restart, a failover).
- A user's sessions are listed from a set, ``prefix + "user:{" + hash + "}"``,
  in the user's own slot. On a cluster that is another node, so the set is
  changed by separate commands next to the session's own, never atomically
  with it; a set member can therefore be stale, and listing checks every
  member against its record and drops the ones that are gone or belong to
  someone else now.
- ``SESSION_LOCKING`` takes ``prefix + "lock:{" + key + "}"`` with ``SET NX PX``:
  a lease in the session's slot that lapses by itself if its holder dies,
  released by a script that deletes it only for the token that holds it.
- A request's command (with a login's index commands) goes over the store's
  own pooled sockets (``_resp``) when the client is a plain ``redis.Redis``
  they can stand in for: redis-py's Python costs about as much as the round
  trip. Listings, scans and every other client use redis-py.

It needs Redis 6.2 or later (``SET … PXAT``, ``GETDEL``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import typing as t
from urllib.parse import SplitResult, unquote, urlsplit

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigError, StoreUnavailable
from . import _resp
from .base import Change, LastRead, Record, decode_record, encode_record, merge, user_hash

if t.TYPE_CHECKING:
    from ..settings import Settings

log = logging.getLogger("flask_satchel")

_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_ACCEPTED = (
    "a redis.Redis (also as made by Sentinel(...).master_for(...)) or a redis.cluster.RedisCluster,"
    " created with decode_responses=False"
)
#: Idle connections are checked with a PING before use after this many seconds,
#: so one that died silently (a failover, a NAT timeout) is replaced, not used.
_HEALTH_CHECK_INTERVAL = 30

#: Errors that mean Redis cannot serve us right now. A read-only replica
#: answering writes, a cluster moving slots and a full memory are states
#: that pass (a failover, an operator), not bugs, so they are outages too.
#: ``ConnectionError`` covers ``BusyLoadingError`` (LOADING), and
#: ``ClusterDownError`` covers ``MasterDownError`` (MASTERDOWN).
_DOWN: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    OutOfMemoryError,
)

#: The same, told by the code word that starts Redis's reply: for the codes
#: redis-py has no class for (BUSY: a long script; NOREPLICAS:
#: min-replicas-to-write; MISCONF: a failed RDB save stops writes), and for
#: an error a script met, which Redis before 7 wraps ("...: -OOM command ...").
_REFUSED = re.compile(r"(?:^|: -)(?:OOM|READONLY|LOADING|MASTERDOWN|BUSY|TRYAGAIN|CLUSTERDOWN|NOREPLICAS|MISCONF) ")


#: After this many compare-and-set attempts lost to other writers of the same
#: session, a change gives up with a 503. Every lost attempt is another
#: request's win, so this only trips under a storm of writes to one session.
_ATTEMPTS = 50

#: KEYS[1] the session; ARGV[1] the value the change was computed from,
#: ARGV[2] the new value ("" deletes), ARGV[3] its expiry in ms.
#: Returns 1 when written; else what is there now: nil when the session is
#: gone, or the value another request wrote since, to merge into again.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return current end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
end
return 1
"""

#: KEYS[1] a session's lock; ARGV[1] the holder's token. 1 if released.
_UNLOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class _Script:
    """A Lua script and its SHA1, which is how Redis names a loaded script."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_SCRIPTS = {"compare_and_set": _Script(_COMPARE_AND_SET), "unlock": _Script(_UNLOCK)}


def _ms(timestamp: float) -> int:
    return int(timestamp * 1000)


def _misconfiguration(error: BaseException) -> str | None:
    """What is wrong with the store's settings when ``error`` is Redis saying so; None for any other error.

    Unlike an outage, no retry mends these: someone has to change the URL,
    the client, or the server's users.
    """
    if isinstance(error, (AuthenticationError, AuthenticationWrongNumberOfArgsError)):
        return f"Redis refused the store's credentials ({error})"
    if isinstance(error, NoPermissionError):
        return f"the Redis user may not run the session store's commands ({error})"
    if isinstance(error, ResponseError):
        text = str(error)
        if "DB index is out of range" in text:  # SELECT's answer, on connecting
            return f"the server has no database of that number ({error})"
        if "SELECT is not allowed in cluster mode" in text:
            return f"the server is a Redis Cluster node: use a redis+cluster:// URL or a RedisCluster ({error})"
    return None


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (SCAN MATCH)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# Clients ---------------------------------------------------------------------------


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


def _connect(url: SplitResult, timeout: float) -> tuple[t.Any, list[t.Any]]:
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
        # redis-py leaves Sentinel and ClusterNode unannotated.
        sentinel = Sentinel(_addresses(url), sentinel_kwargs=timeouts, **timeouts)  # type: ignore[no-untyped-call]
        db = int(parts[1]) if len(parts) == 2 else 0
        client = sentinel.master_for(  # type: ignore[no-untyped-call]
            unquote(parts[0]), db=db, **_credentials(url), **options
        )
        return client, list(sentinel.sentinels)
    if scheme == "redis+cluster":
        if url.path not in ("", "/") or url.query:
            raise ConfigError(
                "SESSION_URL",
                f"expected redis+cluster://host:port[,host:port...] and nothing else, got {url.geturl()!r}",
            )
        nodes = [ClusterNode(host, port) for host, port in _addresses(url)]  # type: ignore[no-untyped-call]
        return _LazyCluster(nodes, **_credentials(url), **options), []
    raise ConfigError("SESSION_URL", f"not a Redis URL: {url.geturl()!r}")


class _LazyCluster:
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


class _Unavailable:
    """Turns redis-py's errors that mean "Redis cannot serve us" into ``StoreUnavailable``.

    One per store: its messages name the server, and for a misconfiguration
    the key to fix. A class rather than ``@contextlib.contextmanager``: it
    wraps the one command of every request, and a generator-based context
    manager costs several times more than ``__enter__``/``__exit__``.
    """

    __slots__ = ("key", "where")

    def __init__(self, where: str, key: str) -> None:
        #: The server, for messages: never its credentials.
        self.where = where
        #: The configuration key that set the store up.
        self.key = key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: t.Any) -> t.Literal[False]:
        if error is not None:
            unavailable = self.error_for(error)
            if unavailable is not None:
                raise unavailable from error
        return False

    def error_for(self, error: BaseException) -> StoreUnavailable | None:
        """The ``StoreUnavailable`` that ``error`` means, or None for an error that is a bug."""
        problem = _misconfiguration(error)  # first: an AuthenticationError is a ConnectionError too
        if problem is not None:
            return StoreUnavailable(f"Redis session store {self.where}: {problem}; check {self.key}")
        if isinstance(error, _DOWN) or (isinstance(error, ResponseError) and _REFUSED.search(str(error))):
            return StoreUnavailable(f"Redis session store {self.where} is unavailable: {error}")
        # Raised, among other things, when no node of a cluster answers.
        if isinstance(error, RedisClusterException) and "connect" in str(error).lower():
            return StoreUnavailable(f"Redis Cluster session store {self.where} is unavailable: {error}")
        return None


def _where(client: t.Any) -> str:
    """Where ``client`` connects, for messages: host, port and database, never the credentials."""
    if isinstance(client, _LazyCluster):
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


def _ping(client: t.Any, timeout: float) -> None:
    """Connect as ``client`` does (credentials, database) and send one PING, waiting ``timeout`` at most.

    A connection of its own, not one of the client's: a client handed over
    in ``SESSION_REDIS`` may wait for ever, and the app must start all the
    same. Raises what redis-py raises.
    """
    if isinstance(client, RedisCluster):
        return  # it asked the cluster for its slots, and so logged in, when it was made
    never = Retry(NoBackoff(), 0)
    conn: t.Any  # redis-py leaves Connection unannotated
    if isinstance(client, _LazyCluster):
        node = client.nodes[0]
        conn = redis.Connection(  # type: ignore[no-untyped-call]
            host=node.host,
            port=node.port,
            username=client.options.get("username"),
            password=client.options.get("password"),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=never,
        )
    else:
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        for name in ("socket_timeout", "socket_connect_timeout"):
            if kwargs.get(name) is None or kwargs[name] > timeout:
                kwargs[name] = timeout
        conn = pool.connection_class(**{**kwargs, "retry": never})
    try:
        conn.connect()  # AUTH and SELECT
        conn.send_command("PING")
        conn.read_response()
    finally:
        conn.disconnect()


def _check_client(client: t.Any) -> None:
    if not isinstance(client, (redis.Redis, RedisCluster)):
        raise ConfigError(
            "SESSION_REDIS", f"expected {_ACCEPTED}; got {type(client).__module__}.{type(client).__qualname__}"
        )
    if client.get_encoder().decode_responses:
        raise ConfigError(
            "SESSION_REDIS",
            "the client has decode_responses=True; sessions are bytes, create it with decode_responses=False",
        )


class RedisStore:
    """Records as Redis strings with native expiry; changes are compare-and-set scripts."""

    def __init__(
        self,
        client: t.Any,
        *,
        prefix: str = "session:",
        index_lifetime: float = 30 * 86400.0,
        owns_client: bool = False,
        also_close: t.Sequence[t.Any] = (),
        config_key: str = "SESSION_REDIS",
    ) -> None:
        if not isinstance(client, _LazyCluster):
            _check_client(client)
        self._client = client
        #: Maps redis-py's errors to ``StoreUnavailable``; ``config_key`` is what its messages tell to fix.
        self._unavailable = _Unavailable(_where(client), config_key)
        self.prefix = prefix
        #: How long a user's set outlives its last addition. Every session in
        #: it was created or given its user before then, so every member dies
        #: sooner: this is the absolute session lifetime.
        self.index_lifetime = index_lifetime
        #: Close the client in ``close()``: only a client this store created.
        self.owns_client = owns_client
        self._also_close = list(also_close)
        #: Plain sockets for the single scripts of a request, when the client
        #: is one that they can stand in for (see ``_resp``); else None.
        self._fast = None if isinstance(client, _LazyCluster) else _resp.for_client(client)
        #: What this thread's last load read (bytes and record), for the compare-and-set of its change.
        self._read: LastRead[tuple[bytes, Record]] = LastRead()
        # A session key is the prefix, "{", 32 hex digits of the handle and "}".
        self._pattern = _glob_escape(prefix) + "{" + "[0-9a-f]" * 32 + "}"

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisStore:
        client = settings.client
        if client is not None and settings.url is not None:
            raise ConfigError("SESSION_REDIS", "give either a client or a redis SESSION_URL, not both")
        if client is not None:
            _check_client(client)
            timeout = client.get_connection_kwargs().get("socket_timeout")
            if timeout is None or timeout > settings.store_timeout:
                # Not refused: the app may have reasons; but the 503 promise is off.
                # Logged, not warned: -W error would turn advice into a crash.
                log.warning(
                    "SESSION_REDIS: the client waits %s for an answer, longer than SESSION_STORE_TIMEOUT (%s s),"
                    " so a Redis that hangs holds requests that long before they get a 503; create it with"
                    " socket_timeout= and socket_connect_timeout=",
                    "for ever" if timeout is None else f"{timeout} s",
                    settings.store_timeout,
                )
            store = cls(client, prefix=settings.key_prefix, index_lifetime=settings.absolute_lifetime)
        else:
            url = settings.url if settings.url is not None else urlsplit(_DEFAULT_URL)
            client, also_close = _connect(url, settings.store_timeout)
            store = cls(
                client,
                prefix=settings.key_prefix,
                index_lifetime=settings.absolute_lifetime,
                owns_client=True,
                also_close=also_close,
                config_key="SESSION_URL",
            )
        try:
            store._check(settings.store_timeout)
        except ConfigError:
            store.close()
            raise
        return store

    def _check(self, timeout: float) -> None:
        """Ask the server once whether it takes the store's settings; ``init_app`` calls it.

        A database the server does not have, or credentials it refuses, is a
        ``ConfigError`` naming the key. A server that does not answer (down,
        hung, loading) is logged and let be: the app starts, and its session
        requests answer 503 until the server is back.
        """
        try:
            _ping(self._client, timeout)
        except (redis.RedisError, RedisClusterException) as e:
            problem = _misconfiguration(e)
            if problem is not None:
                raise ConfigError(self._unavailable.key, f"{self._unavailable.where}: {problem}") from e
            # Info, not a warning: apps often start before their Redis does, and
            # each request that then fails is logged as an error all the same.
            log.info(
                "Redis session store %s did not answer at startup (%s); requests that use the session"
                " answer 503 until it does",
                self._unavailable.where,
                e,
            )

    # Plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> t.Any:
        """The redis-py client (``Redis`` or ``RedisCluster``)."""
        if isinstance(self._client, _LazyCluster):
            with self._unavailable:
                return self._client.get()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def _lock(self, key: str) -> str:
        return f"{self.prefix}lock:{{{key}}}"  # the session's slot; not matched by _pattern

    def _index(self, user: str) -> str:
        return f"{self.prefix}user:{{{user_hash(user)}}}"

    def _send(self, command: tuple[t.Any, ...], before: t.Sequence[tuple[t.Any, ...]] = ()) -> t.Any:
        """Send ``command`` on the key it names, after ``before``, in one round trip; its reply."""
        with self._unavailable:
            if self._fast is not None:
                return self._fast.pipeline([*before, command])[-1]
            client = self.client
            if not before:
                return client.execute_command(*command)
            pipe = client.pipeline(transaction=False)
            for other in before:
                pipe.execute_command(*other)
            # execute_command: a cluster pipeline blocks its evalsha() method, not the command.
            pipe.execute_command(*command)
            return pipe.execute()[-1]

    def _run(self, name: str, key: str, args: t.Sequence[t.Any], before: t.Sequence[tuple[t.Any, ...]] = ()) -> t.Any:
        """Run a script on the Redis key ``key``, after ``before`` commands, in one round trip."""
        script = _SCRIPTS[name]
        try:
            return self._send(("EVALSHA", script.sha, 1, key, *args), before)
        except NoScriptError:
            with self._unavailable:
                if self._fast is not None:
                    self._fast.pipeline([("SCRIPT", "LOAD", script.source)])
                else:
                    self.client.script_load(script.source)  # on every master of a cluster
            return self._send(("EVALSHA", script.sha, 1, key, *args), before)

    def _add_to_index(self, user: str, key: str) -> list[tuple[t.Any, ...]]:
        index = self._index(user)
        return [("SADD", index, key), ("EXPIRE", index, max(1, int(self.index_lifetime)))]

    def _drop_from_index(self, users: t.Iterable[str], key: str) -> None:
        users = set(users)
        if not users:
            return
        with self._unavailable:
            if len(users) == 1:
                self.client.srem(self._index(users.pop()), key)
                return
            pipe = self.client.pipeline(transaction=False)
            for user in users:
                pipe.srem(self._index(user), key)
            pipe.execute()

    def _records(self, keys: t.Sequence[str]) -> list[Record | None]:
        """The metadata of many sessions, one pipeline (per node) for them all."""
        if not keys:
            return []
        with self._unavailable:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.get(self._key(key))
            values = pipe.execute()
        records: list[Record | None] = []
        for value in values:
            try:
                record = None if value is None else decode_record(value)
            except ValueError:  # bytes no store wrote: not a live session
                record = None
            if record is not None:
                record.data = {}
            records.append(record)
        return records

    def _scan(self) -> t.Iterator[list[str]]:
        """Every session key under the prefix, in batches; on a cluster, from every master."""
        start = len(self.prefix) + 1
        batch: list[str] = []
        with self._unavailable:
            for name in self.client.scan_iter(match=self._pattern, count=1000):
                batch.append(name[start:-1].decode())
                if len(batch) == 500:
                    yield batch
                    batch = []
        if batch:
            yield batch

    # The Store protocol ------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        value = self._send(("GET", self._key(key)))
        if value is None:
            return None
        record = decode_record(value)
        self._read.keep(key, (value, record))
        return record

    def create(self, key: str, record: Record) -> None:
        before = self._add_to_index(record.user, key) if record.user is not None else []
        self._send(("SET", self._key(key), encode_record(record), "PXAT", _ms(record.expires_at)), before)

    def _update(
        self, key: str, edit: t.Callable[[Record], Record], before: t.Sequence[tuple[t.Any, ...]] = ()
    ) -> tuple[Record, Record] | None:
        """Write ``edit(record)`` over the record, if it is still the one edited: (old, new), or None if gone.

        The first attempt starts from what this thread's last ``load`` of
        the key read, so a request's change costs one round trip.
        """
        name = self._key(key)
        read = self._read.take(key)  # the interface never mutates a loaded record
        value = self._send(("GET", name)) if read is None else read[0]
        for _ in range(_ATTEMPTS):
            if value is None:
                return None
            old = decode_record(value) if read is None else read[1]
            read = None
            new = edit(old)
            written = encode_record(new) if new.data else b""
            value = self._run("compare_and_set", name, [value, written, _ms(new.expires_at)], before)
            if value == 1:
                return old, new
            before = ()
        raise StoreUnavailable(f"Redis session store: {_ATTEMPTS} writes to one session in a row lost to others")

    def apply(self, key: str, change: Change) -> int | None:
        joins = change.user if change.user_changed else None
        before = self._add_to_index(joins, key) if joins is not None else []
        result = self._update(key, lambda record: merge(record, change), before)
        if result is None:
            return None
        old, new = result
        count = len(new.data)
        stale = set()
        if old.user is not None and (count == 0 or new.user != old.user):
            stale.add(old.user)
        if joins is not None and count == 0:
            stale.add(joins)
        self._drop_from_index(stale, key)
        return count

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        def edit(record: Record) -> Record:
            return msgspec.structs.replace(record, last_seen=last_seen, expires_at=expires_at)

        return self._update(key, edit) is not None

    def delete(self, key: str) -> bool:
        value = self._send(("GETDEL", self._key(key)))
        if value is None:
            return False
        with contextlib.suppress(ValueError):  # unreadable bytes: the record goes all the same
            user = decode_record(value).user
            if user is not None:
                self._drop_from_index([user], key)
        return True

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        if user is None:
            found = []
            for keys in self._scan():
                found += [
                    (key, record)
                    for key, record in zip(keys, self._records(keys), strict=True)
                    if record is not None and record.expires_at > now
                ]
            return found
        with self._unavailable:
            keys = sorted(member.decode() for member in self.client.smembers(self._index(user)))
        live, stale = [], []
        for key, record in zip(keys, self._records(keys), strict=True):
            if record is None or record.user != user:
                stale.append(key)
            elif record.expires_at > now:
                live.append((key, record))
        if stale:
            with self._unavailable:
                self.client.srem(self._index(user), *stale)
        return live

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the session's lock: a key that lapses by itself after ``lease`` (SET NX PX)."""
        with self._unavailable:
            return bool(self.client.set(self._lock(key), token, nx=True, px=max(1, int(lease * 1000))))

    def unlock(self, key: str, token: str) -> bool:
        """Release the lock only if ``token`` still holds it; compare and delete in one script."""
        return bool(self._run("unlock", self._lock(key), [token]))

    def cleanup(self, now: float) -> int:
        return 0  # Redis drops each record at its expires_at (PEXPIREAT)

    def count(self, now: float) -> int:
        return sum(
            record is not None and record.expires_at > now for keys in self._scan() for record in self._records(keys)
        )

    def unavailable(self, error: BaseException) -> StoreUnavailable | None:
        """The ``StoreUnavailable`` a redis-py ``error`` of this store's client means; None for a bug.

        For code that sends its own commands on ``client`` (the Flask-Session
        importer) and must answer outages exactly as the store does.
        """
        return self._unavailable.error_for(error)

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        if self.owns_client:
            self._client.close()
            for other in self._also_close:
                other.close()
