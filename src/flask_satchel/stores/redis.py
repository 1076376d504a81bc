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

Layout, and why:

- A session is one hash, ``prefix + "{" + key + "}"``. The braces are a
  Redis Cluster hash tag: everything about one session lives in one slot, so
  one Lua script can read and change it atomically on a cluster too.
- One hash field per session key, holding that key's encoded value, so a
  request writes only the keys it changed. Metadata sits in the same hash
  under field names that start with the byte ``0xff``. A session key is a
  ``str`` stored as UTF-8, and ``0xff`` never occurs in UTF-8, so no session
  key can ever collide with a metadata field, whatever the app names its
  keys; and keeping it in the same hash keeps a read to one ``HGETALL``.
- The record dies by itself: ``PEXPIREAT`` at ``expires_at``. ``cleanup()``
  has nothing to do; listing and counting still honour ``now``.
- Changes are Lua scripts, sent by SHA (``EVALSHA``) and loaded only when a
  server answers that it does not know them (first use, a restart, a
  failover). redis-py's ``register_script`` does the same for a single
  command, but in a pipeline it asks ``SCRIPT EXISTS`` every time, a round
  trip too many. A script refuses to write to a session that is gone, so a
  late write never brings a destroyed session back.
- A user's sessions are listed from a set, ``prefix + "user:{" + hash + "}"``,
  in the user's own slot. On a cluster that is another node, so the set is
  changed by separate commands next to the session's script, never inside
  it; a set member can therefore be stale, and listing checks every member
  against its record and drops the ones that are gone or belong to someone
  else now.
- ``SESSION_LOCKING`` takes ``prefix + "lock:{" + key + "}"`` with ``SET NX PX``:
  a lease in the session's slot that lapses by itself if its holder dies,
  released by a script that deletes it only for the token that holds it.
- A request's script (with a login's index commands) goes over the store's
  own pooled sockets (``_resp``) when the client is a plain ``redis.Redis``
  they can stand in for: redis-py's Python costs about as much as the round
  trip. Listings, scans and every other client use redis-py.
"""

from __future__ import annotations

import hashlib
import threading
import typing as t
import warnings
from urllib.parse import SplitResult, unquote, urlsplit

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel

from ..errors import ConfigError, StoreUnavailable
from . import _resp
from .base import Change, Record

if t.TYPE_CHECKING:
    from ..settings import Settings

_DEFAULT_URL = "redis://127.0.0.1:6379/0"
_ACCEPTED = (
    "a redis.Redis (also as made by Sentinel(...).master_for(...)) or a redis.cluster.RedisCluster,"
    " created with decode_responses=False"
)
#: Idle connections are checked with a PING before use after this many seconds,
#: so one that died silently (a failover, a NAT timeout) is replaced, not used.
_HEALTH_CHECK_INTERVAL = 30

#: Errors that mean Redis cannot serve us right now. A read-only replica
#: answering writes and a cluster moving slots are passing states of a
#: failover, not bugs, so they are outages too.
_DOWN: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
)

# Metadata fields: 0xff starts no UTF-8 sequence, so no session key can be one.
_CREATED = b"\xffcreated_at"
_SEEN = b"\xfflast_seen"
_EXPIRES = b"\xffexpires_at"
_PERMANENT = b"\xffpermanent"
_USER = b"\xffuser"
_CLIENT = b"\xffclient"
_META = (_CREATED, _SEEN, _EXPIRES, _PERMANENT, _USER, _CLIENT)

_encode = msgspec.msgpack.Encoder().encode
_decode_client = msgspec.msgpack.Decoder(dict[str, str]).decode

# Every record holds all six metadata fields, so HLEN - 6 is its key count.
# Lua reads "\255" as the byte 0xff.
_LUA_HSET = """
-- HSET of ARGV[first..last] (field/value pairs) and then of the pairs in
-- extra, in as few calls as possible: one, unless there are more than 1000
-- values, the most this sends through Lua's unpack() at once.
local function hset(key, first, last, extra)
  local args = {}
  local function add(value)
    args[#args + 1] = value
    if #args == 1000 then
      redis.call('HSET', key, unpack(args))
      args = {}
    end
  end
  for i = first, last do add(ARGV[i]) end
  for i = 1, #extra do add(extra[i]) end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end
"""

#: KEYS[1] the session. Returns nil when there is none, else one msgpack
#: array (see ``_Packed``): the six metadata values in ``_META`` order (bin,
#: or nil when missing), then a map of session key to value (both bin: a key
#: name is UTF-8 with ``surrogatepass``, not always strict UTF-8).
#: Why a script for a read: redis-py parses replies in Python, one call per
#: element, so an HGETALL of a 10-key session (32 elements with the metadata)
#: costs far more CPU than the round trip itself; one bulk string that
#: msgspec decodes in C costs about what a GET does.
_LOAD = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return false end
local meta, data = {}, {}
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if string.byte(name) == 255 then
    meta[name] = value
  else
    data[#data + 1] = struct.pack('>BI4', 0xc6, #name) .. name .. struct.pack('>BI4', 0xc6, #value) .. value
  end
end
local out = {'\\151'}
local order = {
  '\\255created_at', '\\255last_seen', '\\255expires_at', '\\255permanent', '\\255user', '\\255client'
}
for _, name in ipairs(order) do
  local value = meta[name]
  out[#out + 1] = value and struct.pack('>BI4', 0xc6, #value) .. value or '\\192'
end
out[#out + 1] = struct.pack('>BI4', 0xdf, #data)
return table.concat(out) .. table.concat(data)
"""

#: KEYS[1] the session; ARGV[1] expiry in ms, then field/value pairs.
_CREATE = (
    _LUA_HSET
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DEL', KEYS[1]) end
hset(KEYS[1], 2, #ARGV, {})
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""
)

#: KEYS[1] the session; ARGV: last_seen, expires_at, expiry in ms, permanent,
#: user changed (0/1), user field, client changed (0/1), client field, number
#: of set pairs, the pairs, then the removed fields.
#: Returns nil when the session is gone, else {key count, previous user field}.
#:
#: The changed keys and the metadata go in one HSET. last_seen, expires_at and
#: the TTL move only forward: a change that does not refresh them (the
#: common case inside the refresh interval) leaves them and the TTL alone,
#: and one from a request that loaded the record before another request
#: refreshed it cannot shorten the session again.
_APPLY = (
    _LUA_HSET
    + """
local key = KEYS[1]
local stored = redis.call('HMGET', key, '\\255last_seen', '\\255user')
if not stored[1] then return false end
local last = 9 + 2 * tonumber(ARGV[9])
for i = last + 1, #ARGV, 1000 do
  redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if last == 9 and redis.call('HLEN', key) <= 6 then
  redis.call('DEL', key)
  return {0, stored[2]}
end
local meta = {'\\255permanent', ARGV[4]}
local refresh = tonumber(ARGV[1]) > tonumber(stored[1])
if refresh then
  meta[#meta + 1] = '\\255last_seen'
  meta[#meta + 1] = ARGV[1]
  meta[#meta + 1] = '\\255expires_at'
  meta[#meta + 1] = ARGV[2]
end
if ARGV[5] == '1' then
  meta[#meta + 1] = '\\255user'
  meta[#meta + 1] = ARGV[6]
end
if ARGV[7] == '1' then
  meta[#meta + 1] = '\\255client'
  meta[#meta + 1] = ARGV[8]
end
hset(key, 10, last, meta)
if refresh then redis.call('PEXPIREAT', key, ARGV[3]) end
return {redis.call('HLEN', key) - 6, stored[2]}
"""
)

#: KEYS[1] the session; ARGV: last_seen, expires_at, expiry in ms. 1 if touched.
_TOUCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], '\\255last_seen', ARGV[1], '\\255expires_at', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""

#: KEYS[1] a session's lock; ARGV[1] the holder's token. 1 if released.
_UNLOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""

#: KEYS[1] the session. Returns {1 if deleted, user field}.
_DELETE = """
local user = redis.call('HGET', KEYS[1], '\\255user')
return {redis.call('DEL', KEYS[1]), user}
"""


class _Packed(msgspec.Struct, array_like=True):
    """What the load script returns, decoded by msgspec in one C call."""

    created_at: bytes | None
    last_seen: bytes | None
    expires_at: bytes | None
    permanent: bytes | None
    user: bytes | None
    client: bytes | None
    data: dict[bytes, bytes]


_unpack = msgspec.msgpack.Decoder(_Packed).decode


class _Script:
    """A Lua script and its SHA1, which is how Redis names a loaded script."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


_SCRIPTS = {
    name: _Script(source)
    for name, source in [
        ("load", _LOAD),
        ("create", _CREATE),
        ("apply", _APPLY),
        ("touch", _TOUCH),
        ("delete", _DELETE),
        ("unlock", _UNLOCK),
    ]
}


def _ms(timestamp: float) -> int:
    return int(timestamp * 1000)


def _user_field(user: str | None) -> bytes:
    # "" would be a user too: a leading "=" tells a user from no user.
    return b"" if user is None else b"=" + user.encode()


def _user_of(field: bytes | None) -> str | None:
    return field[1:].decode() if field else None


def _field(name: str) -> bytes:
    # surrogatepass: any Python str becomes bytes, and still never holds 0xff.
    return name.encode("utf-8", "surrogatepass")


def _metadata(values: t.Sequence[bytes | None], data: dict[str, bytes] | None = None) -> Record:
    """A record from the six metadata values, in ``_META`` order."""
    created, seen, expires, permanent, user, client = values
    if created is None or seen is None or expires is None:
        raise ValueError("the session hash has no metadata")
    return Record(
        data=data or {},
        created_at=float(created),
        last_seen=float(seen),
        expires_at=float(expires),
        permanent=permanent == b"1",
        user=_user_of(user),
        client=_decode_client(client) if client else None,
    )


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

    A class rather than ``@contextlib.contextmanager``: it wraps the one
    command of every request, and a generator-based context manager costs
    several times more than ``__enter__``/``__exit__``.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: t.Any) -> t.Literal[False]:
        if isinstance(error, _DOWN):
            raise StoreUnavailable(f"Redis session store is unavailable: {error}") from error
        # Raised, among other things, when no node of a cluster answers.
        if isinstance(error, RedisClusterException) and "connect" in str(error).lower():
            raise StoreUnavailable(f"Redis Cluster session store is unavailable: {error}") from error
        return False


_UNAVAILABLE = _Unavailable()


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
    """Records in Redis hashes with native expiry; changes are Lua scripts."""

    def __init__(
        self,
        client: t.Any,
        *,
        prefix: str = "session:",
        index_lifetime: float = 30 * 86400.0,
        owns_client: bool = False,
        also_close: t.Sequence[t.Any] = (),
    ) -> None:
        if not isinstance(client, _LazyCluster):
            _check_client(client)
        self._client = client
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
        # A hash key is the prefix, "{", 32 hex digits of the handle and "}".
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
                warnings.warn(
                    f"SESSION_REDIS: the client waits {'for ever' if timeout is None else f'{timeout} s'} for"
                    f" an answer, longer than SESSION_STORE_TIMEOUT ({settings.store_timeout} s), so a Redis that"
                    " hangs holds requests that long before they get a 503; create it with socket_timeout= and"
                    " socket_connect_timeout=",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return cls(client, prefix=settings.key_prefix, index_lifetime=settings.absolute_lifetime)
        url = settings.url if settings.url is not None else urlsplit(_DEFAULT_URL)
        client, also_close = _connect(url, settings.store_timeout)
        return cls(
            client,
            prefix=settings.key_prefix,
            index_lifetime=settings.absolute_lifetime,
            owns_client=True,
            also_close=also_close,
        )

    # Plumbing ------------------------------------------------------------------------

    @property
    def client(self) -> t.Any:
        """The redis-py client (``Redis`` or ``RedisCluster``)."""
        if isinstance(self._client, _LazyCluster):
            with _UNAVAILABLE:
                return self._client.get()
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def _lock(self, key: str) -> str:
        return f"{self.prefix}lock:{{{key}}}"  # the session's slot; not matched by _pattern

    def _index(self, user: str) -> str:
        return f"{self.prefix}user:{{{hashlib.sha256(user.encode()).hexdigest()[:32]}}}"

    def _run(self, name: str, key: str, args: t.Sequence[t.Any], before: t.Sequence[tuple[t.Any, ...]] = ()) -> t.Any:
        """Run a script on the Redis key ``key``, after ``before`` commands, in one round trip."""
        script = _SCRIPTS[name]
        client = self.client
        with _UNAVAILABLE:
            for attempt in (1, 2):
                try:
                    if self._fast is not None:
                        return self._fast.pipeline([*before, ("EVALSHA", script.sha, 1, key, *args)])[-1]
                    if not before:
                        return client.evalsha(script.sha, 1, key, *args)
                    pipe = client.pipeline(transaction=False)
                    for command in before:
                        pipe.execute_command(*command)
                    # execute_command: a cluster pipeline blocks its evalsha() method, not the command.
                    pipe.execute_command("EVALSHA", script.sha, 1, key, *args)
                    return pipe.execute()[-1]
                except NoScriptError:
                    if attempt == 2:
                        raise
                    client.script_load(script.source)  # on every master of a cluster
        raise AssertionError("unreachable")  # pragma: no cover

    def _add_to_index(self, user: str, key: str) -> list[tuple[t.Any, ...]]:
        index = self._index(user)
        return [("SADD", index, key), ("EXPIRE", index, max(1, int(self.index_lifetime)))]

    def _drop_from_index(self, users: t.Iterable[str], key: str) -> None:
        users = set(users)
        if not users:
            return
        with _UNAVAILABLE:
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
        with _UNAVAILABLE:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._key(key), _META)
            rows = pipe.execute()
        records: list[Record | None] = []
        for row in rows:
            try:
                records.append(_metadata(row))
            except (ValueError, TypeError):  # gone, or unreadable: not a live session
                records.append(None)
        return records

    def _scan(self) -> t.Iterator[list[str]]:
        """Every session key under the prefix, in batches; on a cluster, from every master."""
        start = len(self.prefix) + 1
        batch: list[str] = []
        with _UNAVAILABLE:
            for name in self.client.scan_iter(match=self._pattern, count=1000):
                batch.append(name[start:-1].decode())
                if len(batch) == 500:
                    yield batch
                    batch = []
        if batch:
            yield batch

    # The Store protocol ------------------------------------------------------------

    def load(self, key: str) -> Record | None:
        packed = self._run("load", self._key(key), ())
        if packed is None:
            return None
        record = _unpack(packed)
        return _metadata(
            (record.created_at, record.last_seen, record.expires_at, record.permanent, record.user, record.client),
            {name.decode("utf-8", "surrogatepass"): value for name, value in record.data.items()},
        )

    def create(self, key: str, record: Record) -> None:
        args: list[t.Any] = [
            _ms(record.expires_at),
            _CREATED,
            repr(record.created_at),
            _SEEN,
            repr(record.last_seen),
            _EXPIRES,
            repr(record.expires_at),
            _PERMANENT,
            b"1" if record.permanent else b"0",
            _USER,
            _user_field(record.user),
            _CLIENT,
            b"" if record.client is None else _encode(record.client),
        ]
        for name, value in record.data.items():
            args += (_field(name), value)
        before = self._add_to_index(record.user, key) if record.user is not None else []
        self._run("create", self._key(key), args, before)

    def apply(self, key: str, change: Change) -> int | None:
        args: list[t.Any] = [
            repr(change.last_seen),
            repr(change.expires_at),
            _ms(change.expires_at),
            b"1" if change.permanent else b"0",
            b"1" if change.user_changed else b"0",
            _user_field(change.user),
            b"0" if change.client is None else b"1",
            b"" if change.client is None else _encode(change.client),
            len(change.set),
        ]
        for name, value in change.set.items():
            args += (_field(name), value)
        args += (_field(name) for name in change.removed)
        joins = change.user if change.user_changed else None
        before = self._add_to_index(joins, key) if joins is not None else []
        result = self._run("apply", self._key(key), args, before)
        if result is None:
            return None
        count, previous = int(result[0]), _user_of(result[1])
        user = change.user if change.user_changed else previous
        stale = set()
        if previous is not None and (count == 0 or user != previous):
            stale.add(previous)
        if joins is not None and count == 0:
            stale.add(joins)
        self._drop_from_index(stale, key)
        return count

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        return bool(self._run("touch", self._key(key), [repr(last_seen), repr(expires_at), _ms(expires_at)]))

    def delete(self, key: str) -> bool:
        deleted, user = self._run("delete", self._key(key), [])
        user = _user_of(user)
        if user is not None:
            self._drop_from_index([user], key)
        return bool(deleted)

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
        with _UNAVAILABLE:
            keys = sorted(member.decode() for member in self.client.smembers(self._index(user)))
        live, stale = [], []
        for key, record in zip(keys, self._records(keys), strict=True):
            if record is None or record.user != user:
                stale.append(key)
            elif record.expires_at > now:
                live.append((key, record))
        if stale:
            with _UNAVAILABLE:
                self.client.srem(self._index(user), *stale)
        return live

    def lock(self, key: str, token: str, lease: float) -> bool:
        """Take the session's lock: a key that lapses by itself after ``lease`` (SET NX PX)."""
        with _UNAVAILABLE:
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

    def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
        if self.owns_client:
            self._client.close()
            for other in self._also_close:
                other.close()
