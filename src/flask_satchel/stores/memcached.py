"""Sessions in memcached, with pymemcache.

One value per session under ``prefix + key``: the msgpack-encoded record.
Memcached has no scripts and no locks, so a change is a compare-and-set
loop: ``gets`` the record with its CAS token, merge the delta in Python,
``cas`` it back, and start again when another request wrote in between.
A record that is gone stays gone: ``cas`` on a missing key stores nothing.
Deleting is a ``cas`` too, with an expiry in the past, so a request that
empties the record cannot drop keys another request has just added.

Why things are the way they are:

- Expiry. Memcached reads an expiry of more than 30 days as an absolute Unix
  time, so a relative TTL of 31 days would be a date in January 1970 and the
  record would die at once. Expiries up to 30 days are sent as a TTL, longer
  ones as the record's ``expires_at`` timestamp. Either way one second is
  added to the expiry rounded up: memcached's clock counts whole seconds and
  moves once a second, so it runs up to a second behind the real time, and
  an item given a TTL of N seconds is gone after anything between N - 1 and
  N seconds. Without the extra second a session would end before its
  deadline; with it, the server drops the record at most two seconds late,
  and the interface, which checks expiry on read, still ends the session on
  time.
- Size. Memcached refuses an item larger than its ``item_size_max`` (``-I``,
  1 MB by default) with ``SERVER_ERROR object too large for cache``: no retry
  can store it, so that is ``SessionTooLarge`` naming both sizes, never
  ``StoreUnavailable``. Records are changed with ``cas``, which leaves the
  old value in place when it refuses, so the session keeps its last good
  state (a refused ``set`` drops the old value, but ``set`` only creates
  records under new keys). The limit is read from ``stats settings`` only when a server
  refuses a record, and kept: a later record larger than it is refused
  without sending it, after reading the limit again (one small round trip,
  in case the server was restarted with another ``-I``).
- ``touch`` rewrites the record with compare-and-set. Memcached's own
  ``touch`` command would move the server's TTL but leave ``last_seen`` and
  ``expires_at`` in the record stale, and the interface, which checks expiry
  on read, would end the session at the old time anyway. A refresh only
  happens once per refresh interval, so the extra round trip is rare.
- Errors surface. A server that is down or does not answer within the
  timeout is ``StoreUnavailable`` (HTTP 503), never "no session": reading it
  as "no session" would log the user out and, worse, hand out a new session
  while the old one lives on. So clients with ``ignore_exc`` are refused, and
  with several servers the store picks the server itself, with the
  HashClient's own hashing, and calls that server's client directly:
  HashClient's failover would answer "no session" while a server is marked
  failing, and would send the session to another server, from which a revoked
  session could come back when the first server returns.
- Writes wait for memcached's answer (``noreply=False``): pymemcache's
  default sends writes without waiting, so a failed write would vanish.
  Waiting also keeps Nagle's algorithm out of the way: after a write sent
  without waiting, the next command sits ~40 ms in the kernel until the
  server's delayed ACK arrives. Clients this store creates set
  ``TCP_NODELAY`` all the same, and time out after ``SESSION_STORE_TIMEOUT``.
- A change is one round trip after the load. ``load`` reads with ``gets``
  and keeps, per thread, the value and CAS token it read; a change of that
  key tries ``cas`` with them first (see ``_take_seen``), and a failed
  ``cas`` falls back to the loop above.
- A user's sessions are listed from a per-user index
  (``prefix + "user:" + hash + ":" + period``): lines ``+key`` and ``-key``
  added with ``append``, one round trip that needs no read, so a new
  session is two writes (the record and one append; an ``add`` too when
  it is the user's first of the period). Memcached cannot refresh an
  item's expiry in the same command as an append, so each index covers the
  sessions created in one period of ``index_lifetime`` (the absolute
  session lifetime) and expires when all of them must have ended, one
  period after its own; a listing reads the current and the previous
  period. Listing prunes ended sessions with compare-and-set, and so does
  an append that finds the index at memcached's item size limit.
  Memcached cannot list its keys, so listing everyone's sessions and
  counting them raise ``NotSupported``; ``cleanup()`` has nothing to do,
  because memcached drops expired records by itself.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import typing as t
from urllib.parse import urlsplit

import msgspec
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError, MemcacheUnknownError

from ..errors import ConfigError, NotSupported, SessionTooLarge, StoreUnavailable
from . import _net
from .base import Change, LastRead, Record, decode_record, encode_record, merge, user_hash

log = logging.getLogger("flask_satchel")
if t.TYPE_CHECKING:
    from ..settings import Settings


#: Memcached reads a larger expiry as an absolute Unix time, not a TTL.
_MAX_TTL = 30 * 86400
#: An expiry in the past: memcached drops the item at once.
_GONE = -1
_DEFAULT_PORT = 11211
#: The longest key memcached accepts, in bytes.
_MAX_KEY = 250
#: ``prefix + _USER + hash`` is the longest key this store writes.
_USER = "user:"
_LOCK = "lock:"
_HASH_LENGTH = 32  # what user_hash gives
#: ``":" + period``, the longest a period number gets (a one-second lifetime).
_PERIOD_LENGTH = 12

#: Errors that mean the server closed a connection we had open, as it does
#: when it restarts: worth one more try on a fresh connection.
_CLOSED = (MemcacheUnexpectedCloseError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
#: Errors that mean the server is down, unreachable or in trouble. Timeouts
#: (``socket.timeout``) and refused connections are ``OSError``\\s.
_DOWN = (OSError, MemcacheServerError, MemcacheUnknownError)

_ACCEPTED = "a pymemcache Client, PooledClient or HashClient"

#: What memcached answers to an item over its size limit.
_TOO_LARGE = b"object too large for cache"


def _parse_index(value: bytes) -> list[str]:
    """The keys a user's index lists: ``+key`` lines add, ``-key`` lines remove, in order."""
    keys: dict[str, None] = {}
    for line in bytes(value).split(b"\n"):
        key = line[1:].decode(errors="replace")
        if line[:1] == b"+":
            keys[key] = None
        elif line[:1] == b"-":
            keys.pop(key, None)
    return list(keys)


def _refused_as_too_large(error: MemcacheServerError) -> bool:
    """Whether the server refused an item for being over its size limit."""
    answer = error.args[0] if error.args else b""
    return _TOO_LARGE in (answer if isinstance(answer, bytes) else str(answer).encode())


def _exptime(expires_at: float) -> int:
    """The expiry memcached needs for a record that must live until ``expires_at``, and not much longer.

    One second more than the time left, rounded up: memcached's clock runs
    up to a second behind (see the module docstring).
    """
    remaining = expires_at - time.time()
    if remaining <= 0:
        return _GONE  # 0 would mean "never expires"
    ttl = math.ceil(remaining) + 1
    if ttl <= _MAX_TTL:
        return ttl
    return math.ceil(expires_at) + 1


class _Server:
    """One memcached server, and how to call it safely from several threads."""

    def __init__(self, name: str, client: t.Any) -> None:
        #: ``host:port``, for error messages.
        self.name = name
        self.client = client
        # A PooledClient hands each thread its own connection. Its methods
        # wrap every command in a context manager that costs several
        # microseconds per call on the read path, so the store takes a
        # connection from the pool itself, and drops it on any error, as
        # the wrapper would.
        self._pool: t.Any = client.client_pool if isinstance(client, PooledClient) else None
        # A plain Client is one socket: two threads using it at once would
        # read each other's answers.
        self._lock = threading.Lock()
        #: The server's item size limit, once a refused record made the store read it.
        self.item_size_max: int | None = None

    def read_item_size_max(self) -> int | None:
        """The server's item size limit (``-I``) from ``stats settings``; None if it does not say."""
        stats = self.call("stats", "settings")
        value = stats.get(b"item_size_max", stats.get("item_size_max"))
        try:
            self.item_size_max = int(value)
        except (TypeError, ValueError):
            self.item_size_max = None
        return self.item_size_max

    def _run(self, method: str, args: tuple[t.Any, ...], kwargs: dict[str, t.Any]) -> t.Any:
        pool = self._pool
        if pool is None:
            with self._lock:
                return getattr(self.client, method)(*args, **kwargs)
        connection = pool.get()
        try:
            result = getattr(connection, method)(*args, **kwargs)
        except BaseException:
            pool.destroy(connection)  # its socket is in an unknown state
            raise
        pool.release(connection)
        return result

    def call(self, method: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run one client command; every failure to reach the server is ``StoreUnavailable``."""
        retries: int | None = None  # counted after a first failure: the first try is the whole hot path
        while True:
            try:
                return self._run(method, args, kwargs)
            except _CLOSED as e:
                closed = e
            except BlockingIOError as e:  # the kernel's timeout on our sockets (_net)
                raise StoreUnavailable(f"memcached {self.name} did not answer in time") from e
            except _DOWN as e:
                if isinstance(e, MemcacheServerError) and _refused_as_too_large(e):
                    raise SessionTooLarge(f"memcached {self.name} refused a value as too large") from e
                raise StoreUnavailable(f"memcached {self.name} is unavailable: {e!r}") from e
            if retries is None:
                # Each pooled connection may have been closed by a server restart
                # since it was last used; those fail at once and are dropped by the
                # pool, so trying as many times as there are idle connections reaches
                # a fresh one. A server that is really down refuses that connection.
                retries = 1 + (len(self._pool.free) if self._pool is not None else 0)
            if retries == 0:
                break
            retries -= 1
        raise StoreUnavailable(f"memcached {self.name} keeps closing the connection: {closed!r}") from closed


def _name(server: t.Any) -> str:
    if isinstance(server, tuple):
        return f"{server[0]}:{server[1]}"
    return str(server)


def _check_client(client: t.Any) -> None:
    """Refuse clients that would hide errors or unpickle what they read."""
    if getattr(client, "ignore_exc", False):
        raise ConfigError(
            "SESSION_MEMCACHED",
            "the client has ignore_exc=True, which turns a server that is down into 'no session'"
            " (the user is logged out and a new session is handed out); create it with ignore_exc=False",
        )
    serde = getattr(client, "serde", None)
    if serde is None:
        return
    try:
        stored, _ = serde.serialize(b"probe", b"\x80")
        # A pickled None, flagged as pickled: a serde that unpickles it would
        # also unpickle whatever anyone who can reach memcached writes there.
        read = serde.deserialize(b"probe", b"\x80\x04N.", 1)
    except Exception:
        stored = read = None
    if stored != b"\x80" or read != b"\x80\x04N.":
        raise ConfigError(
            "SESSION_MEMCACHED",
            "the client's serde must hand bytes through unchanged (pymemcache's default, no serde=);"
            " Flask-Satchel encodes sessions itself and never unpickles",
        )


def _servers_of(client: t.Any) -> list[_Server]:
    """The servers behind a client handed over in ``SESSION_MEMCACHED``."""
    if isinstance(client, HashClient):
        _check_client(client)
        servers = [_Server(name, node) for name, node in client.clients.items()]
    elif isinstance(client, (Client, PooledClient)):
        servers = [_Server(_name(client.server), client)]
    else:
        raise ConfigError("SESSION_MEMCACHED", f"expected {_ACCEPTED}, got {type(client).__qualname__}")
    for server in servers:
        _check_client(server.client)
    return servers


def _parse_url(url: t.Any) -> list[tuple[str, int]]:
    """``memcached://host:port[,host:port…]`` as a list of addresses."""
    if url.path not in ("", "/") or url.query or url.fragment or "@" in url.netloc:
        raise ConfigError(
            "SESSION_URL", f"expected memcached://host:port[,host:port...] and nothing else, got {url.geturl()!r}"
        )
    servers = []
    for part in url.netloc.split(","):
        try:
            address = urlsplit(f"//{part.strip()}")
            host, port = address.hostname, address.port or _DEFAULT_PORT
        except ValueError:
            host = None
        if not host:
            raise ConfigError("SESSION_URL", f"cannot read a host:port from {part!r} in {url.geturl()!r}")
        servers.append((host, port))
    return servers


def _connect(servers: list[tuple[str, int]], timeout: float) -> t.Any:
    """A thread-safe client for ``servers``: pooled connections, no Nagle, timeouts."""
    options: dict[str, t.Any] = {
        "connect_timeout": timeout,
        "timeout": timeout,
        "no_delay": True,
        "default_noreply": False,
        # The kernel keeps the timeout: no poll() before each send and receive.
        "socket_module": _net.kernel_timeout_module(),
    }
    if len(servers) == 1:
        return PooledClient(servers[0], **options)
    # The store routes keys itself and never uses HashClient's failover (see
    # the module docstring); these settings keep that true for anyone who
    # calls the client directly too: errors raise, no server is ever dropped.
    return HashClient(servers, use_pooling=True, ignore_exc=False, retry_attempts=2**62, retry_timeout=-1, **options)


def _check_prefix(prefix: str) -> None:
    longest = len(prefix.encode()) + len(_USER) + _HASH_LENGTH + _PERIOD_LENGTH
    if not prefix.isascii() or any(c.isspace() or not c.isprintable() for c in prefix) or longest > _MAX_KEY:
        raise ConfigError(
            "SESSION_KEY_PREFIX",
            f"memcached keys are printable ASCII without spaces, at most {_MAX_KEY} bytes;"
            f" {prefix!r} cannot make such keys",
        )


class MemcachedStore:
    """Records in one memcached server, or several with keys hashed over them."""

    #: How many times a compare-and-set is tried against concurrent writers.
    cas_attempts = 50

    def __init__(
        self,
        client: t.Any,
        *,
        prefix: str = "session:",
        index_lifetime: float = 30 * 86400.0,
        owns_client: bool = False,
    ) -> None:
        self._servers = {server.name: server for server in _servers_of(client)}
        _check_prefix(prefix)
        self.client = client
        self.prefix = prefix
        #: The absolute session lifetime: every session ends within it of
        #: being created, so a user's index of one period can expire one
        #: period after its own (see the module docstring).
        self.index_lifetime = index_lifetime
        #: Close the client in ``close()``: only a client this store created.
        self.owns_client = owns_client
        #: Per thread, the value and CAS token the last ``load`` read. See ``_take_seen``.
        self._seen: LastRead[tuple[bytes, int]] = LastRead()

    @classmethod
    def from_settings(cls, settings: Settings) -> MemcachedStore:
        client = settings.client
        if client is not None and settings.url is not None:
            raise ConfigError("SESSION_MEMCACHED", "give either a client or a memcached:// SESSION_URL, not both")
        if client is not None:
            # No_delay does not matter here (every command waits for its
            # answer, see above), but a missing timeout does.
            if any(getattr(server.client, "timeout", 0) is None for server in _servers_of(client)):
                # Logged, not warned: -W error would turn advice into a crash.
                log.warning(
                    "SESSION_MEMCACHED: the client has timeout=None, so a memcached that hangs hangs requests"
                    " for ever instead of answering 503; create it with timeout= and connect_timeout="
                )
            return cls(client, prefix=settings.key_prefix, index_lifetime=settings.absolute_lifetime)
        # Flask-Session's default when neither a client nor a URL is given.
        servers = _parse_url(settings.url) if settings.url is not None else [("127.0.0.1", _DEFAULT_PORT)]
        _check_prefix(settings.key_prefix)
        return cls(
            _connect(servers, settings.store_timeout),
            prefix=settings.key_prefix,
            index_lifetime=settings.absolute_lifetime,
            owns_client=True,
        )

    # Keys and servers ----------------------------------------------------------

    def _record_key(self, key: str) -> str:
        return self.prefix + key

    def _index_key(self, user: str, period: int) -> str:
        return f"{self.prefix}{_USER}{user_hash(user)}:{period}"

    def _by_server(self, full_keys: t.Iterable[str]) -> dict[str, list[str]]:
        """Keys grouped by the server that holds them, for one multi-key command per server."""
        by_server: dict[str, list[str]] = {}
        for full in full_keys:
            by_server.setdefault(self._server(full).name, []).append(full)
        return by_server

    def _server(self, full_key: str) -> _Server:
        if len(self._servers) == 1:
            return next(iter(self._servers.values()))
        name = self.client.hasher.get_node(full_key)
        if name not in self._servers:
            raise StoreUnavailable("the memcached client has no servers left")
        return self._servers[name]

    def _retries(self, what: str) -> t.Iterator[int]:
        """Attempts at a compare-and-set, with a short random pause after a conflict."""
        for attempt in range(self.cas_attempts):
            if attempt:
                time.sleep(random.uniform(0, 0.0005 * min(attempt, 8)))
            yield attempt
        raise StoreUnavailable(f"{what} kept changing under {self.cas_attempts} compare-and-set attempts")

    # The per-user index ----------------------------------------------------------

    def _period(self, created_at: float) -> int:
        """The index period a session created at ``created_at`` is listed in."""
        return int(created_at // self.index_lifetime)

    def _index_append(self, user: str, period: int, entry: bytes, *, create: bool) -> None:
        """Append one line to a user's index of one period; with ``create``, make the index if missing.

        Memcached answers NOT_STORED both when the index does not exist and
        when it is full (past the item size limit): after an ``add`` that
        loses to another request, the next failed ``append`` means full, so
        the index is pruned of ended sessions once and tried again.
        """
        full = self._index_key(user, period)
        server = self._server(full)
        # The index outlives every session created in its period (they all
        # end within index_lifetime of being created), and is never refreshed.
        expire = _exptime((period + 2) * self.index_lifetime)
        for attempt in self._retries(f"the session index of {user!r}"):
            if server.call("append", full, entry, noreply=False):
                return
            if not create:
                return  # no index: nothing to remove from
            if server.call("add", full, entry, expire=expire, noreply=False):
                return
            if attempt == 1:
                self._prune(user, [period], time.time())

    def _index_add(self, user: str, key: str, created_at: float) -> None:
        self._index_append(user, self._period(created_at), b"+" + key.encode() + b"\n", create=True)

    def _index_remove(self, user: str, key: str, created_at: float) -> None:
        self._index_append(user, self._period(created_at), b"-" + key.encode() + b"\n", create=False)

    def _prune(self, user: str, periods: t.Iterable[int], now: float) -> list[tuple[str, Record]]:
        """A user's records listed in the indexes of ``periods``; ended sessions are dropped from them.

        An index is rewritten with compare-and-set, so a line appended
        meanwhile is never lost: the rewrite fails instead, and the ended
        sessions are dropped next time.
        """
        indexes: dict[str, tuple[bytes, t.Any]] = {}
        for name, index_keys in self._by_server(self._index_key(user, period) for period in periods).items():
            indexes.update(self._servers[name].call("gets_many", index_keys))
        listed = {index: _parse_index(value) for index, (value, _) in indexes.items()}
        keys = list(dict.fromkeys(key for index_keys in listed.values() for key in index_keys))
        values: dict[str, bytes] = {}
        for name, record_keys in self._by_server(self._record_key(key) for key in keys).items():
            values.update(self._servers[name].call("get_many", record_keys))
        found = []
        for key in keys:
            raw = values.get(self._record_key(key))
            if raw is None:
                continue
            try:
                record = decode_record(raw)
            except msgspec.DecodeError:
                continue
            # A record naming another user is left in the index: it may be
            # a change in flight that is about to name this user (see apply).
            if record.user == user:
                found.append((key, record))
        for index, index_keys in listed.items():
            kept = [key for key in index_keys if self._record_key(key) in values]
            compact = b"".join(b"+" + key.encode() + b"\n" for key in kept)
            value, cas = indexes[index]
            if compact != value:
                period = int(index.rsplit(":", 1)[1])
                expire = _exptime((period + 2) * self.index_lifetime) if kept else _GONE
                self._server(index).call("cas", index, compact, cas, expire=expire, noreply=False)
        return found

    # The Store protocol ------------------------------------------------------------

    def _take_seen(self, full: str) -> tuple[bytes, int] | None:
        """The value and CAS token the last ``load`` of this thread read for ``full``, used once.

        A request loads its session and then changes it, so ``load`` reads
        with ``gets`` (as cheap as ``get``) and keeps what it read: the change
        then tries ``cas`` with that token straight away, one round trip
        instead of ``gets`` + ``cas``. This is safe whatever request the
        token came from: memcached gives every write of an item a new token,
        so a ``cas`` with it succeeds only while the item is still exactly
        the value read with it, and the merge was then made on the current
        record. A token that is stale (another request wrote, or this one
        was loaded long ago by a request that failed) only makes the ``cas``
        fail, and the normal ``gets``/``cas`` loop takes over, so no
        concurrent change is lost. It is taken once, and only for the same
        key, so a failed or mismatched token costs at most that one try.
        """
        return self._seen.take(full)

    def load(self, key: str) -> Record | None:
        full = self._record_key(key)
        self._seen.keep(full, None)  # a failed read leaves nothing behind
        value, cas = self._server(full).call("gets", full)
        if value is None:
            return None
        record = decode_record(value)
        self._seen.keep(full, (value, cas))
        return record

    def _write(self, server: _Server, command: str, full: str, value: bytes, *args: t.Any, expire: int) -> t.Any:
        """Write a record with ``command``; ``SessionTooLarge`` with both sizes when it is over the item size limit.

        Once a server has refused a record, its limit is known, and a record
        whose key and value alone are over it is refused without sending it.
        """
        size = len(full) + len(value)
        if server.item_size_max is not None and size > server.item_size_max:
            limit = server.read_item_size_max()  # it may have been restarted with another -I
            if limit is not None and size > limit:
                raise self._too_large(server, len(value), limit)
        try:
            return server.call(command, full, value, *args, expire=expire, noreply=False)
        except SessionTooLarge as e:
            raise self._too_large(server, len(value), server.read_item_size_max()) from e

    @staticmethod
    def _too_large(server: _Server, size: int, limit: int | None) -> SessionTooLarge:
        over = f"over the {limit}-byte item size limit" if limit is not None else "over the item size limit"
        return SessionTooLarge(
            f"The session is {size} bytes encoded, {over} of memcached {server.name} (item_size_max,"
            " memcached -I, counting the key and the item's header), so it was not stored;"
            " store less in the session, or start memcached with a larger -I",
            size=size,
            limit=limit,
        )

    def create(self, key: str, record: Record) -> None:
        full = self._record_key(key)
        server = self._server(full)
        if not self._write(server, "set", full, encode_record(record), expire=_exptime(record.expires_at)):
            raise StoreUnavailable(f"memcached did not store session {key}")
        # After the record, so a listing never prunes the key of a record
        # about to be written. If this fails the request is a 503 and the
        # browser never learns the session id.
        if record.user is not None:
            self._index_add(record.user, key, record.created_at)

    def _update(self, key: str, edit: t.Callable[[Record], Record]) -> tuple[Record, Record] | None:
        """Compare-and-set ``edit(record)`` in place; the old and new record, or None when gone."""
        full = self._record_key(key)
        server = self._server(full)
        seen = self._take_seen(full)
        for _ in self._retries(f"session {key}"):
            value, cas = seen if seen is not None else server.call("gets", full)
            seen = None  # a conflict reads afresh
            if value is None:
                return None
            old = decode_record(value)
            new = edit(old)
            expire = _exptime(new.expires_at) if new.data else _GONE
            # A refused cas leaves the old value in place: the session keeps its last good state.
            stored = self._write(server, "cas", full, encode_record(new), cas, expire=expire)
            if stored is None:
                return None  # deleted between our gets and cas
            if stored:
                return old, new
        raise AssertionError("unreachable")  # pragma: no cover

    def apply(self, key: str, change: Change) -> int | None:
        indexed = change.user is None or not change.user_changed

        def edit(record: Record) -> Record:
            nonlocal indexed
            if not indexed:
                # Before the record is written: a listing prunes keys whose
                # record is gone, never keys whose record names another user,
                # so this entry is safe. The index is the one of the period the
                # session was created in, hence here, once the record is read.
                self._index_add(t.cast(str, change.user), key, record.created_at)
                indexed = True
            return merge(record, change)

        result = self._update(key, edit)
        if result is None:
            return None
        old, new = result
        if old.user is not None and (old.user != new.user or not new.data):
            self._index_remove(old.user, key, old.created_at)
        return len(new.data)

    def touch(self, key: str, last_seen: float, expires_at: float) -> bool:
        result = self._update(
            key, lambda record: msgspec.structs.replace(record, last_seen=last_seen, expires_at=expires_at)
        )
        return result is not None

    def delete(self, key: str) -> bool:
        full = self._record_key(key)
        server = self._server(full)
        seen = self._take_seen(full)
        # After a load (logout, an expired record, rotation) a ``cas`` with
        # an expiry in the past deletes in one round trip, and proves the
        # value read is the one deleted, so its user's index is the one to
        # edit. Anything else (no load, or a write since) reads first.
        value = None
        if seen is not None:
            deleted = server.call("cas", full, b"", seen[1], expire=_GONE, noreply=False)
            if deleted is None:
                return False  # gone already
            if deleted:
                value = seen[0]
        if value is None:
            value = server.call("get", full)
            if value is None or not server.call("delete", full, noreply=False):
                return False
        with contextlib.suppress(msgspec.DecodeError):
            record = decode_record(value)
            if record.user is not None:
                self._index_remove(record.user, key, record.created_at)
        return True

    def sessions(self, now: float, user: str | None = None) -> list[tuple[str, Record]]:
        if user is None:
            raise NotSupported(
                "memcached cannot list its keys, so the memcached store cannot list every session;"
                " list one user's sessions with sessions_of(user)"
            )
        # Every live session was created less than index_lifetime ago: in
        # this period or the one before.
        current = int(now // self.index_lifetime)
        return [
            (key, msgspec.structs.replace(record, data={}))
            for key, record in self._prune(user, (current - 1, current), now)
            if record.expires_at > now
        ]

    def cleanup(self, now: float) -> int:
        return 0  # memcached drops expired records by itself

    def count(self, now: float) -> int:
        raise NotSupported(
            "memcached cannot list its keys, so the memcached store cannot count sessions;"
            " count them in your app if you need the number"
        )

    def lock(self, key: str, token: str, lease: float) -> bool:
        """``add`` stores only when the key is absent, atomically; its expiry is the lease (whole seconds)."""
        full = self.prefix + _LOCK + key
        return bool(
            self._server(full).call("add", full, token.encode(), expire=max(1, math.ceil(lease)), noreply=False)
        )

    def unlock(self, key: str, token: str) -> bool:
        """Delete the lock only if it is still ours: ``gets``, compare, then ``cas`` it away."""
        full = self.prefix + _LOCK + key
        server = self._server(full)
        value, cas = server.call("gets", full)
        if value is None or bytes(value) != token.encode():
            return False
        return bool(server.call("cas", full, b"", cas, expire=_GONE, noreply=False))

    def close(self) -> None:
        if self.owns_client:
            self.client.close()
